"""A `fit` killed mid-run and resumed with `BackupAndRestore` ends as if never killed.

The runs live in `tests/scripts/resume_fit.py`. Each configuration is
SIGKILLed twice in separate processes (once inside a round or before the late
rewinding point, once right at the end of a round, just before the pruning)
and then resumed to the end in a third process; the result must match an
uninterrupted run with the same seed made here in the test process: same
masks, same weights, same round records (swap counts included).

The re-introduction configurations (`ScoredPruning`, epoch events) resume
with the scheduler before and after `BackupAndRestore` in `callbacks`, and
once killed between the two callbacks' epoch-end saves.
"""

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).parent / "scripts" / "resume_fit.py"
ROOT = Path(__file__).parents[1]

# Each step is one process: its jobs run in order and the first kill ends it.
# "init" (3 epochs a round, rounds at epochs 0-2, 3-5, 6-8): killed inside
# round 1, then at the end of round 1. "late" (rewind=2: rounds at 0-3, 4-5,
# 6-7; the rewind point is taken at the end of epoch 1): killed before the
# rewind point exists, then at the end of round 0.
# The re-introduction runs (3 epochs a round; events at the starts of epochs
# 4, 5, 7, 8): killed after epoch 4 (inside round 1, after an event), then at
# the end of round 1. "between" is killed once, after the scheduler saved
# epoch 4 and before BackupAndRestore did: it resumes at epoch 4.
CHAIN = (
    (("init:4",), True),
    (("init:5",), True),
    (("init:-", "late:0"), True),
    (("late:3",), True),
    (("late:-", "scored_backup:4"), True),
    (("scored_backup:5",), True),
    (("scored_backup:-", "scored_scheduler:4"), True),
    (("scored_scheduler:5",), True),
    (("scored_scheduler:-", "between:4"), True),
    (("between:-",), False),
)
# epochs the last (resuming) process of each config trains
RESUMED_EPOCHS = {"init": 3, "late": 4, "scored_backup": 3, "scored_scheduler": 3, "between": 5}


def _load_script():
    spec = importlib.util.spec_from_file_location("resume_fit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _load_script()


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """Runs the kill/resume chain; returns the root of the work directories."""
    root = tmp_path_factory.mktemp("interrupted")
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    # the child imports the keras_lth under test, not an installed one
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    for jobs, killed in CHAIN:
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), str(root), *jobs],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        expected = -signal.SIGKILL if killed else 0
        assert proc.returncode == expected, (jobs, proc.returncode, proc.stderr[-3000:])
        name = jobs[-1].split(":")[0]
        scheduler_dir = root / name / "scheduler"
        if killed:
            # the scheduler's backup is there for the next process
            assert (scheduler_dir / "keras_lth_scheduler.json").exists()
    return root


def _result(root, name):
    with np.load(root / name / "result.npz") as data:
        weights = {k: data[k] for k in data.files}
    with open(root / name / "result.json") as f:
        out = json.load(f)
    return weights, out["rounds"], out["history"]


def _assert_records_close(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert sorted(g) == sorted(e)
        assert g["round"] == e["round"]
        assert g["epochs"] == e["epochs"]
        assert g["early_stop_epoch"] == e["early_stop_epoch"]
        assert g["density"] == e["density"]
        assert g["layer_density"] == e["layer_density"]
        assert g.get("swaps") == e.get("swaps")
        for part in ("final", "best", "test"):
            assert sorted(g[part]) == sorted(e[part])
            for k in e[part]:
                np.testing.assert_allclose(g[part][k], e[part][k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(RESUMED_EPOCHS))
def test_killed_and_resumed_fit_matches_uninterrupted(name, interrupted, script, tmp_path):
    weights, rounds, history = _result(interrupted, name)
    ref_weights, ref_rounds, _ = script.train(name, str(tmp_path))

    # the last process really resumed (BackupAndRestore), it did not start over
    assert len(history["loss"]) == RESUMED_EPOCHS[name]
    assert len(ref_rounds) == script.ROUNDS + 1
    if "swaps" in ref_rounds[-1]:
        assert all(r["swaps"]["events"] == 2 for r in ref_rounds[1:])

    assert sorted(weights) == sorted(ref_weights)
    masks = [k for k in ref_weights if k.endswith("_mask")]
    assert len(masks) == 6
    for k in masks:
        np.testing.assert_array_equal(weights[k], ref_weights[k], err_msg=k)
    for k in ref_weights:
        np.testing.assert_allclose(weights[k], ref_weights[k], rtol=1e-5, atol=1e-6, err_msg=k)
    _assert_records_close(rounds, ref_rounds)

    # training end cleans the scheduler's backup, as BackupAndRestore does
    assert not os.listdir(interrupted / name / "scheduler")
