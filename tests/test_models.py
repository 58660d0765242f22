"""Tests for `keras_lth.models`."""

import keras
import numpy as np
import pytest

import keras_lth as lth
from keras_lth import models


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
