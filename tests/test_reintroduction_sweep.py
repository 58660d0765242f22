"""`benchmarks/reintroduction_sweep.py`: its committed tables are its recorded runs'.

The sweep itself (42 trainings, about 8 minutes) is not rerun here; `--report-only` rebuilds
`results.md` from the committed `results.json`, and the search's scores must
be the means of the recorded runs (the tuner selected on them).
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).parents[1]
OUT = ROOT / "docs" / "results" / "reintroduction_sweep"

pytest.importorskip("keras_tuner")


def _load():
    spec = importlib.util.spec_from_file_location(
        "reintroduction_sweep", ROOT / "benchmarks" / "reintroduction_sweep.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_is_the_recorded_runs(tmp_path):
    sweep = _load()
    with open(OUT / "results.json") as f:
        result = json.load(f)
    sweep.write_report(result, str(tmp_path))
    assert (tmp_path / "results.md").read_text() == (OUT / "results.md").read_text()


def test_tuner_scores_are_the_mean_validation_accuracy_and_select_the_best():
    with open(OUT / "results.json") as f:
        result = json.load(f)
    for part in result["densities"]:
        scores = {t["candidate"]: t["score"] for t in part["trials"]}
        for name, score in scores.items():
            runs = [r for r in part["runs"] if r["candidate"] == name]
            assert sorted(r["seed"] for r in runs) == list(range(len(runs)))
            assert score == pytest.approx(np.mean([r["val_accuracy"] for r in runs]))
        assert scores[part["selected"]] == max(scores.values())
