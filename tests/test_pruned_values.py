"""`pruned_values="zeroed"`: pruned weights held at zero, no mask product.

The invariant: with an elementwise optimizer, a model whose masked layers
hold zeros under their masks trains *exactly* like the default
(`pruned_values="kept"`, the layer computes with `raw * mask`): the same
masks, the same effective weights bit for bit, the same round records;
and every raw value under a 0 mask is an exact zero at all times.
"""

import keras
import numpy as np
import pytest

import keras_lth as lth
from keras_lth.layers import MaskedDense, masked_layers, zero_pruned

N_IN, N_OUT = 12, 4


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, N_IN)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(N_IN, N_OUT)), axis=1).astype("int32")
    return x, y


X, Y = _data()


def _mlp(pruned_values, optimizer="adam", **dense_kwargs):
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((N_IN,)),
            MaskedDense(
                16, activation="relu", name="h1", pruned_values=pruned_values, **dense_kwargs
            ),
            MaskedDense(8, activation="relu", name="h2", pruned_values=pruned_values),
            MaskedDense(N_OUT, name="out", pruned_values=pruned_values),
        ]
    )
    opt = {
        "adam": lambda: keras.optimizers.Adam(1e-2),
        "sgd": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True),
        "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.01),
    }[optimizer]()
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _assert_zero_under_masks(model):
    for layer in masked_layers(model):
        for w in layer._all_weights():
            raw = keras.ops.convert_to_numpy(w.variable)
            mask = keras.ops.convert_to_numpy(w.mask)
            assert not np.any(raw[~mask]), w.key


class _CheckEveryBatch(keras.callbacks.Callback):
    """Checks the zeros after every training step and at every epoch start."""

    def __init__(self):
        super().__init__()
        self.checked = 0

    def on_train_batch_begin(self, batch, logs=None):
        _assert_zero_under_masks(self.model)
        self.checked += 1

    on_train_batch_end = on_train_batch_begin


def _fit(pruned_values, schedule, optimizer="adam", epochs=None, **kwargs):
    model = _mlp(pruned_values, optimizer)
    scheduler = lth.PruningScheduler(schedule, verbose=0, seed=3, **kwargs)
    check = _CheckEveryBatch()
    callbacks = [scheduler] + ([check] if pruned_values == "zeroed" else [])
    model.fit(
        X,
        Y,
        batch_size=16,
        epochs=epochs or scheduler.total_epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )
    if pruned_values == "zeroed":
        assert check.checked > 0
        _assert_zero_under_masks(model)
    return model, scheduler


def _iterative(**kwargs):
    return lth.IterativeSchedule(rounds=2, epochs_per_round=2, rate=0.4, **kwargs)


@pytest.mark.parametrize(
    "kwargs, optimizer",
    [
        (dict(rewind="init"), "adam"),
        (dict(rewind="reinit", scope="global"), "adam"),
        (dict(rewind=1, structure="neuron"), "sgd"),
        (dict(rewind=None), "adamw"),
    ],
    ids=["init-adam", "reinit-global-adam", "late-neuron-sgd", "none-adamw"],
)
def test_zeroed_trains_exactly_like_kept(kwargs, optimizer):
    kept, kept_scheduler = _fit("kept", _iterative(), optimizer, **kwargs)
    zeroed, zeroed_scheduler = _fit("zeroed", _iterative(), optimizer, **kwargs)
    densities = [r["density"] for r in zeroed_scheduler.rounds]
    assert densities == [r["density"] for r in kept_scheduler.rounds]
    assert densities[-1] < 0.5  # it pruned
    for a, b in zip(masked_layers(kept), masked_layers(zeroed)):
        for name, mask in a.get_masks().items():
            np.testing.assert_array_equal(b.get_masks()[name], mask, err_msg=f"{a.name} {name}")
        for u, v in zip(a.effective_weights(), b.effective_weights()):
            np.testing.assert_array_equal(v, u, err_msg=a.name)
        if kwargs.get("structure") == "neuron" and a.name != "out":
            assert a.get_masks()["bias_mask"].min() == 0.0  # biases were pruned too
    # The kept layers still hold values under their masks; the zeroed ones do not.
    raw = keras.ops.convert_to_numpy(kept.get_layer("h1").raw_variable())
    assert np.count_nonzero(raw[kept.get_layer("h1").get_masks()["kernel_mask"] == 0]) > 0


def test_zeroed_gradual_pruning_trains_exactly_like_kept(tfmot):
    def schedule():
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.2, final_sparsity=0.75, begin_step=2, end_step=14, frequency=3
        )

    kept, _ = _fit("kept", schedule(), epochs=3, rewind=None)
    zeroed, scheduler = _fit("zeroed", schedule(), epochs=3, rewind=None)
    assert lth.density(zeroed) == pytest.approx(0.25, abs=0.02)
    for a, b in zip(kept.get_weights(), zeroed.get_weights()):
        if a.dtype == bool:
            np.testing.assert_array_equal(b, a)
    for a, b in zip(masked_layers(kept), masked_layers(zeroed)):
        for u, v in zip(a.effective_weights(), b.effective_weights()):
            np.testing.assert_array_equal(v, u, err_msg=a.name)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_zeroed_layer_computes_with_its_raw_variable(jit_compile):
    import tensorflow as tf

    layer = MaskedDense(3, pruned_values="zeroed")
    layer.build((None, 4))
    mask = np.ones((4, 3), "float32")
    mask[0] = 0
    layer.set_masks(mask, bias_mask=np.array([1, 0, 1], "float32"))
    for attr in ("kernel", "bias"):  # the raw values themselves, no product
        raw = keras.ops.convert_to_numpy(layer.raw_variable(attr))
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(getattr(layer, attr)), raw)
    assert not np.any(keras.ops.convert_to_numpy(layer.kernel)[0])
    assert keras.ops.convert_to_numpy(layer.bias)[1] == 0
    # Pruned weights get a zero gradient, as a kept layer's do.
    with tf.GradientTape() as tape:
        out = layer(np.ones((2, 4), "float32"))
    kernel_grad, bias_grad = tape.gradient(out, [layer.raw_variable(), layer.raw_variable("bias")])
    assert not np.any(kernel_grad.numpy()[0]) and np.all(kernel_grad.numpy()[1:] != 0)
    np.testing.assert_array_equal(bias_grad.numpy(), [2.0, 0.0, 2.0])
    model = keras.Sequential([keras.Input((4,)), layer])
    model.compile(keras.optimizers.Adam(0.1), "mse", jit_compile=jit_compile)
    model.fit(np.ones((8, 4)), np.ones((8, 3)), epochs=2, verbose=0)
    _assert_zero_under_masks(model)
    assert np.all(keras.ops.convert_to_numpy(layer.kernel)[1:] != 0)  # the rest trained


def test_zeroed_keeps_the_variables_own_constraint():
    model = _mlp("zeroed", kernel_constraint=keras.constraints.NonNeg())
    h1 = model.get_layer("h1")
    mask = np.ones((N_IN, 16), "float32")
    mask[:4] = 0  # inputs, whose weights do get a gradient (a dead unit's would not)
    h1.set_masks(mask)
    model.fit(X, Y, batch_size=16, epochs=2, verbose=0)
    kernel = keras.ops.convert_to_numpy(h1.kernel)
    assert kernel.min() >= 0.0 and np.count_nonzero(kernel) > 0  # NonNeg held
    assert not np.any(kernel[:4])  # and the pruned rows stayed zero
    h1.pruned_values = "kept"  # the user's constraint alone again
    assert isinstance(h1.raw_variable().constraint, keras.constraints.NonNeg)
    assert model.get_layer("h2").raw_variable().constraint is not None  # still zeroed
    assert h1.get_config()["kernel_constraint"]["class_name"] == "NonNeg"


def test_switching_pruned_values_zeroes_and_restores():
    model = _mlp("kept")
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    h1 = model.get_layer("h1")
    mask = np.ones((N_IN, 16), "float32")
    mask[::2] = 0
    h1.set_masks(mask)
    raw = keras.ops.convert_to_numpy(h1.raw_variable()).copy()
    assert np.count_nonzero(raw[mask == 0]) > 0  # "kept" keeps them
    before = model.predict(X, verbose=0)
    h1.pruned_values = "zeroed"
    assert h1.raw_variable().constraint is not None
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(h1.kernel), raw * mask)
    np.testing.assert_allclose(model.predict(X, verbose=0), before, rtol=1e-6, atol=1e-6)
    assert h1.get_config()["pruned_values"] == "zeroed"
    h1.pruned_values = "kept"
    assert h1.raw_variable().constraint is None
    assert "pruned_values" not in h1.get_config()  # the default's config is unchanged
    # Back to "kept", a weight whose mask returns starts from 0 (its value is gone).
    h1.set_masks(np.ones((N_IN, 16)))
    assert not np.any(keras.ops.convert_to_numpy(h1.kernel)[::2])


def test_saving_and_loading_keep_the_zeros(tmp_path):
    model = _mlp("zeroed")
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    h1 = model.get_layer("h1")
    mask = np.ones((N_IN, 16), "float32")
    mask[:3] = 0
    h1.set_masks(mask)
    path = tmp_path / "zeroed.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [l.pruned_values for l in masked_layers(loaded)] == ["zeroed"] * 3
    constraint = type(h1.raw_variable().constraint)
    assert isinstance(loaded.get_layer("h1").raw_variable().constraint, constraint)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(b, a)

    # Weights saved by a "kept" model load into a zeroed one as zeros under the masks.
    kept = _mlp("kept")
    kept.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    kept.get_layer("h1").set_masks(mask)
    kept.save_weights(tmp_path / "kept.weights.h5")
    target = _mlp("zeroed")
    target.load_weights(tmp_path / "kept.weights.h5")
    _assert_zero_under_masks(target)
    np.testing.assert_allclose(
        target.predict(X, verbose=0), kept.predict(X, verbose=0), rtol=1e-6, atol=1e-6
    )

    # `set_weights` writes raw values as given; `zero_pruned` restores the zeros.
    target.set_weights(kept.get_weights())
    assert np.count_nonzero(keras.ops.convert_to_numpy(target.get_layer("h1").kernel)[:3]) > 0
    zero_pruned(target)
    _assert_zero_under_masks(target)


def test_prunable_makes_every_family_zeroed(tmp_path):
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="emb")(inputs)
    x = keras.layers.Conv1D(8, 3, padding="same", activation="relu", name="conv")(x)
    x = keras.layers.MultiHeadAttention(2, 4, name="mha")(x, x)
    x = keras.layers.LSTM(6, name="lstm")(x)
    outputs = keras.layers.Dense(3, name="out")(x)
    plain = keras.Model(inputs, outputs)
    model = lth.prunable(plain, pruned_values="zeroed")
    layers = masked_layers(model)
    assert len(layers) == 8  # emb, conv, 4 projections, the LSTM cell, out
    assert {l.pruned_values for l in layers} == {"zeroed"}
    assert model.get_layer("mha").pruned_values == "zeroed"
    x_data = np.random.default_rng(0).integers(0, 20, (32, 6))
    np.testing.assert_allclose(
        model.predict(x_data, verbose=0), plain.predict(x_data, verbose=0), rtol=1e-5, atol=1e-6
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    schedule = lth.IterativeSchedule(rounds=1, epochs_per_round=1, rate=0.5)
    model.fit(
        x_data,
        np.arange(32) % 3,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=[lth.PruningScheduler(schedule, verbose=0), _CheckEveryBatch()],
    )
    assert lth.density(model) == pytest.approx(0.5, abs=0.02)
    _assert_zero_under_masks(model)
    stripped = lth.strip(model)
    assert all("pruned_values" not in l.get_config() for l in stripped.layers)
    np.testing.assert_allclose(
        stripped.predict(x_data, verbose=0), model.predict(x_data, verbose=0), rtol=1e-5, atol=1e-6
    )
    path = tmp_path / "zeroed_families.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert {l.pruned_values for l in masked_layers(loaded)} == {"zeroed"}
    _assert_zero_under_masks(loaded)


def test_reintroduction_and_dense_gradients_refuse_zeroed_layers():
    model = _mlp("zeroed")
    scheduler = lth.PruningScheduler(
        _iterative(), rewind="init", verbose=0, reintroduce=lth.ScoredPruning()
    )
    with pytest.raises(
        ValueError, match="pruned_values='zeroed' for layers \\['h1', 'h2', 'out'\\]"
    ):
        model.fit(X, Y, epochs=1, verbose=0, callbacks=[scheduler])
    assert [l.gradient_mode for l in masked_layers(model)] == ["masked"] * 3
    with pytest.raises(ValueError, match="gradient_mode"):
        model.get_layer("h1").gradient_mode = "dense"
    kept = _mlp("kept")
    kept.get_layer("h1").gradient_mode = "dense"
    with pytest.raises(ValueError, match="gradient_mode='dense'"):
        kept.get_layer("h1").pruned_values = "zeroed"
    mha = lth.layers.MaskedMultiHeadAttention(2, 4)
    mha(np.ones((1, 3, 8)), np.ones((1, 3, 8)))
    mha.masked_sublayers()[-1].gradient_mode = "dense"
    with pytest.raises(ValueError, match="sublayers \\['attention_output'\\]"):
        mha.pruned_values = "zeroed"
    assert {s.pruned_values for s in mha.masked_sublayers()} == {"kept"}  # none switched


@pytest.mark.parametrize("bad", ["zero", None, 0, True])
def test_bad_pruned_values_are_refused(bad):
    with pytest.raises(ValueError, match="`pruned_values`.*Received: pruned_values="):
        MaskedDense(2, pruned_values=bad)
    with pytest.raises(ValueError, match="`pruned_values`"):
        lth.prunable(
            keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), pruned_values=bad
        )
    with pytest.raises(ValueError, match="`pruned_values`"):
        lth.layers.MaskedMultiHeadAttention(2, 4, pruned_values=bad)
    layer = MaskedDense(2)
    with pytest.raises(ValueError, match="`pruned_values`"):
        layer.pruned_values = bad
    assert layer.pruned_values == "kept"


@pytest.mark.jax
def test_zeroed_needs_the_tensorflow_backend():
    if keras.backend.backend() == "tensorflow":
        assert MaskedDense(2, pruned_values="zeroed").pruned_values == "zeroed"
        return
    with pytest.raises(ValueError, match="needs the TensorFlow backend"):
        MaskedDense(2, pruned_values="zeroed")
    layer = MaskedDense(2)
    with pytest.raises(ValueError, match="needs the TensorFlow backend"):
        layer.pruned_values = "zeroed"
    assert layer.pruned_values == "kept"
