"""Tests for `keras_lth.rounds.RoundLayout`, the one owner of the round arithmetic."""

import re

import pytest

from keras_lth import IterativeSchedule, OneShotSchedule, PruningScheduler
from keras_lth.rounds import RoundLayout

pytestmark = pytest.mark.jax


def test_layout_without_late_rewinding():
    layout = RoundLayout(rounds=3, epochs_per_round=2)
    assert layout.total_epochs == 8
    assert [layout.round_start(r) for r in range(4)] == [0, 2, 4, 6]
    assert [layout.round_end(r) for r in range(4)] == [1, 3, 5, None]
    assert [layout.round_of(e) for e in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert layout.round_of(11) == 3  # extra epochs belong to the last round
    assert [layout.round_length(r) for r in range(4)] == [2, 2, 2, 2]


@pytest.mark.parametrize(
    "k, total, starts, round_of",
    [
        (0, 9, [0, 3, 6], [0, 0, 0, 1, 1, 1, 2, 2, 2]),
        (1, 7, [0, 3, 5], [0, 0, 0, 1, 1, 2, 2]),
        (2, 5, [0, 3, 4], [0, 0, 0, 1, 2]),
    ],
)
def test_layout_with_late_rewinding(k, total, starts, round_of):
    layout = RoundLayout(rounds=2, epochs_per_round=3, late=k)
    assert layout.total_epochs == total
    assert [layout.round_start(r) for r in range(3)] == starts
    assert [layout.round_of(e) for e in range(total)] == round_of
    # every epoch lies between its round's start and end
    for e in range(total):
        r = layout.round_of(e)
        end = layout.round_end(r)
        assert layout.round_start(r) <= e and (end is None or e <= end)
        assert sum(1 for x in range(total) if layout.round_of(x) == r) == layout.round_length(r)


@pytest.mark.parametrize("rewind", ["init", "reinit", None, 0, 1, 2])
def test_schedule_layout_agrees_with_the_scheduler(rewind):
    schedule = IterativeSchedule(rounds=3, epochs_per_round=3, rate=0.3)
    scheduler = PruningScheduler(schedule, rewind=rewind, verbose=0)
    layout = schedule.layout(rewind=rewind)
    assert layout == scheduler.layout
    assert scheduler.total_epochs == layout.total_epochs
    assert [scheduler.round_of(e) for e in range(12)] == [layout.round_of(e) for e in range(12)]
    assert [scheduler.round_start(r) for r in range(4)] == [layout.round_start(r) for r in range(4)]
    # `schedule.total_epochs` is the length without late rewinding
    assert schedule.total_epochs == schedule.layout().total_epochs == 12
    if isinstance(rewind, int) and rewind > 0:
        assert scheduler.total_epochs == 12 - 3 * rewind < schedule.total_epochs


def test_one_shot_layout():
    layout = OneShotSchedule(epochs_per_round=4).layout(rewind=1)
    assert (layout.rounds, layout.total_epochs, layout.round_start(1)) == (1, 7, 4)


@pytest.mark.parametrize(
    "kwargs, received",
    [
        (dict(rounds=0, epochs_per_round=2), "rounds=0"),
        (dict(rounds=1, epochs_per_round=0), "epochs_per_round=0"),
        (dict(rounds=1, epochs_per_round=2, late=2), "rewind=2"),
        (dict(rounds=1, epochs_per_round=2, late=-1), "rewind=-1"),
        (dict(rounds=1, epochs_per_round=2, late=1.0), "rewind=1.0"),
    ],
)
def test_invalid_layouts_raise_naming_the_value(kwargs, received):
    with pytest.raises(ValueError, match=re.escape(f"Received: {received}")):
        RoundLayout(**kwargs)
