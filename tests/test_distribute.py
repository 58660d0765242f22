"""`PruningScheduler` inside `tf.distribute.MirroredStrategy` (two CPU replicas).

`conftest.py` splits the CPU into two logical devices. Each test trains the
same network from the same initial weights on the same batches twice, once on
one device and once mirrored over `"/cpu:0"` and `"/cpu:1"` (the global batch
split in two halves whose gradients are all-reduced), and checks that the
callback prunes, rewinds and resets the optimizer identically: masks and
round densities exactly equal, weights equal up to float rounding (the
all-reduce sums the two halves' gradients in a different order).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lth.callbacks import PruningScheduler
from keras_lth.layers import MaskedDense, kept_values, masked_layers
from keras_lth.schedules import IterativeSchedule

NAMES = ("h1", "h2", "out")
BATCH = 32  # global batch: 16 examples per replica under the strategy
EPOCHS_PER_ROUND = 2
ROUNDS = 2


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(10, 3)) + rng.normal(size=(n, 3)), axis=1)
    return x, y.astype("int32")


X, Y = _data()


def _make_model(pruned_values="kept"):
    model = keras.Sequential(
        [
            keras.Input((10,)),
            MaskedDense(32, activation="relu", name=NAMES[0], pruned_values=pruned_values),
            MaskedDense(16, activation="relu", name=NAMES[1], pruned_values=pruned_values),
            MaskedDense(3, name=NAMES[2], pruned_values=pruned_values),
        ]
    )
    model.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _run(
    initial, strategy=None, schedule=None, epochs=None, pruned_values="kept", **scheduler_kwargs
):
    """Trains a fresh model from `initial` weights; returns what the test compares."""
    if strategy is None:
        model = _make_model(pruned_values)
    else:
        with strategy.scope():
            model = _make_model(pruned_values)
    model.set_weights(initial)
    if schedule is None:
        schedule = IterativeSchedule(
            rounds=ROUNDS, epochs_per_round=EPOCHS_PER_ROUND, rate=0.3, layer_rates={"out": 0.2}
        )
    scheduler = PruningScheduler(schedule, seed=7, verbose=0, **scheduler_kwargs)
    # Spy on the rewind: the trainable values at the first batch of every round.
    starts = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0 and not scheduler.gradual and len(starts) < ROUNDS + 1:
                e = len(history_epochs)
                if e == scheduler.round_start(len(starts)):
                    model = self.model
                    starts.append(kept_values(model, model.trainable_variables))

        def on_epoch_end(self, epoch, logs=None):
            history_epochs.append(epoch)

    history_epochs = []
    model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=scheduler.total_epochs or epochs,
        shuffle=False,
        callbacks=[scheduler, Spy()],
        verbose=0,
    )
    return {
        "model": model,
        "masks": {l.name: np.array(l.kernel_mask) for l in masked_layers(model)},
        "bias_masks": {l.name: np.array(l.bias_mask) for l in masked_layers(model)},
        "weights": [np.array(w) for w in model.get_weights()],
        "densities": [r["density"] for r in scheduler.rounds],
        "iterations": int(np.array(model.optimizer.iterations)),
        "learning_rate": float(np.array(model.optimizer.learning_rate)),
        "starts": starts,
    }


@pytest.fixture(scope="module")
def strategy(mirrored_strategy):
    # the session's one strategy (see conftest: collective keys collide
    # between strategy objects in one process)
    return mirrored_strategy


@pytest.fixture(scope="module")
def initial():
    keras.utils.set_random_seed(3)
    return _make_model().get_weights()


def test_strategy_has_two_replicas(strategy):
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        model = _make_model()
    mask = model.get_layer("h1").kernel_mask
    assert isinstance(mask.value, tf.distribute.DistributedValues)  # mirrored


# The optimizer's restart must work under the strategy too (its throwaway
# copy is created in the strategy's scope): no fallback warning.
@pytest.mark.filterwarnings("error::UserWarning")
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(rewind="init"),
        dict(rewind="init", scope="global"),
        dict(rewind="init", structure="neuron"),
        dict(rewind="reinit", scope="global", structure="neuron", norm="l2"),
        dict(rewind=1),
    ],
    ids=["layer-weight", "global-weight", "layer-neuron", "global-neuron-reinit", "late-rewind"],
)
def test_mirrored_run_gives_the_single_device_masks(strategy, initial, kwargs, tmp_path):
    single = _run(initial, **kwargs)
    mirrored = _run(initial, strategy, **kwargs)

    # The schedule really pruned, and both runs pruned the same weights.
    assert single["densities"][0] == 1.0 and single["densities"][-1] < 0.6
    assert mirrored["densities"] == single["densities"]
    for name in NAMES:
        np.testing.assert_array_equal(mirrored["masks"][name], single["masks"][name], err_msg=name)
        np.testing.assert_array_equal(
            mirrored["bias_masks"][name], single["bias_masks"][name], err_msg=name
        )
    if kwargs.get("structure") == "neuron":
        assert single["bias_masks"]["h1"].min() == 0.0  # whole neurons went
        assert single["bias_masks"]["out"].min() == 1.0  # never the output's
    for got, want in zip(mirrored["weights"], single["weights"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    # Every round started from the same rewound values in both runs, and the
    # rewind happened on every replica (what `model.get_weights` reads).
    assert len(mirrored["starts"]) == len(single["starts"]) == ROUNDS + 1
    for r, (got, want) in enumerate(zip(mirrored["starts"], single["starts"])):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"round {r}")
    if kwargs["rewind"] == "init":
        for later in mirrored["starts"][1:]:
            for g, w in zip(later, mirrored["starts"][0]):
                np.testing.assert_array_equal(g, w)
    _assert_replicas_agree(mirrored["model"])

    # A model pruned under the strategy saves and loads (without it) as it is.
    if kwargs == dict(rewind="init"):
        path = tmp_path / "mirrored.keras"
        mirrored["model"].save(path)
        loaded = keras.saving.load_model(path)
        for got, want in zip(loaded.get_weights(), mirrored["weights"]):
            np.testing.assert_array_equal(got, want)
        # (predict splits the batch over the replicas: float rounding differs)
        np.testing.assert_allclose(
            loaded.predict(X[:8], verbose=0),
            mirrored["model"].predict(X[:8], verbose=0),
            rtol=1e-5,
            atol=1e-6,
        )

    # The optimizer restarted at the last round; the learning rate is kept.
    steps_per_epoch = len(X) // BATCH
    last_round_epochs = EPOCHS_PER_ROUND - (kwargs["rewind"] if kwargs["rewind"] == 1 else 0)
    assert mirrored["iterations"] == single["iterations"] == last_round_epochs * steps_per_epoch
    assert mirrored["learning_rate"] == single["learning_rate"] == pytest.approx(1e-2)


def _assert_replicas_agree(model):
    """Every mirrored variable holds the same value on both devices."""
    for var in model.weights + model.optimizer.variables:
        value = var.value
        if not isinstance(value, tf.distribute.DistributedValues):
            continue
        copies = [np.array(v) for v in value.values]
        assert len(copies) == 2, var.path
        np.testing.assert_array_equal(copies[0], copies[1], err_msg=var.path)


def test_mirrored_gradual_pruning_gives_the_single_device_masks(strategy, initial, tfmot):
    """A tfmot schedule: masks shrink at batch ends, from `optimizer.iterations`."""

    def schedule():
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.2, final_sparsity=0.7, begin_step=2, end_step=14, frequency=3
        )

    single = _run(initial, schedule=schedule(), epochs=2, rewind=None)
    mirrored = _run(initial, strategy, schedule=schedule(), epochs=2, rewind=None)
    assert single["iterations"] == mirrored["iterations"] == 2 * len(X) // BATCH
    assert 0.25 < single["densities"][-1] < 0.35  # reached the final sparsity
    assert mirrored["densities"] == single["densities"]
    for name in NAMES:
        np.testing.assert_array_equal(mirrored["masks"][name], single["masks"][name], err_msg=name)
    for got, want in zip(mirrored["weights"], single["weights"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    _assert_replicas_agree(mirrored["model"])


def test_mirrored_zeroed_layers_train_like_kept_ones(strategy, initial):
    """`pruned_values="zeroed"`: the constraint runs on every replica."""
    single = _run(initial, rewind="init")
    mirrored = _run(initial, strategy, rewind="init", pruned_values="zeroed")
    assert mirrored["densities"] == single["densities"] and single["densities"][-1] < 0.6
    for name in NAMES:
        np.testing.assert_array_equal(mirrored["masks"][name], single["masks"][name], err_msg=name)
    kept_layers, zeroed_layers = masked_layers(single["model"]), masked_layers(mirrored["model"])
    for a, b in zip(kept_layers, zeroed_layers):
        for u, v in zip(a.effective_weights(), b.effective_weights()):
            np.testing.assert_allclose(v, u, rtol=1e-4, atol=1e-5, err_msg=a.name)
        for w in b._all_weights():  # exact zeros under the mask, on both replicas
            mask = np.array(w.mask)
            for copy in w.variable.value.values:
                assert not np.any(np.array(copy)[~mask]), w.key
    _assert_replicas_agree(mirrored["model"])
