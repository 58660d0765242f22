"""Tests for `keras_lth.models`."""

import keras
import numpy as np
import pytest

import keras_lth as lth
from keras_lth import models

pytestmark = pytest.mark.jax  # backend-agnostic: also run under KERAS_BACKEND=jax


def _kernels(model):
    return [np.asarray(layer.kernel) for layer in model.layers if hasattr(layer, "kernel")]


def test_lenet_300_100_layers_and_shapes():
    model = models.lenet_300_100()
    assert [layer.name for layer in model.layers] == ["hidden_1", "hidden_2", "output"]
    assert all(isinstance(layer, lth.MaskedDense) for layer in model.layers)
    assert [k.shape for k in _kernels(model)] == [(784, 300), (300, 100), (100, 10)]
    assert model.layers[-1].activation is keras.activations.linear
    assert model(np.zeros((2, 784), "float32")).shape == (2, 10)
    assert lth.density(model) == 1.0
    assert not model.compiled


def test_dense_variant_is_plain_keras_with_same_names():
    model = models.lenet_300_100(dense=True)
    assert [type(layer) for layer in model.layers] == [keras.layers.Dense] * 3
    assert [layer.name for layer in model.layers] == ["hidden_1", "hidden_2", "output"]
    assert model.count_params() == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def test_unflattened_input_gets_a_flatten_layer():
    model = models.lenet_300_100(num_classes=5, input_shape=(28, 28))
    assert model.layers[0].name == "flatten"
    assert model(np.zeros((3, 28, 28), "float32")).shape == (3, 5)


def test_glorot_normal_init_distinct_layers_and_seeded():
    a, b = models.lenet_300_100(seed=7), models.lenet_300_100(seed=7)
    for ka, kb in zip(_kernels(a), _kernels(b)):
        np.testing.assert_array_equal(ka, kb)
    k = _kernels(a)[0]
    assert abs(k.std() - np.sqrt(2 / (784 + 300))) < 0.1 * np.sqrt(2 / (784 + 300))
    assert not np.array_equal(_kernels(a)[0], _kernels(models.lenet_300_100(seed=8))[0])
    # Unseeded builds differ from each other (fresh initializer per layer).
    assert not np.array_equal(
        _kernels(models.lenet_300_100())[0], _kernels(models.lenet_300_100())[0]
    )
    assert all(np.all(np.asarray(layer.bias) == 0) for layer in a.layers)


def test_speech_mlp_defaults_and_custom_hidden():
    model = models.speech_mlp(1960)
    assert [k.shape for k in _kernels(model)] == [(1960, 256), (256, 256), (256, 12)]
    model = models.speech_mlp(30, hidden=(8, 8, 8), num_classes=3, dense=True)
    assert [layer.name for layer in model.layers] == ["hidden_1", "hidden_2", "hidden_3", "output"]
    assert model(np.zeros((1, 30), "float32")).shape == (1, 3)


def test_layer_rates_by_name_work_with_the_scheduler():
    model = models.lenet_300_100(input_shape=(20,), seed=0)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    schedule = lth.IterativeSchedule(
        rounds=1, epochs_per_round=1, rate=0.5, layer_rates={"output": 0.1}
    )
    scheduler = lth.PruningScheduler(schedule=schedule)
    x, y = np.random.default_rng(0).normal(size=(16, 20)).astype("float32"), np.zeros(16, "int32")
    model.fit(x, y, epochs=schedule.total_epochs, callbacks=[scheduler], verbose=0)
    _, per_layer = lth.density(model, per_layer=True)
    assert per_layer["hidden_1"] == pytest.approx(0.5, abs=1e-3)
    assert per_layer["output"] == pytest.approx(0.9, abs=1e-3)


@pytest.mark.parametrize(
    "build, kwargs, name",
    [
        (models.lenet_300_100, {"num_classes": 1}, "num_classes"),
        (models.speech_mlp, {"input_dim": 0}, "input_dim"),
        (models.speech_mlp, {"input_dim": 10, "hidden": (4, 0)}, "hidden"),
    ],
)
def test_invalid_arguments(build, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
        build(**kwargs)


# ---------------------------------------------------------------------- #
# CNNs
# ---------------------------------------------------------------------- #
CNNS = (models.conv2, models.conv4, models.conv6, models.lenet5, models.speech_cnn)


def _conv(k_h, k_w, c_in, c_out):
    return k_h * k_w * c_in * c_out + c_out


def _fc(n_in, n_out):
    return n_in * n_out + n_out


def _masked(model):
    return [l for l in model.layers if isinstance(l, lth.layers.MaskedLayer)]


# Kernels + biases, counted by hand from each layer's shape.
HAND_COUNTS = [
    # Conv-2/4/6 on CIFAR-10 (Frankle & Carbin's Figure 2: 4.3M, 2.4M; convs 38K, 260K, 1.1M)
    (
        models.conv2,
        (32, 32, 3),
        _conv(3, 3, 3, 64)
        + _conv(3, 3, 64, 64)
        + _fc(16 * 16 * 64, 256)
        + _fc(256, 256)
        + _fc(256, 10),
    ),
    (
        models.conv4,
        (32, 32, 3),
        _conv(3, 3, 3, 64)
        + _conv(3, 3, 64, 64)
        + _conv(3, 3, 64, 128)
        + _conv(3, 3, 128, 128)
        + _fc(8 * 8 * 128, 256)
        + _fc(256, 256)
        + _fc(256, 10),
    ),
    (
        models.conv6,
        (32, 32, 3),
        _conv(3, 3, 3, 64)
        + _conv(3, 3, 64, 64)
        + _conv(3, 3, 64, 128)
        + _conv(3, 3, 128, 128)
        + _conv(3, 3, 128, 256)
        + _conv(3, 3, 256, 256)
        + _fc(4 * 4 * 256, 256)
        + _fc(256, 256)
        + _fc(256, 10),
    ),
    # MNIST: 28 -> 14 (-> 7 -> 3) after the pools
    (
        models.conv2,
        (28, 28),
        _conv(3, 3, 1, 64)
        + _conv(3, 3, 64, 64)
        + _fc(14 * 14 * 64, 256)
        + _fc(256, 256)
        + _fc(256, 10),
    ),
    (
        models.conv6,
        (28, 28, 1),
        _conv(3, 3, 1, 64)
        + _conv(3, 3, 64, 64)
        + _conv(3, 3, 64, 128)
        + _conv(3, 3, 128, 128)
        + _conv(3, 3, 128, 256)
        + _conv(3, 3, 256, 256)
        + _fc(3 * 3 * 256, 256)
        + _fc(256, 256)
        + _fc(256, 10),
    ),
    # log-mels 49 x 40: 24 x 20 after one pool
    (
        models.conv2,
        (49, 40, 1),
        _conv(3, 3, 1, 64)
        + _conv(3, 3, 64, 64)
        + _fc(24 * 20 * 64, 256)
        + _fc(256, 256)
        + _fc(256, 10),
    ),
    # LeNet-5: 28 ('same') -> 14 -> 10 ('valid' 5 x 5) -> 5
    (
        models.lenet5,
        (28, 28, 1),
        _conv(5, 5, 1, 6) + _conv(5, 5, 6, 16) + _fc(5 * 5 * 16, 120) + _fc(120, 84) + _fc(84, 10),
    ),
    # cnn-trad-fpool3: 49 x 40 -> 30 x 33 -> pool 1 x 3 -> 30 x 11 -> 21 x 8
    (
        models.speech_cnn,
        (49, 40),
        _conv(20, 8, 1, 64)
        + _conv(10, 4, 64, 64)
        + _fc(21 * 8 * 64, 32)
        + _fc(32, 128)
        + _fc(128, 12),
    ),
]


@pytest.mark.parametrize("build, shape, count", HAND_COUNTS)
def test_cnn_parameter_counts_by_hand(build, shape, count):
    dense = build(input_shape=shape, dense=True)
    assert dense.count_params() == count
    # The masked model adds a mask of the same size for every kernel and bias.
    assert build(input_shape=shape).count_params() == 2 * count


def test_paper_totals_and_docstring_counts():
    assert HAND_COUNTS[0][2] == 4_301_642 and HAND_COUNTS[1][2] == 2_425_930
    assert HAND_COUNTS[2][2] == 2_262_602 and HAND_COUNTS[6][2] == 61_706
    assert HAND_COUNTS[7][2] == 524_076
    conv_weights = [
        sum(int(np.prod(l.kernel.shape)) for l in b(dense=True).layers if l.name.startswith("conv"))
        for b in (models.conv2, models.conv4, models.conv6)
    ]
    assert conv_weights == [38_592, 259_776, 1_144_512]
    for build, count in ((models.conv2, "4,301,642"), (models.lenet5, "61,706")):
        assert count in build.__doc__


@pytest.mark.parametrize(
    "build, names",
    [
        (models.conv2, ["conv_1", "conv_2", "pool_1"]),
        (models.conv4, ["conv_1", "conv_2", "pool_1", "conv_3", "conv_4", "pool_2"]),
        (
            models.conv6,
            ["conv_1", "conv_2", "pool_1", "conv_3", "conv_4", "pool_2"]
            + ["conv_5", "conv_6", "pool_3"],
        ),
        (models.lenet5, ["conv_1", "pool_1", "conv_2", "pool_2"]),
    ],
)
@pytest.mark.parametrize("shape", [(28, 28), (32, 32, 3), (49, 40, 1)])
def test_cnn_layers_names_and_output(build, names, shape):
    model = build(num_classes=7, input_shape=shape)
    head = ["flatten", "hidden_1", "hidden_2", "output"]
    assert [l.name for l in model.layers] == (
        ["add_channel"] if len(shape) == 2 else []
    ) + names + head
    conv = [l for l in model.layers if l.name.startswith("conv")]
    assert all(type(l) is lth.layers.MaskedConv2D for l in conv)
    assert all(type(l) is lth.MaskedDense for l in model.layers if l.name in head[1:])
    assert model.layers[-1].activation is keras.activations.linear
    assert all(l.activation is keras.activations.relu for l in conv)
    assert model.output_shape == (None, 7)  # the forward pass: see the dense-variant test
    assert lth.density(model) == 1.0
    assert not model.compiled


def test_speech_cnn_layers_and_filters():
    model = models.speech_cnn(input_shape=(49, 40), num_classes=5, filters=8)
    names = ["add_channel", "conv_1", "pool_1", "conv_2", "flatten", "linear", "hidden_1", "output"]
    assert [l.name for l in model.layers] == names
    assert [tuple(l.kernel.shape) for l in _masked(model)] == [
        (20, 8, 1, 8),
        (10, 4, 8, 8),
        (21 * 8 * 8, 32),
        (32, 128),
        (128, 5),
    ]
    assert model.get_layer("linear").activation is keras.activations.linear
    assert model(np.zeros((3, 49, 40), "float32")).shape == (3, 5)


@pytest.mark.parametrize(
    "build, shape",
    [(models.lenet5, (16, 16)), (models.conv2, (8, 8, 2)), (models.speech_cnn, (29, 19, 1))],
)
def test_dense_variant_equals_the_masked_networks_effective_weights(build, shape):
    kwargs = {"filters": 4} if build is models.speech_cnn else {}
    masked = build(num_classes=3, input_shape=shape, seed=3, **kwargs)
    dense = build(num_classes=3, input_shape=shape, seed=3, dense=True, **kwargs)
    assert [l.name for l in masked.layers] == [l.name for l in dense.layers]
    assert [type(l) for l in dense.layers if l.weights] == [
        l.plain_class for l in masked.layers if l.weights
    ]
    # The same seed draws the same initial weights ...
    for m, d in zip(masked.layers, dense.layers):
        for a, b in zip(m.effective_weights() if m.weights else [], d.get_weights()):
            np.testing.assert_array_equal(a, b)
    # ... and with masks set, the plain network holding the effective
    # weights computes what the masked one does.
    rng = np.random.default_rng(0)
    for layer in _masked(masked):
        shape_ = tuple(layer.kernel_mask.shape)
        layer.set_masks((rng.random(shape_) < 0.5).astype("float32"))
        dense.get_layer(layer.name).set_weights(layer.effective_weights())
    x = rng.normal(size=(4, *shape)).astype("float32")
    np.testing.assert_allclose(masked.predict(x, verbose=0), dense.predict(x, verbose=0), atol=1e-5)
    assert lth.density(masked) < 0.6


@pytest.mark.parametrize("build", CNNS)
def test_cnn_seeds_reproducible_glorot_and_zero_biases(build):
    def kernels(model):
        return [np.asarray(l.kernel) for l in _masked(model)]

    kwargs = {"input_shape": (29, 19)} if build is models.speech_cnn else {"input_shape": (16, 16)}
    a, b = build(seed=5, **kwargs), build(seed=5, **kwargs)
    for ka, kb in zip(kernels(a), kernels(b)):
        np.testing.assert_array_equal(ka, kb)
    assert not np.array_equal(kernels(a)[0], kernels(build(seed=6, **kwargs))[0])
    assert not np.array_equal(kernels(build(**kwargs))[0], kernels(build(**kwargs))[0])
    assert all(np.all(np.asarray(l.bias) == 0) for l in _masked(a))
    # Glorot normal: std sqrt(2 / (fan_in + fan_out)), receptive field included.
    k = kernels(a)[1]
    receptive = int(np.prod(k.shape[:-2]))
    std = np.sqrt(2 / (receptive * (k.shape[-2] + k.shape[-1])))
    assert abs(k.std() - std) < 0.15 * std


def test_frankle_carbin_rates():
    assert models.frankle_carbin_rates(models.conv2(input_shape=(8, 8))) == {
        "conv_1": 0.1,
        "conv_2": 0.1,
        "hidden_1": 0.2,
        "hidden_2": 0.2,
        "output": 0.1,
    }
    rates = models.frankle_carbin_rates(models.conv6(input_shape=(8, 8)))
    assert [rates[f"conv_{i}"] for i in range(1, 7)] == [0.15] * 6
    assert models.frankle_carbin_rates(models.speech_cnn(filters=2))["linear"] == 0.2
    assert models.frankle_carbin_rates(models.lenet_300_100()) == {
        "hidden_1": 0.2,
        "hidden_2": 0.2,
        "output": 0.1,
    }
    with pytest.raises(ValueError, match="`model`.*lenet5"):
        models.frankle_carbin_rates(models.lenet5(dense=True))


def test_scheduler_prunes_a_cnn_at_the_papers_rates():
    model = models.lenet5(num_classes=3, input_shape=(12, 12), seed=0)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rates = models.frankle_carbin_rates(model)
    schedule = lth.IterativeSchedule(rounds=1, epochs_per_round=1, rate=0.2, layer_rates=rates)
    scheduler = lth.PruningScheduler(schedule=schedule, verbose=0)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 12, 12)).astype("float32"), rng.integers(0, 3, 8)
    model.fit(x, y, epochs=schedule.total_epochs, callbacks=[scheduler], verbose=0)
    _, per_layer = lth.density(model, per_layer=True)
    # Exact counts: round(rate * n) of n weights pruned per layer.
    sizes = {l.name: int(np.prod(l.kernel_mask.shape)) for l in _masked(model)}
    for name, rate in rates.items():
        kept = sizes[name] - int(np.floor(rate * sizes[name] + 0.5))
        assert per_layer[name] == pytest.approx(kept / sizes[name])


@pytest.mark.parametrize(
    "build, kwargs, name",
    [
        (models.conv2, {"num_classes": 1}, "num_classes"),
        (models.conv4, {"num_classes": True}, "num_classes"),
        (models.conv6, {"input_shape": (4, 4, 3)}, "input_shape"),
        (models.conv2, {"input_shape": (28,)}, "input_shape"),
        (models.conv2, {"input_shape": (28, 28, 1, 1)}, "input_shape"),
        (models.conv2, {"input_shape": (28, 0)}, "input_shape"),
        (models.conv2, {"input_shape": 28}, "input_shape"),
        (models.lenet5, {"input_shape": (11, 28)}, "input_shape"),
        (models.lenet5, {"seed": "1"}, "seed"),
        (models.speech_cnn, {"input_shape": (28, 40)}, "input_shape"),
        (models.speech_cnn, {"input_shape": (49, 18)}, "input_shape"),
        (models.speech_cnn, {"filters": 0}, "filters"),
        (models.speech_cnn, {"num_classes": 0}, "num_classes"),
        (models.lenet_300_100, {"seed": 1.5}, "seed"),
    ],
)
def test_cnn_invalid_arguments(build, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}="):
        build(**kwargs)
