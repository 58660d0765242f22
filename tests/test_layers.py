"""Tests for `keras_lth.layers`: the masked layers of every family.

The tests use `keras.ops` and backend-neutral gradients, so they also run
under `KERAS_BACKEND=jax`.
"""

import pathlib

import keras
import numpy as np
import pytest
from keras import ops

import keras_lth.layers as L
from keras_lth import MaskedDense, density, masked_layers, pruning

pytestmark = pytest.mark.jax  # backend-agnostic: also run under KERAS_BACKEND=jax

DATA = pathlib.Path(__file__).parent / "data"

KERNEL = np.array([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]], "float32")
BIAS = np.array([0.5, -0.75, 2.0], "float32")
KMASK = np.array([[1, 0, 1], [0, 1, 1]], "float32")
BMASK = np.array([1, 1, 0], "float32")
X = np.array([[1.0, 2.0], [-3.0, 0.5], [0.0, -1.0]], "float32")


def np_(x):
    return ops.convert_to_numpy(x)


# --------------------------------------------------------------------------- #
# Every family: (factory(**kwargs), input shape, input kind)
# --------------------------------------------------------------------------- #
FAMILIES = {
    "dense": (lambda **kw: L.MaskedDense(4, **kw), (2, 5)),
    "einsum": (
        lambda **kw: L.MaskedEinsumDense(
            "abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de", **kw
        ),
        (2, 3, 5),
    ),
    "einsum_partial_bias": (
        lambda **kw: L.MaskedEinsumDense(
            "abc,cde->abde", output_shape=(None, 2, 3), bias_axes="e", **kw
        ),
        (2, 3, 5),
    ),
    "conv1d": (lambda **kw: L.MaskedConv1D(4, 3, **kw), (2, 7, 3)),
    "conv2d": (lambda **kw: L.MaskedConv2D(4, 3, padding="same", **kw), (2, 6, 6, 3)),
    "conv3d": (lambda **kw: L.MaskedConv3D(3, 2, **kw), (2, 4, 4, 4, 2)),
    "conv1d_transpose": (lambda **kw: L.MaskedConv1DTranspose(4, 3, **kw), (2, 5, 3)),
    "conv2d_transpose": (lambda **kw: L.MaskedConv2DTranspose(4, 3, strides=2, **kw), (2, 4, 4, 3)),
    "conv3d_transpose": (lambda **kw: L.MaskedConv3DTranspose(2, 2, **kw), (2, 3, 3, 3, 2)),
    "depthwise1d": (lambda **kw: L.MaskedDepthwiseConv1D(3, depth_multiplier=2, **kw), (2, 7, 3)),
    "depthwise2d": (
        lambda **kw: L.MaskedDepthwiseConv2D(3, depth_multiplier=2, **kw),
        (2, 6, 6, 3),
    ),
    "separable1d": (
        lambda **kw: L.MaskedSeparableConv1D(4, 3, depth_multiplier=2, **kw),
        (2, 7, 3),
    ),
    "separable2d": (lambda **kw: L.MaskedSeparableConv2D(4, 3, **kw), (2, 6, 6, 3)),
    "embedding": (lambda **kw: L.MaskedEmbedding(10, 4, **kw), (2, 3)),
    "mha": (lambda **kw: L.MaskedMultiHeadAttention(2, 3, **kw), (2, 4, 6)),
    "lstm": (lambda **kw: L.MaskedLSTM(3, return_sequences=True, **kw), (2, 4, 5)),
    "gru": (lambda **kw: L.MaskedGRU(3, return_sequences=True, **kw), (2, 4, 5)),
    "gru_v1": (
        lambda **kw: L.MaskedGRU(3, reset_after=False, return_sequences=True, **kw),
        (2, 4, 5),
    ),
    "simple_rnn": (lambda **kw: L.MaskedSimpleRNN(3, return_sequences=True, **kw), (2, 4, 5)),
}


def _input(family, seed=0):
    shape = FAMILIES[family][1]
    rng = np.random.default_rng(seed)
    if family == "embedding":
        return rng.integers(0, 10, size=shape).astype("int32")
    return rng.normal(size=shape).astype("float32")


def _call(layer, x, **kwargs):
    if isinstance(layer, keras.layers.MultiHeadAttention):
        return layer(x, x, **kwargs)
    return layer(x, **kwargs)


def _built(family, seed=0, **kwargs):
    layer = FAMILIES[family][0](**kwargs)
    _call(layer, _input(family))
    return layer


def _random_masks(layer, seed, keep=0.6):
    """Random masks on every masked weight and bias of a (composite) layer."""
    rng = np.random.default_rng(seed)
    for sub in masked_layers(layer):
        for w in sub._all_weights():
            w.mask.assign((rng.random(w.mask.shape) < keep).astype("float32"))


def _plain_twin(layer, x):
    plain = type(layer).plain_class.from_config(layer.get_config())
    _call(plain, x)
    plain.set_weights(layer.effective_weights())
    return plain


def _gradients(layer, x, variables):
    """d sum(y^2 + y) / d variables, on any backend (y + ... so that an
    output entry that is zero still passes a gradient)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            y = ops.cast(_call(layer, x), "float32")
            loss = ops.sum(ops.square(y) + y)
        return [np_(g) for g in tape.gradient(loss, variables)]
    if keras.backend.backend() == "jax":
        import jax

        trainable = layer.trainable_variables
        fixed = [v.value for v in layer.non_trainable_variables]
        args = (x, x) if isinstance(layer, keras.layers.MultiHeadAttention) else (x,)

        def loss(values):
            y, _ = layer.stateless_call(values, fixed, *args)
            y = ops.cast(y, "float32")
            return ops.sum(ops.square(y) + y)

        grads = jax.grad(loss)([v.value for v in trainable])
        position = {id(v): i for i, v in enumerate(trainable)}
        return [np.asarray(grads[position[id(v)]]) for v in variables]
    pytest.skip(f"no gradient helper for backend {keras.backend.backend()}")


ALL = sorted(FAMILIES)


# --------------------------------------------------------------------------- #
# MaskedDense by hand
# --------------------------------------------------------------------------- #
def _dense(activation=None, use_bias=True, **kwargs):
    layer = MaskedDense(3, activation=activation, use_bias=use_bias, **kwargs)
    layer.build((None, 2))
    layer.raw_variable("kernel").assign(KERNEL)
    if use_bias:
        layer.raw_variable("bias").assign(BIAS)
    return layer


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid"])
def test_dense_forward_hand_set(activation):
    layer = _dense(activation)
    layer.set_masks(KMASK, BMASK)
    pre = X @ (KERNEL * KMASK) + BIAS * BMASK
    expected = {None: pre, "relu": np.maximum(pre, 0), "sigmoid": 1 / (1 + np.exp(-pre))}
    np.testing.assert_allclose(np_(layer(X)), expected[activation], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np_(layer.kernel), KERNEL * KMASK)  # what `call` reads


def test_dense_all_ones_masks_equals_dense():
    layer = _dense("relu")
    dense = keras.layers.Dense(3, activation="relu")
    dense.build((None, 2))
    dense.set_weights([KERNEL, BIAS])
    np.testing.assert_array_equal(np_(layer(X)), np_(dense(X)))


def test_dense_masks_each_weight_once_per_call_and_never_from_a_stale_call(monkeypatch):
    # `Dense.call` reads `self.bias` twice; within a call the masked value is
    # computed once, and the next call sees the masks as they are then.
    layer = _dense()
    products = []
    apply_mask = L._apply_mask
    monkeypatch.setattr(
        L,
        "_apply_mask",
        lambda raw, mask, g: products.append(mask.name) or apply_mask(raw, mask, g),
    )
    layer(X)
    assert sorted(products) == ["bias_mask", "kernel_mask"]
    assert not L._CALLS.by_layer
    layer.set_masks(KMASK, BMASK)
    np.testing.assert_allclose(
        np_(layer(X)), X @ (KERNEL * KMASK) + BIAS * BMASK, rtol=1e-6, atol=1e-6
    )
    products.clear()
    np_(layer.kernel), np_(layer.kernel)  # outside a call: computed at each read
    assert products == ["kernel_mask", "kernel_mask"]


def test_dense_without_bias_and_on_3d_inputs():
    layer = _dense(use_bias=False)
    layer.set_masks(KMASK)
    x = np.stack([X, 2 * X])
    np.testing.assert_allclose(np_(layer(x)), x @ (KERNEL * KMASK), rtol=1e-6)
    assert layer.bias_weight is None
    assert [w.name for w in layer.weights] == ["kernel", "kernel_mask"]


def test_dense_masks_are_non_trainable_boolean_weights():
    layer = _dense()
    assert [w.name for w in layer.trainable_weights] == ["kernel", "bias"]
    assert [w.name for w in layer.non_trainable_weights] == ["kernel_mask", "bias_mask"]
    assert layer.kernel_mask.dtype == "bool" and layer.bias_mask.dtype == "bool"
    np.testing.assert_array_equal(np_(layer.kernel_mask), np.ones((2, 3), bool))
    np.testing.assert_array_equal(np_(layer.bias_mask), np.ones(3, bool))
    layer.set_masks(KMASK.astype(bool), BMASK)  # booleans or 0/1 numbers
    masks = layer.get_masks()  # 0/1 float32 arrays, as set
    assert {k: v.dtype for k, v in masks.items()} == {
        "kernel_mask": "float32",
        "bias_mask": "float32",
    }
    np.testing.assert_array_equal(masks["kernel_mask"], KMASK)
    np.testing.assert_array_equal(masks["bias_mask"], BMASK)
    np.testing.assert_array_equal(np_(layer.kernel_mask), KMASK.astype(bool))
    assert layer.density() == pytest.approx(KMASK.mean())


def test_dense_effective_weights_and_raw_values_kept():
    layer = _dense()
    layer.set_masks(KMASK, BMASK)
    kernel, bias = layer.effective_weights()
    np.testing.assert_array_equal(kernel, KERNEL * KMASK)
    np.testing.assert_array_equal(bias, BIAS * BMASK)
    np.testing.assert_array_equal(np_(layer.raw_variable("kernel")), KERNEL)
    np.testing.assert_array_equal(np_(layer.raw_variable("bias")), BIAS)
    assert layer.get_masks().keys() == {"kernel_mask", "bias_mask"}


def test_dense_gradient_hand_computed():
    """d sum(y^2 + y)/dW = x^T (2y + 1) * mask for y = x @ (W * M) + b * m."""
    layer = _dense()
    layer.set_masks(KMASK, BMASK)
    y = X @ (KERNEL * KMASK) + BIAS * BMASK
    gk, gb = _gradients(layer, X, [layer.raw_variable("kernel"), layer.raw_variable("bias")])
    np.testing.assert_allclose(gk, (X.T @ (2 * y + 1)) * KMASK, rtol=1e-5)
    np.testing.assert_allclose(gb, (2 * y + 1).sum(0) * BMASK, rtol=1e-5)


def test_dense_regularizer_sees_effective_weights_only():
    layer = _dense(kernel_regularizer=keras.regularizers.L2(0.1), bias_regularizer="l1")
    layer.set_masks(KMASK, BMASK)
    k_loss, b_loss = [float(l) for l in layer.losses]
    assert k_loss == pytest.approx(0.1 * np.sum((KERNEL * KMASK) ** 2))
    assert b_loss == pytest.approx(0.01 * np.sum(np.abs(BIAS * BMASK)))
    model = keras.Sequential([keras.Input((2,)), layer])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(X, np.zeros((3, 3)), epochs=3, verbose=0)
    np.testing.assert_array_equal(np_(layer.raw_variable("kernel"))[KMASK == 0], KERNEL[KMASK == 0])
    np.testing.assert_array_equal(np_(layer.raw_variable("bias"))[BMASK == 0], BIAS[BMASK == 0])


# --------------------------------------------------------------------------- #
# Every family: forward, raw values, gradients, training
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("family", ALL)
def test_forward_equals_plain_layer_with_effective_weights(family):
    layer = _built(family)
    x = _input(family, 1)
    before = np_(_call(layer, x))
    np.testing.assert_allclose(before, np_(_call(_plain_twin(layer, x), x)), rtol=1e-6, atol=1e-6)
    _random_masks(layer, 2)
    assert density(layer) < 1
    after = np_(_call(layer, x))
    assert not np.allclose(after, before)  # the masks act in `call`
    np.testing.assert_allclose(after, np_(_call(_plain_twin(layer, x), x)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ALL)
def test_set_masks_keeps_raw_values(family):
    layer = _built(family)
    raw = {w.key: np_(w.variable).copy() for w in L.masked_weights(layer)}
    _random_masks(layer, 3)
    for w in L.masked_weights(layer):
        np.testing.assert_array_equal(np_(w.variable), raw[w.key])


@pytest.mark.parametrize("family", ALL)
def test_gradient_zero_at_pruned_positions(family):
    layer = _built(family)
    _random_masks(layer, 4)
    weights = [w for s in masked_layers(layer) for w in s._all_weights()]
    grads = _gradients(layer, _input(family, 5), [w.variable for w in weights])
    for w, g in zip(weights, grads):
        pruned = np_(w.mask) == 0
        assert np.all(g[pruned] == 0), w.key
    kept = np.concatenate([g[np_(w.mask) == 1] for w, g in zip(weights, grads)])
    assert np.any(kept != 0)


@pytest.mark.parametrize("family", ALL)
def test_dense_gradient_mode_passes_the_effective_weights_gradient(family):
    layer = _built(family)
    _random_masks(layer, 6)
    x = _input(family, 7)
    masked_out = np_(_call(layer, x))
    weights = [w for s in masked_layers(layer) for w in s.masked_weights]
    for sub in masked_layers(layer):
        sub.gradient_mode = "dense"
    np.testing.assert_array_equal(np_(_call(layer, x)), masked_out)  # same forward
    grads = _gradients(layer, x, [w.variable for w in weights])
    for sub in masked_layers(layer):
        sub.gradient_mode = "masked"
    # The plain twin holds `raw * mask` as its own variables, in the order of
    # the masked layer's variables without the masks.
    plain = _plain_twin(layer, x)
    order = [v for v in layer.weights if not _is_mask(layer, v)]
    index = {id(v): i for i, v in enumerate(order)}
    expected = _gradients(plain, x, [plain.weights[index[id(w.variable)]] for w in weights])
    for w, g, e in zip(weights, grads, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6, err_msg=w.key)
    # ... which is nonzero at pruned positions too
    assert any(np.any(g[np_(w.mask) == 0] != 0) for w, g in zip(weights, grads))


def _is_mask(layer, v):
    return any(v is w.mask for s in masked_layers(layer) for w in s._all_weights())


@pytest.mark.parametrize("family", ["dense", "conv2d", "separable2d", "embedding", "mha", "lstm"])
def test_training_leaves_pruned_raw_values_unchanged(family):
    x = _input(family, 8)
    layer = FAMILIES[family][0]()
    inputs = keras.Input(x.shape[1:], dtype=x.dtype)
    out = keras.layers.Flatten()(_call(layer, inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(out))
    _random_masks(layer, 9)
    weights = [w for s in masked_layers(layer) for w in s._all_weights()]
    before = [np_(w.variable).copy() for w in weights]
    model.compile(keras.optimizers.Adam(0.05), "mse")
    model.fit(x, np.ones((len(x), 2), "float32"), epochs=2, verbose=0)
    for w, b in zip(weights, before):
        pruned = np_(w.mask) == 0
        np.testing.assert_array_equal(np_(w.variable)[pruned], b[pruned], err_msg=w.key)
    assert any(np.any(np_(w.variable) != b) for w, b in zip(weights, before))  # it trained


# --------------------------------------------------------------------------- #
# Output units: the views that structured pruning uses
# --------------------------------------------------------------------------- #
def _prune_unit_zero(sub):
    weights = [w for w in sub.masked_weights if w.units is not None]
    n = pruning.unit_matrix(np_(weights[0].variable), *weights[0].units).shape[1]
    alive = np.ones(n, bool)
    alive[0] = False
    masks = {
        f"{w.name}_mask": pruning.units_to_mask(alive, w.mask.shape, *w.units) for w in weights
    }
    if sub.bias_weight is not None:
        masks["bias_mask"] = sub.bias_mask_for(alive)
    sub.set_masks(**masks)
    return n


UNIT_OUTPUT = {  # which output entry is unit 0 of the (last) masked sublayer
    "einsum": lambda y: y[..., 0, 0],
    "einsum_partial_bias": None,  # a bias entry serves units of both heads
}


@pytest.mark.parametrize("family", [f for f in ALL if f != "einsum_partial_bias"])
def test_pruning_one_unit_silences_one_output(family):
    """Unit 0 pruned through the views: that output is 0 for any input."""
    layer = _built(family)
    sub = masked_layers(layer)[-1]  # the output projection of an attention
    units = _prune_unit_zero(sub)
    y = np_(_call(layer, _input(family, 10)))
    pick = UNIT_OUTPUT.get(family) or (lambda y: y[..., 0])
    np.testing.assert_array_equal(pick(y), 0.0)
    others = y.reshape(*y.shape[: y.ndim - (2 if family == "einsum" else 1)], -1)[..., 1:]
    assert np.any(others != 0)
    assert units >= 2


def test_einsum_partial_bias_keeps_a_bias_while_one_of_its_units_lives():
    layer = _built("einsum_partial_bias")  # kernel (5, 2, 3): units (d, e); bias over e only
    sub = masked_layers(layer)[0]
    alive = np.ones((2, 3), bool)
    alive[:, 0] = False  # e=0 dead in both heads: its bias goes
    alive[0, 1] = False  # e=1 dead in head 0 only: its bias stays
    np.testing.assert_array_equal(sub.bias_mask_for(alive.ravel()), [0.0, 1.0, 1.0])


@pytest.mark.parametrize(
    "family, units",
    [
        ("dense", 4),
        ("conv2d", 4),
        ("conv2d_transpose", 4),
        ("depthwise2d", 6),
        ("separable2d", 4),
        ("einsum", 6),
        ("embedding", 4),
        ("lstm", 3),
        ("gru", 3),
        ("gru_v1", 3),
    ],
)
def test_unit_views_have_one_column_per_output_unit(family, units):
    layer = _built(family)
    for sub in masked_layers(layer):
        for w in sub.masked_weights:
            if w.units is None:
                assert family == "separable2d" and w.name == "depthwise_kernel"
                continue
            matrix = pruning.unit_matrix(np_(w.variable), *w.units)
            assert matrix.shape[1] == units or family == "mha"
            assert matrix.size == np.prod(w.variable.shape)
            back = pruning.from_unit_matrix(matrix, w.variable.shape, *w.units)
            np.testing.assert_array_equal(back, np_(w.variable))


# --------------------------------------------------------------------------- #
# Serialization
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("family", ALL)
def test_get_config_from_config_round_trip(family):
    layer = FAMILIES[family][0](name=f"my_{family}")
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == config
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(again) is type(layer) and again.get_config() == config


def _model_of(family, seed=0):
    x = _input(family, seed)
    inputs = keras.Input(x.shape[1:], dtype=x.dtype)
    layer = FAMILIES[family][0](name="masked")
    model = keras.Model(inputs, _call(layer, inputs))
    return model, layer, x


@pytest.mark.parametrize("family", ALL)
def test_keras_file_round_trip(family, tmp_path):
    model, layer, x = _model_of(family)
    _random_masks(layer, 11)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects needed
    again = loaded.get_layer("masked")
    assert type(again) is type(layer)
    for a, b in zip(L.masked_weights(model), L.masked_weights(loaded)):
        assert a.key == b.key
        np.testing.assert_array_equal(np_(a.variable), np_(b.variable))  # raw values
        np.testing.assert_array_equal(np_(a.mask), np_(b.mask))
    np.testing.assert_array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


@pytest.mark.parametrize("family", ["dense", "separable2d", "mha", "lstm"])
def test_weights_file_round_trip(family, tmp_path):
    model, layer, x = _model_of(family)
    _random_masks(layer, 12)
    path = tmp_path / "model.weights.h5"
    model.save_weights(path)
    fresh, _, _ = _model_of(family, seed=1)
    fresh.load_weights(path)
    np.testing.assert_array_equal(model.predict(x, verbose=0), fresh.predict(x, verbose=0))


def test_a_weights_file_of_another_shape_is_an_error(tmp_path):
    store = {"0": np.ones((2, 3)), "1": np.ones(3), "2": np.ones((2, 3))}
    layer = _dense()
    with pytest.raises(
        ValueError,
        match=r"expected 4 variables \(kernel, bias, kernel_mask, bias_mask\)(.|\n)*Received: 3",
    ):
        layer.load_own_variables(store)


X010 = np.arange(6, dtype="float32").reshape(2, 3) / 5


def _assert_same_predictions(actual, saved):
    # The predictions were saved on another CPU, whose float32 matmul may
    # round a last bit differently (1 ulp seen on an AMD EPYC against the
    # Intel Xeon that saved them); a weight loaded wrongly moves them by far
    # more, and pruned units stay exactly zero.
    np.testing.assert_allclose(actual, saved, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(actual == 0, saved == 0)


@pytest.mark.parametrize("name", ["masked_dense_v0.1.0.keras", "masked_dense_scores_v0.1.0.keras"])
def test_models_saved_by_0_1_0_load(name):
    """keras-lth 0.1.0's MaskedDense files (and their `kernel_score`) load."""
    model = keras.saving.load_model(DATA / name)
    expected = np.load(DATA / "masked_dense_v0.1.0_predictions.npy")
    _assert_same_predictions(model.predict(X010, verbose=0), expected)
    h = model.get_layer("h")
    np.testing.assert_array_equal(np_(h.bias_mask), [1, 1, 0, 1])
    assert "kernel_score" not in [w.name for w in h.weights]


def test_weights_saved_by_0_1_0_load():
    model = keras.Sequential(
        [keras.Input((3,)), MaskedDense(4, activation="relu", name="h"), MaskedDense(2, name="out")]
    )
    model.load_weights(DATA / "masked_dense_v0.1.0.weights.h5")
    expected = np.load(DATA / "masked_dense_v0.1.0_predictions.npy")
    _assert_same_predictions(model.predict(X010, verbose=0), expected)


# --------------------------------------------------------------------------- #
# Mixed precision
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("family", ALL)
def test_mixed_precision(family, policy):
    layer = _built(family, dtype=policy)
    _random_masks(layer, 13)
    x = _input(family, 14)
    y = _call(layer, x)
    assert keras.backend.standardize_dtype(y.dtype) == policy.split("_")[1]
    for w in L.masked_weights(layer):
        assert w.mask.dtype == "bool" and w.variable.dtype == "float32"
    plain = _plain_twin(layer, x)
    np.testing.assert_array_equal(
        np_(ops.cast(y, "float32")), np_(ops.cast(_call(plain, x), "float32"))
    )


# --------------------------------------------------------------------------- #
# Composites and keys
# --------------------------------------------------------------------------- #
def test_attention_projections_are_masked_sublayers_with_keys():
    layer = _built("mha", name="att")
    subs = masked_layers(layer)
    assert [L.layer_key(s) for s in subs] == [
        "att/query",
        "att/key",
        "att/value",
        "att/attention_output",
    ]
    assert all(isinstance(s, L.MaskedEinsumDense) for s in subs)
    own = {w.name for w in layer.weights if "mask" in w.name}
    assert own == {
        f"{p}_{k}_mask"
        for p in ("query", "key", "value", "attention_output")
        for k in ("kernel", "bias")
    }
    assert [w.key for w in L.masked_weights(layer)][0] == "att/query/kernel"


def test_recurrent_layer_goes_by_its_name():
    layer = _built("lstm", name="rnn")
    (cell,) = masked_layers(layer)
    assert isinstance(cell, L.MaskedLSTMCell)
    assert [w.key for w in cell.masked_weights] == ["rnn/kernel", "rnn/recurrent_kernel"]
    _, per_layer = density(layer, per_layer=True)
    assert list(per_layer) == ["rnn"]


def test_masked_classes_map_every_family():
    for plain, masked in L.MASKED_CLASSES.items():
        assert masked.plain_class is plain
        assert issubclass(masked, plain)
    assert len(L.MASKED_CLASSES) == 17


# --------------------------------------------------------------------------- #
# density and masked_layers
# --------------------------------------------------------------------------- #
def _mlp(sizes=(6, 5, 4), inputs=4):
    layers = [keras.Input((inputs,))]
    for units in sizes:
        layers.append(MaskedDense(units))
    return keras.Sequential(layers)


def test_density_hand_computed():
    model = _mlp()  # kernels 4x6, 6x5, 5x4: 24 + 30 + 20 = 74 weights
    a, b, c = masked_layers(model)
    ka = np.ones((4, 6), "float32")
    ka[:, :3] = 0
    kc = np.zeros((5, 4), "float32")
    kc[0, 0] = 1
    a.set_masks(ka)
    c.set_masks(kc)
    overall, per_layer = density(model, per_layer=True)
    assert overall == pytest.approx((12 + 30 + 1) / 74)
    assert per_layer == {a.name: pytest.approx(0.5), b.name: 1.0, c.name: pytest.approx(0.05)}
    assert a.density() == pytest.approx(0.5)
    a.set_masks(ka, np.zeros(6))  # bias masks do not count
    assert density(model) == pytest.approx(overall)


def test_density_counts_both_kernels_of_a_separable_conv():
    layer = _built("separable2d")  # depthwise (3, 3, 3, 1) = 27, pointwise (1, 1, 3, 4) = 12
    layer.set_masks(np.zeros((3, 3, 3, 1)), pointwise_kernel_mask=np.ones((1, 1, 3, 4)))
    assert density(layer) == pytest.approx(12 / 39)
    assert layer.density() == pytest.approx(12 / 39)


def test_masked_layers_finds_nested_models_in_order():
    inner = keras.Sequential(
        [
            keras.Input((4,)),
            MaskedDense(3, name="in_a"),
            L.MaskedEinsumDense("ab,bc->ac", output_shape=5, name="in_b"),
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
    layer = inner.get_layer("in_c")
    assert masked_layers(layer) == [layer]


def test_masked_layers_inside_a_subclassed_model():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.MaskedConv2D(2, 3)
            self.flat = keras.layers.Flatten()
            self.out = MaskedDense(3)

        def call(self, x):
            return self.out(self.flat(self.conv(x)))

    net = Net()
    net(np.ones((1, 5, 5, 1), "float32"))
    assert [type(l) for l in masked_layers(net)] == [L.MaskedConv2D, MaskedDense]
    assert density(net) == 1.0


def test_density_without_masked_layers_raises():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="plain_model")
    assert masked_layers(model) == []
    with pytest.raises(ValueError, match="at least one masked layer(.|\n)*plain_model"):
        density(model)


def test_density_of_an_unbuilt_model_raises():
    model = keras.Sequential([MaskedDense(3, name="lazy")])
    with pytest.raises(ValueError, match="lazy(.|\n)*not built"):
        density(model)


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
@pytest.mark.parametrize(
    "cls", [MaskedDense, L.MaskedConv2D, L.MaskedEmbedding, L.MaskedEinsumDense]
)
def test_lora_and_quantization_are_rejected(cls, kwargs, name):
    args = {
        MaskedDense: (3,),
        L.MaskedConv2D: (3, 3),
        L.MaskedEmbedding: (5, 3),
        L.MaskedEinsumDense: ("ab,bc->ac", 3),
    }[cls]
    with pytest.raises(ValueError, match=f"`{name}`(.|\\n)*Received: {name}="):
        cls(*args, **kwargs)


@pytest.mark.parametrize("family", ["dense", "mha", "lstm"])
def test_enable_lora_and_quantize_are_not_supported(family):
    layer = _built(family)
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
def test_set_masks_errors_assign_nothing(kernel_mask, bias_mask, match):
    layer = _dense()
    with pytest.raises(ValueError, match=match):
        layer.set_masks(kernel_mask, bias_mask)
    np.testing.assert_array_equal(np_(layer.kernel_mask), np.ones((2, 3)))
    np.testing.assert_array_equal(np_(layer.bias_mask), np.ones(3))


def test_set_masks_by_name_and_unknown_names():
    layer = _built("separable2d")
    layer.set_masks(pointwise_kernel_mask=np.zeros((1, 1, 3, 4)))
    assert float(ops.sum(layer.pointwise_kernel_mask)) == 0
    with pytest.raises(ValueError, match=r"unknown masks \['recurrent_kernel_mask'\]"):
        layer.set_masks(recurrent_kernel_mask=np.ones((2, 2)))
    with pytest.raises(ValueError, match="once"):
        layer.set_masks(np.ones((3, 3, 3, 1)), depthwise_kernel_mask=np.ones((3, 3, 3, 1)))


def test_set_masks_bias_mask_without_bias():
    layer = _dense(use_bias=False)
    with pytest.raises(ValueError, match="use_bias=False"):
        layer.set_masks(KMASK, BMASK)


def test_not_built_errors():
    with pytest.raises(ValueError, match="not built"):
        MaskedDense(3).set_masks(KMASK)
    with pytest.raises(ValueError, match="not built"):
        _ = MaskedDense(3).masked_weights


def test_raw_variable_and_gradient_mode_errors():
    layer = _dense()
    with pytest.raises(ValueError, match=r"`attr`(.|\n)*Received: attr='embeddings'"):
        layer.raw_variable("embeddings")
    with pytest.raises(ValueError, match=r"`gradient_mode`(.|\n)*Received: gradient_mode='sparse'"):
        layer.gradient_mode = "sparse"
    assert layer.gradient_mode == "masked"
