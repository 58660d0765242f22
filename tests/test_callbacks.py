"""Tests for `keras_lth.callbacks.PruningScheduler`.

Most tests call the callback's hooks directly on a tiny model (three
`MaskedDense` layers, 10 -> 16 -> 8 -> 3) and stand in for training with one
optimizer step on random gradients per "epoch", which moves the weights, the
iteration count and the optimizer's slots. Short real `fit`s cover what only a
real training loop shows (logs, History, jit, steps_per_execution, tfmot
step semantics).
"""

import json
import os
import re
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import keras_lth as lth
from keras_lth import gradual, pruning
from keras_lth.callbacks import PruningScheduler
from keras_lth.layers import MaskedDense, kept_values, masked_layers
from keras_lth.schedules import IterativeSchedule, OneShotSchedule

NAMES = ("h1", "h2", "out")
pytestmark = pytest.mark.jax  # backend-agnostic: also run under KERAS_BACKEND=jax


def _data(n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(10, 3)) + rng.normal(size=(n, 3)), axis=1)
    return x, y


X, Y = _data()
VAL = _data(64, seed=1)
TEST = _data(64, seed=2)


def make_model(optimizer=None, extra=False, names=NAMES, **compile_kwargs):
    """10 -> 16 -> 8 -> 3 MLP; `extra` adds a plain Dense and a LayerNormalization."""
    a, b, c = names
    layers = [keras.Input((10,)), MaskedDense(16, activation="relu", name=a)]
    if extra:
        layers += [
            keras.layers.Dense(12, activation="relu", name="plain"),
            keras.layers.LayerNormalization(name="norm"),
        ]
    layers += [MaskedDense(8, activation="relu", name=b), MaskedDense(3, name=c)]
    model = keras.Sequential(layers)
    model.compile(
        optimizer if optimizer is not None else keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **compile_kwargs,
    )
    return model


def values(model):
    # (kept layers set their pruned values aside during a run)
    return kept_values(model, model.trainable_variables)


def masks(model):
    return {l.name: np.array(l.kernel_mask) for l in masked_layers(model)}


def kept(model):
    return {name: int(m.sum()) for name, m in masks(model).items()}


def begin(scheduler, model, epochs=None):
    scheduler.set_model(model)
    scheduler.set_params(
        {"epochs": scheduler.total_epochs if epochs is None else epochs, "steps": 1, "verbose": 0}
    )
    scheduler.on_train_begin()


def fake_step(model, rng):
    """One optimizer step on random gradients."""
    grads = [rng.normal(size=v.shape).astype("float32") for v in model.trainable_variables]
    model.optimizer.apply_gradients(zip(grads, model.trainable_variables))


def epoch(scheduler, model, e, rng, logs=None, train=True):
    scheduler.on_epoch_begin(e)
    if train:
        fake_step(model, rng)
    logs = {"loss": 1.0} if logs is None else dict(logs)
    scheduler.on_epoch_end(e, logs)
    return logs


def raw(layer):
    """The raw kernel variable of a masked layer (`layer.kernel` reads raw * mask)."""
    return layer.raw_variable("kernel")


def set_kernels(model, rng):
    """Hand-set random raw kernels (distinct magnitudes)."""
    for layer in masked_layers(model):
        raw(layer).assign(rng.normal(size=raw(layer).shape).astype("float32"))


def assert_pruned_by_magnitude(kernels, before, after):
    """Newly pruned |w| <= every kept |w| over the given layers together."""
    pruned = np.concatenate(
        [np.abs(k)[(b > 0) & (a == 0)] for k, b, a in zip(kernels, before, after)]
    )
    kept_ = np.concatenate([np.abs(k)[a > 0] for k, a in zip(kernels, after)])
    assert all(np.all(a <= b) for b, a in zip(before, after))  # subset
    if pruned.size and kept_.size:
        assert pruned.max() <= kept_.min()


# --------------------------------------------------------------------- #
# Round layout
# --------------------------------------------------------------------- #
def test_round_layout_without_late_rewinding():
    s = PruningScheduler(IterativeSchedule(rounds=3, epochs_per_round=2), verbose=0)
    assert s.total_epochs == 8
    assert [s.round_start(r) for r in range(4)] == [0, 2, 4, 6]
    assert [s.round_of(e) for e in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert s.round_of(11) == 3  # extra epochs belong to the last round


@pytest.mark.parametrize(
    "k, total, starts, round_of",
    [
        (1, 7, [0, 3, 5], [0, 0, 0, 1, 1, 2, 2]),
        (2, 5, [0, 3, 4], [0, 0, 0, 1, 2]),
    ],
)
def test_round_layout_with_late_rewinding(k, total, starts, round_of):
    s = PruningScheduler(IterativeSchedule(rounds=2, epochs_per_round=3), rewind=k, verbose=0)
    assert s.total_epochs == total
    assert [s.round_start(r) for r in range(3)] == starts
    assert [s.round_of(e) for e in range(total)] == round_of


# --------------------------------------------------------------------- #
# Rewinding
# --------------------------------------------------------------------- #
def test_rewind_init_restores_train_begin_values_of_all_variables():
    model = make_model(extra=True)
    s = PruningScheduler(IterativeSchedule(rounds=2, epochs_per_round=2, rate=0.5), verbose=0)
    rng = np.random.default_rng(0)
    begin(s, model)
    theta0 = values(model)
    assert len(theta0) == 10  # 3 masked layers + plain Dense (kernel, bias) + norm (gamma, beta)
    for e in (0, 1):
        epoch(s, model, e, rng)
    trained = values(model)
    assert all(not np.array_equal(t, v) for t, v in zip(trained, theta0))

    s.on_epoch_begin(2)
    assert lth.density(model) < 1.0
    for got, want in zip(values(model), theta0):
        np.testing.assert_array_equal(got, want)  # kept and pruned raw values alike
    s.on_epoch_end(2, {"loss": 1.0})
    epoch(s, model, 3, rng)
    s.on_epoch_begin(4)
    for got, want in zip(values(model), theta0):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("k", [1, 2])
def test_rewind_epoch_k_restores_values_after_epoch_k_of_round_0(k):
    model = make_model(extra=True)
    s = PruningScheduler(
        IterativeSchedule(rounds=2, epochs_per_round=3, rate=0.5), rewind=k, verbose=0
    )
    rng = np.random.default_rng(0)
    begin(s, model)
    theta0 = values(model)
    for e in range(3):
        epoch(s, model, e, rng)
        if e == k - 1:
            theta_k = values(model)  # after k epochs
    assert not np.array_equal(theta_k[0], theta0[0])
    assert not np.array_equal(theta_k[0], values(model)[0])
    for r in (1, 2):
        start = s.round_start(r)
        s.on_epoch_begin(start)
        for got, want in zip(values(model), theta_k):
            np.testing.assert_array_equal(got, want)
        s.on_epoch_end(start, {"loss": 1.0})
        for e in range(start + 1, start + 3 - k):
            epoch(s, model, e, rng)
    assert s.round_of(s.total_epochs - 1) == 2


def _reinit_run(seed, model_seed=1234):
    keras.utils.set_random_seed(model_seed)
    model = make_model(extra=True)
    s = PruningScheduler(
        IterativeSchedule(rounds=2, epochs_per_round=1, rate=0.5),
        rewind="reinit",
        seed=seed,
        verbose=0,
    )
    rng = np.random.default_rng(0)
    begin(s, model)
    theta0 = values(model)
    epoch(s, model, 0, rng)
    trained = values(model)
    s.on_epoch_begin(1)
    first = values(model)
    s.on_epoch_end(1, {"loss": 1.0})
    s.on_epoch_begin(2)
    second = values(model)
    names = [v.path.split("/")[-2] + "/" + v.name for v in model.trainable_variables]
    return names, theta0, trained, first, second


def test_rewind_reinit_draws_fresh_values_from_the_initializers():
    names, theta0, trained, first, second = _reinit_run(seed=3)
    for name, v0, vt, v1, v2 in zip(names, theta0, trained, first, second):
        if name.endswith("/kernel"):  # glorot_uniform kernels: fresh draws
            for other in (v0, vt, v1):
                assert np.mean(v2 == other) < 0.01, name
            assert np.mean(v1 == v0) < 0.01 and np.mean(v1 == vt) < 0.01, name
            limit = np.sqrt(6.0 / sum(v1.shape))
            for v in (v1, v2):
                assert np.abs(v).max() <= limit  # same family as θ0: U(-limit, limit)
                if v.size >= 100:
                    assert abs(v.std() / (limit / np.sqrt(3)) - 1) < 0.25, name
                    assert abs(v.mean()) < 0.2 * limit, name
        elif name.endswith("/bias"):  # zeros initializer
            np.testing.assert_array_equal(v1, np.zeros_like(v1))
        else:  # LayerNormalization: gamma and beta drawn again from ones and zeros, θ0 values
            assert name.startswith("norm/")
            np.testing.assert_array_equal(v1, v0)
            np.testing.assert_array_equal(v2, v0)

    # deterministic for a seed (whatever θ0 was), different for another seed
    _, _, _, again, _ = _reinit_run(seed=3, model_seed=99)
    _, _, _, other, _ = _reinit_run(seed=4)
    for name, v1, a, o in zip(names, first, again, other):
        np.testing.assert_array_equal(a, v1)
        if name.endswith("/kernel"):
            assert np.mean(o == v1) < 0.01


def test_rewind_none_keeps_trained_values():
    model = make_model(extra=True)
    s = PruningScheduler(IterativeSchedule(rounds=1, epochs_per_round=2), rewind=None, verbose=0)
    rng = np.random.default_rng(0)
    begin(s, model)
    for e in (0, 1):
        epoch(s, model, e, rng)
    trained = values(model)
    s.on_epoch_begin(2)
    assert lth.density(model) < 1.0
    for got, want in zip(values(model), trained):
        np.testing.assert_array_equal(got, want)


def _decay():
    return keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=1, decay_rate=0.5)


@pytest.mark.parametrize(
    "make_optimizer, rewind",
    [
        (lambda: keras.optimizers.Adam(1e-2), "init"),
        (lambda: keras.optimizers.SGD(0.1, momentum=0.9), None),
        (lambda: keras.optimizers.RMSprop(1e-2, momentum=0.5), "reinit"),
        (lambda: keras.optimizers.Adam(_decay()), 1),
    ],
    ids=["adam", "sgd_momentum", "rmsprop", "adam_lr_schedule"],
)
def test_reset_optimizer_keeps_learning_rate(make_optimizer, rewind):
    opt = make_optimizer()
    model = make_model(optimizer=opt)
    s = PruningScheduler(IterativeSchedule(rounds=1, epochs_per_round=2), rewind=rewind, verbose=0)
    rng = np.random.default_rng(0)
    begin(s, model)
    for e in (0, 1):
        epoch(s, model, e, rng)
    schedule = opt._learning_rate
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        lr_after = float(schedule(0))  # the schedule restarts with the round
    else:
        opt.learning_rate = 3e-3  # as ReduceLROnPlateau would
        lr_after = float(np.float32(3e-3))
    slots = [
        v for v in opt.variables if v is not opt.iterations and not v.path.endswith("learning_rate")
    ]
    assert len(slots) >= 6  # the slot variables exist (built before the first step)
    assert any(np.abs(np.array(v)).sum() > 0 for v in slots)
    assert int(opt.iterations) == 2

    s.on_epoch_begin(2)
    assert int(opt.iterations) == 0
    for v in slots:  # fresh slots: zeros for these optimizers
        np.testing.assert_array_equal(np.array(v), np.zeros(v.shape), err_msg=v.path)
    assert opt._learning_rate is schedule
    assert float(np.array(opt.learning_rate)) == pytest.approx(lr_after, rel=1e-7)


def _bn_model(optimizer=None):
    model = keras.Sequential(
        [
            keras.Input((10,)),
            MaskedDense(16, name="h1"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Activation("relu"),
            MaskedDense(3, name="out"),
        ]
    )
    model.compile(
        optimizer or keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def train_epoch(scheduler, model, e):
    """One real epoch by hand: BatchNormalization's statistics move too."""
    scheduler.on_epoch_begin(e)
    for i in range(0, 64, 16):
        model.train_on_batch(X[i : i + 16], Y[i : i + 16])
    scheduler.on_epoch_end(e, {"loss": 1.0})


@pytest.mark.parametrize("rewind", ["init", 1])
def test_rewinding_restores_batchnorm_moving_statistics(rewind):
    model = _bn_model()
    bn = model.get_layer("bn")
    s = PruningScheduler(
        IterativeSchedule(rounds=1, epochs_per_round=2, rate=0.5), rewind=rewind, verbose=0
    )
    begin(s, model)
    stats = lambda: [np.array(bn.moving_mean), np.array(bn.moving_variance)]  # noqa: E731
    start = stats()
    train_epoch(s, model, 0)
    after_one = stats()
    train_epoch(s, model, 1)
    assert not np.array_equal(stats()[0], after_one[0])
    s.on_epoch_begin(2)
    want = start if rewind == "init" else after_one
    for got, w in zip(stats(), want):
        np.testing.assert_array_equal(got, w)


def test_reinit_resets_batchnorm_statistics_to_their_initializers():
    model = _bn_model()
    bn = model.get_layer("bn")
    s = PruningScheduler(
        IterativeSchedule(rounds=1, epochs_per_round=1, rate=0.5),
        rewind="reinit",
        seed=1,
        verbose=0,
    )
    begin(s, model)
    train_epoch(s, model, 0)
    assert np.abs(np.array(bn.moving_mean)).sum() > 0
    s.on_epoch_begin(1)
    np.testing.assert_array_equal(np.array(bn.moving_mean), np.zeros(16))
    np.testing.assert_array_equal(np.array(bn.moving_variance), np.ones(16))
    np.testing.assert_array_equal(np.array(bn.gamma), np.ones(16))
    np.testing.assert_array_equal(np.array(bn.beta), np.zeros(16))


def _zoo():
    """A layer of every initializer name `"reinit"` must draw again."""
    tokens = keras.Input((4,), dtype="int32", name="tokens")
    images = keras.Input((6, 6, 2), name="images")
    e = lth.layers.MaskedEmbedding(20, 6, name="emb")(tokens)
    r = lth.layers.MaskedLSTM(5, name="lstm")(e)
    c = lth.layers.MaskedSeparableConv2D(3, 3, name="sep")(images)
    c = lth.layers.MaskedDepthwiseConv2D(2, name="dw")(c)
    c = keras.layers.BatchNormalization(name="bn")(c)
    c = keras.layers.Flatten()(c)
    out = MaskedDense(2, name="out", bias_initializer=keras.initializers.RandomNormal(0.0, 0.5))(
        keras.layers.Concatenate()([r, c])
    )
    model = keras.Model([tokens, images], out)
    model.compile("sgd", "mse")
    return model


def test_reinit_draws_every_initialized_variable_with_a_fresh_seed():
    def run(seed, model_seed=0):
        keras.utils.set_random_seed(model_seed)
        model = _zoo()
        s = PruningScheduler(
            IterativeSchedule(rounds=2, epochs_per_round=1, rate=0.5),
            rewind="reinit",
            seed=seed,
            verbose=0,
        )
        begin(s, model)

        def read():
            return {v.path: x for v, x in zip(model.weights, kept_values(model))}

        theta0 = read()
        epoch(s, model, 0, np.random.default_rng(0))
        s.on_epoch_begin(1)
        first = read()
        s.on_epoch_end(1, {"loss": 1.0})
        s.on_epoch_begin(2)
        second = read()
        return {v.path: v.path for v in model.weights}, theta0, first, second

    names, theta0, first, second = run(seed=3)
    drawn = [
        "emb/embeddings",
        "lstm/lstm_cell/kernel",
        "lstm/lstm_cell/recurrent_kernel",
        "sep/depthwise_kernel",
        "sep/pointwise_kernel",
        "dw/kernel",
        "out/kernel",
        "out/bias",
    ]
    by_name = {names[p]: p for p in names}
    for name in drawn:
        p = by_name[name]
        assert np.mean(first[p] == theta0[p]) < 0.05, name
        assert np.mean(second[p] == first[p]) < 0.05, name  # a fresh seed per round
    # constant initializers: zeros, ones, the LSTM's forget-gate bias of 1
    lstm_bias = first[by_name["lstm/lstm_cell/bias"]]
    np.testing.assert_array_equal(lstm_bias, np.r_[np.zeros(5), np.ones(5), np.zeros(10)])
    for name, value in (("bn/gamma", 1), ("bn/beta", 0), ("bn/moving_mean", 0)):
        np.testing.assert_array_equal(first[by_name[name]], value)
    # deterministic for a seed whatever the initial model, different for another
    _, _, again, _ = run(seed=3, model_seed=7)
    _, _, other, _ = run(seed=4)
    for name in drawn:
        p = by_name[name]
        np.testing.assert_array_equal(again[p], first[p])
        assert np.mean(other[p] == first[p]) < 0.05, name


# --------------------------------------------------------------------- #
# Batch hooks: only where needed, so Keras dispatches batches asynchronously
# --------------------------------------------------------------------- #
def _async_train(callback):
    """Keras's own decision (CallbackList checks `on_train_batch_end` when fit starts)."""
    return keras.callbacks.CallbackList([callback])._async_train


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(rewind=1, structure="neuron", scope="global"),
        dict(rewind="reinit", backup_dir="/tmp/unused"),
        dict(
            reintroduce=lth.DoublePruning("feedback", when="round")
        ),  # epoch events: no batch hook
    ],
)
def test_iterative_pruning_registers_no_batch_hook(kwargs):
    s = PruningScheduler(IterativeSchedule(rounds=1, epochs_per_round=2), verbose=0, **kwargs)
    assert "on_train_batch_end" not in vars(s)
    assert _async_train(s) is keras.callbacks.CallbackList([keras.callbacks.History()])._async_train


def test_step_events_register_a_batch_end_hook():
    steps = PruningScheduler(
        IterativeSchedule(rounds=1, epochs_per_round=2),
        reintroduce=lth.ScoredPruning(when="round", unit="step", every=5),
        verbose=0,
    )
    assert "on_train_batch_end" in vars(steps)
    assert _async_train(steps) is False


def test_gradual_pruning_keeps_batch_ends_asynchronous(tfmot):
    """Gradual pruning hooks batch beginnings, which Keras calls in any case."""
    gradual = PruningScheduler(tfmot.sparsity.keras.ConstantSparsity(0.5, 0), rewind=None)
    assert "on_train_batch_begin" in vars(gradual)
    assert "on_train_batch_end" not in vars(gradual)
    assert _async_train(gradual) is _async_train(keras.callbacks.History())


# --------------------------------------------------------------------- #
# Masks
# --------------------------------------------------------------------- #
def test_layer_scope_exact_counts_per_layer_per_round():
    model = make_model()
    schedule = IterativeSchedule(rounds=3, epochs_per_round=1, rate=0.2, layer_rates={"out": 0.1})
    s = PruningScheduler(schedule, rewind=None, verbose=0)
    rng = np.random.default_rng(1)
    begin(s, model)
    epoch(s, model, 0, None, train=False)
    counts = [kept(model)]
    for r in (1, 2, 3):
        set_kernels(model, rng)
        kernels = {l.name: np.array(raw(l)) for l in masked_layers(model)}
        before = masks(model)
        s.on_epoch_begin(r)
        after = masks(model)
        counts.append(kept(model))
        for name in NAMES:
            alive = int(before[name].sum())
            assert counts[-1][name] == alive - pruning.prune_count(schedule.rate_for(name), alive)
            assert_pruned_by_magnitude([kernels[name]], [before[name]], [after[name]])
        s.on_epoch_end(r, {"loss": 1.0})
    # hand-computed first round: 160 - 32, 128 - 26 (25.6), 24 - 2 (2.4)
    assert counts[1] == {"h1": 128, "h2": 102, "out": 22}
    assert [c["h1"] for c in counts] == [160, 128, 102, 82]


@pytest.mark.parametrize("layer_rates", [{"out": 0.1}, {}])
def test_global_scope_one_threshold_over_layers(layer_rates):
    model = make_model()
    schedule = IterativeSchedule(rounds=2, epochs_per_round=1, rate=0.3, layer_rates=layer_rates)
    s = PruningScheduler(schedule, scope="global", rewind=None, verbose=0)
    rng = np.random.default_rng(2)
    begin(s, model)
    epoch(s, model, 0, None, train=False)
    shared = [n for n in NAMES if n not in layer_rates]
    per_layer_differs = False
    for r in (1, 2):
        set_kernels(model, rng)
        # scale the layers differently so a global threshold is not a per-layer one
        h2 = raw(model.get_layer("h2"))
        h2.assign(np.array(h2) * 3.0)
        kernels = {l.name: np.array(raw(l)) for l in masked_layers(model)}
        before = masks(model)
        s.on_epoch_begin(r)
        after = masks(model)
        alive = sum(int(before[n].sum()) for n in shared)
        pruned = alive - sum(int(after[n].sum()) for n in shared)
        assert pruned == pruning.prune_count(0.3, alive)
        assert_pruned_by_magnitude(
            [kernels[n] for n in shared], [before[n] for n in shared], [after[n] for n in shared]
        )
        for name in layer_rates:
            alive_l = int(before[name].sum())
            assert int(after[name].sum()) == alive_l - pruning.prune_count(
                layer_rates[name], alive_l
            )
        lost = {n: 1 - after[n].sum() / before[n].sum() for n in shared}
        per_layer_differs |= abs(lost["h1"] - lost["h2"]) > 0.1
        s.on_epoch_end(r, {"loss": 1.0})
    assert per_layer_differs


def _neuron_kernels(model):
    """h1: neuron 0 is [1]*10 (l1 10, l2 3.2), neuron 1 is [5, 0, ...] (l1 5, l2 5), others [2]*10."""
    h1 = np.full((10, 16), 2.0, "float32")
    h1[:, 0] = 1.0
    h1[:, 1] = 0.0
    h1[0, 1] = 5.0
    raw(model.get_layer("h1")).assign(h1)
    h2 = np.tile(np.arange(1, 9, dtype="float32"), (16, 1))  # neuron j has norm ∝ j + 1
    raw(model.get_layer("h2")).assign(h2)


@pytest.mark.parametrize("norm, pruned_h1", [("l1", 1), ("l2", 0)])
def test_neuron_structure_prunes_lowest_norm_neurons(norm, pruned_h1):
    model = make_model()
    # 1/16 of 16 neurons is 1; of 8 neurons 0.5, rounded up to 1
    s = PruningScheduler(
        IterativeSchedule(rounds=1, epochs_per_round=1, rate=1 / 16),
        structure="neuron",
        norm=norm,
        rewind=None,
        verbose=0,
    )
    begin(s, model)
    _neuron_kernels(model)
    epoch(s, model, 0, None, train=False)
    s.on_epoch_begin(1)
    h1, h2, out = (model.get_layer(n) for n in NAMES)
    expected = np.ones(16, "float32")
    expected[pruned_h1] = 0
    np.testing.assert_array_equal(np.array(h1.kernel_mask), np.tile(expected, (10, 1)))
    np.testing.assert_array_equal(np.array(h1.bias_mask), expected)
    expected = np.ones(8, "float32")
    expected[0] = 0
    np.testing.assert_array_equal(np.array(h2.bias_mask), expected)
    np.testing.assert_array_equal(np.array(out.kernel_mask), np.ones((8, 3)))
    np.testing.assert_array_equal(np.array(out.bias_mask), np.ones(3))


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_neuron_structure_counts_and_bias_masks_over_rounds(scope):
    model = make_model()
    s = PruningScheduler(
        IterativeSchedule(rounds=3, epochs_per_round=1, rate=0.25),
        structure="neuron",
        norm="l2",
        scope=scope,
        rewind=None,
        verbose=0,
    )
    rng = np.random.default_rng(3)
    begin(s, model)
    epoch(s, model, 0, None, train=False)
    for r in (1, 2, 3):
        set_kernels(model, rng)
        alive = {n: pruning.alive_neurons(np.array(model.get_layer(n).kernel_mask)) for n in NAMES}
        s.on_epoch_begin(r)
        now = {n: pruning.alive_neurons(np.array(model.get_layer(n).kernel_mask)) for n in NAMES}
        if scope == "layer":
            for n in ("h1", "h2"):
                assert now[n].sum() == alive[n].sum() - pruning.prune_count(
                    0.25, int(alive[n].sum())
                )
        else:
            total = int(alive["h1"].sum() + alive["h2"].sum())
            assert now["h1"].sum() + now["h2"].sum() == total - pruning.prune_count(0.25, total)
        for n in NAMES:
            layer = model.get_layer(n)
            kmask = np.array(layer.kernel_mask)
            assert np.all((kmask == 0).all(axis=0) | (kmask == 1).all(axis=0))  # whole columns
            np.testing.assert_array_equal(np.array(layer.bias_mask), now[n].astype("float32"))
            assert not np.any(now[n] & ~alive[n])  # pruned stays pruned
        assert now["out"].all()  # the output layer's neurons are never pruned
        s.on_epoch_end(r, {"loss": 1.0})
    assert kept(model)["h1"] < 160 // 2


def test_fit_masks_monotone_records_history_and_frozen_pruned_weights():
    model = make_model()
    s = PruningScheduler(
        IterativeSchedule(rounds=2, epochs_per_round=2, rate=0.3, layer_rates={"out": 0.1}),
        test_data=TEST,
        verbose=0,
    )

    class Spy(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.theta0 = {l.name: np.array(raw(l)) for l in masked_layers(self.model)}
            self.masks = []

        def on_epoch_end(self, epoch, logs=None):
            self.masks.append(masks(self.model))

    spy = Spy()
    history = model.fit(
        X,
        Y,
        validation_data=VAL,
        batch_size=32,
        epochs=s.total_epochs,
        shuffle=False,
        callbacks=[s, spy],
        verbose=0,
    )
    h = history.history
    total = s.total_epochs
    assert h["round"] == [s.round_of(e) for e in range(total)] == [0, 0, 1, 1, 2, 2]
    expected_density = [sum(m[n].sum() for n in NAMES) / (160 + 128 + 24) for m in spy.masks]
    np.testing.assert_allclose(h["density"], expected_density)
    assert h["density"][0] == 1.0 and h["density"][2] < 1.0 and h["density"][4] < h["density"][2]

    # masks only shrink, and only at a round's first epoch
    for e in range(1, total):
        for n in NAMES:
            prev, cur = spy.masks[e - 1][n], spy.masks[e][n]
            assert np.all(cur <= prev)
            assert (cur.sum() < prev.sum()) == (e in (2, 4))

    # pruned weights: no gradient, fresh optimizer slots and rewinding to θ0
    # leave their raw values at θ0; the layer computes with them zeroed
    for layer in masked_layers(model):
        pruned = np.array(layer.kernel_mask) == 0
        assert pruned.any()
        np.testing.assert_array_equal(np.array(raw(layer))[pruned], spy.theta0[layer.name][pruned])
    a = X[:5]
    for layer in masked_layers(model):
        kernel, bias = layer.effective_weights()
        a = a @ kernel + bias
        if layer.name != "out":
            a = np.maximum(a, 0)
    np.testing.assert_allclose(model.predict(X[:5], verbose=0), a, rtol=1e-5, atol=1e-5)

    # round records
    assert [r["round"] for r in s.rounds] == [0, 1, 2]
    for rec in s.rounds:
        r = rec["round"]
        assert set(rec) == {
            "round",
            "density",
            "layer_density",
            "epochs",
            "final",
            "best",
            "early_stop_epoch",
            "test",
        }
        first, last = s.round_start(r), s.round_start(r) + 1
        assert rec["epochs"] == 2
        assert rec["density"] == pytest.approx(h["density"][last])
        m = spy.masks[last]
        assert rec["layer_density"] == pytest.approx({n: m[n].mean() for n in NAMES})
        metrics = [k for k in h if k not in ("density", "round")]
        assert sorted(rec["final"]) == sorted(metrics)
        for k in metrics:
            assert rec["final"][k] == pytest.approx(h[k][last])
        best = first + int(np.argmin(h["val_loss"][first : last + 1]))
        assert rec["early_stop_epoch"] == best - first + 1
        for k in metrics:
            assert rec["best"][k] == pytest.approx(h[k][best])
        assert sorted(rec["test"]) == ["accuracy", "loss"]
    final_test = model.evaluate(*TEST, verbose=0, return_dict=True)
    assert s.rounds[-1]["test"] == pytest.approx(final_test)
    assert s.rounds[0]["test"] != pytest.approx(final_test)


def test_early_stop_epoch_and_best_from_val_loss():
    model = make_model()
    s = PruningScheduler(IterativeSchedule(rounds=1, epochs_per_round=3), rewind=None, verbose=0)
    begin(s, model)
    val_loss = [3.0, 1.0, 2.0, 0.5, 0.7, 0.4]
    for e, v in enumerate(val_loss):
        epoch(
            s,
            model,
            e,
            None,
            {"loss": 10.0 - e, "val_loss": v, "val_accuracy": e / 10},
            train=False,
        )
    s.on_train_end({})
    r0, r1 = s.rounds
    assert r0["early_stop_epoch"] == 2 and r1["early_stop_epoch"] == 3  # 1-based, within the round
    assert r0["best"] == {"loss": 9.0, "val_loss": 1.0, "val_accuracy": 0.1}
    assert r0["final"] == {"loss": 8.0, "val_loss": 2.0, "val_accuracy": 0.2}
    assert r1["best"] == r1["final"] == {"loss": 5.0, "val_loss": 0.4, "val_accuracy": 0.5}

    # without validation data, the training loss decides
    s = PruningScheduler(IterativeSchedule(rounds=1, epochs_per_round=3), rewind=None, verbose=0)
    begin(s, model)
    for e, v in enumerate([2.0, 1.0, 3.0, 1.0, 1.0, 1.0]):
        epoch(s, model, e, None, {"loss": v}, train=False)
    s.on_train_end({})
    assert [r["early_stop_epoch"] for r in s.rounds] == [2, 1]


def test_verbose_prints_one_line_per_round(capsys):
    for verbose in (1, 0):
        model = make_model()
        s = PruningScheduler(
            IterativeSchedule(rounds=1, epochs_per_round=1, rate=0.5),
            test_data=TEST,
            verbose=verbose,
        )
        begin(s, model)
        epoch(s, model, 0, None, {"loss": 1.0, "val_loss": 0.75}, train=False)
        epoch(s, model, 1, None, {"loss": 1.0, "val_loss": 0.5}, train=False)
        s.on_train_end({})
        out = capsys.readouterr().out
        if verbose:
            lines = out.strip().splitlines()
            assert len(lines) == 2
            test = s.rounds[0]["test"]
            assert lines[0] == (
                "[keras-lth] round 0: density=1.0000 epochs=1 val_loss=0.7500 "
                f"test_accuracy={test['accuracy']:.4f} test_loss={test['loss']:.4f}"
            )
            d = s.rounds[1]["density"]
            assert lines[1].startswith(
                f"[keras-lth] round 1: density={d:.4f} epochs=1 val_loss=0.5000"
            )
        else:
            assert out == ""


# --------------------------------------------------------------------- #
# Arguments and errors
# --------------------------------------------------------------------- #
S = IterativeSchedule(rounds=2, epochs_per_round=3)


@pytest.mark.parametrize(
    "kwargs, received",
    [
        (dict(schedule="iterative"), "schedule='iterative'"),
        (dict(schedule=None), "schedule=None"),
        (dict(schedule=S, rewind="late"), "rewind='late'"),
        (dict(schedule=S, rewind=True), "rewind=True"),
        (dict(schedule=S, rewind=1.5), "rewind=1.5"),
        (dict(schedule=S, rewind=-1), "rewind=-1"),
        (dict(schedule=S, rewind=3), "rewind=3"),
        (dict(schedule=S, scope="all"), "scope='all'"),
        (dict(schedule=S, structure="filter"), "structure='filter'"),
        (dict(schedule=S, norm="linf"), "norm='linf'"),
        (dict(schedule=S, seed="7"), "seed='7'"),
    ],
)
def test_invalid_arguments_raise_naming_argument_and_value(kwargs, received):
    with pytest.raises(ValueError, match=re.escape(f"Received: {received}")):
        PruningScheduler(**kwargs)


@pytest.mark.parametrize(
    "kwargs, received",
    [
        (dict(rate=0.0), "rate=0.0"),
        (dict(rate=1.0), "rate=1.0"),
        (dict(rate=1.5), "rate=1.5"),
        (dict(rate=-0.2), "rate=-0.2"),
        (dict(layer_rates={"out": 1.0}), "layer_rates['out']=1.0"),
        (dict(target_density=1.2), "target_density=1.2"),
    ],
)
def test_rate_outside_unit_interval_rejected_by_the_schedule(kwargs, received):
    with pytest.raises(ValueError, match=re.escape(f"Received: {received}")):
        IterativeSchedule(rounds=2, epochs_per_round=1, **kwargs)


def test_model_without_masked_dense_raises_with_model_name():
    plain = keras.Sequential([keras.Input((10,)), keras.layers.Dense(3)], name="plain_net")
    s = PruningScheduler(IterativeSchedule(rounds=1, epochs_per_round=1), verbose=0)
    with pytest.raises(ValueError, match="model 'plain_net' has none"):
        begin(s, plain)
    nested = keras.Sequential(
        [
            keras.Input((10,)),
            keras.Sequential([keras.layers.Dense(4)], name="inner"),
            keras.layers.Dense(3),
        ],
        name="outer_net",
    )
    with pytest.raises(ValueError, match="model 'outer_net' has none"):
        begin(s, nested)


def test_masked_dense_in_nested_model_is_found_and_pruned():
    inner = keras.Sequential(
        [MaskedDense(16, activation="relu", name="h1"), MaskedDense(8, name="h2")], name="inner"
    )
    model = keras.Sequential([keras.Input((10,)), inner, MaskedDense(3, name="out")])
    model.compile("adam", "mse")
    s = PruningScheduler(IterativeSchedule(rounds=1, epochs_per_round=1, rate=0.5), verbose=0)
    begin(s, model)
    epoch(s, model, 0, None, train=False)
    s.on_epoch_begin(1)
    assert kept(model) == {"h1": 80, "h2": 64, "out": 12}


def test_duplicate_masked_layer_names_raise():
    model = keras.Sequential(
        [
            keras.Input((10,)),
            keras.Sequential([MaskedDense(8, name="d")], name="a"),
            keras.Sequential([MaskedDense(3, name="d")], name="b"),
        ]
    )
    s = PruningScheduler(IterativeSchedule(rounds=1, epochs_per_round=1), verbose=0)
    with pytest.raises(
        ValueError, match=re.escape("unique masked layer names. Received: ['d', 'd']")
    ):
        begin(s, model)


def test_unknown_layer_rates_names_raise():
    s = PruningScheduler(
        IterativeSchedule(rounds=1, epochs_per_round=1, layer_rates={"output": 0.1}), verbose=0
    )
    with pytest.raises(ValueError, match=re.escape("Received: ['output']")):
        begin(s, make_model())


def test_warns_when_fit_epochs_differ_from_total_epochs():
    s = PruningScheduler(IterativeSchedule(rounds=1, epochs_per_round=2), verbose=0)
    with pytest.warns(
        UserWarning,
        match=re.escape("`fit(epochs=3)` does not match the schedule's `total_epochs=4`"),
    ):
        make_model().fit(X, Y, epochs=3, batch_size=128, callbacks=[s], verbose=0)
    assert [r["epochs"] for r in s.rounds] == [2, 1]  # the last round was cut short
    with pytest.warns(UserWarning, match="the last round will train longer"):
        begin(s, make_model(), epochs=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        begin(s, make_model(), epochs=4)


def test_resuming_without_a_backup_warns(tmp_path):
    s = PruningScheduler(IterativeSchedule(rounds=1, epochs_per_round=2), verbose=0)
    begin(s, make_model())
    with pytest.warns(UserWarning, match=r"starts at epoch 3, but the scheduler has no backup"):
        s.on_epoch_begin(3)
    s = PruningScheduler(
        IterativeSchedule(rounds=1, epochs_per_round=2), backup_dir=tmp_path, verbose=0
    )
    begin(s, make_model())
    with pytest.warns(UserWarning, match=r"has no backup of epoch 2 in .*\(it has epochs \[\]\)"):
        s.on_epoch_begin(3)


def test_one_instance_reused_on_two_models_gives_fresh_records():
    s = PruningScheduler(IterativeSchedule(rounds=1, epochs_per_round=1, rate=0.5), verbose=0)
    a = make_model(names=("a1", "a2", "a3"))
    a.fit(X, Y, epochs=s.total_epochs, batch_size=64, callbacks=[s], verbose=0)
    first = list(s.rounds)
    b = make_model(names=("b1", "b2", "b3"))
    b.fit(X, Y, epochs=s.total_epochs, batch_size=64, callbacks=[s], verbose=0)
    assert [r["round"] for r in first] == [r["round"] for r in s.rounds] == [0, 1]
    assert sorted(first[1]["layer_density"]) == ["a1", "a2", "a3"]
    assert sorted(s.rounds[1]["layer_density"]) == ["b1", "b2", "b3"]
    assert s.rounds[0]["density"] == 1.0
    assert lth.density(a) == lth.density(b) == pytest.approx(s.rounds[1]["density"])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(
            schedule=IterativeSchedule(
                rounds=3, epochs_per_round=4, rate=0.25, layer_rates={"out": 0.1}
            )
        ),
        dict(
            schedule=IterativeSchedule(rounds=2, epochs_per_round=4, target_density=0.3),
            rewind=2,
            scope="global",
        ),
        dict(
            schedule=OneShotSchedule(epochs_per_round=2),
            rewind="reinit",
            seed=5,
            structure="neuron",
            norm="l2",
            verbose=0,
        ),
        dict(
            schedule=IterativeSchedule(rounds=1, epochs_per_round=1),
            rewind=None,
            backup_dir="/tmp/lth",
        ),
    ],
)
def test_config_round_trip(kwargs):
    s = PruningScheduler(**kwargs)
    config = keras.saving.serialize_keras_object(s)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is PruningScheduler
    assert restored.get_config() == s.get_config()
    assert type(restored.schedule) is type(s.schedule)
    assert restored.schedule.get_config() == s.schedule.get_config()
    assert restored.total_epochs == s.total_epochs


# --------------------------------------------------------------------- #
# jit_compile and steps_per_execution
# --------------------------------------------------------------------- #
def _fit_masks(**compile_kwargs):
    keras.utils.set_random_seed(42)
    model = make_model(**compile_kwargs)
    s = PruningScheduler(IterativeSchedule(rounds=2, epochs_per_round=1, rate=0.4), verbose=0)
    model.fit(X, Y, batch_size=32, epochs=s.total_epochs, shuffle=False, callbacks=[s], verbose=0)
    return masks(model), [r["density"] for r in s.rounds]


def test_jit_compile_and_steps_per_execution_give_the_plain_masks():
    plain, densities = _fit_masks(jit_compile=False)
    assert densities[-1] < 0.5
    for kwargs in (dict(jit_compile=True), dict(steps_per_execution=4)):
        got, got_densities = _fit_masks(**kwargs)
        assert got_densities == densities
        for n in NAMES:
            np.testing.assert_array_equal(got[n], plain[n], err_msg=str(kwargs))


# --------------------------------------------------------------------- #
# tfmot schedules (gradual pruning)
# --------------------------------------------------------------------- #
def _tfmot_kept(size, sparsity):
    """Weights tfmot's `prune_low_magnitude` keeps at `sparsity` (see test_pruning)."""
    return pruning.gradual_kept_count(size, sparsity)


def _expected_kept_per_step(schedule, size, steps):
    """Kept count in force during each 0-based training step, tfmot's way.

    tfmot counts steps from 1: during the training step with 0-based index
    `s` its pruning step is `s + 1`, and the mask update for that step runs
    before the step's forward pass (checked against tfmot 0.8's
    `prune_low_magnitude` on tf_keras).
    """
    out, current = [], size
    for s in range(steps):
        should, sparsity = schedule(np.int64(s + 1))
        if bool(np.array(should)):
            current = min(current, _tfmot_kept(size, np.asarray(sparsity)[()]))
        out.append(current)
    return out


def _record_gradual(schedule, epochs=2):
    model = make_model()
    s = PruningScheduler(schedule, rewind=None, verbose=0)

    class Spy(keras.callbacks.Callback):
        seen = []

        def on_train_batch_begin(self, batch, logs=None):
            self.seen.append((int(self.model.optimizer.iterations), kept(self.model)))

    spy = Spy()
    model.fit(X, Y, batch_size=32, epochs=epochs, shuffle=False, callbacks=[s, spy], verbose=0)
    return model, s, spy.seen


@pytest.mark.parametrize("which", ["constant", "polynomial"])
def test_tfmot_schedules_follow_tfmot_step_semantics(tfmot, which):
    sparsity = tfmot.sparsity.keras
    if which == "constant":
        schedule = sparsity.ConstantSparsity(0.6, begin_step=3, end_step=12, frequency=4)
    else:
        schedule = sparsity.PolynomialDecay(0.1, 0.85, begin_step=2, end_step=11, frequency=3)
    model, s, seen = _record_gradual(schedule)
    steps = len(seen)
    assert steps == 16 and [it for it, _ in seen] == list(range(16))
    sizes = {"h1": 160, "h2": 128, "out": 24}
    for name, size in sizes.items():
        expected = _expected_kept_per_step(schedule, size, steps)
        assert [k[name] for _, k in seen] == expected, name
        # the mask changes only before steps the schedule prunes at
        for step in range(1, steps):
            if expected[step] != expected[step - 1]:
                assert bool(np.array(schedule(np.int64(step + 1))[0]))
    assert len({tuple(k.values()) for _, k in seen}) > 1
    # once past end_step nothing changes; the record has the final density
    assert [r["round"] for r in s.rounds] == [0]
    assert s.rounds[0]["density"] == pytest.approx(lth.density(model))
    assert s.rounds[0]["epochs"] == 2


SCHEDULE_CASES = [
    ("constant", dict(target_sparsity=0.5, begin_step=0, end_step=-1, frequency=1)),
    ("constant", dict(target_sparsity=0.5, begin_step=0, end_step=-1, frequency=100)),
    ("constant", dict(target_sparsity=0.6, begin_step=3, end_step=12, frequency=4)),
    ("constant", dict(target_sparsity=0.3, begin_step=7, end_step=7, frequency=5)),
    (
        "polynomial",
        dict(initial_sparsity=0.1, final_sparsity=0.85, begin_step=2, end_step=11, frequency=3),
    ),
    (
        "polynomial",
        dict(initial_sparsity=0.0, final_sparsity=0.9, begin_step=0, end_step=40, frequency=7),
    ),
]


def _tfmot_schedule(tfmot, which, kwargs):
    cls = {"constant": "ConstantSparsity", "polynomial": "PolynomialDecay"}[which]
    return getattr(tfmot.sparsity.keras, cls)(**kwargs)


@pytest.mark.parametrize("which, kwargs", SCHEDULE_CASES)
def test_pruning_steps_by_arithmetic_are_the_schedules_own(tfmot, which, kwargs):
    """The host arithmetic says `should_prune` exactly where tfmot's schedule does.

    It stands in for `PruningSchedule._should_prune_in_step`: this test fails
    if a tfmot release changes when its schedules prune.
    """
    schedule = _tfmot_schedule(tfmot, which, kwargs)
    steps = gradual.pruning_steps(schedule)
    assert steps == (kwargs["begin_step"], kwargs["end_step"], kwargs["frequency"])
    theirs = [bool(np.array(schedule(np.int64(n))[0])) for n in range(0, 60)]
    ours = [gradual.last_pruning_step(n, n, *steps) == n for n in range(0, 60)]
    assert ours == theirs
    # the last pruning step of every window [lo, hi]
    due = [n for n in range(60) if theirs[n]]
    for lo in range(0, 60, 5):
        for hi in range(lo, 60, 3):
            inside = [n for n in due if lo <= n <= hi]
            assert gradual.last_pruning_step(lo, hi, *steps) == (inside[-1] if inside else None)


def test_last_pruning_step_by_hand():
    assert gradual.last_pruning_step(1, 10, 0, -1, 4) == 8
    assert gradual.last_pruning_step(1, 7, 0, -1, 4) == 4
    assert gradual.last_pruning_step(5, 7, 0, -1, 4) is None
    assert gradual.last_pruning_step(1, 100, 3, 12, 4) == 11  # end_step caps it
    assert gradual.last_pruning_step(1, 2, 3, 12, 4) is None  # before begin_step
    assert gradual.last_pruning_step(13, 20, 3, 12, 4) is None  # after end_step


def test_user_schedules_are_evaluated_at_every_step(tfmot):
    class Subclass(tfmot.sparsity.keras.ConstantSparsity):
        pass

    assert gradual.pruning_steps(Subclass(0.5, 0)) is None  # may override __call__


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_tfmot_schedule_is_called_only_at_its_pruning_steps(
    tfmot, monkeypatch, steps_per_execution
):
    cls = tfmot.sparsity.keras.ConstantSparsity
    calls = []
    original = cls.__call__

    def counting(self, step):
        calls.append(int(step))
        return original(self, step)

    monkeypatch.setattr(cls, "__call__", counting)
    schedule = cls(0.5, begin_step=2, end_step=13, frequency=5)
    model = make_model(steps_per_execution=steps_per_execution)
    s = PruningScheduler(schedule, rewind=None, verbose=0)
    model.fit(X, Y, batch_size=32, epochs=2, shuffle=False, callbacks=[s], verbose=0)
    # 16 steps, pruning at steps 2, 7 and 12; with 3 steps per execution the
    # executions start before steps 1, 4, 7 and 9, 12, 15: the same calls
    assert calls == [2, 7, 12]
    assert kept(model)["h1"] == 80


def test_tfmot_user_subclass_schedule(tfmot):
    class EveryOtherStep(tfmot.sparsity.keras.PruningSchedule):
        def __call__(self, step):
            return int(step) % 2 == 0, min(0.05 * int(step), 0.7)

        def get_config(self):
            return {}

    schedule = EveryOtherStep()
    _, _, seen = _record_gradual(schedule, epochs=1)
    for name, size in {"h1": 160, "h2": 128, "out": 24}.items():
        assert [k[name] for _, k in seen] == _expected_kept_per_step(schedule, size, len(seen))
    assert seen[-1][1]["h1"] < seen[1][1]["h1"] < 160


def test_tfmot_schedule_arguments(tfmot):
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0)
    for kwargs, received in (
        (dict(scope="global"), "scope='global'"),
        (dict(structure="neuron"), "structure='neuron'"),
    ):
        with pytest.raises(ValueError, match=re.escape(received)):
            PruningScheduler(schedule, **kwargs)
    with pytest.warns(UserWarning, match="ignored with a tfmot schedule"):
        PruningScheduler(schedule, rewind="reinit")
    s = PruningScheduler(schedule, rewind=None)
    assert s.total_epochs is None
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(s))
    assert type(restored.schedule) is type(schedule)
    assert restored.schedule.get_config() == schedule.get_config()


TFMOT_MASKS = os.path.join(os.path.dirname(__file__), "scripts", "tfmot_masks.py")


def _tfmot_masks(cases):
    """tfmot's own masks for `cases`, computed in a `TF_USE_LEGACY_KERAS=1` child."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, TFMOT_MASKS],
        input=json.dumps(cases),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [np.array(m) for m in json.loads(proc.stdout.strip().splitlines()[-1])]


def test_gradual_masks_are_tfmots_own_masks(tfmot):
    rng = np.random.default_rng(0)
    cases = []
    # tiny layers, and sizes whose kept count is an exact half (ties of the rounding)
    for size, sparsity in [(1, 0.9), (2, 0.75), (3, 0.5), (24, 0.99), (7, 0.5), (5, 0.5)]:
        cases.append((size, sparsity))
    cases += [(10, 0.25), (6, 0.25), (18, 0.25), (10, 0.85), (25, 0.42), (50, 0.41), (50, 0.59)]
    cases += [(int(n), float(s)) for n, s in zip(rng.integers(1, 200, 25), rng.random(25) * 0.99)]
    payload, ours = [], []
    for size, sparsity in cases:
        # distinct magnitudes: no ties in |w| at the threshold
        w = (rng.permutation(size) + 1.0) * rng.choice([-1.0, 1.0], size)
        payload.append({"weights": w.tolist(), "shape": [size], "sparsity": sparsity})
        ours.append(pruning.sparsity_mask(w, np.ones(size, "float32"), np.float32(sparsity)))
    # equal magnitudes: tfmot keeps every weight equal to its threshold
    payload.append({"weights": [0.5] * 10, "shape": [10], "sparsity": 0.5})
    theirs = _tfmot_masks(payload)
    for (size, sparsity), mine, tf_mask in zip(cases, ours, theirs):
        np.testing.assert_array_equal(mine, tf_mask, err_msg=f"size={size} sparsity={sparsity}")
    ties = pruning.sparsity_mask(np.full(10, 0.5), np.ones(10, "float32"), np.float32(0.5))
    assert int(ties.sum()) == 5 and int(theirs[-1].sum()) == 10  # the documented difference


def test_gradual_pruning_never_empties_a_tiny_layer(tfmot):
    model = make_model()  # "out" has 8 x 3 = 24 weights
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.99, begin_step=1, frequency=1)
    s = PruningScheduler(schedule, rewind=None, verbose=0)
    model.fit(X[:64], Y[:64], batch_size=32, epochs=1, callbacks=[s], verbose=0)
    # tfmot keeps max(1, round(n * 0.01)): 2 of 160, 1 of 128, 1 of 24
    assert kept(model) == {"h1": 2, "h2": 1, "out": 1}
