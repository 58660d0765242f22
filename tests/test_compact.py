"""Tests for `keras_lth.compact` on CNN graphs (the MLP cases are in test_export.py).

Public Keras APIs and `keras.ops` only, so the file also runs under
`KERAS_BACKEND=jax`.
"""

import textwrap
import warnings

import keras
import numpy as np
import pytest
from keras import ops

import keras_lth as lth
from keras_lth import pruning

pytestmark = pytest.mark.jax  # backend-agnostic: also run under KERAS_BACKEND=jax

K = keras.layers


def np_(x):
    return ops.convert_to_numpy(x)


def _run(model, x):
    return np_(model(x, training=False))


def _prune_units(layer, units, bias=True):
    """Removes output units (filters, neurons) of a masked layer through its masks."""
    n = layer.bias_weight.mask.shape[-1] if layer.bias_weight is not None else None
    for w in layer.masked_weights:
        if w.units is not None:
            n = pruning.unit_matrix(np_(w.mask), *w.units).shape[1]
    alive = np.ones(n, bool)
    alive[list(units)] = False
    masks = {
        f"{w.name}_mask": pruning.units_to_mask(alive, tuple(w.mask.shape), *w.units)
        for w in layer.masked_weights
        if w.units is not None
    }
    if bias and layer.bias_weight is not None:
        masks["bias_mask"] = layer.bias_mask_for(alive)
    layer.set_masks(**masks)


def _randomize(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in lth.conversion.graph_sublayers(model):
        if isinstance(layer, keras.Model):
            continue
        layer.set_weights(
            [rng.normal(scale=0.5, size=w.shape).astype(w.dtype) for w in layer.get_weights()]
        )
        if isinstance(layer, K.BatchNormalization):
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))


def _compact(model, **kwargs):
    """`compact` and the warnings it gave (Keras's own deprecation noise left out)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = lth.compact(model, **kwargs)
    return small, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def _assert_same(small, model, x, tol=1e-5):
    got, want = small(x, training=False), model(x, training=False)
    for g, w in zip(keras.tree.flatten(got), keras.tree.flatten(want)):
        np.testing.assert_allclose(np_(g), np_(w), rtol=tol, atol=tol)


def _x(shape, n=4, seed=0):
    return np.random.default_rng(seed).normal(size=(n,) + shape).astype("float32")


def _assert_plain(model):
    assert not lth.masked_layers(model)
    assert "keras_lth" not in model.to_json()


# --------------------------------------------------------------------------- #
# Hand-computed folding
# --------------------------------------------------------------------------- #
def test_dead_filter_folds_into_next_valid_conv_bias():
    model = lth.prunable(
        keras.Sequential(
            [
                keras.Input((4, 1)),
                K.Conv1D(2, 1, name="a"),
                K.Conv1D(1, 2, name="b"),  # padding "valid"
            ]
        )
    )
    a, b = model.get_layer("a"), model.get_layer("b")
    a.raw_variable("kernel").assign(np.array([[[1.0, 3.0]]], "float32"))
    a.raw_variable("bias").assign(np.array([0.5, 2.0], "float32"))
    kb = np.array([[[1.0], [10.0]], [[-1.0], [100.0]]], "float32")  # (taps, in, out)
    b.raw_variable("kernel").assign(kb)
    b.raw_variable("bias").assign(np.array([0.25], "float32"))
    _prune_units(a, [1], bias=False)  # filter 1 outputs its bias, 2.0, everywhere
    small, messages = _compact(model)
    assert not messages
    assert small.get_layer("a").filters == 1
    kernel, bias = small.get_layer("b").get_weights()
    np.testing.assert_allclose(kernel, kb[:, :1, :])
    np.testing.assert_allclose(bias, [0.25 + 2.0 * (10.0 + 100.0)])
    _assert_same(small, model, _x((4, 1)))


def test_same_padding_keeps_one_representative_channel():
    # two dead filters with nonzero constants (c = -4 and c = 2) feed a conv
    # with padding "same": the larger one, filter 1, stays and carries filter
    # 2's kernel slice scaled by 2 / -4
    model = lth.prunable(
        keras.Sequential(
            [
                keras.Input((5, 1)),
                K.Conv1D(3, 1, name="a"),
                K.Conv1D(1, 3, padding="same", name="b"),
            ]
        )
    )
    a, b = model.get_layer("a"), model.get_layer("b")
    a.raw_variable("bias").assign(np.array([0.0, -4.0, 2.0], "float32"))
    kb = np.arange(9, dtype="float32").reshape(3, 3, 1) - 4.0
    b.raw_variable("kernel").assign(kb)
    _prune_units(a, [1, 2], bias=False)
    small, _ = _compact(model)
    kernel = small.get_layer("b").get_weights()[0]
    assert kernel.shape == (3, 2, 1)  # filter 0 and the representative, 1
    np.testing.assert_allclose(kernel[:, 0], kb[:, 0])
    np.testing.assert_allclose(kernel[:, 1], kb[:, 1] + (2.0 / -4.0) * kb[:, 2])
    _assert_same(small, model, _x((5, 1)))


# --------------------------------------------------------------------------- #
# CNNs
# --------------------------------------------------------------------------- #
def _cnn(padding="valid", bn=True, activation="relu"):
    layers = [keras.Input((12, 12, 3)), K.Conv2D(8, 3, padding=padding, name="c1")]
    layers += [K.BatchNormalization(name="bn1")] if bn else []
    layers += [
        K.Activation(activation),
        K.MaxPooling2D(),
        K.Conv2D(8, 3, padding=padding, name="c2"),
    ]
    layers += [K.BatchNormalization(name="bn2")] if bn else []
    layers += [
        K.Activation(activation),
        K.Dropout(0.3),
        K.Flatten(),
        K.Dense(6, activation="relu", name="fc"),
        K.Dense(3, name="out"),
    ]
    return keras.Sequential(layers, name="cnn")


@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("bn", [False, True])
def test_filter_pruned_cnn(padding, bn):
    model = lth.prunable(_cnn(padding, bn))
    _randomize(model)
    _prune_units(model.get_layer("c1"), [0, 2, 5])
    _prune_units(model.get_layer("c2"), [1, 3, 4, 7])
    _prune_units(model.get_layer("fc"), [0, 1])
    small, messages = _compact(model)
    assert not messages
    assert isinstance(small, keras.Sequential)
    _assert_plain(small)
    _assert_same(small, model, _x((12, 12, 3)))
    # a pruned ReLU filter without BN outputs 0 and goes; after BN it outputs
    # relu(beta - mean * ...), and with padding "same" one such channel stays
    # for the next conv when that constant is not 0
    c1 = small.get_layer("c1").filters
    assert c1 == 5 or (padding == "same" and bn and c1 == 6)
    assert small.get_layer("c2").filters == 4  # read by Flatten -> Dense: folds
    assert small.get_layer("fc").units == 4
    assert small.get_layer("out").units == 3
    if bn:
        assert small.get_layer("bn1").moving_mean.shape == (c1,)
    assert small.count_params() < lth.strip(model).count_params()


def test_nonzero_constants_under_same_padding_keep_exactly_one_channel():
    model = lth.prunable(_cnn("same", bn=True, activation="sigmoid"))  # constants never 0
    _randomize(model)
    _prune_units(model.get_layer("c1"), [0, 2, 5])
    small, messages = _compact(model)
    assert not messages  # the representative is documented, not warned about
    assert small.get_layer("c1").filters == 6
    _assert_same(small, model, _x((12, 12, 3)))


def test_weight_pruning_that_empties_a_filter_counts_as_dead():
    model = lth.prunable(_cnn("valid", bn=False))
    _randomize(model)
    _prune_units(model.get_layer("c1"), [3], bias=False)  # kernel only: outputs relu(b)
    small, _ = _compact(model)
    assert small.get_layer("c1").filters == 7
    _assert_same(small, model, _x((12, 12, 3)))


def _residual():
    inp = keras.Input((10, 10, 3))
    h = K.Conv2D(6, 3, padding="same", name="stem")(inp)
    h = K.BatchNormalization(name="bn0")(h)
    h = K.ReLU()(h)
    r = K.Conv2D(6, 3, padding="same", name="a")(h)
    r = K.BatchNormalization(name="bn_a")(r)
    r = K.ReLU()(r)
    r = K.Conv2D(6, 3, padding="same", name="b")(r)
    r = K.BatchNormalization(name="bn_b")(r)
    h = K.ReLU()(K.Add(name="add")([h, r]))
    h = K.GlobalAveragePooling2D()(h)
    return keras.Model(inp, K.Dense(3, name="out")(h), name="resnet")


def test_residual_add_removes_a_channel_only_if_dead_in_every_branch():
    model = lth.prunable(_residual())
    _randomize(model)
    _prune_units(model.get_layer("stem"), [0, 1])
    _prune_units(model.get_layer("a"), [2, 3, 4])
    _prune_units(model.get_layer("b"), [0, 1, 5])  # 0, 1 dead in both; 5 only here
    small, messages = _compact(model)
    _assert_plain(small)
    _assert_same(small, model, _x((10, 10, 3)))
    # conv 'a' (padding "same") reads stem's dead channels 0, 1 and conv 'b'
    # reads a's dead 2, 3, 4: one representative stays where a constant is not 0
    stem = 4 + _needs_representative(model.get_layer("bn0"), [0, 1])
    assert small.get_layer("stem").filters == small.get_layer("b").filters == stem
    assert small.get_layer("bn_b").moving_mean.shape == (stem,)
    assert small.get_layer("a").filters == 3 + _needs_representative(
        model.get_layer("bn_a"), [2, 3, 4]
    )
    assert len(messages) == 1 and "1 of 'b'" in messages[0]
    assert small.count_params() < lth.strip(model).count_params()


def _needs_representative(bn, channels):
    """Whether relu(bn(0)) is nonzero for one of `channels` (a pruned filter's output)."""
    gamma, beta, mean, var = (np_(w)[channels] for w in bn.weights)
    return int(np.any(beta - gamma * mean / np.sqrt(var + bn.epsilon) > 0))


def test_depthwise_separable_and_transposed_convolutions():
    inp = keras.Input((12, 12, 3))
    h = K.Conv2D(6, 3, activation="relu", name="c1")(inp)
    h = K.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="dw")(h)
    h = K.SeparableConv2D(5, 3, activation="relu", name="sep")(h)
    h = K.Conv2DTranspose(4, 3, strides=2, padding="same", activation="relu", name="ct")(h)
    h = K.SeparableConv2D(4, 3, padding="same", name="sep_same")(h)
    h = K.GlobalMaxPooling2D()(h)
    model = lth.prunable(keras.Model(inp, K.Dense(2, name="out")(h)))
    _randomize(model)
    _prune_units(model.get_layer("c1"), [1, 4])  # their depthwise outputs 2, 3, 8, 9 follow
    _prune_units(model.get_layer("dw"), [0, 5])  # channels 0, 2 are alive: these stay
    _prune_units(model.get_layer("sep"), [0, 3])
    _prune_units(model.get_layer("ct"), [1])
    small, messages = _compact(model)
    _assert_plain(small)
    _assert_same(small, model, _x((12, 12, 3)))
    assert small.get_layer("c1").filters == 4
    assert small.get_layer("dw").get_weights()[0].shape[-2:] == (4, 2)
    assert small.get_layer("sep").filters == 3
    assert small.get_layer("ct").filters == 3
    assert len(messages) == 1 and "2 of 'dw'" in messages[0]
    assert small.count_params() < lth.strip(model).count_params()


def test_conv1d_causal_and_embedding_dimensions():
    tokens = keras.Input((10,), dtype="int32")
    e = K.Embedding(30, 8, name="embed")(tokens)
    h = K.Conv1D(6, 3, padding="causal", activation="relu", name="c1")(e)
    h = K.Conv1D(6, 3, padding="causal", name="c2")(h)
    h = K.GlobalAveragePooling1D()(h)
    model = lth.prunable(keras.Model(tokens, K.Dense(2, name="out")(h)))
    _randomize(model)
    embed = model.get_layer("embed")
    mask = np.ones(embed.embeddings_mask.shape, "float32")
    mask[:, [1, 6]] = 0  # two embedding dimensions pruned
    embed.set_masks(mask)
    _prune_units(model.get_layer("c1"), [0, 2], bias=False)
    _prune_units(model.get_layer("c2"), [5])
    small, _ = _compact(model)
    x = np.random.default_rng(0).integers(0, 30, (4, 10)).astype("int32")
    _assert_same(small, model, x)
    assert small.get_layer("embed").output_dim == 6
    assert small.get_layer("c2").filters == 5
    assert small.get_layer("c1").filters in (4, 5)  # relu(b) may be nonzero: causal padding


def test_nested_shared_and_concatenated_branches():
    block = keras.Sequential(
        [
            keras.Input((8, 8, 4)),
            K.Conv2D(6, 3, name="bc"),
            K.BatchNormalization(name="bbn"),
            K.ReLU(),
        ],
        name="block",
    )
    shared = K.Conv2D(4, 1, activation="relu", name="shared")
    a, b = keras.Input((8, 8, 3), name="a"), keras.Input((8, 8, 3), name="b")
    ha, hb = block(shared(a)), block(shared(b))  # a shared layer, a nested model twice
    h = K.Concatenate()([ha, hb])
    h = K.Conv2D(5, 3, name="after")(h)
    h = K.Flatten()(h)
    model = lth.prunable(keras.Model([a, b], [K.Dense(2, name="out")(h), ha], name="two"))
    _randomize(model)
    _prune_units(model.get_layer("shared"), [1])
    _prune_units(model.get_layer("block").get_layer("bc"), [0, 4])
    _prune_units(model.get_layer("after"), [2, 3])
    small, messages = _compact(model)
    x = [_x((8, 8, 3), seed=1), _x((8, 8, 3), seed=2)]
    _assert_same(small, model, x)
    _assert_plain(small)
    assert small.get_layer("shared").filters == 3
    assert small.get_layer("after").filters == 3
    # `block`'s output is also a model output: its filters all stay
    assert small.get_layer("bc").filters == 6
    assert not messages


def test_layers_compact_cannot_narrow_keep_their_inputs():
    inp = keras.Input((6, 6, 2))
    h = K.Conv2D(4, 3, name="conv")(inp)
    h = K.Reshape((16, 4), name="reshape")(h)
    h = K.LayerNormalization(name="ln")(h)
    model = lth.prunable(keras.Model(inp, K.Dense(2, name="out")(K.Flatten()(h))))
    _randomize(model)
    _prune_units(model.get_layer("conv"), [1])
    small, messages = _compact(model)
    assert small.get_layer("conv").filters == 4
    assert len(messages) == 1 and "'reshape' (Reshape)" in messages[0]
    _assert_same(small, model, _x((6, 6, 2)))
    with pytest.raises(ValueError, match=r"(?s)layer 'conv'.*'reshape' \(Reshape\)"):
        lth.compact(model, strict=True)


def test_compacted_cnn_loads_without_keras_lth(tmp_path, run_without_keras_lth):
    model = lth.prunable(_residual())
    _randomize(model)
    _prune_units(model.get_layer("stem"), [0, 1])
    _prune_units(model.get_layer("b"), [0, 1])
    small, _ = _compact(model)
    x = _x((10, 10, 3))
    small.save(tmp_path / "small.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", _run(model, x))
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import keras

        model = keras.saving.load_model("small.keras")
        y = keras.ops.convert_to_numpy(model(np.load("x.npy"), training=False))
        np.testing.assert_allclose(y, np.load("y.npy"), rtol=1e-5, atol=1e-5)
        assert "keras_lth" not in sys.modules, "keras_lth was imported"
        print("LOADED-OK")
        """
    )
    run_without_keras_lth(script)


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
def test_compact_errors():
    with pytest.raises(ValueError, match="invalid value for `model`"):
        lth.compact(K.Dense(2))

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = lth.MaskedDense(2)

        def call(self, x):
            return self.d(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    with pytest.raises(ValueError, match="(?s)subclassed.*Net"):
        lth.compact(net)
    with pytest.raises(ValueError, match="not built"):
        lth.compact(keras.Sequential([lth.MaskedDense(2)], name="lazy"))
    plain = keras.Sequential([keras.Input((3,)), K.Dense(2)], name="plain")
    with pytest.raises(ValueError, match="(?s)at least one masked layer.*plain"):
        lth.compact(plain)
