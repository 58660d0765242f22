"""Tests for the re-introduction strategies inside `model.fit`.

`keras_lth.training` (the training step) and `PruningScheduler(reintroduce=...)`
(the events): hand-computed scores and complement gradients, exact swaps at
constant density, `fraction=0` equal to plain IMP bit for bit, `jit_compile`,
`steps_per_execution`, `MirroredStrategy`, saving and configuration.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_lth as lth
from keras_lth.layers import MaskedDense, masked_layers

NAMES = ("h1", "h2", "out")


def _data(n=192, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(10, 3)) + rng.normal(size=(n, 3)), axis=1)
    return x, y.astype("int32")


X, Y = _data()


def make_model(optimizer=None, seed=7, **compile_kwargs):
    layers = [
        keras.Input((10,)),
        MaskedDense(
            16,
            activation="relu",
            name="h1",
            kernel_initializer=keras.initializers.GlorotNormal(seed),
        ),
        MaskedDense(
            8,
            activation="relu",
            name="h2",
            kernel_initializer=keras.initializers.GlorotNormal(seed + 1),
        ),
        MaskedDense(3, name="out", kernel_initializer=keras.initializers.GlorotNormal(seed + 2)),
    ]
    model = keras.Sequential(layers)
    model.compile(
        optimizer if optimizer is not None else keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **compile_kwargs,
    )
    return model


def masks(model):
    return {l.name: np.array(l.kernel_mask) for l in masked_layers(model)}


def effective(model):
    return [w for l in masked_layers(model) for w in l.effective_weights()]


def raw(model):
    return {l.name: np.array(l.raw_variable("kernel")) for l in masked_layers(model)}


def scores(s):
    """The `ScoredPruning` scores of a scheduler's run, by weight key."""
    return {k: np.array(v) for k, v in s._reintroducer.scores.items()}


def scheduler(reintroduce, rounds=2, epochs=3, layer_rates=None, **kwargs):
    kwargs.setdefault("verbose", 0)
    schedule = lth.IterativeSchedule(
        rounds=rounds,
        epochs_per_round=epochs,
        rate=0.3,
        layer_rates={"out": 0.1} if layer_rates is None else layer_rates,
    )
    return lth.PruningScheduler(schedule, reintroduce=reintroduce, **kwargs)


def begin(s, model):
    """Starts `s` on `model` as `fit` would, without training."""
    s.set_model(model)
    s.set_params({"epochs": s.total_epochs, "steps": 1, "verbose": 0})
    s.on_train_begin()


class Watch(keras.callbacks.Callback):
    """Records masks, raw kernels and per-layer densities after every epoch."""

    def __init__(self):
        super().__init__()
        self.masks, self.raw, self.density = [], [], []

    def on_epoch_end(self, epoch, logs=None):
        self.masks.append(masks(self.model))
        self.raw.append(raw(self.model))
        self.density.append(lth.density(self.model, per_layer=True))


def run(reintroduce, model=None, batch_size=32, fit_kwargs=None, **kwargs):
    keras.utils.set_random_seed(3)
    model = make_model() if model is None else model
    s = scheduler(reintroduce, **kwargs)
    watch = Watch()
    model.fit(
        X,
        Y,
        batch_size=batch_size,
        epochs=s.total_epochs,
        callbacks=[s, watch],
        verbose=0,
        shuffle=False,
        **(fit_kwargs or {}),
    )
    return model, s, watch


STRATEGIES = {
    "scored": lambda **kw: lth.ScoredPruning(when="round", **kw),
    "feedback": lambda **kw: lth.DoublePruning("feedback", when="round", **kw),
    "complement": lambda **kw: lth.DoublePruning("complement", when="round", **kw),
}


# --------------------------------------------------------------------- #
# The training step, checked by hand
# --------------------------------------------------------------------- #
def _one_layer(optimizer, bias=True):
    layer = MaskedDense(2, use_bias=bias, name="only")
    model = keras.Sequential([keras.Input((3,)), layer])
    model.compile(optimizer, "mse")
    w = np.array([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]], "float32")
    layer.set_weights(
        [w, np.array([0.1, -0.2], "float32")] + [np.ones((3, 2)), np.ones(2)]
        if bias
        else [w, np.ones((3, 2))]
    )
    layer.set_masks(np.array([[1, 0], [1, 1], [0, 1]], "float32"))
    return model, layer, w


XH = np.array([[1.0, 2.0, -1.0], [0.5, -1.0, 2.0]], "float32")
YH = np.array([[1.0, 0.0], [-1.0, 2.0]], "float32")


def _dense_grad(w, mask, b):
    """dL/d(W * M) of the mean squared error, by hand."""
    pred = XH @ (w * mask) + b
    return XH.T @ (2.0 * (pred - YH) / pred.size)


def test_scores_accumulate_minus_w_times_dense_gradient_by_hand():
    model, layer, w = _one_layer(keras.optimizers.SGD(0.0))  # lr 0: w stays
    s = scheduler(lth.ScoredPruning(when="round"), rounds=1, epochs=2, layer_rates={})
    begin(s, model)
    mask = np.array(layer.kernel_mask)
    for _ in range(2):
        model.train_function(iter([(XH, YH)]))
    g = _dense_grad(w, mask, np.array([0.1, -0.2]))
    assert np.all(g[mask == 0] != 0)  # pruned positions get a gradient too
    np.testing.assert_allclose(scores(s)["only/kernel"], 2 * (-w * g), rtol=1e-5, atol=1e-7)
    s.on_train_end()
    assert "train_step" not in model.__dict__


def test_scored_step_trains_only_kept_weights():
    model, layer, w = _one_layer(keras.optimizers.SGD(0.1))
    s = scheduler(lth.ScoredPruning(when="round"), rounds=1, epochs=2, layer_rates={})
    begin(s, model)
    mask = np.array(layer.kernel_mask)
    model.train_function(iter([(XH, YH)]))
    g = _dense_grad(w, mask, np.array([0.1, -0.2]))
    np.testing.assert_allclose(
        np.array(layer.raw_variable("kernel")), w - 0.1 * g * mask, rtol=1e-5, atol=1e-7
    )


def test_feedback_step_trains_pruned_raw_weights_with_the_dense_gradient():
    model, layer, w = _one_layer(keras.optimizers.SGD(0.1))
    s = scheduler(lth.DoublePruning("feedback", when="round"), rounds=1, epochs=2, layer_rates={})
    begin(s, model)
    mask = np.array(layer.kernel_mask)
    model.train_function(iter([(XH, YH)]))
    g = _dense_grad(w, mask, np.array([0.1, -0.2]))
    np.testing.assert_allclose(
        np.array(layer.raw_variable("kernel")), w - 0.1 * g, rtol=1e-5, atol=1e-7
    )


def test_complement_step_trains_pruned_weights_as_their_own_network():
    model, layer, w = _one_layer(keras.optimizers.SGD(0.1))
    s = scheduler(lth.DoublePruning("complement", when="round"), rounds=1, epochs=2, layer_rates={})
    begin(s, model)
    mask = np.array(layer.kernel_mask)
    b = np.array([0.1, -0.2])
    model.train_function(iter([(XH, YH)]))
    g_kept = _dense_grad(w, mask, b) * mask
    g_comp = _dense_grad(w, 1 - mask, b) * (1 - mask)  # complement net: W * (1 - M), shared bias
    np.testing.assert_allclose(
        np.array(layer.raw_variable("kernel")), w - 0.1 * (g_kept + g_comp), rtol=1e-5, atol=1e-7
    )
    # the bias belongs to the kept network: only its gradient moves it
    pred = XH @ (w * mask) + b
    gb = (2.0 * (pred - YH) / pred.size).sum(axis=0)
    np.testing.assert_allclose(np.array(layer.bias), b - 0.1 * gb, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------------- #
# Events inside fit
# --------------------------------------------------------------------- #
@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize(
    "scope, structure", [("layer", "weight"), ("global", "weight"), ("layer", "neuron")]
)
def test_density_stays_on_schedule_and_swaps_happen(name, scope, structure):
    model, s, watch = run(
        STRATEGIES[name](fraction=0.5, decay="constant"), scope=scope, structure=structure
    )
    plain_model, plain, plain_watch = run(None, scope=scope, structure=structure)
    # the density of every epoch equals plain IMP's (per layer unless global)
    for (d, d_layers), (p, p_layers) in zip(watch.density, plain_watch.density):
        assert d == pytest.approx(p)
        if scope == "layer":
            assert d_layers == pytest.approx(p_layers)
    assert [r["density"] for r in s.rounds] == pytest.approx([r["density"] for r in plain.rounds])
    assert s.rounds[0]["swaps"] == {"events": 0, "reintroduced": 0}
    for rec in s.rounds[1:]:
        assert rec["swaps"]["events"] == 2  # after epochs 1 and 2 of a 3-epoch round
        assert rec["swaps"]["reintroduced"] > 0
    # the masks really changed within rounds
    assert any(
        not np.array_equal(a["h1"], b["h1"]) for a, b in zip(watch.masks[4:6], watch.masks[3:5])
    )


def test_event_reintroduces_top_k_and_prunes_bottom_k_with_hand_set_weights():
    model = make_model(keras.optimizers.SGD(0.0))
    s = scheduler(
        lth.DoublePruning("feedback", when="round", fraction=0.25, decay="constant", value="zero"),
        rounds=1,
        epochs=3,
    )
    begin(s, model)
    rng = np.random.default_rng(0)
    h1 = masked_layers(model)[0]
    k = rng.permutation(160).reshape(10, 16).astype("float32") + 1.0  # distinct |w|
    h1.raw_variable("kernel").assign(k)
    m = (rng.random((10, 16)) < 0.5).astype("float32")
    h1.set_masks(m)
    before = {l.name: np.array(l.kernel_mask) for l in masked_layers(model)}
    s._reintroducer.event(1, 1, 3)
    after = np.array(h1.kernel_mask)
    kept, pruned = m > 0, m == 0
    n = int(round(0.25 * kept.sum()))
    grown, dropped = (after > 0) & pruned, (after == 0) & kept
    assert grown.sum() == dropped.sum() == n
    assert k[grown].min() > k[pruned & ~grown].max()  # exactly the top-k pruned
    assert k[dropped].max() < k[kept & ~dropped].min()  # exactly the bottom-k kept
    assert np.all(np.array(h1.raw_variable("kernel"))[grown] == 0.0)  # value="zero"
    for l in masked_layers(model)[1:]:  # nothing pruned there yet: no swap
        np.testing.assert_array_equal(np.array(l.kernel_mask), before[l.name])


@pytest.mark.parametrize(
    "make_optimizer, slot_names, initial",
    [
        (lambda: keras.optimizers.Adam(1e-2), ("momentum", "velocity"), 0.0),
        (
            lambda: keras.optimizers.Adagrad(1e-2, initial_accumulator_value=0.25),
            ("accumulator",),
            0.25,
        ),
    ],
    ids=["adam", "adagrad"],
)
def test_event_resets_optimizer_slots_of_swapped_weights_only(make_optimizer, slot_names, initial):
    model = make_model(make_optimizer())
    model.fit(X, Y, epochs=1, verbose=0)  # trained slots
    s = scheduler(
        lth.DoublePruning("feedback", when="round", fraction=0.5, decay="constant"),
        rounds=1,
        epochs=3,
    )
    begin(s, model)
    h1 = masked_layers(model)[0]
    rng = np.random.default_rng(1)
    h1.set_masks((rng.random((10, 16)) < 0.5).astype("float32"))
    prefix = h1.raw_variable("kernel").path.replace("/", "_") + "_"  # Keras names slots so
    slots = [v for v in model.optimizer.variables if v.name in [prefix + n for n in slot_names]]
    assert len(slots) == len(slot_names)
    for v in slots:
        v.assign(np.full(v.shape, 0.5, "float32"))
    m0 = np.array(h1.kernel_mask)
    s._reintroducer.event(1, 1, 3)
    changed = np.array(h1.kernel_mask) != m0
    assert changed.any()
    for v in slots:
        v = np.array(v)
        assert np.all(v[changed] == initial) and np.all(v[~changed] == 0.5)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_fraction_zero_equals_plain_imp_bit_for_bit(name):
    model, s, watch = run(STRATEGIES[name](fraction=0.0))
    plain_model, plain, plain_watch = run(None)
    for a, b in zip(watch.masks, plain_watch.masks):
        for n in NAMES:
            np.testing.assert_array_equal(a[n], b[n])
    for a, b in zip(effective(model), effective(plain_model)):
        np.testing.assert_array_equal(a, b)
    assert [r["final"] for r in s.rounds] == [r["final"] for r in plain.rounds]


def test_pruned_raw_values_scored_stay_double_train():
    for name, moves in (("scored", False), ("feedback", True), ("complement", True)):
        _, _, watch = run(STRATEGIES[name](fraction=0.0), rounds=1)
        m = watch.masks[3]["h1"]  # round 1, after its first epoch
        before, after = watch.raw[3]["h1"], watch.raw[5]["h1"]
        assert (not np.array_equal(before[m == 0], after[m == 0])) == moves, name
        assert not np.array_equal(before[m > 0], after[m > 0])


@pytest.mark.parametrize("value", ["current", "zero", "rewind"])
def test_reintroduced_value(value):
    keras.utils.set_random_seed(5)
    model = make_model()
    s = scheduler(
        lth.DoublePruning("feedback", when="round", fraction=0.5, decay="constant", value=value),
        rounds=1,
        epochs=3,
    )
    with pytest.warns(UserWarning, match="does not match"):  # round 0 + 1 epoch of round 1
        model.fit(X, Y, batch_size=32, epochs=4, callbacks=[s], verbose=0)
    h1 = masked_layers(model)[0]
    init = s._rewinding.target_of(1)[id(h1.raw_variable("kernel"))]
    # one more event by hand, then check the grown weights' values
    m0, k0 = np.array(h1.kernel_mask), np.array(h1.raw_variable("kernel"))
    s._reintroducer.event(1, 1, 3)
    grown = (np.array(h1.kernel_mask) > 0) & (m0 == 0)
    assert grown.any()
    k1 = np.array(h1.raw_variable("kernel"))
    expected = {"current": k0, "zero": np.zeros_like(k0), "rewind": init}[value]
    np.testing.assert_array_equal(k1[grown], expected[grown])
    np.testing.assert_array_equal(k1[~grown], k0[~grown])


def test_step_unit_events_and_steps_per_execution():
    strategy = lth.ScoredPruning(
        when="round", fraction=0.3, unit="step", every=2, start=1, decay="constant"
    )
    _, s, _ = run(strategy, rounds=1, epochs=2)
    # 6 steps per epoch, 12 per round: events after steps 1, 3, ..., 11
    assert s.rounds[1]["swaps"]["events"] == 6
    _, s3, _ = run(
        lth.ScoredPruning(
            when="round", fraction=0.3, unit="step", every=2, start=1, decay="constant"
        ),
        rounds=1,
        epochs=2,
        model=make_model(steps_per_execution=3),
    )
    # with 3 steps per execution the batch hooks see steps 3, 6, 9, 12: the
    # events due in each execution fall at its end (none due in 12's)
    assert s3.rounds[1]["swaps"]["events"] == 3


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_jit_compile_and_steps_per_execution_match_the_default_step(name):
    strategy = STRATEGIES[name](fraction=0.4, decay="constant")
    _, s, watch = run(strategy, rounds=1)
    _, s_jit, watch_jit = run(
        STRATEGIES[name](fraction=0.4, decay="constant"),
        rounds=1,
        model=make_model(jit_compile=True, steps_per_execution=2),
    )
    assert s_jit.rounds[1]["swaps"] == s.rounds[1]["swaps"]
    # float results differ in the last bits under XLA; the masks agree but
    # for weights whose criteria are near-ties
    for a, b in zip(watch.masks, watch_jit.masks):
        for n in NAMES:
            assert (a[n] != b[n]).mean() < 0.02


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_mirrored_strategy_aggregates_across_replicas(name, mirrored_strategy):
    def build(strategy):
        with strategy.scope():
            return make_model(keras.optimizers.SGD(0.05))

    single = build(tf.distribute.get_strategy())
    mirrored = build(mirrored_strategy)
    mirrored.set_weights(single.get_weights())
    results = []
    for model in (single, mirrored):
        keras.utils.set_random_seed(3)
        s = scheduler(STRATEGIES[name](fraction=0.4, decay="constant"), rounds=1)
        watch = Watch()
        model.fit(
            X,
            Y,
            batch_size=32,
            epochs=s.total_epochs,
            callbacks=[s, watch],
            verbose=0,
            shuffle=False,
        )
        results.append((watch, list(scores(s).values()), model))
    (w1, sc1, m1), (w2, sc2, m2) = results
    for a, b in zip(w1.masks, w2.masks):
        for n in NAMES:
            np.testing.assert_array_equal(a[n], b[n])
    for a, b in zip(sc1, sc2):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # summed, not per replica
    for a, b in zip(raw(m1).values(), raw(m2).values()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------- #
# Saving, configuration, errors
# --------------------------------------------------------------------- #
def test_scores_are_not_model_weights(tmp_path):
    model, s, _ = run(lth.ScoredPruning(when="round"), rounds=1)
    assert scores(s) and all(np.abs(v).sum() > 0 for v in scores(s).values())
    plain = make_model()
    assert [(w.name, w.shape) for w in model.weights] == [(w.name, w.shape) for w in plain.weights]
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(masked_layers(model), masked_layers(loaded)):
        np.testing.assert_array_equal(np.array(a.kernel_mask), np.array(b.kernel_mask))
    np.testing.assert_allclose(model.predict(X, verbose=0), loaded.predict(X, verbose=0), rtol=1e-6)


def test_scheduler_config_round_trip_with_reintroduce():
    s = scheduler(
        lth.ScoredPruning(when="round", fraction=0.1, every=20, unit="step"), scope="global"
    )
    again = lth.PruningScheduler.from_config(s.get_config())
    assert isinstance(again.reintroduce, lth.ScoredPruning)
    assert again.reintroduce.get_config() == s.reintroduce.get_config()
    assert again.get_config() == s.get_config()


@pytest.mark.parametrize("name", ["feedback", "scored"])
def test_model_train_step_and_gradient_modes_are_restored_after_fit(name):
    model = make_model()
    seen = []

    class Modes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append({l.gradient_mode for l in masked_layers(self.model)})

    s = scheduler(STRATEGIES[name](), rounds=1, epochs=1)
    model.fit(X, Y, epochs=s.total_epochs, verbose=0, callbacks=[s, Modes()])
    assert seen == [{"dense"}] * 2  # straight-through while the strategy trains
    assert "train_step" not in model.__dict__ and model.train_function is None
    assert {l.gradient_mode for l in masked_layers(model)} == {"masked"}
    model.fit(X, Y, epochs=1, verbose=0)  # the model's own step again


def test_bad_reintroduce_arguments():
    schedule = lth.IterativeSchedule(rounds=1, epochs_per_round=2)
    with pytest.raises(ValueError, match="reintroduce='scored'"):
        lth.PruningScheduler(schedule, reintroduce="scored")
    with pytest.raises(ValueError, match="rewind=None"):
        lth.PruningScheduler(
            schedule, rewind=None, reintroduce=lth.ScoredPruning(when="round", value="rewind")
        )


def test_reintroduce_rejects_tfmot_schedules(tfmot):
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0)
    with pytest.raises(ValueError, match="tfmot schedule"):
        lth.PruningScheduler(schedule, reintroduce=lth.DoublePruning(when="round"))


# --------------------------------------------------------------------- #
# What the step relies on, and every masked family
# --------------------------------------------------------------------- #
def test_loss_metric_is_the_loss_that_fit_reports():
    """`training.loss_metric` finds Keras's own loss tracker through `model.metrics`."""
    from keras_lth import training

    model = make_model()
    tracker = training.loss_metric(model)
    assert tracker is model.metrics[0] and tracker.name == "loss"
    history = model.fit(X, Y, batch_size=64, epochs=1, verbose=0, shuffle=False)
    assert float(tracker.result()) == pytest.approx(history.history["loss"][0], rel=1e-6)


def test_step_logs_the_loss_keras_would_log():
    """fraction=0 feedback and Keras's own step log the same loss on the same batches."""
    logs = []
    for strategy in (None, STRATEGIES["feedback"](fraction=0.0)):
        keras.utils.set_random_seed(3)
        model = make_model(keras.optimizers.SGD(0.0))  # lr 0: the same weights every step
        s = scheduler(strategy, rounds=1, epochs=1)
        history = model.fit(X, Y, batch_size=32, epochs=2, callbacks=[s], verbose=0, shuffle=False)
        logs.append(history.history)
    assert logs[0]["loss"] == pytest.approx(logs[1]["loss"], rel=1e-6)
    assert logs[0]["accuracy"] == pytest.approx(logs[1]["accuracy"])


def test_complement_pass_keeps_batchnorm_statistics_and_metrics_to_the_kept_network():
    def build():
        keras.utils.set_random_seed(1)
        model = keras.Sequential(
            [
                keras.Input((10,)),
                MaskedDense(16, name="h1", kernel_regularizer="l2"),
                keras.layers.BatchNormalization(name="bn"),
                keras.layers.Activation("relu"),
                MaskedDense(3, name="out"),
            ]
        )
        model.compile(
            keras.optimizers.SGD(0.0),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    results = []
    for strategy in (None, STRATEGIES["complement"](fraction=0.0)):
        model = build()
        s = scheduler(strategy, rounds=1, epochs=1, layer_rates={})
        history = model.fit(X, Y, batch_size=32, epochs=2, callbacks=[s], verbose=0, shuffle=False)
        bn = model.get_layer("bn")
        results.append((history.history, np.array(bn.moving_mean), np.array(bn.moving_variance)))
    (plain, mean0, var0), (comp, mean1, var1) = results
    # with lr 0 only the statistics move: the complement pass changed none of them
    np.testing.assert_allclose(mean1, mean0, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(var1, var0, rtol=1e-6, atol=1e-7)
    assert plain["loss"] == pytest.approx(comp["loss"], rel=1e-6)


def test_reintroduction_needs_the_tensorflow_backend(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    model = make_model()
    s = scheduler(lth.ScoredPruning(when="round"), rounds=1, epochs=1)
    with pytest.raises(ValueError, match="need the TensorFlow backend. Received: backend 'jax'"):
        begin(s, model)


def _cnn():
    inputs = keras.Input((6, 6, 2))
    x = lth.layers.MaskedConv2D(6, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = lth.layers.MaskedSeparableConv2D(5, 2, activation="relu", name="sep")(x)
    x = keras.layers.Flatten()(x)
    outputs = MaskedDense(3, name="out")(lth.layers.MaskedDense(8, name="dense")(x))
    return keras.Model(inputs, outputs), np.random.default_rng(0).normal(size=(96, 6, 6, 2))


def _sequence():
    inputs = keras.Input((5,), dtype="int32")
    x = lth.layers.MaskedEmbedding(20, 8, name="emb")(inputs)
    x = lth.layers.MaskedMultiHeadAttention(2, 4, name="mha")(x, x)
    x = lth.layers.MaskedGRU(6, name="gru")(x)
    outputs = MaskedDense(3, name="out")(x)
    return keras.Model(inputs, outputs), np.random.default_rng(0).integers(0, 20, (96, 5))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("structure", ["weight", "neuron"])
@pytest.mark.parametrize("build", [_cnn, _sequence], ids=["cnn", "sequence"])
def test_every_family_swaps_at_constant_density(build, structure, name):
    keras.utils.set_random_seed(0)
    model, x = build()
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    y = np.random.default_rng(1).integers(0, 3, len(x))
    s = lth.PruningScheduler(
        lth.IterativeSchedule(rounds=1, epochs_per_round=3, rate=0.4),
        structure=structure,
        reintroduce=STRATEGIES[name](fraction=0.5, decay="constant"),
        verbose=0,
    )
    densities = []

    class Density(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            densities.append(lth.density(self.model, per_layer=True))

    model.fit(x, y, batch_size=32, epochs=s.total_epochs, callbacks=[s, Density()], verbose=0)
    swaps = s.rounds[1]["swaps"]
    assert swaps["events"] == 2 and swaps["reintroduced"] > 0
    # layer scope: every layer's density stays what the pruning made it
    for later in densities[4:]:
        assert later[1] == pytest.approx(densities[3][1])
    assert all(np.isfinite(np.array(v)).all() for v in model.weights)


@pytest.mark.parametrize("structure", ["weight", "neuron"])
@pytest.mark.parametrize("build", [_cnn, _sequence], ids=["cnn", "sequence"])
def test_every_family_reselects_at_the_pruning_step_with_imp_counts(build, structure):
    def prune_twice(reintroduce):
        # hook level: round 1's and round 2's pruning steps, with the weights
        # of every kernel redrawn in between as if the round had trained them
        keras.utils.set_random_seed(0)
        model, _ = build()
        model.compile(keras.optimizers.SGD(0.0), "mse")
        s = lth.PruningScheduler(
            lth.IterativeSchedule(rounds=2, epochs_per_round=1, rate=0.4),
            rewind=None,
            structure=structure,
            reintroduce=reintroduce,
            verbose=0,
        )
        begin(s, model)
        s.on_epoch_begin(0)
        s.on_epoch_begin(1)
        rng = np.random.default_rng(2)
        for w in lth.layers.masked_weights(model):
            w.variable.assign(rng.normal(size=w.variable.shape).astype("float32"))
        s.on_epoch_begin(2)
        return lth.density(model, per_layer=True)[1], s

    density, s = prune_twice(lth.DoublePruning("feedback", fraction=1.0, when="prune"))
    plain, _ = prune_twice(None)
    assert density == pytest.approx(plain)  # every layer keeps IMP's count
    assert s._reintroducer.record(2)["reselected"]["count"] > 0


def test_a_crashed_run_leaves_no_step_behind():
    model = make_model()
    begin(scheduler(STRATEGIES["feedback"](), rounds=1, epochs=1), model)  # never ended
    again = scheduler(STRATEGIES["scored"](), rounds=1, epochs=1)
    begin(again, model)
    again.on_train_end()
    assert "train_step" not in model.__dict__
    assert {l.gradient_mode for l in masked_layers(model)} == {"masked"}


# --------------------------------------------------------------------- #
# Re-selection at the pruning step (when="prune")
# --------------------------------------------------------------------- #
RESELECTING = {
    "scored": lambda **kw: lth.ScoredPruning(when="prune", **kw),
    "scored_magnitude": lambda **kw: lth.ScoredPruning(when="prune", prune_by="magnitude", **kw),
    "feedback": lambda **kw: lth.DoublePruning("feedback", when="prune", **kw),
    "complement": lambda **kw: lth.DoublePruning("complement", when="prune", **kw),
}


@functools.cache
def _plain_imp(rounds, scope, structure):
    """Plain IMP's run of `run(None, ...)`, once per configuration (the tests compare with it)."""
    model, s, watch = run(None, rounds=rounds, scope=scope, structure=structure)
    return {
        "masks": watch.masks,
        "density": watch.density,
        "effective": effective(model),
        "final": [r["final"] for r in s.rounds],
        "round_density": [r["density"] for r in s.rounds],
    }


def _round_masks(watch, rounds, epochs=3):
    """The kernel masks of every round (as they stood at its last epoch)."""
    return [watch.masks[(r + 1) * epochs - 1] for r in range(rounds + 1)]


@pytest.mark.parametrize(
    "name, scope, structure",
    [
        ("scored", "layer", "weight"),
        ("scored_magnitude", "global", "weight"),
        ("complement", "layer", "weight"),
        ("complement", "layer", "neuron"),
    ],
)
def test_reselection_keeps_imp_counts_and_records_where_reentries_came_from(name, scope, structure):
    rounds = 3
    strategy = RESELECTING[name](fraction=1.0)
    model, s, watch = run(strategy, rounds=rounds, scope=scope, structure=structure)
    plain = _plain_imp(rounds, scope, structure)
    # the count of every epoch is plain IMP's (per layer unless global)
    for (d, d_layers), (p, p_layers) in zip(watch.density, plain["density"]):
        assert d == pytest.approx(p)
        if scope == "layer":
            assert d_layers == pytest.approx(p_layers)
    # masks change only at the pruning steps
    for e in range(len(watch.masks)):
        if e % 3:
            for n in NAMES:
                np.testing.assert_array_equal(watch.masks[e][n], watch.masks[e - 1][n])
    # re-entries: pruned in an earlier round, kept again; the record counts
    # them (neurons for "neuron") by the round that had removed them
    per_round = _round_masks(watch, rounds)
    pruned_in = {n: np.zeros(per_round[0][n].shape, int) for n in NAMES}
    total = 0
    assert s.rounds[0]["reselected"] == {"count": 0, "pruned_in": {}}
    for r in range(1, rounds + 1):
        expected = {}
        for n in NAMES:
            before, now = per_round[r - 1][n] > 0, per_round[r][n] > 0
            entered = now & ~before
            if structure == "neuron":
                entered = entered.all(axis=0) & ~before.any(axis=0)
                came = pruned_in[n].max(axis=0)[entered]
            else:
                came = pruned_in[n][entered]
            for past in came.tolist():
                expected[str(past)] = expected.get(str(past), 0) + 1
            pruned_in[n] = np.where(before & ~now, r, pruned_in[n])
        rec = s.rounds[r]["reselected"]
        assert rec["count"] == sum(expected.values())
        assert rec["pruned_in"] == expected
        assert all(0 < int(k) < r for k in expected)  # from an earlier round
        total += rec["count"]
    assert total > 0  # the case exercises re-entries
    assert [r["density"] for r in s.rounds] == pytest.approx(plain["round_density"])


@pytest.mark.parametrize("name", ["scored_magnitude", "feedback", "complement"])
def test_reselection_fraction_zero_equals_plain_imp_bit_for_bit(name):
    model, s, watch = run(RESELECTING[name](fraction=0.0))
    plain = _plain_imp(2, "layer", "weight")
    for a, b in zip(watch.masks, plain["masks"]):
        for n in NAMES:
            np.testing.assert_array_equal(a[n], b[n])
    for a, b in zip(effective(model), plain["effective"]):
        np.testing.assert_array_equal(a, b)
    assert [r["final"] for r in s.rounds] == plain["final"]
    assert all(r["reselected"]["count"] == 0 for r in s.rounds)


def _h1_values(h1, values):
    h1.raw_variable("kernel").assign(np.asarray(values, "float32"))


def test_a_weight_pruned_in_round_1_re_enters_in_round_2_by_hand():
    model = make_model(keras.optimizers.SGD(0.0))
    s = scheduler(RESELECTING["feedback"](fraction=1.0), rounds=2, epochs=1, rewind=None)
    begin(s, model)
    s.on_epoch_begin(0)
    h1 = masked_layers(model)[0]
    k = np.random.default_rng(0).permutation(160).reshape(10, 16).astype("float32") + 1.0
    _h1_values(h1, k)
    s.on_epoch_begin(1)  # round 1's pruning step: the 48 smallest |w| go
    m1 = np.array(h1.kernel_mask)
    assert m1.sum() == 112 and k[m1 == 0].max() == 48.0
    assert s._reintroducer.record(1)["reselected"]["count"] == 0  # nothing pruned before
    x = tuple(np.argwhere(k == 1.0)[0])  # the weakest, pruned in round 1
    # in the pruned network it grew; the other pruned weights died out
    grown = np.where(m1 > 0, k, 0.0)
    grown[x] = -500.0
    _h1_values(h1, grown)
    s.on_epoch_begin(2)  # round 2: IMP keeps 78 of 112; x beats the weakest (83)
    m2 = np.array(h1.kernel_mask)
    assert m2[x] == 1 and m2.sum() == 78
    assert k[(m2 > 0) & (m1 > 0)].min() == 84.0  # 83 left in x's place
    assert s._reintroducer.record(2) == {"reselected": {"count": 1, "pruned_in": {"1": 1}}}


def test_scored_reselection_takes_the_top_k_scores_of_the_pruned_and_decays_scores():
    model = make_model(keras.optimizers.SGD(0.0))
    s = scheduler(
        RESELECTING["scored"](fraction=0.1, score_decay=0.5),
        rounds=2,
        epochs=1,
        rewind=None,
        layer_rates={},
    )
    begin(s, model)
    s.on_epoch_begin(0)
    h1 = masked_layers(model)[0]
    var = s._reintroducer.scores["h1/kernel"]
    rng = np.random.default_rng(1)
    first = rng.permutation(160).reshape(10, 16).astype("float32")
    var.assign(first)
    s.on_epoch_begin(1)  # by score: the 48 lowest scores go
    m1 = np.array(h1.kernel_mask)
    assert first[m1 == 0].max() == 47.0 and first[m1 > 0].min() == 48.0
    np.testing.assert_array_equal(np.array(var), first * 0.5)  # carried into round 2
    second = rng.permutation(160).reshape(10, 16).astype("float32")
    var.assign(second)
    s.on_epoch_begin(2)  # 34 of 112 go by score, then up to round(0.1 * 78) = 8 re-enter
    m2 = np.array(h1.kernel_mask)
    kept, pruned = m1 > 0, m1 == 0
    # by hand: the kept set's choice, the 8 best pruned against its 8 weakest
    order = np.sort(second[kept])
    base = kept & (second >= order[34])
    best = np.sort(second[pruned])[::-1][:8]
    weakest = np.sort(second[base])[:8]
    k = int(np.sum(best > weakest))
    assert k > 0
    expected = (base & (second > weakest[k - 1])) | (pruned & (second >= best[k - 1]))
    np.testing.assert_array_equal(m2 > 0, expected)
    assert m2.sum() == 78
    rec = s._reintroducer.record(2)["reselected"]
    assert rec == {"count": k, "pruned_in": {"1": k}}


def test_reselection_resumes_exactly_with_backup_and_restore(tmp_path):
    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 5:  # the end of round 1, just before round 2's pruning
                raise RuntimeError("pre-empted")

    def fit(crash):
        keras.utils.set_random_seed(3)
        model = make_model()
        s = scheduler(
            RESELECTING["scored"](fraction=1.0, score_decay=0.5),
            rounds=2,
            backup_dir=tmp_path / f"scheduler_{crash}",
            seed=0,
        )
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / f"backup_{crash}"))
        callbacks = [backup, s] + ([Crash()] if crash == "yes" else [])
        kwargs = dict(batch_size=32, epochs=s.total_epochs, verbose=0, shuffle=False)
        model.fit(X, Y, callbacks=callbacks, **kwargs)
        return model, s

    with pytest.raises(RuntimeError, match="pre-empted"):
        fit("yes")
    keras.utils.set_random_seed(3)
    model = make_model()
    s = scheduler(
        RESELECTING["scored"](fraction=1.0, score_decay=0.5),
        rounds=2,
        backup_dir=tmp_path / "scheduler_yes",
        seed=0,
    )
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup_yes"))
    model.fit(
        X, Y, batch_size=32, epochs=s.total_epochs, verbose=0, shuffle=False, callbacks=[backup, s]
    )
    ref_model, ref = fit("no")
    assert [r["reselected"] for r in s.rounds] == [r["reselected"] for r in ref.rounds]
    assert "1" in ref.rounds[2]["reselected"]["pruned_in"]  # the restored memory is used
    for a, b in zip(effective(model), effective(ref_model)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_scheduler_config_round_trip_with_reselection():
    s = scheduler(lth.DoublePruning("feedback", fraction=0.3, when="prune"), scope="global")
    again = lth.PruningScheduler.from_config(s.get_config())
    assert again.reintroduce.when == "prune"
    assert again.get_config() == s.get_config()
