"""`benchmarks/reintroduction_sweep.py`: its committed tables are its recorded runs'.

The sweeps themselves (minutes to an hour each) are not rerun here;
`--report-only` rebuilds each `results.md` from its committed
`results.json`, and the search's scores must be the means of the recorded
runs (the tuner selected on them). A small sweep runs end to end.
"""

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "docs" / "results"
SWEEPS = sorted(p.parent.name for p in RESULTS.glob("reintroduction_sweep*/results.json"))

pytest.importorskip("keras_tuner")


def _load():
    spec = importlib.util.spec_from_file_location(
        "reintroduction_sweep", ROOT / "benchmarks" / "reintroduction_sweep.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sweeps_are_committed():
    assert "reintroduction_sweep" in SWEEPS and len(SWEEPS) >= 2, SWEEPS


@pytest.mark.parametrize("name", SWEEPS)
def test_report_is_the_recorded_runs(tmp_path, name):
    sweep = _load()
    OUT = RESULTS / name
    with open(OUT / "results.json") as f:
        result = json.load(f)
    sweep.write_report(result, str(tmp_path))
    assert (tmp_path / "results.md").read_text() == (OUT / "results.md").read_text()


@pytest.mark.parametrize("name", SWEEPS)
def test_tuner_scores_are_the_mean_validation_accuracy_and_select_the_best(name):
    with open(RESULTS / name / "results.json") as f:
        result = json.load(f)
    for part in result["densities"]:
        scores = {t["candidate"]: t["score"] for t in part["trials"]}
        for name, score in scores.items():
            runs = [r for r in part["runs"] if r["candidate"] == name]
            assert sorted(r["seed"] for r in runs) == list(range(len(runs)))
            assert score == pytest.approx(np.mean([r["val_accuracy"] for r in runs]))
        assert scores[part["selected"]] == max(scores.values())


def test_a_small_sweep_runs_end_to_end_and_rejects_bad_arguments(tmp_path, capsys):
    sweep = _load()
    out = tmp_path / "sweep"
    sweep.main(
        ["--out", str(out), "--densities", "0.5", "--seeds", "1", "--epochs-per-round", "2"]
        + ["--candidates", "lth", "scored prune by score"]
    )
    with open(out / "results.json") as f:
        result = json.load(f)
    (part,) = result["densities"]
    assert [r["candidate"] for r in part["runs"]] == ["lth", "scored prune by score"]
    assert part["plans"]["scored prune by score"]["reintroduce"] == {
        "fraction": 0.2,
        "when": "prune",
        "prune_by": "score",
        "score_decay": 0.0,
    }
    assert result["command"].endswith("--candidates lth 'scored prune by score'")
    assert all(r["density"] == pytest.approx(0.5, abs=0.01) for r in part["runs"])
    for argv, match in (
        (["--epochs-per-round", "1"], "--epochs-per-round: expected an integer >= 2"),
        (["--dataset", "speech_commands"], "`--source`"),
    ):
        with pytest.raises((SystemExit, ValueError)) as e:
            sweep.main(["--out", str(tmp_path / "bad"), *argv])
        assert match in (str(e.value) + capsys.readouterr().err)


def test_swap_shock_prints_every_epoch_and_the_rounds(capsys):
    spec = importlib.util.spec_from_file_location(
        "swap_shock", ROOT / "benchmarks" / "swap_shock.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))  # it imports the sweep's Task
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    module.main(["--strategy", "scored", "--arg", "value=zero", "--epochs-per-round", "2"])
    out = capsys.readouterr().out
    assert "value='zero', when='round'" in out  # the in-round event is what it shows
    assert len(re.findall(r"^epoch +\d+ round [01]: loss ", out, flags=re.M)) == 4
    (swaps,) = re.findall(r"^round 1: density 0\.5000, swaps (.*)$", out, flags=re.M)
    assert "'events': 1" in swaps
    for argv, message in (
        (["--strategy", "none", "--arg", "fraction=0.1"], "--arg needs a --strategy"),
        (["--dataset", "speech_commands"], "`--source`"),
        (["--arg", "fraction"], "expected name=value"),
    ):
        with pytest.raises((SystemExit, ValueError)) as e:
            module.main(argv)
        assert message in str(e.value) + capsys.readouterr().err
