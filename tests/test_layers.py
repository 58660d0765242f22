"""Tests for `keras_lth.layers`: `MaskedDense`, `masked_layers`, `density`."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lth import MaskedDense, density, masked_layers

KERNEL = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]], "float32")
BIAS = np.array([0.5, -0.75, 2.0], "float32")
KMASK = np.array([[1, 0, 1], [0, 1, 1]], "float32")
BMASK = np.array([1, 1, 0], "float32")
X = np.array([[1.0, 2.0], [-3.0, 0.5], [0.0, -1.0]], "float32")


def _layer(activation=None, use_bias=True, **kwargs):
    layer = MaskedDense(3, activation=activation, use_bias=use_bias, **kwargs)
    layer.build((None, 2))
    layer.kernel.assign(KERNEL)
    if use_bias:
        layer.bias.assign(BIAS)
    return layer


def _mlp(seed, sizes=(6, 5, 4), inputs=4, name=None):
    layers = [keras.Input((inputs,))]
    for i, units in enumerate(sizes):
        act = "relu" if i < len(sizes) - 1 else None
        layers.append(
            MaskedDense(
                units,
                activation=act,
                kernel_initializer=keras.initializers.GlorotUniform(seed + i),
                bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=seed + 10 + i),
            )
        )
    return keras.Sequential(layers, name=name)


def _random_masks(model, seed, keep=0.6, neuron_layer=0):
    """Non-trivial masks: random weights, and one dead neuron in one layer."""
    rng = np.random.default_rng(seed)
    for i, layer in enumerate(masked_layers(model)):
        kmask = (rng.random(layer.kernel_mask.shape) < keep).astype("float32")
        bmask = np.ones(layer.units, "float32")
        if i == neuron_layer:
            kmask[:, 0] = 0
            bmask[0] = 0
        layer.set_masks(kmask, bmask)


# --------------------------------------------------------------------------- #
# Forward
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("activation", [None, "relu", "sigmoid"])
def test_forward_hand_set(activation):
    layer = _layer(activation)
    layer.set_masks(KMASK, BMASK)
    pre = X @ (KERNEL * KMASK) + BIAS * BMASK
    expected = {None: pre, "relu": np.maximum(pre, 0), "sigmoid": 1 / (1 + np.exp(-pre))}
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(X)), expected[activation], rtol=1e-6, atol=1e-6
    )


def test_forward_all_ones_masks_equals_dense():
    layer = _layer("relu")
    dense = keras.layers.Dense(3, activation="relu")
    dense.build((None, 2))
    dense.set_weights([KERNEL, BIAS])  # plain Dense: kernel, bias
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer(X)), keras.ops.convert_to_numpy(dense(X))
    )


def test_forward_without_bias_and_on_3d_inputs():
    layer = _layer(use_bias=False)
    layer.set_masks(KMASK)
    x = np.stack([X, 2 * X])  # (2, 3, 2)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(layer(x)), x @ (KERNEL * KMASK), rtol=1e-6
    )
    assert layer.bias_mask is None
    assert [w.name for w in layer.weights] == ["kernel", "kernel_mask"]


def test_masks_are_non_trainable_weights():
    layer = _layer()
    assert [w.name for w in layer.trainable_weights] == ["kernel", "bias"]
    assert [w.name for w in layer.non_trainable_weights] == ["kernel_mask", "bias_mask"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel_mask), np.ones((2, 3)))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.bias_mask), np.ones(3))


def test_effective_weights_and_raw_kernel_kept():
    layer = _layer()
    layer.set_masks(KMASK, BMASK)
    kernel, bias = layer.effective_weights()
    np.testing.assert_array_equal(kernel, KERNEL * KMASK)
    np.testing.assert_array_equal(bias, BIAS * BMASK)
    # set_masks never touches the raw values
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), KERNEL)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.bias), BIAS)


# --------------------------------------------------------------------------- #
# Gradients and training
# --------------------------------------------------------------------------- #
def test_gradient_is_exactly_zero_at_masked_positions():
    layer = _layer("sigmoid")
    layer.set_masks(KMASK, BMASK)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(X) ** 2)
    gk, gb = tape.gradient(loss, [layer.kernel, layer.bias])
    gk, gb = gk.numpy(), gb.numpy()
    assert np.all(gk[KMASK == 0] == 0)
    assert np.all(gb[BMASK == 0] == 0)
    assert np.all(gk[KMASK == 1] != 0)
    assert np.all(gb[BMASK == 1] != 0)


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: keras.optimizers.Adam(0.05),
        lambda: keras.optimizers.SGD(0.05, momentum=0.9),
    ],
    ids=["adam", "sgd_momentum"],
)
def test_training_leaves_masked_raw_values_unchanged(optimizer):
    model = _mlp(0)
    _random_masks(model, 1)
    before = {l.name: [w.copy() for w in l.get_weights()] for l in masked_layers(model)}
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.normal(size=(32, 4)).astype("float32")
    model.compile(optimizer(), "mse")
    model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    for layer in masked_layers(model):
        kernel, bias, kmask, bmask = [np.asarray(w) for w in layer.get_weights()]
        k0, b0, km0, bm0 = before[layer.name]
        np.testing.assert_array_equal(kmask, km0)
        np.testing.assert_array_equal(bmask, bm0)
        np.testing.assert_array_equal(kernel[kmask == 0], k0[km0 == 0])
        np.testing.assert_array_equal(bias[bmask == 0], b0[bm0 == 0])
        assert np.any(kernel[kmask == 1] != k0[km0 == 1])  # it did train
        eff_k, eff_b = layer.effective_weights()
        assert np.all(eff_k[kmask == 0] == 0)
        assert np.all(eff_b[bmask == 0] == 0)


def test_regularizer_sees_effective_weights_only():
    layer = _layer(kernel_regularizer=keras.regularizers.L2(0.1), bias_regularizer="l1")
    layer.set_masks(KMASK, BMASK)
    (k_loss, b_loss) = [float(l) for l in layer.losses]
    assert k_loss == pytest.approx(0.1 * np.sum((KERNEL * KMASK) ** 2))
    assert b_loss == pytest.approx(0.01 * np.sum(np.abs(BIAS * BMASK)))
    # so training with a regularizer leaves the masked raw values alone too
    model = keras.Sequential([keras.Input((2,)), layer])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(X, np.zeros((3, 3)), epochs=3, verbose=0)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.kernel)[KMASK == 0], KERNEL[KMASK == 0]
    )
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(layer.bias)[BMASK == 0], BIAS[BMASK == 0]
    )


# --------------------------------------------------------------------------- #
# Serialization
# --------------------------------------------------------------------------- #
def test_get_config_from_config_round_trip():
    layer = MaskedDense(
        7,
        activation="tanh",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=keras.regularizers.L1(0.01),
        name="masked",
    )
    config = layer.get_config()
    clone = MaskedDense.from_config(config)
    assert type(clone) is MaskedDense
    assert clone.get_config() == config
    assert config["units"] == 7 and config["use_bias"] is False and config["name"] == "masked"
    # also through keras' generic (de)serialization, by registered name
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is MaskedDense and again.get_config() == config


def _assert_same_layers(a, b, same_names=True):
    assert len(masked_layers(a)) == len(masked_layers(b))
    for la, lb in zip(masked_layers(a), masked_layers(b)):
        assert la.name == lb.name or not same_names
        for wa, wb in zip(la.weights, lb.weights):
            assert wa.name == wb.name
            np.testing.assert_array_equal(
                keras.ops.convert_to_numpy(wa), keras.ops.convert_to_numpy(wb)
            )


def test_keras_save_load_round_trip(tmp_path):
    model = _mlp(3)
    _random_masks(model, 4, neuron_layer=1)
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects needed
    assert all(type(l) is MaskedDense for l in masked_layers(loaded))
    _assert_same_layers(model, loaded)  # raw kernels and masks both restored
    assert density(loaded) == density(model) < 1
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_save_weights_load_weights(tmp_path):
    model = _mlp(5)
    _random_masks(model, 6)
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    fresh = _mlp(7)  # different initial values, all-ones masks
    assert density(fresh) == 1.0
    fresh.load_weights(path)
    _assert_same_layers(model, fresh, same_names=False)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    np.testing.assert_array_equal(model.predict(x, verbose=0), fresh.predict(x, verbose=0))


# --------------------------------------------------------------------------- #
# Bad arguments
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("units", [0, -3, 1.5, "4", None, True])
def test_invalid_units(units):
    with pytest.raises(ValueError, match=r"`units`(.|\n)*Received: units="):
        MaskedDense(units)


@pytest.mark.parametrize(
    "kwargs, name",
    [({"lora_rank": 4}, "lora_rank"), ({"quantization_config": "int8"}, "quantization_config")],
)
def test_lora_and_quantization_are_rejected(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`(.|\\n)*Received: {name}="):
        MaskedDense(3, **kwargs)


def test_enable_lora_and_quantize_are_not_supported():
    layer = _layer()
    with pytest.raises(NotImplementedError):
        layer.enable_lora(2)
    with pytest.raises(NotImplementedError, match="strip"):
        layer.quantize("int8")


@pytest.mark.parametrize(
    "kernel_mask, bias_mask, match",
    [
        (np.ones((3, 2)), None, r"`kernel_mask`(.|\n)*kernel_mask.shape=\(3, 2\)"),
        (np.ones(6), None, r"`kernel_mask`(.|\n)*kernel_mask.shape=\(6,\)"),
        (KMASK, np.ones(2), r"`bias_mask`(.|\n)*bias_mask.shape=\(2,\)"),
        (KMASK * 0.5, None, r"`kernel_mask`(.|\n)*only 0s and 1s(.|\n)*0.5"),
        (KMASK, np.array([1, 2, 0]), r"`bias_mask`(.|\n)*only 0s and 1s(.|\n)*2.0"),
    ],
)
def test_set_masks_errors(kernel_mask, bias_mask, match):
    layer = _layer()
    with pytest.raises(ValueError, match=match):
        layer.set_masks(kernel_mask, bias_mask)
    # a failed call assigns nothing
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel_mask), np.ones((2, 3)))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.bias_mask), np.ones(3))


def test_set_masks_bias_mask_without_bias():
    layer = _layer(use_bias=False)
    with pytest.raises(ValueError, match="use_bias=False"):
        layer.set_masks(KMASK, BMASK)


def test_set_masks_before_build():
    with pytest.raises(ValueError, match="not built"):
        MaskedDense(3).set_masks(KMASK)


# --------------------------------------------------------------------------- #
# density and masked_layers
# --------------------------------------------------------------------------- #
def test_density_hand_computed():
    model = _mlp(0)  # kernels 4x6, 6x5, 5x4: 24 + 30 + 20 = 74 weights
    a, b, c = masked_layers(model)
    ka = np.ones((4, 6), "float32")
    ka[:, :3] = 0  # 12 kept
    kc = np.zeros((5, 4), "float32")
    kc[0, 0] = 1  # 1 kept
    a.set_masks(ka)
    c.set_masks(kc)
    overall, per_layer = density(model, per_layer=True)
    assert overall == pytest.approx((12 + 30 + 1) / 74)
    assert density(model) == overall
    assert per_layer == {a.name: pytest.approx(0.5), b.name: 1.0, c.name: pytest.approx(0.05)}
    assert list(per_layer) == [a.name, b.name, c.name]
    assert float(a.density()) == pytest.approx(0.5)
    # bias masks do not count: density is about the kernels
    a.set_masks(ka, np.zeros(6))
    assert density(model) == pytest.approx(overall)


def test_masked_layers_finds_nested_models_in_order():
    inner = keras.Sequential(
        [
            keras.Input((4,)),
            MaskedDense(3, name="in_a"),
            MaskedDense(5, name="in_b"),
            keras.layers.Dropout(0.1),
            MaskedDense(6, name="in_c"),
        ],
        name="inner",
    )
    inp = keras.Input((2,))
    x = MaskedDense(4, name="first")(inp)
    x = keras.layers.Dense(4, name="plain")(x)
    x = inner(x)
    out = MaskedDense(2, name="last")(x)
    model = keras.Model(inp, out)
    names = ["first", "in_a", "in_b", "in_c", "last"]
    assert [l.name for l in masked_layers(model)] == names
    inner.get_layer("in_b").set_masks(np.zeros((3, 5)))
    overall, per_layer = density(model, per_layer=True)
    assert list(per_layer) == names
    assert per_layer["in_b"] == 0.0
    assert overall == pytest.approx(1 - 15 / (8 + 12 + 15 + 30 + 12))
    # a layer on its own
    layer = inner.get_layer("in_c")
    assert masked_layers(layer) == [layer]


def test_density_without_masked_dense_raises():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="plain_model")
    assert masked_layers(model) == []
    with pytest.raises(ValueError, match="MaskedDense(.|\n)*plain_model"):
        density(model)


def test_density_of_unbuilt_model_raises():
    model = keras.Sequential([MaskedDense(2)])
    with pytest.raises(ValueError, match="not built"):
        density(model)
