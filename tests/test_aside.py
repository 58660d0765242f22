"""Kept layers' pruned values set aside during a `PruningScheduler` run.

The invariants: with one of Keras's elementwise optimizers, a run's kept
layers compute with their raw variables, whose entries under 0 masks are
exact zeros at every step, while their pruned values live in host memory;
masks and effective weights end bit-identical to a run that computes
`raw * mask` throughout (the same optimizer as a subclass, which the
scheduler does not trust); the pruned values come back at the end, saving
writes them at any moment, and the model's functions traced during the run
are dropped with it. Where setting aside could change training
(re-introduction, Adafactor and Lamb, constraints, dense gradients, JAX) it
is not done.
"""

import keras
import numpy as np
import pytest
from test_pruned_values import _assert_zero_under_masks

import keras_lth as lth
from keras_lth.layers import (
    MaskedDense,
    check_elided_masks,
    elide_full_masks,
    elided_masks,
    masked_layers,
    pruned_values_aside,
    restore_pruned_values,
    set_pruned_values_aside,
    written_since_aside,
)
from keras_lth.zeroing import ELEMENTWISE_OPTIMIZERS, HOLDING_OPTIMIZERS

N_IN, N_OUT = 12, 4
rng = np.random.default_rng(3)
X = rng.normal(size=(96, N_IN)).astype("float32")
Y = np.argmax(X @ rng.normal(size=(N_IN, N_OUT)), axis=1).astype("int32")

OPTIMIZERS = {
    "SGD": (keras.optimizers.SGD, dict(learning_rate=0.05, momentum=0.9, nesterov=True)),
    "Adam": (keras.optimizers.Adam, dict(learning_rate=1e-2, amsgrad=True)),
    "AdamW": (keras.optimizers.AdamW, dict(learning_rate=1e-2, weight_decay=0.05)),
    "Adamax": (keras.optimizers.Adamax, dict(learning_rate=1e-2)),
    "Nadam": (keras.optimizers.Nadam, dict(learning_rate=1e-2)),
    "RMSprop": (keras.optimizers.RMSprop, dict(learning_rate=1e-2, momentum=0.5, centered=True)),
    "Adagrad": (keras.optimizers.Adagrad, dict(learning_rate=0.1)),
    "Adadelta": (keras.optimizers.Adadelta, dict(learning_rate=1.0)),
    "Ftrl": (keras.optimizers.Ftrl, dict(learning_rate=0.1, l1_regularization_strength=0.01)),
    "Lion": (keras.optimizers.Lion, dict(learning_rate=1e-3)),
}
# Their pruned raw values move under the product (weight decay; FTRL computes
# every weight from its slots), so only the effective weights are compared.
MOVES_PRUNED_VALUES = {"AdamW", "Ftrl"}


def _optimizer(name, trusted=True):
    cls, kwargs = OPTIMIZERS[name]
    if not trusted:  # the same update, but not a class the scheduler knows
        cls = type(f"Untrusted{cls.__name__}", (cls,), {})
    return cls(**kwargs)


def _mlp(optimizer, **layer_kwargs):
    keras.utils.set_random_seed(11)
    model = keras.Sequential(
        [
            keras.Input((N_IN,)),
            MaskedDense(16, activation="relu", name="h1", **layer_kwargs),
            MaskedDense(N_OUT, name="out"),
        ]
    )
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


class _Watch(keras.callbacks.Callback):
    """At every step: which layers have their values aside, and whether the zeros hold."""

    def __init__(self):
        super().__init__()
        self.aside, self.zeros = set(), []

    def on_train_batch_end(self, batch, logs=None):
        self.aside.update((l.name, pruned_values_aside(l)) for l in masked_layers(self.model))
        try:
            _assert_zero_under_masks(self.model)
            self.zeros.append(True)
        except AssertionError:
            self.zeros.append(False)


def _iterative():
    return lth.IterativeSchedule(rounds=2, epochs_per_round=2, rate=0.5)


def _gradual():
    import tensorflow_model_optimization as tfmot

    return tfmot.sparsity.keras.PolynomialDecay(
        initial_sparsity=0.3, final_sparsity=0.8, begin_step=3, end_step=15, frequency=3
    )


def _fit(model, schedule, epochs, callbacks=(), before=(), **kwargs):
    """Trains under a scheduler; `before` are callbacks called before it, `callbacks` after."""
    watch = _Watch()
    watch.scheduler = lth.PruningScheduler(schedule, verbose=0, **kwargs)
    model.fit(
        X,
        Y,
        batch_size=16,
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=[*before, watch.scheduler, watch, *callbacks],
    )
    return watch


def _assert_same(a, b, raw=True, what=""):
    for la, lb in zip(masked_layers(a), masked_layers(b)):
        for u, v in zip(la.effective_weights(), lb.effective_weights()):
            np.testing.assert_array_equal(u, v, err_msg=f"{what} {la.name} effective")
        if raw:  # raw values and masks
            for u, v in zip(la.get_weights(), lb.get_weights()):
                np.testing.assert_array_equal(u, v, err_msg=f"{what} {la.name} raw")


def _assert_pruned_values_back(model):
    """h1 has pruned weights, and each holds a kept (non-zero) value, not the run's zero."""
    h1 = model.get_layer("h1")
    mask = keras.ops.convert_to_numpy(h1.kernel_mask)
    assert not mask.all() and np.all(keras.ops.convert_to_numpy(h1.raw_variable())[~mask] != 0)


def test_the_elementwise_optimizers_are_the_holding_ones_without_whole_variable_norms():
    assert set(ELEMENTWISE_OPTIMIZERS) == set(HOLDING_OPTIMIZERS) - {"Adafactor", "Lamb"}
    assert set(OPTIMIZERS) == set(ELEMENTWISE_OPTIMIZERS)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_iterative_run_with_values_aside_trains_as_the_product(name):
    aside = _mlp(_optimizer(name))
    watch = _fit(aside, _iterative(), epochs=6, rewind="init")
    assert watch.aside == {("h1", True), ("out", True)}, name
    assert all(watch.zeros)  # the zeros hold at every step, pruned rounds included
    assert lth.density(aside) < 0.3
    assert not any(pruned_values_aside(l) for l in masked_layers(aside))  # back after the run

    product = _mlp(_optimizer(name, trusted=False))
    watch = _fit(product, _iterative(), epochs=6, rewind="init")
    assert watch.aside == {("h1", False), ("out", False)}
    _assert_same(aside, product, raw=name not in MOVES_PRUNED_VALUES, what=name)
    if name not in MOVES_PRUNED_VALUES:  # the rewound values are back under the masks
        h1 = aside.get_layer("h1")
        raw = keras.ops.convert_to_numpy(h1.raw_variable())
        assert np.count_nonzero(raw) == raw.size


@pytest.mark.parametrize("name", ["Adam", "SGD", "Lion"])
def test_gradual_run_with_values_aside_trains_as_the_product(tfmot, name):
    """Masks shrink between steps without an optimizer restart."""
    aside = _mlp(_optimizer(name))
    watch = _fit(aside, _gradual(), epochs=3, rewind=None)
    assert ("h1", True) in watch.aside and all(watch.zeros)
    product = _mlp(_optimizer(name, trusted=False))
    _fit(product, _gradual(), epochs=3, rewind=None)
    # The product lets momentum move pruned raw values; they are not compared.
    _assert_same(aside, product, raw=False, what=name)
    assert lth.density(aside) == pytest.approx(0.2, abs=0.03)


def test_late_rewinding_and_neuron_pruning_read_the_kept_values():
    """The rewind point is taken mid-run (epoch 1) with weights pruned by hand
    before the run; `reinit` draws, and neurons are pruned."""
    runs = []
    for trusted in (True, False):
        model = _mlp(_optimizer("Adam", trusted))
        mask = np.ones((N_IN, 16), bool)
        mask[::3] = False
        model.get_layer("h1").set_masks(mask)
        watch = _fit(model, _iterative(), epochs=6, rewind=1, structure="neuron")
        assert ("h1", trusted) in watch.aside
        runs.append(model)
    _assert_same(*runs)
    runs = []
    for trusted in (True, False):
        model = _mlp(_optimizer("Adam", trusted))
        _fit(model, _iterative(), epochs=6, rewind="reinit", seed=4, scope="global")
        runs.append(model)
    _assert_same(*runs)


class _SaveAt(keras.callbacks.Callback):
    """In round 1: saves the weights (given a path) and predicts (tracing `predict_function`)."""

    def __init__(self, path=None):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 3:
            if self.path is not None:
                self.model.save_weights(self.path)
            self.model.predict(X[:8], verbose=0)


def test_weights_saved_during_the_run_hold_the_kept_values(tmp_path):
    saved = []
    for trusted in (True, False):
        model = _mlp(_optimizer("Adam", trusted))
        path = tmp_path / f"{trusted}.weights.h5"
        watch = _fit(model, _iterative(), epochs=6, callbacks=[_SaveAt(path)], rewind="init")
        assert ("h1", trusted) in watch.aside
        fresh = _mlp(keras.optimizers.Adam())
        fresh.load_weights(path)
        saved.append(fresh)
    _assert_same(*saved)
    _assert_pruned_values_back(saved[0])


def test_functions_traced_during_the_run_compute_with_the_masks_after_it():
    """`predict` and `evaluate` traced while the raw variables held zeros are retraced."""
    model = _mlp(keras.optimizers.Adam(1e-2))
    test_data = (X, Y)
    _fit(model, _iterative(), epochs=6, callbacks=[_SaveAt()], test_data=test_data)
    expected = X
    for layer in masked_layers(model):
        kernel, bias = layer.effective_weights()
        expected = expected @ kernel + bias
        if layer.name == "h1":
            expected = np.maximum(expected, 0)
    h1 = model.get_layer("h1")
    mask = keras.ops.convert_to_numpy(h1.kernel_mask)
    assert np.all(keras.ops.convert_to_numpy(h1.raw_variable())[~mask] != 0)
    np.testing.assert_allclose(model.predict(X, verbose=0), expected, rtol=1e-5, atol=1e-5)
    loss = model.evaluate(X, Y, verbose=0)
    np.testing.assert_allclose(
        loss, keras.losses.SparseCategoricalCrossentropy(from_logits=True)(Y, expected), rtol=1e-5
    )


@pytest.mark.parametrize(
    "case",
    ["scored", "double feedback", "double complement", "Lamb", "Adafactor", "constraint", "dense"],
)
def test_not_set_aside_where_it_could_change_training(case):
    optimizer = keras.optimizers.Adam(1e-2)
    layer_kwargs, kwargs = {}, {}
    if case in ("Lamb", "Adafactor"):
        optimizer = getattr(keras.optimizers, case)(1e-2)
    if case == "constraint":  # MaxNorm reads whole columns, pruned values included
        layer_kwargs = {"kernel_constraint": keras.constraints.MaxNorm(1.0)}
    if case == "scored":
        kwargs = {"reintroduce": lth.ScoredPruning()}
    if case.startswith("double"):
        kwargs = {"reintroduce": lth.DoublePruning(case.split()[1])}
    model = _mlp(optimizer, **layer_kwargs)
    if case == "dense":  # the layer's own gradient mode
        model.get_layer("h1").gradient_mode = "dense"
    watch = _fit(model, _iterative(), epochs=6, rewind="init", **kwargs)
    assert ("h1", False) in watch.aside and ("h1", True) not in watch.aside
    # The other layer is set aside where only h1 stands in the way.
    assert (("out", True) in watch.aside) == (case in ("constraint", "dense"))


def _built_layer():
    layer = MaskedDense(5)
    layer.build((None, 6))
    layer.raw_variable().assign(np.arange(1, 31, dtype="float32").reshape(6, 5))
    mask = np.ones((6, 5), bool)
    mask[::2, 1] = False
    layer.set_masks(mask)
    return layer, mask


def test_set_aside_restore_round_trip_and_masks_set_meanwhile():
    layer, mask = _built_layer()
    values = np.arange(1, 31, dtype="float32").reshape(6, 5)
    set_pruned_values_aside(layer)
    raw = lambda: keras.ops.convert_to_numpy(layer.raw_variable())  # noqa: E731
    np.testing.assert_array_equal(raw(), np.where(mask, values, 0))
    np.testing.assert_array_equal(layer.effective_weights()[0], np.where(mask, values, 0))
    # A weight unpruned gets its kept value back; one pruned now is set aside.
    new = mask.copy()
    new[0, 1] = True
    new[5, 4] = False
    layer.set_masks(new)
    np.testing.assert_array_equal(raw(), np.where(new, values, 0))
    layer.raw_variable().assign(raw() + new)  # training moves the kept weights
    restore_pruned_values(layer)
    assert not pruned_values_aside(layer)
    np.testing.assert_array_equal(raw(), values + new)
    restore_pruned_values(layer)  # nothing aside: no change
    np.testing.assert_array_equal(raw(), values + new)


def test_saving_and_loading_while_aside(tmp_path):
    layer, mask = _built_layer()
    values = np.arange(1, 31, dtype="float32").reshape(6, 5)
    model = keras.Sequential([keras.Input((6,)), layer])
    set_pruned_values_aside(layer)
    path = tmp_path / "w.weights.h5"
    model.save_weights(path)  # the kept values, not the zeros
    layer.raw_variable().assign(np.zeros((6, 5), "float32"))
    model.load_weights(path)  # the loaded kept values are set aside again
    assert pruned_values_aside(layer)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.raw_variable()), np.where(mask, values, 0)
    )
    restore_pruned_values(layer)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.raw_variable()), values)


def test_values_written_under_the_masks_are_adopted():
    """A write from outside is the weight's value, as under the product."""
    layer, mask = _built_layer()
    values = np.arange(1, 31, dtype="float32").reshape(6, 5)
    raw = lambda: keras.ops.convert_to_numpy(layer.raw_variable())  # noqa: E731
    assert not written_since_aside(layer)  # nothing aside
    set_pruned_values_aside(layer)
    assert not written_since_aside(layer)
    written = np.where(mask, values, 0)
    written[0, 1] = -7.0  # under a 0 mask; [2, 1] stays 0, its kept value stands
    layer.raw_variable().assign(written)
    assert written_since_aside(layer)
    model = keras.Sequential([keras.Input((6,)), layer])
    expected = values.copy()
    expected[0, 1] = -7.0
    np.testing.assert_array_equal(
        lth.layers.kept_values(model, [layer.raw_variable()])[0], expected
    )
    set_pruned_values_aside(layer)  # adopts it, and the zeros are back
    assert not written_since_aside(layer)
    np.testing.assert_array_equal(raw(), np.where(mask, values, 0))
    # A mask written by hand: [0, 1] back, [1, 1] (a weight trained to 0)
    # pruned; as many ones as before, no non-zero value under a 0.
    layer.raw_variable().assign(np.where(np.arange(30).reshape(6, 5) == 6, 0, raw()))
    swapped = mask.copy()
    swapped[0, 1], swapped[1, 1] = True, False
    layer.kernel_mask.assign(swapped)
    assert written_since_aside(layer)
    set_pruned_values_aside(layer)  # [0, 1] computes with its kept value again
    assert not written_since_aside(layer)
    assert raw()[0, 1] == -7.0 and raw()[1, 1] == 0
    restore_pruned_values(layer)
    expected[1, 1] = 0.0
    np.testing.assert_array_equal(raw(), expected)


class _SetWeightsAt(keras.callbacks.Callback):
    """`model.set_weights` at the end of epoch `epoch`.

    `what`: `"before"` writes the weights read before the run, dense masks
    included; `"values"` those values under the masks of now; `"masks"`
    the weights read now (`get_weights`) with every mask set to 1.
    """

    def __init__(self, epoch, what):
        super().__init__()
        self.epoch, self.what = epoch, what

    def on_train_begin(self, logs=None):
        self.before = self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        if epoch != self.epoch:
            return
        now = self.model.get_weights()
        if self.what == "before":
            new = self.before
        elif self.what == "values":
            new = [n if n.dtype == bool else b for n, b in zip(now, self.before)]
        else:
            new = [np.ones_like(n) if n.dtype == bool else n for n in now]
        self.model.set_weights(new)


@pytest.mark.parametrize(
    "rewind, order, what",
    [
        ("init", "after", "before"),
        (None, "after", "values"),
        (None, "after", "masks"),
        (None, "before", "values"),
    ],
)
def test_weights_set_during_the_run_are_adopted_as_under_the_product(rewind, order, what):
    """`set_weights` in round 1 sets the model's state, pruned values and masks included.

    Written after the scheduler's epoch end, it is adopted at the next
    epoch's start; written before it, at that epoch end, before the round's
    test evaluation. Values read during the run hold zeros under the masks;
    written back, the set-aside values stand, as the product's read values
    would.
    """
    runs = []
    for trusted in (True, False):
        model = _mlp(_optimizer("Adam", trusted))
        write = [_SetWeightsAt(2 if order == "after" else 3, what)]
        watch = _fit(
            model,
            _iterative(),
            epochs=6,
            rewind=rewind,
            test_data=(X, Y),
            **({"callbacks": write} if order == "after" else {"before": write}),
        )
        assert ("h1", trusted) in watch.aside
        if trusted:
            assert all(watch.zeros)  # no pruned weight computed
        runs.append((model, watch.scheduler.rounds))
    (aside, aside_rounds), (product, product_rounds) = runs
    _assert_same(aside, product, what=f"rewind={rewind}, {order}, {what}")
    assert [r["test"] for r in aside_rounds] == [r["test"] for r in product_rounds]


class _Traced(keras.callbacks.Callback):
    """Per epoch: the masks traced without a select, the kernels traced with one, retraces."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.selected, self.epochs = [], []
        original = lth.layers._gradient_masked

        def recording(raw, mask):
            self.selected.append(tuple(mask.shape))
            return original(raw, mask)

        monkeypatch.setattr(lth.layers, "_gradient_masked", recording)

    def on_epoch_begin(self, epoch, logs=None):
        self.selected.clear()
        self.function = self.model.train_function

    def on_epoch_end(self, epoch, logs=None):
        elided = {l.name: elided_masks(l) for l in masked_layers(self.model)}
        retraced = self.model.train_function is not self.function
        self.epochs.append((elided, sorted(set(self.selected)), retraced))


def test_masks_without_a_zero_are_traced_without_their_select(monkeypatch):
    """The dense round selects no gradient; from the first pruning on, only the kernels'."""
    model = _mlp(_optimizer("Adam"))
    traced = _Traced(monkeypatch)
    watch = _fit(model, _iterative(), epochs=4, rewind="init", callbacks=[traced])
    assert all(watch.zeros)
    dense = {"h1": {"kernel", "bias"}, "out": {"kernel", "bias"}}
    pruned = {"h1": {"bias"}, "out": {"bias"}}
    kernels = [(N_IN, 16), (16, N_OUT)]
    assert traced.epochs == [
        (dense, [], False),  # traced at the first step, with no select
        (dense, [], False),
        # Pruned at the round's start (the scheduler runs before `traced`):
        # traced again, with the kernels' selects only.
        (pruned, sorted(kernels), False),
        (pruned, [], False),
    ]
    assert all(not elided_masks(l) for l in masked_layers(model))  # off after the run


class _SetBiasMask(keras.callbacks.Callback):
    """Prunes units of h1's bias by `set_masks` after step 2 of epoch 0."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 0 and batch == 2:
            keep = np.ones(16, bool)
            keep[::3] = False
            self.model.get_layer("h1").set_masks(bias_mask=keep)


@pytest.mark.parametrize("pruned_values", ["kept", "zeroed"])
def test_a_mask_set_during_an_epoch_masks_its_gradient_from_the_next_step(pruned_values):
    """A bias traced without a select is traced with one as soon as its mask has a 0."""
    runs = []
    for trusted in (True, False):
        # Plain SGD: no momentum to move the weights just pruned by hand
        # (the scheduler resets the optimizer's slots only where it prunes).
        sgd = keras.optimizers.SGD if trusted else type("UntrustedSGD", (keras.optimizers.SGD,), {})
        model = _mlp(sgd(0.1))
        model.get_layer("h1").pruned_values = pruned_values
        watch = _fit(model, _iterative(), epochs=4, rewind=None, callbacks=[_SetBiasMask()])
        if trusted:
            assert all(watch.zeros)  # the pruned biases stayed 0 at every step
        runs.append(model)
    _assert_same(*runs, raw=pruned_values == "zeroed")


class _AssignBiasMask(keras.callbacks.Callback):
    """Prunes units of h1's bias by assigning the mask variable at the end of epoch 0."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            keep = np.ones(16, bool)
            keep[::3] = False
            self.model.get_layer("h1").bias_mask.assign(keep)
            lth.layers.zero_pruned(self.model)  # what a zeroed layer needs after a write by hand


def test_a_zeroed_layer_mask_assigned_by_hand_masks_its_gradient_from_the_next_epoch():
    model = _mlp(keras.optimizers.SGD(0.1), pruned_values="zeroed")
    watch = _fit(model, _iterative(), epochs=3, rewind=None, callbacks=[_AssignBiasMask()])
    assert all(watch.zeros)
    assert elided_masks(model.get_layer("h1")) == set()  # (the run is over)
    bias = keras.ops.convert_to_numpy(model.get_layer("h1").raw_variable("bias"))
    assert np.all(bias[::3] == 0) and np.all(bias[1::3] != 0)


def test_elided_masks_are_traced_again_once_they_have_a_zero():
    layer, mask = _built_layer()  # a pruned kernel, a full bias
    retraces = []
    elide_full_masks(layer, lambda: retraces.append(1))
    assert elided_masks(layer) == {"bias"}
    layer.set_masks(mask, np.ones(5))  # no 0 in the bias: nothing to do
    assert elided_masks(layer) == {"bias"} and retraces == []
    layer.bias_mask.assign([True, False, True, True, True])  # by hand: seen when checked
    assert elided_masks(layer) == {"bias"}
    check_elided_masks(layer)
    assert elided_masks(layer) == set() and retraces == [1]
    layer.set_masks(bias_mask=np.ones(5))  # full again: kept with its select
    check_elided_masks(layer)
    assert elided_masks(layer) == set() and retraces == [1]
    # Through `set_masks` and `set_pruned_values_aside`, at once.
    elide_full_masks(layer, lambda: retraces.append(2))
    assert elided_masks(layer) == {"bias"}
    layer.set_masks(bias_mask=[1, 1, 0, 1, 1])
    assert elided_masks(layer) == set() and retraces == [1, 2]
    layer.set_masks(bias_mask=np.ones(5))
    elide_full_masks(layer, lambda: retraces.append(3))
    layer.bias_mask.assign([True, True, True, False, True])
    set_pruned_values_aside(layer)
    assert elided_masks(layer) == set() and retraces == [1, 2, 3]
    restore_pruned_values(layer)
    elide_full_masks(layer, None)
    layer.set_masks(bias_mask=np.ones(5))
    elide_full_masks(layer, lambda: retraces.append(4))
    elide_full_masks(layer, None)  # off: nothing traced without a select
    layer.set_masks(bias_mask=[0, 1, 1, 1, 1])
    assert elided_masks(layer) == set() and retraces == [1, 2, 3]


def test_early_stopping_before_the_scheduler_restores_as_under_the_product():
    """`EarlyStopping(restore_best_weights=True)` writes the best epoch's weights
    at the end of the run: before the scheduler's end the pruned values stand."""
    runs = []
    for trusted in (True, False):
        model = _mlp(_optimizer("Adam", trusted))
        stop = keras.callbacks.EarlyStopping("loss", patience=1, restore_best_weights=True)
        watch = _fit(model, _iterative(), epochs=6, rewind=None, before=[stop])
        assert ("h1", trusted) in watch.aside
        assert stop.best_epoch >= 2  # in a pruned round
        runs.append(model)
    _assert_same(*runs)
    _assert_pruned_values_back(runs[0])


def test_misuse_is_refused_with_nothing_changed():
    layer, mask = _built_layer()
    set_pruned_values_aside(layer)
    with pytest.raises(ValueError, match="set aside.*pruned_values='zeroed'"):
        layer.pruned_values = "zeroed"
    with pytest.raises(ValueError, match="set aside.*gradient_mode='dense'"):
        layer.gradient_mode = "dense"
    assert pruned_values_aside(layer) and layer.pruned_values == "kept"
    assert layer.gradient_mode == "masked"
    restore_pruned_values(layer)
    layer.gradient_mode = "dense"  # allowed once the values are back
    with pytest.raises(ValueError, match="gradient_mode='dense'"):
        set_pruned_values_aside(layer)
    zeroed = MaskedDense(3, pruned_values="zeroed")
    zeroed.build((None, 2))
    with pytest.raises(ValueError, match="pruned_values='zeroed'"):
        set_pruned_values_aside(zeroed)
    assert not pruned_values_aside(zeroed)


@pytest.mark.jax
def test_nothing_is_set_aside_off_tensorflow():
    """Under JAX the run keeps the product (the masked identity is TensorFlow's)."""
    if keras.backend.backend() == "tensorflow":
        pytest.skip("runs in the JAX job (KERAS_BACKEND=jax pytest -m jax)")
    model = _mlp(keras.optimizers.Adam(1e-2))
    watch = _fit(model, _iterative(), epochs=6, rewind="init")
    assert watch.aside == {("h1", False), ("out", False)}
    with pytest.raises(ValueError, match="needs the TensorFlow backend.*Received: backend='jax'"):
        set_pruned_values_aside(model.get_layer("h1"))
