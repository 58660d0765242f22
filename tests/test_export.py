"""Tests for `keras_lth.export`: `strip` and `compact`."""

import textwrap

import keras
import numpy as np
import pytest

from keras_lth import MaskedDense, compact, masked_layers, strip
from keras_lth.layers import sublayers as _sublayers

pytestmark = pytest.mark.jax  # backend-agnostic: also run under KERAS_BACKEND=jax


def _init(seed):
    return {
        "kernel_initializer": keras.initializers.GlorotUniform(seed),
        "bias_initializer": keras.initializers.RandomNormal(stddev=0.5, seed=seed + 100),
    }


def _mask_weights(model, seed, keep=0.6):
    """Random weight masks and bias masks on every MaskedDense."""
    rng = np.random.default_rng(seed)
    for layer in masked_layers(model):
        layer.set_masks(
            (rng.random(layer.kernel_mask.shape) < keep).astype("float32"),
            (rng.random(layer.units) < 0.8).astype("float32"),
        )


def _x(n=16, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype("float32")


def _all_layers(model):
    return [l for l in _sublayers(model) if not isinstance(l, keras.layers.InputLayer)]


def _assert_stripped(model, plain, x):
    layers = _all_layers(plain)
    assert not any(isinstance(l, MaskedDense) for l in layers)
    dense_before = [l for l in _all_layers(model) if isinstance(l, keras.layers.Dense)]
    assert [l.name for l in layers if type(l) is keras.layers.Dense] == [
        l.name for l in dense_before
    ]
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )
    dense = {l.name: l for l in layers if isinstance(l, keras.layers.Dense)}
    for layer in masked_layers(model):
        kernel, bias = [keras.ops.convert_to_numpy(w) for w in dense[layer.name].weights]
        kmask = keras.ops.convert_to_numpy(layer.kernel_mask)
        bmask = keras.ops.convert_to_numpy(layer.bias_mask)
        assert np.all(kernel[kmask == 0] == 0)
        np.testing.assert_array_equal(
            kernel[kmask == 1], keras.ops.convert_to_numpy(layer.kernel)[kmask == 1]
        )
        assert np.all(bias[bmask == 0] == 0)
        assert dense[layer.name].get_config()["activation"] == layer.get_config()["activation"]


def _sequential(seed=0):
    return keras.Sequential(
        [
            keras.Input((6,)),
            MaskedDense(8, activation="relu", **_init(seed)),
            keras.layers.Dropout(0.2),
            MaskedDense(5, activation="tanh", **_init(seed + 1)),
            MaskedDense(3, **_init(seed + 2)),
        ],
        name="seq",
    )


def _nested(seed=0):
    inner = keras.Sequential(
        [
            keras.Input((8,)),
            MaskedDense(7, activation="relu", **_init(seed + 1)),
            keras.layers.BatchNormalization(),
            MaskedDense(5, activation="relu", **_init(seed + 2)),
        ],
        name="inner",
    )
    inp = keras.Input((6,))
    h = MaskedDense(8, activation="relu", **_init(seed))(inp)
    h = inner(h)
    skip = keras.layers.Dense(5, name="plain_skip", **_init(seed + 3))(inp)
    h = keras.layers.Add()([h, skip])
    out = MaskedDense(3, **_init(seed + 4))(h)
    return keras.Model(inp, out, name="outer")


# --------------------------------------------------------------------------- #
# strip
# --------------------------------------------------------------------------- #
def test_strip_sequential():
    model = _sequential()
    _mask_weights(model, 1)
    plain = strip(model)
    assert isinstance(plain, keras.Sequential)
    _assert_stripped(model, plain, _x())
    # the original is untouched
    assert all(type(l) is MaskedDense for l in masked_layers(model))


def test_strip_functional_with_nested_model():
    model = _nested()
    # non-trivial BatchNormalization statistics must be copied too
    bn = model.get_layer("inner").layers[1]
    bn.moving_mean.assign(np.linspace(-1, 1, 7).astype("float32"))
    bn.moving_variance.assign(np.linspace(0.5, 2, 7).astype("float32"))
    _mask_weights(model, 2)
    plain = strip(model)
    assert isinstance(plain.get_layer("inner"), keras.Model)
    _assert_stripped(model, plain, _x())


def test_strip_without_masked_dense_raises():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="no_masks")
    with pytest.raises(ValueError, match="MaskedDense(.|\n)*no_masks"):
        strip(model)


def test_stripped_models_load_without_keras_lth(tmp_path, run_without_keras_lth):
    x = _x()
    for name, make in (("seq", _sequential), ("nested", _nested)):
        model = make()
        _mask_weights(model, 3)
        plain = strip(model)
        plain.save(tmp_path / f"{name}.keras")
        np.save(tmp_path / f"{name}.npy", plain.predict(x, verbose=0))
        # the saved file names no keras_lth class
        assert "keras_lth" not in str(plain.to_json())
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        import keras

        x = np.load("x.npy")
        for name in ("seq", "nested"):
            model = keras.saving.load_model(name + ".keras")
            np.testing.assert_allclose(
                model.predict(x, verbose=0), np.load(name + ".npy"), rtol=1e-6, atol=1e-6
            )
        assert "keras_lth" not in sys.modules, "keras_lth was imported"
        print("LOADED-OK")
        """
    )
    run_without_keras_lth(script, timeout=120, KERAS_BACKEND="tensorflow")


# --------------------------------------------------------------------------- #
# compact
# --------------------------------------------------------------------------- #
def _kill(layer, columns, bias=True):
    """Neuron-prunes `columns` of `layer` (kernel column, and bias if asked)."""
    kmask = keras.ops.convert_to_numpy(layer.kernel_mask).copy()
    bmask = keras.ops.convert_to_numpy(layer.bias_mask).copy()
    kmask[:, columns] = 0
    if bias:
        bmask[columns] = 0
    layer.set_masks(kmask, bmask)


def _mlp(seed=0):
    return keras.Sequential(
        [
            keras.Input((6,)),
            MaskedDense(8, activation="relu", name="h_relu", **_init(seed)),
            MaskedDense(5, activation="sigmoid", name="h_sigmoid", **_init(seed + 1)),
            keras.layers.Dropout(0.5),
            MaskedDense(4, name="h_linear", **_init(seed + 2)),
            MaskedDense(3, name="out", **_init(seed + 3)),
        ],
        name="mlp",
    )


def test_compact_neuron_pruned_mlp():
    model = _mlp()
    # some weight pruning everywhere, then neurons on top
    rng = np.random.default_rng(0)
    for layer in masked_layers(model):
        layer.set_masks((rng.random(layer.kernel_mask.shape) < 0.8).astype("float32"))
    relu, sig, lin, out = masked_layers(model)
    # no column may die by chance: the expected shapes below count on it. A
    # unit that reads only removed (constant) inputs is itself constant and
    # goes too, so each layer keeps a full row of an input that stays.
    for layer, row in ((relu, 0), (sig, 0), (lin, 1)):
        kmask = keras.ops.convert_to_numpy(layer.kernel_mask)
        kmask[row] = 1
        layer.set_masks(kmask)
    _kill(relu, [1, 4])  # relu(0) = 0
    _kill(sig, [0])  # bias masked too: sigmoid(0) = 0.5 must be folded
    _kill(sig, [3], bias=False)  # dead only through weight pruning: sigmoid(b)
    _kill(lin, [2], bias=False)  # linear unit with a live bias: outputs b
    _kill(out, [1])  # an output unit is never removed

    small = compact(model)
    x = _x(32)
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        small.predict(x, verbose=0), strip(model).predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    layers = _all_layers(small)
    assert [type(l).__name__ for l in layers] == ["Dense", "Dense", "Dropout", "Dense", "Dense"]
    dense = [l for l in layers if isinstance(l, keras.layers.Dense)]
    assert [tuple(l.kernel.shape) for l in dense] == [(6, 6), (6, 3), (3, 3), (3, 3)]
    assert [l.get_config()["activation"] for l in dense] == ["relu", "sigmoid", "linear", "linear"]
    assert small.count_params() < strip(model).count_params()


def test_compact_folds_constants_through_layers_in_between():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            MaskedDense(5, name="pre", **_init(0)),  # linear
            keras.layers.Activation("sigmoid"),
            keras.layers.LeakyReLU(0.3),
            MaskedDense(4, activation="relu", name="mid", **_init(1)),
            keras.layers.ReLU(),
            MaskedDense(2, name="out", **_init(2)),
        ]
    )
    pre, mid, _ = masked_layers(model)
    _kill(pre, [0, 3])  # outputs 0, then sigmoid(0) = 0.5 reaches `mid`
    _kill(mid, [1], bias=False)
    small = compact(model)
    x = _x()
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    assert [l.units for l in small.layers if isinstance(l, keras.layers.Dense)] == [3, 3, 2]


def test_compact_linear_model_with_nested_sequential():
    inner = keras.Sequential(
        [
            keras.Input((8,)),
            MaskedDense(7, activation="relu", name="in_a", **_init(1)),
            MaskedDense(5, activation="sigmoid", name="in_b", **_init(2)),
        ],
        name="inner",
    )
    inp = keras.Input((6,))
    h = inner(MaskedDense(8, activation="relu", name="first", **_init(0))(inp))
    model = keras.Model(inp, MaskedDense(3, name="last", **_init(3))(h))
    _kill(model.get_layer("first"), [0, 5])
    _kill(inner.get_layer("in_a"), [6])
    _kill(inner.get_layer("in_b"), [1, 2])
    small = compact(model)
    assert [l.name for l in small.layers] == ["first", "in_a", "in_b", "last"]
    assert [tuple(l.kernel.shape) for l in small.layers] == [(6, 6), (6, 6), (6, 3), (3, 3)]
    x = _x()
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_compact_with_plain_dense_and_nothing_dead():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            MaskedDense(4, activation="relu", **_init(0)),
            keras.layers.Dense(3, use_bias=False, **_init(1)),
        ]
    )
    _mask_weights(model, 5)
    small = compact(model)
    assert [tuple(l.kernel.shape) for l in small.layers] == [(6, 4), (4, 3)]
    x = _x()
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_compact_folds_through_batch_normalization_between_dense_layers():
    # BatchNormalization acts unit by unit: supported since compact handles CNNs
    model = keras.Sequential(
        [
            keras.Input((6,)),
            MaskedDense(4, name="a", **_init(0)),
            keras.layers.BatchNormalization(name="bn"),
            MaskedDense(2, name="b", **_init(1)),
        ]
    )
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.array([0.5, -1.0, 0.25, 2.0], "float32"))
    bn.beta.assign(np.array([0.1, 0.2, -0.3, 0.4], "float32"))
    _kill(model.get_layer("a"), [1])  # outputs 0, then (0 - mean) * ... + beta != 0
    small = compact(model)
    assert small.get_layer("a").units == 3
    assert small.get_layer("bn").moving_mean.shape == (3,)
    x = _x()
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_compact_add_keeps_units_alive_in_one_branch():
    # residual branches are supported since compact handles CNNs: a unit goes
    # only if it is dead in every branch of the Add
    inp = keras.Input((6,))
    h = MaskedDense(4, name="a", **_init(0))(inp)
    h = keras.layers.Add(name="add")([h, MaskedDense(4, name="b", **_init(1))(inp)])
    model = keras.Model(inp, MaskedDense(2, **_init(2))(h))
    _kill(model.get_layer("a"), [0, 2])
    _kill(model.get_layer("b"), [2, 3])
    with pytest.warns(UserWarning, match="'b'"):  # b's unit 3 is kept: a's is alive
        small = compact(model)
    assert small.get_layer("a").units == 3 and small.get_layer("b").units == 3
    x = _x()
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_compact_keeps_units_that_a_mixing_layer_reads():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            MaskedDense(4, name="a"),
            keras.layers.Softmax(name="sm"),
            MaskedDense(2, name="b"),
        ]
    )
    compact(model)  # nothing dead: fine
    _kill(model.layers[0], [2])
    with pytest.warns(UserWarning, match=r"'sm' \(Softmax\)"):
        small = compact(model)
    assert small.layers[0].units == 4
    with pytest.raises(ValueError, match=r"'sm' \(Softmax\)"):
        compact(model, strict=True)


def test_compact_keeps_softmax_hidden_units_that_died():
    model = keras.Sequential(
        [
            keras.Input((6,)),
            MaskedDense(4, activation="softmax", name="a"),
            MaskedDense(2, name="b"),
        ]
    )
    compact(model)  # nothing dead: fine
    _kill(model.layers[0], [2])
    with pytest.warns(UserWarning, match="softmax"):
        small = compact(model)
    assert small.layers[0].units == 4
    with pytest.raises(ValueError, match="softmax"):
        compact(model, strict=True)


def test_compact_without_masked_dense_raises():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="no_masks")
    with pytest.raises(ValueError, match="MaskedDense(.|\n)*no_masks"):
        compact(model)
