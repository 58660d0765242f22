"""Tests for `keras_lth.schedules`: tables of valid and invalid values."""

import re

import keras
import numpy as np
import pytest

from keras_lth import IterativeSchedule, OneShotSchedule
from keras_lth.schedules import is_tfmot_schedule


def _named(name, value):
    return re.escape(f"`{name}`") + r"(.|\n)*" + re.escape(f"{name}={value!r}")


# --------------------------------------------------------------------------- #
# Valid values
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "kwargs, rate",
    [
        ({"rounds": 10, "epochs_per_round": 8}, 0.2),  # the default rate
        ({"rounds": 1, "epochs_per_round": 1, "rate": 0.5}, 0.5),
        ({"rounds": 3, "epochs_per_round": 2, "rate": np.float32(0.25)}, 0.25),
        ({"rounds": np.int64(4), "epochs_per_round": np.int32(2), "rate": 0.1}, 0.1),
        ({"rounds": 2, "epochs_per_round": 5, "target_density": 0.25}, 0.5),
        ({"rounds": 3, "epochs_per_round": 5, "target_density": 0.125}, 0.5),
    ],
)
def test_iterative_valid(kwargs, rate):
    s = IterativeSchedule(**kwargs)
    assert s.rate == pytest.approx(rate)
    assert isinstance(s.rate, float)
    assert isinstance(s.rounds, int) and isinstance(s.epochs_per_round, int)
    assert s.total_epochs == (kwargs["rounds"] + 1) * kwargs["epochs_per_round"]
    assert s.density_after(0) == 1.0
    assert s.density_after(s.rounds) == pytest.approx((1 - rate) ** kwargs["rounds"])
    if "target_density" in kwargs:
        assert s.density_after(s.rounds) == pytest.approx(kwargs["target_density"])


def test_layer_rates():
    s = IterativeSchedule(rounds=10, epochs_per_round=8, rate=0.2, layer_rates={"out": 0.1})
    assert s.rate_for("out") == 0.1
    assert s.rate_for("hidden") == 0.2
    assert s.density_after(10, "out") == pytest.approx(0.9**10)
    assert s.density_after(10) == pytest.approx(0.8**10)
    # layer rates are kept as they are with a target density
    t = IterativeSchedule(rounds=2, epochs_per_round=1, target_density=0.25, layer_rates={"o": 0.1})
    assert t.rate == pytest.approx(0.5) and t.rate_for("o") == 0.1


def test_density_after_bad_round():
    s = IterativeSchedule(rounds=2, epochs_per_round=1)
    with pytest.raises(ValueError, match=_named("rounds", -1)):
        s.density_after(-1)


@pytest.mark.parametrize(
    "kwargs, rate, target",
    [
        ({"epochs_per_round": 3}, 0.8, None),
        ({"epochs_per_round": 3, "rate": 0.6}, 0.6, None),
        ({"epochs_per_round": 3, "target_density": 0.1}, 0.9, 0.1),
        ({"epochs_per_round": 2, "layer_rates": {"o": 0.5}}, 0.8, None),
    ],
)
def test_one_shot_valid(kwargs, rate, target):
    s = OneShotSchedule(**kwargs)
    assert s.rounds == 1
    assert s.rate == pytest.approx(rate)
    assert s.target_density == target
    assert s.total_epochs == 2 * kwargs["epochs_per_round"]
    assert s.density_after(1) == pytest.approx(1 - rate)


# --------------------------------------------------------------------------- #
# Invalid values
# --------------------------------------------------------------------------- #
BAD_INTS = [0, -1, 1.5, 2.0, True, "3", None]
BAD_RATES = [0, 1, 0.0, 1.0, -0.1, 1.2, True, "0.2", float("nan")]


@pytest.mark.parametrize("rounds", BAD_INTS)
def test_bad_rounds(rounds):
    with pytest.raises(ValueError, match=_named("rounds", rounds)):
        IterativeSchedule(rounds=rounds, epochs_per_round=2)


@pytest.mark.parametrize("epochs", BAD_INTS)
@pytest.mark.parametrize("cls", [IterativeSchedule, OneShotSchedule])
def test_bad_epochs_per_round(cls, epochs):
    kwargs = {"rounds": 2} if cls is IterativeSchedule else {}
    with pytest.raises(ValueError, match=_named("epochs_per_round", epochs)):
        cls(epochs_per_round=epochs, **kwargs)


@pytest.mark.parametrize("rate", BAD_RATES)
@pytest.mark.parametrize("cls", [IterativeSchedule, OneShotSchedule])
def test_bad_rate(cls, rate):
    kwargs = {"rounds": 2} if cls is IterativeSchedule else {}
    with pytest.raises(ValueError, match=_named("rate", rate)):
        cls(epochs_per_round=2, rate=rate, **kwargs)


@pytest.mark.parametrize("target", BAD_RATES)
@pytest.mark.parametrize("cls", [IterativeSchedule, OneShotSchedule])
def test_bad_target_density(cls, target):
    kwargs = {"rounds": 2} if cls is IterativeSchedule else {}
    with pytest.raises(ValueError, match=_named("target_density", target)):
        cls(epochs_per_round=2, target_density=target, **kwargs)


@pytest.mark.parametrize("cls", [IterativeSchedule, OneShotSchedule])
def test_rate_and_target_density_together(cls):
    kwargs = {"rounds": 2} if cls is IterativeSchedule else {}
    with pytest.raises(
        ValueError, match=r"`rate`(.|\n)*`target_density`(.|\n)*rate=0.2, target_density=0.1"
    ):
        cls(epochs_per_round=2, rate=0.2, target_density=0.1, **kwargs)


@pytest.mark.parametrize("layer_rates", [[("out", 0.1)], 0.1, "out", ("out",)])
def test_layer_rates_not_a_dict(layer_rates):
    with pytest.raises(ValueError, match=_named("layer_rates", layer_rates)):
        IterativeSchedule(rounds=2, epochs_per_round=2, layer_rates=layer_rates)


@pytest.mark.parametrize("rate", BAD_RATES + [None])
def test_bad_layer_rate(rate):
    with pytest.raises(ValueError, match=_named("layer_rates['out']", rate)):
        IterativeSchedule(rounds=2, epochs_per_round=2, layer_rates={"out": rate})


# --------------------------------------------------------------------------- #
# Serialization
# --------------------------------------------------------------------------- #
SCHEDULES = [
    lambda: IterativeSchedule(rounds=10, epochs_per_round=8, rate=0.2, layer_rates={"out": 0.1}),
    lambda: IterativeSchedule(rounds=4, epochs_per_round=3, target_density=0.05),
    lambda: OneShotSchedule(epochs_per_round=5),
    lambda: OneShotSchedule(epochs_per_round=5, target_density=0.1, layer_rates={"o": 0.3}),
]


def _same(a, b):
    assert type(a) is type(b)
    assert a.get_config() == b.get_config()
    for attr in (
        "rounds",
        "epochs_per_round",
        "rate",
        "layer_rates",
        "target_density",
        "total_epochs",
    ):
        assert getattr(a, attr) == getattr(b, attr)


@pytest.mark.parametrize("make", SCHEDULES)
def test_get_config_from_config(make):
    s = make()
    _same(s, type(s).from_config(s.get_config()))
    assert repr(s).startswith(type(s).__name__ + "(")


@pytest.mark.parametrize("make", SCHEDULES)
def test_keras_serialize_deserialize(make):
    s = make()
    blob = keras.saving.serialize_keras_object(s)
    _same(s, keras.saving.deserialize_keras_object(blob))


def test_config_keeps_target_density_not_the_derived_rate():
    config = IterativeSchedule(rounds=4, epochs_per_round=3, target_density=0.05).get_config()
    assert config["target_density"] == 0.05 and "rate" not in config
    config = OneShotSchedule(epochs_per_round=3).get_config()
    assert config["rate"] == 0.8 and "rounds" not in config


# --------------------------------------------------------------------------- #
# tfmot schedules
# --------------------------------------------------------------------------- #
def test_is_tfmot_schedule_true_for_tfmot_schedules(tfmot):
    sparsity = tfmot.sparsity.keras
    assert is_tfmot_schedule(sparsity.ConstantSparsity(0.5, begin_step=0, frequency=10))
    assert is_tfmot_schedule(
        sparsity.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
    )

    class Halfway(sparsity.PruningSchedule):
        def __call__(self, step):
            return step % 10 == 0, 0.5

        def get_config(self):
            return {}

    assert is_tfmot_schedule(Halfway())


class PruningSchedule:  # same name, wrong module
    def __call__(self, step):
        return True, 0.5


@pytest.mark.parametrize(
    "obj",
    [
        IterativeSchedule(rounds=2, epochs_per_round=1),
        OneShotSchedule(epochs_per_round=1),
        PruningSchedule(),
        keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9),
        None,
        "ConstantSparsity",
        0.5,
    ],
)
def test_is_tfmot_schedule_false_for_others(obj):
    assert not is_tfmot_schedule(obj)
