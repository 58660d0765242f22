"""The README's usage snippet runs as written."""

import os
import re

import keras_lth as lth

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def test_readme_usage_snippet_runs(tmp_path, monkeypatch):
    text = open(README).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README has no python block"
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    scheduler, model = namespace["scheduler"], namespace["model"]
    assert [r["round"] for r in scheduler.rounds] == [0, 1, 2]
    assert abs(lth.density(model) - scheduler.rounds[-1]["density"]) < 1e-9
    assert scheduler.rounds[-1]["density"] < 0.7
    assert "accuracy" in scheduler.rounds[-1]["test"]
    assert (tmp_path / "ticket.keras").exists()
