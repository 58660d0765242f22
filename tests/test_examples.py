"""Smoke tests of the CNN lottery-ticket examples' `--quick` paths, and their report maths.

Each quick run trains one seed for one round of one epoch (about 15 s on two
CPU cores); the full runs are the measurements in `docs/results/`.
"""

import json
import os

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture
def examples(monkeypatch):
    monkeypatch.syspath_prepend(EXAMPLES)
    import importlib

    return importlib.import_module


def _check_outputs(out, density_below):
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert set(results["records"]) == {"init", "reinit"}
    for runs in results["records"].values():
        (rounds,) = runs  # one seed
        assert [r["round"] for r in rounds] == [0, 1]
        assert rounds[0]["density"] == 1.0 and rounds[1]["density"] < density_below
        assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in rounds)
    # Round 0 is the same dense run for both rewinds.
    assert results["records"]["init"][0][0] == results["records"]["reinit"][0][0]
    assert results["provenance"]["wall_seconds"] > 0
    text = open(os.path.join(out, "results.md")).read()
    assert "--quick" in text and "| 1 |" in text
    assert os.path.getsize(os.path.join(out, "accuracy_vs_density.png")) > 1000


def test_mnist_cnn_example_quick(examples, tmp_path):
    example = examples("mnist_cnn_lth")
    rows = example.main(["--quick", "--out", str(tmp_path)])
    assert len(rows) == 2
    _check_outputs(str(tmp_path), density_below=0.9)


def test_speech_cnn_example_quick(examples, tmp_path):
    from keras_lth.data import synthetic_speech

    if not synthetic_speech.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    example = examples("speech_commands_cnn_lth")
    tree, out = tmp_path / "tree", tmp_path / "out"
    example.main(["--quick", "--synthetic", str(tree), "--out", str(out)])
    _check_outputs(str(out), density_below=0.9)
    assert "Synthetic speech" in open(out / "results.md").read()
    # The tree is reused with the same recipe and refused with another one.
    assert example.synthetic_tree(str(tree), 8) == str(tree)
    with pytest.raises(ValueError, match="another recipe"):
        example.synthetic_tree(str(tree), 24)


def test_report_mean_std_and_noise_by_hand(examples):
    report = examples("ticket_report")

    def rounds(*accs):
        return [
            {"round": r, "density": d, "early_stop_epoch": 3, "test_accuracy": a}
            | {"final_test_accuracy": a}
            for r, (d, a) in enumerate(zip((1.0, 0.5), accs))
        ]

    records = {
        "init": [rounds(0.90, 0.80), rounds(0.92, 0.84), rounds(0.94, 0.82)],
        "reinit": [rounds(0.90, 0.70), rounds(0.92, 0.72), rounds(0.94, 0.74)],
    }
    rows = report.summarize(records)
    mean, std = rows[1]["init"]["test_accuracy"]
    assert mean == pytest.approx(0.82) and std == pytest.approx(0.02)  # ddof=1
    assert rows[1]["difference"] == pytest.approx(0.10)
    assert rows[1]["standard_error"] == pytest.approx(np.sqrt(2 * 0.02**2 / 3))
    assert rows[1]["beyond_noise"] and not rows[0]["beyond_noise"]
    # A difference smaller than two standard errors is noise.
    records["reinit"] = [rounds(0.90, 0.79), rounds(0.92, 0.83), rounds(0.94, 0.81)]
    assert not report.summarize(records)[1]["beyond_noise"]
    assert "+1.00 (SE" in report.table(report.summarize(records), 3)
