"""Tests for `keras_lth.conversion.prunable` and `keras_lth.strip` on every family.

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
from keras_lth import layers as ML
from keras_lth.conversion import is_graph_model

pytestmark = pytest.mark.jax  # backend-agnostic: also run under KERAS_BACKEND=jax

K = keras.layers


def np_(x):
    return ops.convert_to_numpy(x)


def _run(model, x):
    return np_(model(x, training=False))


def _randomize(model, seed=0):
    """Non-trivial weights everywhere (nonzero biases, BN statistics)."""
    rng = np.random.default_rng(seed)
    layers = lth.conversion.graph_sublayers(model) if isinstance(model, keras.Model) else [model]
    for layer in layers:
        if isinstance(layer, keras.Model):
            continue
        layer.set_weights(
            [
                rng.normal(scale=0.5, size=w.shape).astype(w.dtype) if w.dtype.kind == "f" else w
                for w in layer.get_weights()
            ]
        )
        if isinstance(layer, K.BatchNormalization):
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, layer.moving_variance.shape))


def _random_masks(model, seed=0, keep=0.6):
    rng = np.random.default_rng(seed)
    for layer in lth.masked_layers(model):
        masks = {
            f"{w.name}_mask": (rng.random(w.mask.shape) < keep).astype("float32")
            for w in layer.masked_weights
        }
        if layer.bias_weight is not None:
            masks["bias_mask"] = (rng.random(layer.bias_weight.mask.shape) < 0.8).astype("float32")
        layer.set_masks(**masks)


# --------------------------------------------------------------------------- #
# Every supported family, as a plain Keras layer in a small model
# --------------------------------------------------------------------------- #
FAMILIES = {
    "Dense": (lambda: K.Dense(4, activation="relu"), (5,), "float32"),
    "EinsumDense": (
        lambda: K.EinsumDense("abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de"),
        (3, 5),
        "float32",
    ),
    "Conv1D": (lambda: K.Conv1D(4, 3), (9, 3), "float32"),
    "Conv2D": (lambda: K.Conv2D(4, 3, padding="same"), (7, 7, 3), "float32"),
    "Conv3D": (lambda: K.Conv3D(3, 2), (4, 4, 4, 2), "float32"),
    "Conv1DTranspose": (lambda: K.Conv1DTranspose(4, 3, strides=2), (6, 3), "float32"),
    "Conv2DTranspose": (lambda: K.Conv2DTranspose(4, 3), (5, 5, 3), "float32"),
    "Conv3DTranspose": (lambda: K.Conv3DTranspose(2, 2), (3, 3, 3, 2), "float32"),
    "DepthwiseConv1D": (lambda: K.DepthwiseConv1D(3, depth_multiplier=2), (9, 3), "float32"),
    "DepthwiseConv2D": (lambda: K.DepthwiseConv2D(3, depth_multiplier=2), (7, 7, 3), "float32"),
    "SeparableConv1D": (lambda: K.SeparableConv1D(4, 3, depth_multiplier=2), (9, 3), "float32"),
    "SeparableConv2D": (lambda: K.SeparableConv2D(4, 3), (7, 7, 3), "float32"),
    "Embedding": (lambda: K.Embedding(11, 4), (6,), "int32"),
    "MultiHeadAttention": (lambda: K.MultiHeadAttention(2, 3), (4, 6), "float32"),
    "LSTM": (lambda: K.LSTM(4, return_sequences=True), (5, 3), "float32"),
    "GRU": (lambda: K.GRU(4), (5, 3), "float32"),
    "SimpleRNN": (lambda: K.SimpleRNN(4), (5, 3), "float32"),
}


def _family_model(family):
    make, shape, dtype = FAMILIES[family]
    inp = keras.Input(shape, dtype=dtype)
    layer = make()
    out = layer(inp, inp) if family == "MultiHeadAttention" else layer(inp)
    return keras.Model(inp, out, name=f"m_{family}")


def _family_input(family, n=3, seed=0):
    _, shape, dtype = FAMILIES[family]
    rng = np.random.default_rng(seed)
    if dtype == "int32":
        return rng.integers(0, 11, (n,) + shape).astype("int32")
    return rng.normal(size=(n,) + shape).astype("float32")


def test_the_table_covers_every_supported_class():
    assert {c.__name__ for c in ML.MASKED_CLASSES} == set(FAMILIES)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_prunable_then_strip_every_family(family):
    model = _family_model(family)
    _randomize(model)
    x = _family_input(family)
    before = [w.copy() for w in model.get_weights()]

    masked = lth.prunable(model)
    layer = masked.layers[-1]
    assert type(layer) is ML.MASKED_CLASSES[getattr(K, family)]
    np.testing.assert_array_equal(_run(masked, x), _run(model, x))  # masks all ones
    assert lth.density(masked) == 1.0

    _random_masks(masked, seed=1)
    plain = lth.strip(masked)
    stripped = plain.layers[-1]
    assert type(stripped) is getattr(K, family)
    assert not lth.masked_layers(plain)
    for got, want in zip(stripped.get_weights(), layer.effective_weights()):
        np.testing.assert_array_equal(got, want)  # pruned entries exact zeros
    np.testing.assert_allclose(_run(plain, x), _run(masked, x), rtol=1e-6, atol=1e-6)
    # the user's model is untouched
    assert type(model.layers[-1]) is getattr(K, family)
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)


def test_single_layer_twins():
    dense = K.Dense(3, name="d")
    dense.build((None, 4))
    _randomize(dense)
    masked = lth.prunable(dense)
    assert type(masked) is ML.MaskedDense and masked.name == "d"
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    np.testing.assert_array_equal(np_(masked(x)), np_(dense(x)))
    masked.set_masks(np.array([[1, 0, 1]] * 4, "float32"))
    plain = lth.strip(masked)
    assert type(plain) is K.Dense
    np.testing.assert_array_equal(np_(plain(x)), np_(masked(x)))
    # unbuilt: an unbuilt twin
    assert not lth.prunable(K.Conv2D(2, 3)).built
    # a masked layer: a copy with its masks
    again = lth.prunable(masked)
    assert again is not masked
    np.testing.assert_array_equal(np_(again.kernel_mask), np_(masked.kernel_mask))


# --------------------------------------------------------------------------- #
# Whole models
# --------------------------------------------------------------------------- #
def _mixed_model():
    image = keras.Input((8, 8, 3), name="image")
    tokens = keras.Input((5,), dtype="int32", name="tokens")
    h = K.Conv2D(6, 3, padding="same", name="conv1")(image)
    h = K.BatchNormalization(name="bn")(h)
    h = K.ReLU()(h)
    h = K.MaxPooling2D()(h)
    h = K.Conv2D(8, 3, name="conv2", activation="relu")(h)
    h = K.Flatten()(h)
    h = K.Dense(7, activation="relu", name="fc")(h)
    e = K.Embedding(20, 6, name="embed")(tokens)
    e = K.MultiHeadAttention(2, 3, name="attn")(e, e)
    e = K.LSTM(5, name="lstm")(e)
    joined = K.Concatenate()([h, e])
    logits = K.Dense(3, name="logits")(joined)
    aux = K.Dense(1, activation="sigmoid", name="aux")(e)
    return keras.Model([image, tokens], [logits, aux], name="mixed")


def _mixed_input(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(n, 8, 8, 3)).astype("float32"),
        rng.integers(0, 20, (n, 5)).astype("int32"),
    ]


def _types(model):
    return {l.name: type(l).__name__ for l in lth.conversion.graph_sublayers(model)}


def test_mixed_model_keeps_its_predictions():
    model = _mixed_model()
    _randomize(model)
    x = _mixed_input()
    config, weights = model.get_config(), [w.copy() for w in model.get_weights()]
    masked = lth.prunable(model)
    types = _types(masked)
    for name in ("conv1", "conv2", "fc", "logits", "aux"):
        assert types[name] in ("MaskedConv2D", "MaskedDense")
    assert types["embed"] == "MaskedEmbedding"
    assert types["attn"] == "MaskedMultiHeadAttention"
    assert types["lstm"] == "MaskedLSTM"
    assert types["bn"] == "BatchNormalization"
    for got, want in zip(masked(x, training=False), model(x, training=False)):
        np.testing.assert_array_equal(np_(got), np_(want))
    # the user's model is not modified
    assert model.get_config() == config
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    assert all(not isinstance(l, ML.MaskedLayer) for l in model.layers)


def test_mixed_model_saves_prunes_and_strips(tmp_path):
    masked = lth.prunable(_mixed_model())
    _randomize(masked)
    _random_masks(masked, seed=2)
    x = _mixed_input()
    path = tmp_path / "masked.keras"
    masked.save(path)
    loaded = keras.saving.load_model(path)
    for got, want in zip(loaded(x, training=False), masked(x, training=False)):
        np.testing.assert_allclose(np_(got), np_(want), rtol=1e-6, atol=1e-6)
    plain = lth.strip(masked)
    assert not lth.masked_layers(plain)
    for got, want in zip(plain(x, training=False), masked(x, training=False)):
        np.testing.assert_allclose(np_(got), np_(want), rtol=1e-6, atol=1e-6)


def test_stripped_families_load_without_keras_lth(tmp_path, run_without_keras_lth):
    masked = lth.prunable(_mixed_model())
    _randomize(masked)
    _random_masks(masked, seed=3)
    plain = lth.strip(masked)
    x = _mixed_input()
    plain.save(tmp_path / "plain.keras")
    np.savez(tmp_path / "io.npz", x0=x[0], x1=x[1], y0=np_(plain(x, training=False)[0]))
    assert "keras_lth" not in plain.to_json()
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import keras

        io = np.load("io.npz")
        model = keras.saving.load_model("plain.keras")
        y = model([io["x0"], io["x1"]], training=False)[0]
        np.testing.assert_allclose(keras.ops.convert_to_numpy(y), io["y0"], rtol=1e-6, atol=1e-6)
        assert "keras_lth" not in sys.modules, "keras_lth was imported"
        print("LOADED-OK")
        """
    )
    run_without_keras_lth(script)


def test_nested_models_and_shared_layers():
    inner_seq = keras.Sequential(
        [keras.Input((6,)), K.Dense(5, activation="relu", name="s1"), K.Dense(4, name="s2")],
        name="inner_seq",
    )
    i = keras.Input((4,))
    inner_fn = keras.Model(i, K.Dense(4, activation="tanh", name="f1")(i), name="inner_fn")
    shared = K.Dense(6, activation="relu", name="shared")
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    ha, hb = shared(a), shared(b)  # one layer called twice
    h = K.Add()([inner_fn(inner_seq(ha)), inner_fn(inner_seq(hb))])  # a nested model twice
    model = keras.Model([a, b], K.Dense(2, name="out")(h), name="outer")
    _randomize(model)
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(4, 3)).astype("float32") for _ in range(2)]

    masked = lth.prunable(model)
    assert isinstance(masked.get_layer("inner_seq"), keras.Sequential)
    assert type(masked.get_layer("inner_seq").get_layer("s1")) is ML.MaskedDense
    assert type(masked.get_layer("inner_fn").get_layer("f1")) is ML.MaskedDense
    names = [l.name for l in lth.masked_layers(masked)]
    assert sorted(names) == ["f1", "out", "s1", "s2", "shared"]  # shared: one layer
    np.testing.assert_array_equal(_run(masked, x), _run(model, x))

    _random_masks(masked, seed=4)
    plain = lth.strip(masked)
    assert isinstance(plain.get_layer("inner_fn"), keras.Model)
    assert not lth.masked_layers(plain)
    np.testing.assert_allclose(_run(plain, x), _run(masked, x), rtol=1e-6, atol=1e-6)


def test_unbuilt_sequential():
    model = keras.Sequential([K.Dense(4, activation="relu"), K.Dense(2)], name="lazy")
    masked = lth.prunable(model)
    assert not masked.built
    assert [type(l) for l in masked.layers] == [ML.MaskedDense, ML.MaskedDense]
    y = masked(np.ones((2, 3), "float32"))
    assert y.shape == (2, 2)
    assert lth.density(masked) == 1.0


def test_sequential_built_by_a_call():
    model = keras.Sequential([K.Dense(4, activation="relu"), K.Dense(2)])
    x = np.random.default_rng(0).normal(size=(2, 3)).astype("float32")
    y = _run(model, x)
    masked = lth.prunable(model)
    np.testing.assert_array_equal(_run(masked, x), y)


def test_partly_masked_model_keeps_its_masks():
    model = keras.Sequential(
        [keras.Input((5,)), ML.MaskedDense(4, name="m"), K.Dense(3, name="p")], name="partly"
    )
    _randomize(model)
    mask = (np.random.default_rng(0).random((5, 4)) < 0.5).astype("float32")
    model.get_layer("m").set_masks(mask)
    model.get_layer("m").gradient_mode = "dense"
    masked = lth.prunable(model)
    m = masked.get_layer("m")
    assert m is not model.get_layer("m")
    np.testing.assert_array_equal(np_(m.kernel_mask), mask)
    np.testing.assert_array_equal(np_(m.raw_variable()), np_(model.get_layer("m").raw_variable()))
    assert m.gradient_mode == "dense"
    assert type(masked.get_layer("p")) is ML.MaskedDense
    x = np.random.default_rng(1).normal(size=(3, 5)).astype("float32")
    np.testing.assert_array_equal(_run(masked, x), _run(model, x))


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16", "bfloat16"])
def test_dtype_policies_are_kept(policy):
    inp = keras.Input((6, 6, 3))
    h = K.Conv2D(4, 3, dtype=policy, name="conv")(inp)
    h = K.Flatten()(h)
    model = keras.Model(inp, K.Dense(2, dtype=policy, name="out")(h))
    _randomize(model)
    masked = lth.prunable(model)
    for name in ("conv", "out"):
        assert masked.get_layer(name).dtype_policy.name == policy
        assert isinstance(masked.get_layer(name), ML.MaskedLayer)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype("float32")
    np.testing.assert_array_equal(_run(masked, x), _run(model, x))
    assert all(w.mask.dtype == "bool" for w in lth.layers.masked_weights(masked))
    plain = lth.strip(masked)
    assert plain.get_layer("out").dtype_policy.name == policy


def test_quantized_layer_is_left_and_listed():
    model = keras.Sequential(
        [keras.Input((4,)), K.Dense(3, name="q"), K.Dense(2, name="f")], name="quant"
    )
    model.get_layer("q").quantize("int8")
    with pytest.warns(UserWarning, match=r"'q' \(Dense: quantized"):
        masked = lth.prunable(model)
    assert type(masked.get_layer("q")) is K.Dense
    assert type(masked.get_layer("f")) is ML.MaskedDense
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    np.testing.assert_allclose(_run(masked, x), _run(model, x), rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- #
# Choosing layers
# --------------------------------------------------------------------------- #
def _cnn():
    return keras.Sequential(
        [
            keras.Input((10, 10, 1)),
            K.Conv2D(4, 3, activation="relu", name="conv1"),
            K.Conv2D(4, 3, activation="relu", name="conv2"),
            K.Flatten(),
            K.Dense(8, activation="relu", name="fc"),
            K.Dense(2, name="logits"),
        ],
        name="cnn",
    )


def _masked_names(model):
    return [l.name for l in lth.masked_layers(model)]


@pytest.mark.parametrize(
    "kwargs, expected",
    [
        ({}, ["conv1", "conv2", "fc", "logits"]),
        ({"exclude": ["conv1", "logits"]}, ["conv2", "fc"]),
        ({"layers": "fc"}, ["fc"]),
        ({"layers": K.Conv2D}, ["conv1", "conv2"]),
        ({"layers": lambda l: getattr(l, "units", 0) > 4}, ["fc"]),
        ({"layers": [K.Conv2D, "logits"], "exclude": "conv2"}, ["conv1", "logits"]),
        ({"exclude": K.Dense}, ["conv1", "conv2"]),
        ({"layers": []}, []),
    ],
)
def test_layer_selection(kwargs, expected):
    model = _cnn()
    masked = lth.prunable(model, **kwargs)
    assert _masked_names(masked) == expected
    x = np.random.default_rng(0).normal(size=(2, 10, 10, 1)).astype("float32")
    np.testing.assert_array_equal(_run(masked, x), _run(model, x))


def test_exclude_a_nested_model_by_name():
    backbone = keras.Sequential(
        [keras.Input((5,)), K.Dense(4, name="b1"), K.Dense(4, name="b2")], name="backbone"
    )
    inp = keras.Input((5,))
    model = keras.Model(inp, K.Dense(2, name="head")(backbone(inp)))
    assert _masked_names(lth.prunable(model, exclude="backbone")) == ["head"]
    assert _masked_names(lth.prunable(model, layers="backbone")) == ["b1", "b2"]


# --------------------------------------------------------------------------- #
# Layers that cannot be masked
# --------------------------------------------------------------------------- #
class _Scale(K.Layer):
    """A custom layer with a kernel."""

    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], shape[-1]), initializer="ones")

    def call(self, x):
        return ops.matmul(x, self.w)


class _MyDense(K.Dense):
    pass


def test_unsupported_layers_are_listed_and_left():
    inp = keras.Input((4, 3))
    h = K.TimeDistributed(K.Dense(3), name="td")(inp)
    h = K.Bidirectional(K.LSTM(2, return_sequences=True), name="bi")(h)
    h = K.LayerNormalization(name="ln")(h)
    h = K.BatchNormalization(name="bn")(h)
    h = _Scale(name="custom")(h)
    h = _MyDense(3, name="mine")(h)
    model = keras.Model(inp, K.Dense(2, name="out")(h))
    _randomize(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        masked = lth.prunable(model)
    messages = [str(w.message) for w in caught if "prunable" in str(w.message)]
    assert len(messages) == 1
    message = messages[0]
    for text in (
        "'td' (TimeDistributed: a wrapper",
        "'bi' (Bidirectional: a wrapper",
        "'custom' (_Scale: a custom layer",
        "'mine' (_MyDense: a subclass of Dense",
    ):
        assert text in message
    assert "'ln'" not in message and "'bn'" not in message
    assert _masked_names(masked) == ["out"]
    assert type(masked.get_layer("td")) is K.TimeDistributed
    x = np.random.default_rng(0).normal(size=(2, 4, 3)).astype("float32")
    np.testing.assert_allclose(_run(masked, x), _run(model, x), rtol=1e-6, atol=1e-6)


def test_nothing_listed_when_everything_is_supported():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lth.prunable(_cnn())
    assert not [w for w in caught if issubclass(w.category, UserWarning)]


def test_subclassed_model_raises_and_masked_layers_work_inside_one():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = ML.MaskedConv2D(4, 3, name="conv")
            self.flat = K.Flatten()
            self.out = ML.MaskedDense(2, name="out")

        def call(self, x):
            return self.out(self.flat(self.conv(x)))

    net = Net()
    net(np.zeros((1, 6, 6, 1), "float32"))
    with pytest.raises(ValueError, match="(?s)subclassed.*Net.*MaskedConv2D"):
        lth.prunable(net)
    with pytest.raises(ValueError, match="(?s)subclassed.*Net"):
        lth.strip(net)
    assert [l.name for l in lth.masked_layers(net)] == ["conv", "out"]
    conv = net.conv
    mask = np.ones(conv.kernel_mask.shape, "float32")
    mask[..., 0] = 0
    conv.set_masks(mask)
    total = 3 * 3 * 4 + 16 * 2 * 4
    overall, per_layer = lth.density(net, per_layer=True)
    assert per_layer == {"conv": 0.75, "out": 1.0}
    assert overall == pytest.approx((27 + 128) / total)


def test_is_graph_model_tells_graph_models_from_subclassed_ones():
    # the one private Keras class conversion reads: this fails if it moves
    inp = keras.Input((3,))
    assert is_graph_model(keras.Model(inp, K.Dense(2)(inp)))
    assert is_graph_model(keras.Sequential([K.Dense(2)]))

    class Sub(keras.Model):
        def call(self, x):
            return x

    assert not is_graph_model(Sub())
    assert not is_graph_model(K.Dense(2))


# --------------------------------------------------------------------------- #
# Errors
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"layers": "nope"}, r"unknown layer names in `layers`: \['nope'\]"),
        ({"exclude": ["conv1", "nada"]}, r"unknown layer names in `exclude`: \['nada'\]"),
        ({"layers": 3}, r"invalid value for `layers`.*Received: layers=3"),
        ({"exclude": [K.Conv2D, 2.5]}, r"invalid value for `exclude`.*2\.5"),
        ({"layers": int}, r"invalid value for `layers`"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lth.prunable(_cnn(), **kwargs)


def test_bad_model_arguments():
    with pytest.raises(ValueError, match="invalid value for `model_or_layer`.*str"):
        lth.prunable("model")
    with pytest.raises(ValueError, match="cannot mask layer 'ln' \\(LayerNormalization\\)"):
        lth.prunable(K.LayerNormalization(name="ln"))
    with pytest.raises(ValueError, match="`layers` and `exclude` choose layers inside a model"):
        lth.prunable(K.Dense(2), exclude="x")
    with pytest.raises(ValueError, match="invalid value for `model`"):
        lth.strip(K.Dense(2))
    with pytest.raises(ValueError, match="(?s)at least one masked layer.*cnn"):
        lth.strip(_cnn())


def test_docstring_examples_run(tmp_path, monkeypatch):
    import doctest

    from keras_lth import compaction, conversion, export

    monkeypatch.chdir(tmp_path)  # strip's example saves a file
    globs = {"keras": keras, "np": np, "keras_lth": lth}
    for module, name in ((conversion, "prunable"), (export, "strip"), (compaction, "compact")):
        fn = getattr(module, name)
        runner = doctest.DocTestRunner()
        for test in doctest.DocTestFinder().find(fn, name, globs={**globs, name: fn}):
            runner.run(test)
        result = runner.summarize(verbose=False)
        assert result.attempted > 0 and result.failed == 0, name
