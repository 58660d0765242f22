"""How zeroed layers hold their zeros during a `PruningScheduler` run (`keras_lth.zeroing`).

The invariants: during a run with one of Keras's elementwise optimizers the
zeroed layers have no zeroing constraint (their masked gradients and the
scheduler's slot resets keep the zeros), every raw value under a 0 mask is
an exact zero at every step, the kept weights train exactly as a kept
layer's do, and after the run the constraint is back. With any other
optimizer the constraint stays.
"""

import keras
import numpy as np
import pytest
from test_pruned_values import _assert_zero_under_masks

import keras_lth as lth
from keras_lth.layers import MaskedDense, _ZeroPruned, masked_layers
from keras_lth.zeroing import HOLDING_OPTIMIZERS, holds_zeros

N_IN, N_OUT = 12, 4
rng = np.random.default_rng(0)
X = rng.normal(size=(96, N_IN)).astype("float32")
Y = np.argmax(X @ rng.normal(size=(N_IN, N_OUT)), axis=1).astype("int32")


class AdamSubclass(keras.optimizers.Adam):
    pass


OPTIMIZERS = {
    "SGD": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
    "Adam": lambda: keras.optimizers.Adam(1e-2, amsgrad=True),
    "AdamW": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.05),
    "Adamax": lambda: keras.optimizers.Adamax(1e-2),
    "Nadam": lambda: keras.optimizers.Nadam(1e-2),
    "RMSprop": lambda: keras.optimizers.RMSprop(1e-2, momentum=0.5, centered=True),
    "Adagrad": lambda: keras.optimizers.Adagrad(0.1),
    "Adadelta": lambda: keras.optimizers.Adadelta(1.0),
    "Adafactor": lambda: keras.optimizers.Adafactor(1e-2),
    "Ftrl": lambda: keras.optimizers.Ftrl(0.1, l1_regularization_strength=0.01),
    "Lion": lambda: keras.optimizers.Lion(1e-3),
    "Lamb": lambda: keras.optimizers.Lamb(1e-2),
}
# Their updates read a norm or mean of the whole variable, which holds the
# pruned weights' old values in a kept layer and zeros in a zeroed one.
WHOLE_VARIABLE_STATISTICS = {"Adafactor", "Lamb"}


def _mlp(pruned_values, optimizer):
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((N_IN,)),
            MaskedDense(16, activation="relu", name="h1", pruned_values=pruned_values),
            MaskedDense(N_OUT, name="out", pruned_values=pruned_values),
        ]
    )
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _zero_under_masks(model):
    try:
        _assert_zero_under_masks(model)
    except AssertionError:
        return False
    return True


def _constrained(model):
    return [
        isinstance(w.variable.constraint, _ZeroPruned)
        for layer in masked_layers(model)
        for w in layer._all_weights()
    ]


class _Watch(keras.callbacks.Callback):
    """Records, at every step, whether the zeros hold and which constraints are installed."""

    def __init__(self):
        super().__init__()
        self.zeros, self.constrained = [], set()

    def on_train_batch_end(self, batch, logs=None):
        self.zeros.append(_zero_under_masks(self.model))
        self.constrained.update(_constrained(self.model))


def _gradual():
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.3, final_sparsity=0.8, begin_step=3, end_step=15, frequency=3
    )


def _fit(model, schedule, epochs, **kwargs):
    watch = _Watch()
    scheduler = lth.PruningScheduler(schedule, verbose=0, **kwargs)
    model.fit(
        X, Y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=[scheduler, watch]
    )
    return watch


def test_holds_zeros_knows_keras_elementwise_optimizers_only():
    for name in HOLDING_OPTIMIZERS:
        assert holds_zeros(OPTIMIZERS[name]()), name
    assert holds_zeros(keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam()))
    assert not holds_zeros(keras.optimizers.Adam(use_ema=True))  # writes averages back
    assert not holds_zeros(AdamSubclass())  # its update may differ
    assert not holds_zeros(keras.optimizers.Muon())  # orthogonalises whole matrices
    assert not holds_zeros(keras.optimizers.LossScaleOptimizer(keras.optimizers.Muon()))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_gradual_pruning_holds_zeros_without_the_constraint(tfmot, name):
    """Masks change mid-run without an optimizer restart: the slot resets keep the zeros."""
    zeroed = _mlp("zeroed", OPTIMIZERS[name]())
    watch = _fit(zeroed, _gradual(), epochs=3, rewind=None)
    assert lth.density(zeroed) == pytest.approx(0.2, abs=0.03)
    assert watch.zeros and all(watch.zeros), name
    assert watch.constrained == {False}  # no zeroing constraint during the run
    assert all(_constrained(zeroed))  # and back after it
    assert zeroed.train_function is None  # the next fit traces the constraint
    if name in WHOLE_VARIABLE_STATISTICS:
        return
    kept = _mlp("kept", OPTIMIZERS[name]())
    _fit(kept, _gradual(), epochs=3, rewind=None)
    for a, b in zip(masked_layers(kept), masked_layers(zeroed)):
        for u, v in zip(a.effective_weights(), b.effective_weights()):
            np.testing.assert_array_equal(v, u, err_msg=f"{name} {a.name}")


def test_slots_of_weights_pruned_by_hand_are_reset_when_the_run_starts():
    model = _mlp("zeroed", keras.optimizers.Adam(1e-2))
    model.fit(X, Y, batch_size=16, epochs=2, verbose=0)  # every slot has values
    mask = np.ones((N_IN, 16), bool)
    mask[:, ::3] = False
    model.get_layer("h1").set_masks(mask)
    # Round 0 trains these masks with the optimizer as it is (no restart).
    schedule = lth.IterativeSchedule(rounds=1, epochs_per_round=2, rate=0.5)
    watch = _fit(model, schedule, epochs=4, rewind=None)
    assert all(watch.zeros) and watch.constrained == {False}


def test_other_optimizers_keep_the_constraint():
    model = _mlp("zeroed", AdamSubclass(1e-2))
    watch = _fit(model, _gradual(), epochs=2, rewind=None)
    assert all(watch.zeros) and watch.constrained == {True}


def test_kept_models_are_not_retraced_where_their_values_stay():
    """(With a trusted optimizer their values are set aside, `tests/test_aside.py`.)"""
    model = _mlp("kept", AdamSubclass(1e-2))
    schedule = lth.IterativeSchedule(rounds=1, epochs_per_round=1, rate=0.5)
    _fit(model, schedule, epochs=2)
    assert model.train_function is not None  # the run's own, kept by Keras
    assert not any(_constrained(model))
