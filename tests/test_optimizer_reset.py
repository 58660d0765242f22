"""Tests for `keras_lth.optimizer_reset`: the optimizer restarts after a pruning.

The optimizer may have trained before the scheduler sees it (a second
`fit`, a pretrained model, a resumed run), and not every optimizer variable
starts at zero: each one must come back to the value a fresh optimizer of
the same configuration starts with, the learning rate excepted.
"""

import re

import keras
import numpy as np
import pytest

import keras_lth as lth
from keras_lth.layers import MaskedDense, masked_layers
from keras_lth.optimizer_reset import OptimizerReset

pytestmark = pytest.mark.jax  # backend-agnostic: also run under KERAS_BACKEND=jax

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 8)).astype("float32")
Y = RNG.integers(0, 3, 64)


def make_model(optimizer, names=("h1", "h2", "out")):
    model = keras.Sequential(
        [
            keras.Input((8,)),
            MaskedDense(8, activation="relu", name=names[0]),
            MaskedDense(8, activation="relu", name=names[1]),
            MaskedDense(3, name=names[2]),
        ]
    )
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def begin(scheduler, model):
    scheduler.set_model(model)
    scheduler.set_params({"epochs": scheduler.total_epochs, "steps": 1, "verbose": 0})
    scheduler.on_train_begin()


def fresh_values(optimizer, model):
    """What the same optimizer starts with on these variables (built by hand)."""
    fresh = type(optimizer).from_config(optimizer.get_config())
    fresh.build(model.trainable_variables)
    return [keras.ops.convert_to_numpy(v) for v in fresh.variables]


OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adagrad": lambda: keras.optimizers.Adagrad(0.05, initial_accumulator_value=0.3),
    "rmsprop": lambda: keras.optimizers.RMSprop(1e-2, momentum=0.5),
    # an unnamed variable of its own, named `variable` here and `variable_1` in its copy
    "nadam": lambda: keras.optimizers.Nadam(1e-2),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_second_fit_resets_to_the_optimizers_own_initial_values(name):
    model = make_model(OPTIMIZERS[name]())
    model.fit(X, Y, epochs=2, batch_size=16, verbose=0)  # a first fit: iterations != 0
    opt = model.optimizer
    assert int(keras.ops.convert_to_numpy(opt.iterations)) == 8
    opt.learning_rate = 3e-3  # as ReduceLROnPlateau would
    s = lth.PruningScheduler(
        lth.IterativeSchedule(rounds=1, epochs_per_round=1, rate=0.5), rewind=None, verbose=0
    )
    begin(s, model)
    s.on_epoch_begin(0)
    for i in range(0, 64, 16):
        model.train_on_batch(X[i : i + 16], Y[i : i + 16])
    s.on_epoch_end(0, {"loss": 1.0})
    before = [keras.ops.convert_to_numpy(v) for v in opt.variables]
    s.on_epoch_begin(1)  # prunes, restarts the optimizer
    expected = fresh_values(opt, model)
    lr_vars = {id(opt.learning_rate)}
    changed = 0
    for var, old, want in zip(opt.variables, before, expected):
        got = keras.ops.convert_to_numpy(var)
        if id(var) in lr_vars:
            assert got == pytest.approx(3e-3)
            continue
        np.testing.assert_array_equal(got, want, err_msg=var.name)
        changed += not np.array_equal(old, want)
    assert changed >= 2  # the slots had really moved
    if name == "adagrad":  # not zeros: the accumulators restart at their initial value
        slots = [v for v in opt.variables if v.name.endswith("accumulator")]
        assert slots and all(np.all(keras.ops.convert_to_numpy(v) == 0.3) for v in slots)


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_second_fit_keeps_the_loss_scale_and_stays_finite(policy):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = make_model(keras.optimizers.Adam(1e-2))
        model.fit(X, Y, epochs=1, batch_size=16, verbose=0)  # iterations != 0
        s = lth.PruningScheduler(
            lth.IterativeSchedule(rounds=2, epochs_per_round=1, rate=0.5), verbose=0
        )
        scales = []

        class Scale(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                scale = getattr(self.model.optimizer, "dynamic_scale", None)
                if batch == 0 and scale is not None:
                    scales.append(float(keras.ops.convert_to_numpy(scale)))

        history = model.fit(
            X, Y, epochs=s.total_epochs, batch_size=16, verbose=0, callbacks=[s, Scale()]
        )
        assert np.all(np.isfinite(history.history["loss"]))
        for w in model.weights:
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(w))), w.path
        assert lth.density(model) == pytest.approx(0.25, abs=0.02)
        if policy == "mixed_float16":
            opt = model.optimizer
            assert isinstance(opt, keras.optimizers.LossScaleOptimizer)
            # every round starts from the initial scale, never from 0
            assert scales[1] == scales[2] == opt.initial_scale
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_slots_of_layers_h1_and_h1_kernel_stay_apart():
    # Keras names h1's kernel slot "..._h1_kernel_momentum" and h1_kernel's
    # "..._h1_kernel_kernel_momentum": a name prefix cannot tell them apart.
    model = make_model(keras.optimizers.SGD(0.1, momentum=0.9), names=("h1", "h1_kernel", "out"))
    model.fit(X, Y, epochs=1, batch_size=16, verbose=0)
    reset = OptimizerReset()
    reset.start(model)
    h1, h1k = masked_layers(model)[:2]
    assert h1.raw_variable("kernel").shape == h1k.raw_variable("kernel").shape == (8, 8)
    before = {v.name: keras.ops.convert_to_numpy(v) for v in model.optimizer.variables}
    where = np.zeros((8, 8), bool)
    where[:, :3] = True
    reset.reset_at(h1.raw_variable("kernel"), where)
    after = {v.name: keras.ops.convert_to_numpy(v) for v in model.optimizer.variables}
    (mine,) = [n for n in before if re.search(r"_h1_kernel_momentum$", n)]
    (other,) = [n for n in before if n.endswith("_h1_kernel_kernel_momentum")]
    assert np.all(after[mine][where] == 0) and np.array_equal(
        after[mine][~where], before[mine][~where]
    )
    assert np.abs(before[other]).sum() > 0
    np.testing.assert_array_equal(after[other], before[other])
    for n in before:
        if n != mine:
            np.testing.assert_array_equal(after[n], before[n], err_msg=n)


class Unlisted(keras.optimizers.SGD):
    """An optimizer whose configuration misses an argument that adds a slot."""

    def __init__(self, learning_rate=0.1, extra=False, **kwargs):
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.extra = extra

    def build(self, variables):
        super().build(variables)
        if self.extra:
            self._extra = [self.add_variable_from_reference(v, "extra") for v in variables]


def test_optimizer_that_does_not_round_trip_warns_and_resets_the_iterations():
    model = make_model(Unlisted(0.1, extra=True))
    model.fit(X, Y, epochs=1, batch_size=16, verbose=0)
    opt = model.optimizer
    for v in opt._extra:
        v.assign(np.ones(v.shape, "float32"))
    reset = OptimizerReset()
    reset.start(model)
    with pytest.warns(
        UserWarning, match=r"Cannot take the initial state of the optimizer `Unlisted`"
    ):
        reset.reset()
    assert int(keras.ops.convert_to_numpy(opt.iterations)) == 0
    assert all(np.all(keras.ops.convert_to_numpy(v) == 1) for v in opt._extra)  # kept
