"""The README and the documentation run as written, and say what the artifacts say.

Every fenced ```python block of README.md and of docs/**/*.md runs, page by
page, in order, in one namespace per page (like a notebook), in a temporary
working directory. An HTML comment on the line just before a block changes
that (Markdown renderers do not show it):

    <!-- docs-test: skip REASON -->
        The block is not run. REASON is required (e.g. it downloads 2 GB).

    <!-- docs-test: replace {"epochs_per_round=8": "epochs_per_round=1"} -->
        A JSON object of literal substitutions applied before running: a
        tiny stand-in for a block that needs large data or a long time. Every
        key must occur in the block, so a stand-in cannot go stale silently.

    <!-- docs-test: setup
    hidden Python, run at this point in the page's namespace
    -->
        For stand-in data, e.g. a small Speech Commands tree written to the
        path the page's next block reads. `REPO` (a `pathlib.Path` of the
        repository root) is defined for it.

CONTRIBUTING.md documents the same syntax. The other tests here keep the
prose honest: local links resolve, figures are committed artifacts under
docs/results/, every example command names a script and options that
exist, result tables match the artifacts they came from, and the API
reference lists the whole public API.
"""

import glob
import json
import math
import os
import pathlib
import re
import statistics
import sys
from collections import Counter

import keras
import pytest

import keras_lth as lth

REPO = pathlib.Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w+-]*)\s*$")
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>skip|replace|setup)\b(?P<rest>.*)$")


def pages():
    """README.md and every Markdown page of the docs, as paths relative to REPO."""
    found = [REPO / "README.md"] + sorted(DOCS.rglob("*.md"))
    return [p.relative_to(REPO).as_posix() for p in found]


def read(rel):
    return (REPO / rel).read_text(encoding="utf-8")


# ---------------------------------------------------------------------- #
# Parsing


class Block:
    def __init__(self, lang, line, code, directive=None):
        self.lang, self.line, self.code, self.directive = lang, line, code, directive

    def __repr__(self):
        return f"Block({self.lang!r}, line {self.line})"


def parse(text, where="<text>"):
    """`[Block]` in page order: code blocks (with the directive before each)
    and hidden `setup` blocks (lang "setup")."""
    lines = text.splitlines()
    blocks, pending, i = [], None, 0
    while i < len(lines):
        line = lines[i]
        d = DIRECTIVE.match(line)
        if d:
            kind, rest = d["kind"], d["rest"]
            if kind == "setup":
                end = i + 1
                while end < len(lines) and lines[end].strip() != "-->":
                    end += 1
                if end == len(lines):
                    raise ValueError(f"{where}:{i + 1}: unterminated docs-test setup comment")
                if any(not l.strip() for l in lines[i + 1 : end]):
                    raise ValueError(
                        f"{where}:{i + 1}: no blank lines in a docs-test setup comment "
                        "(a blank line ends Markdown's HTML block)"
                    )
                blocks.append(Block("setup", i + 2, "\n".join(lines[i + 1 : end])))
                i = end + 1
                continue
            if not rest.rstrip().endswith("-->"):
                raise ValueError(
                    f"{where}:{i + 1}: a docs-test {kind} comment must end on its line"
                )
            arg = rest.rstrip()[:-3].strip()
            if kind == "skip" and not arg:
                raise ValueError(f"{where}:{i + 1}: docs-test: skip needs a reason")
            if kind == "replace":
                try:
                    arg = json.loads(arg)
                except json.JSONDecodeError as e:
                    raise ValueError(
                        f"{where}:{i + 1}: docs-test: replace needs JSON: {e}"
                    ) from None
                if not isinstance(arg, dict) or not arg:
                    raise ValueError(f"{where}:{i + 1}: docs-test: replace needs a JSON object")
            pending = (kind, arg, i + 1)
            i += 1
            continue
        f = FENCE.match(line)
        if f:
            indent, lang = f["indent"], f["lang"]
            end = i + 1
            while end < len(lines) and lines[end].strip() != "```":
                end += 1
            body = [l[len(indent) :] if l.startswith(indent) else l for l in lines[i + 1 : end]]
            blocks.append(Block(lang, i + 2, "\n".join(body) + "\n", pending))
            pending = None
            i = end + 1
            continue
        if pending and line.strip():
            raise ValueError(
                f"{where}:{pending[2]}: a docs-test {pending[0]} comment must come "
                "right before a code block"
            )
        i += 1
    if pending:
        raise ValueError(f"{where}:{pending[2]}: a docs-test comment with no code block after it")
    return blocks


def runnable(rel):
    return [b for b in parse(read(rel), rel) if b.lang in ("python", "setup")]


def prepare(block, where):
    """The source to run for `block`, or None when it is skipped."""
    code = block.code
    if block.directive is None:
        return code
    kind, arg, line = block.directive
    if kind == "skip":
        return None
    for old, new in arg.items():
        if old not in code:
            raise AssertionError(
                f"{where}:{line}: docs-test replace: {old!r} does not occur in the block"
            )
        code = code.replace(old, new)
    return code


# ---------------------------------------------------------------------- #
# The harness itself, on hand-made pages

SAMPLE = """\
Text.

```python
x = 1
```

<!-- docs-test: replace {"range(10**9)": "range(3)"} -->
```python
y = sum(range(10**9))
```

<!-- docs-test: setup
z = 5
-->

<!-- docs-test: skip needs the internet -->
```python
raise RuntimeError("skipped")
```

```bash
echo not python
```

1. A list item with a block:

    ```python
    w = x + y + z
    ```
"""


def run_page(blocks, where, namespace):
    for block in blocks:
        if block.lang not in ("python", "setup"):
            continue
        code = prepare(block, where)
        if code is None:
            continue
        # Pad so that tracebacks name the Markdown file's own line numbers.
        exec(compile("\n" * (block.line - 1) + code, where, "exec"), namespace)
    return namespace


def test_harness_runs_blocks_in_order_with_directives():
    blocks = parse(SAMPLE)
    assert [b.lang for b in blocks] == ["python", "python", "setup", "python", "bash", "python"]
    assert [b.line for b in blocks] == [4, 9, 13, 18, 22, 28]
    ns = run_page(blocks, "sample.md", {})
    assert (ns["x"], ns["y"], ns["z"], ns["w"]) == (1, 3, 5, 9)


@pytest.mark.parametrize(
    "text, words",
    [
        ("<!-- docs-test: skip -->\n```python\n```\n", "needs a reason"),
        ("<!-- docs-test: replace [1] -->\n```python\n```\n", "JSON object"),
        ("<!-- docs-test: replace {oops} -->\n```python\n```\n", "needs JSON"),
        ("<!-- docs-test: skip why -->\ntext\n```python\n```\n", "right before a code block"),
        ("<!-- docs-test: setup\nx = 1\n", "unterminated"),
        ("<!-- docs-test: setup\nx = 1\n\ny = 2\n-->\n", "no blank lines"),
        ("<!-- docs-test: skip why -->\n", "no code block after it"),
    ],
)
def test_harness_rejects_malformed_directives(text, words):
    with pytest.raises(ValueError, match=words):
        parse(text)


def test_harness_rejects_a_stale_replacement():
    (block,) = parse('<!-- docs-test: replace {"a = 2": "a = 1"} -->\n```python\na = 3\n```\n')
    with pytest.raises(AssertionError, match="does not occur"):
        prepare(block, "x.md")


# ---------------------------------------------------------------------- #
# Every page's Python blocks run

RUNNABLE = [p for p in pages() if any(b.lang == "python" for b in runnable(p))]


def test_the_readme_and_the_guides_have_python_blocks():
    assert "README.md" in RUNNABLE
    assert "docs/getting-started.md" in RUNNABLE
    guides = [p for p in pages() if p.startswith("docs/guides/")]
    assert guides and set(guides) <= set(RUNNABLE), set(guides) - set(RUNNABLE)


@pytest.mark.parametrize("page", RUNNABLE)
def test_page_code_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    keras.backend.clear_session()
    namespace = {"__name__": "__docs__", "REPO": REPO}
    # importing tfmot (the gradual-pruning guide) sets TF_USE_LEGACY_KERAS=1
    # for this process and its children: put it back as it was after the page
    legacy = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        run_page(runnable(page), page, namespace)
    finally:
        if legacy is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = legacy
    check = PAGE_CHECKS.get(page)
    if check:
        check(namespace, tmp_path)


def _check_readme(ns, cwd):
    scheduler, model = ns["scheduler"], ns["model"]
    # prunable masked the user's Conv2D and Dense layers, and only those
    masked = [type(l).__name__ for l in lth.masked_layers(model)]
    assert masked == ["MaskedConv2D", "MaskedDense", "MaskedDense"]
    assert [r["round"] for r in scheduler.rounds] == [0, 1, 2]
    assert lth.density(model) == pytest.approx(0.64, abs=1e-3)
    assert lth.density(model) == pytest.approx(scheduler.rounds[-1]["density"])
    ticket = keras.saving.load_model(cwd / "ticket.keras")
    assert [type(l) for l in ticket.layers] == [
        keras.layers.Reshape,
        keras.layers.Conv2D,
        keras.layers.MaxPooling2D,
        keras.layers.Flatten,
        keras.layers.Dense,
        keras.layers.Dense,
    ]
    # each stripped kernel has exactly the zeros of its layer's masks
    layer_density = scheduler.rounds[-1]["layer_density"]
    kernels = {l.name: l.get_weights()[0] for l in ticket.layers if l.get_weights()}
    assert sorted(kernels) == sorted(layer_density)
    for name, kernel in kernels.items():
        assert (kernel == 0).mean() == pytest.approx(1 - layer_density[name], abs=1e-9), name
        assert (kernel == 0).mean() == pytest.approx(0.36, abs=2e-3), name


def _check_any_model(ns, cwd):
    names = ns["names"]
    assert names(ns["masked"]) == ["conv1", "conv2", "fc", "logits"]
    assert ns["scheduler"].rounds[-1]["layer_density"] == pytest.approx(
        {"conv1": 0.64, "conv2": 0.64, "fc": 0.64, "logits": 0.81}, abs=5e-3
    )
    assert names(ns["converted"]) == ["head"]
    assert names(ns["siamese"]) == ["shared"]
    assert [r["density"] for r in ns["sub_scheduler"].rounds] == pytest.approx([1.0, 0.5, 0.25])
    assert ns["text_scheduler"].rounds[-1]["layer_density"]["mha/attention_output"] == (
        pytest.approx(0.75)
    )
    assert ns["f_scheduler"].rounds[-1]["layer_density"] == pytest.approx(
        {"conv1": 0.5, "conv2": 0.5, "fc": 0.5, "logits": 1.0}
    )
    small = ns["small"]
    assert [small.get_layer(n).filters for n in ("conv1", "conv2")] == [8, 16]
    assert small.get_layer("fc").units == 32
    assert (lth.strip(ns["filtered"]).count_params(), small.count_params()) == (300490, 75370)
    assert "layer 'conv': read by 'norm' (LayerNormalization)" in ns["message"]
    assert ns["words_small"].get_layer("embed").output_dim == 4


def _check_getting_started(ns, cwd):
    assert ns["last"]["layer_density"] == pytest.approx(
        {"hidden_1": 0.64, "hidden_2": 0.64, "output": 0.81}
    )
    assert [type(l).__name__ for l in ns["plain"].layers] == ["Dense"] * 3
    assert len(ns["history"].history["density"]) == 3


def _check_lottery_tickets(ns, cwd):
    assert ns["new"]["a"].tolist() == [[0, 1], [1, 0]]
    assert set(ns["results"]) == {"init", 1, "reinit", None}


def _check_structured(ns, cwd):
    assert [l.units for l in ns["small"].layers] == [75, 25, 10]
    assert (ns["dense"].count_params(), ns["small"].count_params()) == (266610, 61035)


def _check_gradual(ns, cwd):
    density = ns["history"].history["density"]
    assert density[0] == 1.0 and density[-1] == pytest.approx(0.1, abs=0.005)


def _check_distributed(ns, cwd):
    assert [r["round"] for r in ns["scheduler"].rounds] == [0, 1, 2]
    assert not os.path.exists("backup/scheduler") or not os.listdir("backup/scheduler")


PAGE_CHECKS = {
    "README.md": _check_readme,
    "docs/guides/any-model.md": _check_any_model,
    "docs/getting-started.md": _check_getting_started,
    "docs/guides/lottery-tickets.md": _check_lottery_tickets,
    "docs/guides/structured-pruning.md": _check_structured,
    "docs/guides/gradual-pruning.md": _check_gradual,
    "docs/guides/distributed.md": _check_distributed,
}


# ---------------------------------------------------------------------- #
# The README


def test_readme_is_short():
    lines = read("README.md").splitlines()
    assert len(lines) < 250, len(lines)


def test_readme_states_the_setup_and_the_docs_commands():
    text = read("README.md")
    assert 'pip install -e ".[test]" && keras-lth bench' in text
    assert "\npytest" in text
    assert "mkdocs serve" in text
    assert "## Prune your own model" in text


LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")


def local_targets(rel):
    """The local files that the Markdown links and images of page `rel` name."""
    out = []
    for m in LINK.finditer(read(rel)):
        target = m["target"].split("#", 1)[0]
        if not target or re.match(r"^[a-z]+:", target):
            continue
        out.append((m.group(0), (REPO / rel).parent / target))
    return out


def test_readme_links_resolve():
    missing = [link for link, path in local_targets("README.md") if not path.exists()]
    assert not missing, missing


@pytest.mark.parametrize("page", ["README.md"] + [p for p in pages() if p.startswith("docs/")])
def test_figures_are_committed_artifacts(page):
    """Every image is a file under docs/results/ (where each study's command
    and raw records live)."""
    text = read(page)
    for m in re.finditer(r"!\[[^\]]*\]\((?P<target>[^)\s]+)", text):
        path = ((REPO / page).parent / m["target"]).resolve()
        assert path.exists(), (page, m["target"])
        assert (DOCS / "results") in path.parents, (page, m["target"])


# ---------------------------------------------------------------------- #
# Commands shown in the docs exist

SCRIPT_COMMAND = re.compile(r"python (?P<script>(?:examples|benchmarks)/\w+\.py)(?P<args>[^`\n]*)")
BENCH_COMMAND = re.compile(r"keras-lth bench(?P<args>[^`\n]*)")


def test_example_commands_name_scripts_and_options_that_exist():
    seen = 0
    for page in pages() + ["CONTRIBUTING.md"]:
        for m in SCRIPT_COMMAND.finditer(read(page)):
            script = REPO / m["script"]
            assert script.exists(), (page, m.group(0))
            source = script.read_text()
            for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", m["args"]):
                assert f'"{flag}"' in source, (page, m.group(0), flag)
            seen += 1
        for m in BENCH_COMMAND.finditer(read(page)):
            source = (REPO / "keras_lth" / "bench" / "cli.py").read_text()
            for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", m["args"]):
                assert f'"{flag}"' in source, (page, m.group(0), flag)
    assert seen >= 6


# ---------------------------------------------------------------------- #
# Results pages say what the artifacts say


def table_rows(text):
    return [l.rstrip() for l in text.splitlines() if l.startswith("|") and re.search(r"\d", l)]


# Each results page and the artifacts its tables are copied from (verbatim).
RESULTS = {
    "docs/results/bench-quick.md": [
        "docs/results/bench_quick/summary.md",
        "docs/results/bench_quick_auto/summary.md",
    ],
    "docs/results/bench-speech.md": ["docs/results/bench_speech_quick/summary.md"],
    "docs/results/mnist-lth.md": ["docs/results/mnist_lth/results.md"],
    "docs/results/mnist-cnn-lth.md": ["docs/results/mnist_cnn_lth/results.md"],
    "docs/results/speech-cnn-lth.md": ["docs/results/speech_cnn_lth/results.md"],
    "docs/results/reintroduction.md": ["docs/results/mnist_reintroduce/results.md"],
    "docs/results/reintroduction-sweep.md": [
        "docs/results/reintroduction_sweep/results.md",
        "docs/results/reintroduction_sweep_wide/results.md",
        "docs/results/reintroduction_sweep_finalists/results.md",
        "docs/results/reintroduction_sweep_speech/results.md",
    ],
    "docs/results/tuner-search.md": ["docs/results/tuner_search/results.md"],
}


@pytest.mark.parametrize("page", sorted(RESULTS))
def test_results_tables_are_the_artifacts(page):
    artifacts = "\n".join(read(a) for a in RESULTS[page])
    known = set(table_rows(artifacts))
    rows = table_rows(read(page))
    assert rows, page
    copied = [r for r in rows if r in known]
    stray = [r for r in rows if r not in known and "±" in r]
    assert not stray, stray
    assert copied, page


def test_readme_numbers_with_std_come_from_the_artifacts():
    """A `mean ± std` in the README appears in a committed results artifact."""
    artifacts = "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "results").glob("*/*.md"))
    quoted = set(re.findall(r"\d+\.\d+ ± \d+\.\d+", read("README.md")))
    assert quoted
    missing = sorted(q for q in quoted if q not in artifacts)
    assert not missing, missing


@pytest.mark.parametrize("page", sorted(RESULTS))
def test_results_numbers_with_std_come_from_the_artifacts(page):
    """A `mean ± std` quoted in the prose appears in an artifact of the page."""
    artifacts = "\n".join(read(a) for a in RESULTS[page])
    quoted = set(re.findall(r"\d+\.\d+ ± \d+\.\d+", read(page)))
    missing = sorted(q for q in quoted if q not in artifacts)
    assert not missing, missing


def test_every_results_artifact_has_a_page():
    artifacts = [p for p in (DOCS / "results").rglob("*") if p.is_file()]
    pages_text = "\n".join(read(p.relative_to(REPO).as_posix()) for p in DOCS.glob("results/*.md"))
    for path in artifacts:
        if path.parent == DOCS / "results" and path.suffix == ".md":
            continue  # a results page itself
        rel = path.relative_to(DOCS / "results").as_posix()
        assert rel in pages_text, f"docs/results/{rel} is on no results page"


def test_reintroduction_timings_are_the_training_runs():
    (line,) = [
        l
        for l in read("docs/results/reintroduction.md").splitlines()
        if l.startswith("Training time per run")
    ]
    recorded = read("docs/results/mnist_reintroduce/training_run.md")
    assert line.split(", as the training run")[0] in recorded


def test_tuner_trials_table_is_the_recorded_search():
    with open(DOCS / "results" / "tuner_search" / "results.json") as f:
        trials = json.load(f)["trials"]
    rows = read("docs/results/tuner-search.md").splitlines()
    for t in trials:
        method = t["hyperparameters"]["prune/method"]
        (row,) = [r for r in rows if r.startswith(f"| {t['id']} | {method}")]
        assert row.replace("*", "").endswith(f"| {100 * t['score']:.2f} |"), row
        assert f"| {t['hyperparameters']['prune/rate']:g} |" in row, row


def test_pipeline_figures_are_the_recorded_log():
    log = read("docs/results/pipeline/log.txt")
    runs = log.split("$ python benchmarks/pipeline.py")[1:]
    assert len(runs) == 3
    rows = [r for r in read("docs/results/pipeline.md").splitlines() if r.startswith("| ")]
    names = {
        "| first": "first (decode + features), clips/s",
        "| cached": "cached, clips/s",
        "| set-up": "set-up (headers + tracing), s",
    }
    for start, label in names.items():
        (row,) = [r for r in rows if r.startswith(start)]
        recorded = [run.split(label, 1)[1].split()[:2] for run in runs]
        best, median = row.strip(" |").split(" | ")[1:]
        assert best.replace(" (least)", "") == " / ".join(r[0] for r in recorded), row
        assert median == " / ".join(r[1] for r in recorded), row


def test_reintroduction_overhead_table_is_the_recorded_run():
    with open(DOCS / "results" / "overhead_reintroduce.json") as f:
        result = json.load(f)
    page = read("docs/results/overhead.md").split("## Re-introduction strategies", 1)[1]
    load = result["config"]["loadavg"].split()
    assert f"load average {load[0]} before, {load[2]} after" in page
    rows = {
        "| `ScoredPruning`": "scored",
        '| `DoublePruning("feedback")`': "double_feedback",
        '| `DoublePruning("complement")`': "double_complement",
    }
    lines = page.splitlines()
    for start, variant in rows.items():
        (line,) = [l for l in lines if l.startswith(start)]
        cells = []
        for mode in ("off", "on"):
            r = result["keras3"][mode][variant]["vs_masked"]
            cells.append(f"{r['ratio']:.3f} ({r['cpu_ratio']:.3f})")
        assert line.rstrip(" |").split(" | ")[-2:] == cells, line


def test_compact_tables_are_the_recorded_run():
    with open(DOCS / "results" / "compact.json") as f:
        result = json.load(f)
    page = read("docs/results/compact.md")
    assert f"{result['config']['wall_s']} s in all" in page
    for key, res in result["results"].items():
        rate = key.split("_", 1)[1]
        p = res["params"]
        (row,) = [
            l
            for l in page.splitlines()
            if l.startswith(f"| {rate} | ") and "(" in l and "–" not in l
        ]
        filters = ", ".join(
            str(res["compacted_filters"][k]) for k in sorted(res["compacted_filters"])
        )
        diff = f"{res['max_abs_diff_vs_masked']['compacted']:.1e}"
        assert row.endswith(
            f"| {filters} | {p['masked']['total']:,} ({p['masked']['trainable']:,}) | "
            f"{p['stripped']['total']:,} | {p['compacted']['total']:,} | {diff} |"
        ), row
        for batch, times in res["latency"].items():
            cells = " | ".join(
                f"{times[m]['median_ms']:.2f} ({times[m]['iqr_ms'][0]:.2f}–{times[m]['iqr_ms'][1]:.2f})"
                for m in ("masked", "stripped", "compacted")
            )
            ratio = times["compacted"]["median_ms"] / times["stripped"]["median_ms"]
            assert f"| {rate} | {batch.split('_')[1]} | {cells} | {ratio:.2f} |" in page, batch


def test_design_layout_names_every_module_and_example():
    layout = read("docs/design.md").split("## Layout", 1)[1]
    for path in sorted((REPO / "keras_lth").glob("*.py")):
        assert path.name in layout, path.name
    for path in sorted((REPO / "keras_lth").glob("*/__init__.py")):
        assert f"{path.parent.name}/" in layout, path.parent.name
    for path in sorted((REPO / "examples").glob("*.py")):
        assert path.name in layout, path.name


def test_bench_quick_run_time_is_the_recorded_one():
    with open(DOCS / "results" / "bench_quick" / "results.jsonl") as f:
        lines = [json.loads(l) for l in f]
    total = sum(l["run_wall_s"] for l in lines)
    page = read("docs/results/bench-quick.md")
    assert f"{len(lines)} runs" in page
    assert f"{total:.0f} s" in page


def _end_accuracy_cells(path):
    """`{(method, column): (mean, std, n)}` of a summary's end-of-training table."""
    text = read(path).split("## Test accuracy (%) at the end of training", 1)[1]
    rows = table_rows(text.split("\n## ", 1)[0])  # the header, then the methods
    columns = [c.strip() for c in rows[0].strip("|").split("|")][1:]
    cells = {}
    for row in rows[1:]:
        values = [c.strip() for c in row.strip("|").split("|")]
        for column, cell in zip(columns, values[1:]):
            if cell:
                mean, std = (float(v) / 100 for v in cell.split(" ± "))
                cells[(values[0], column)] = (mean, std, 3)
    return cells


def _recorded_wall(log):
    """The one `/usr/bin/time -v` wall clock of a recorded log."""
    (wall,) = re.findall(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", log)
    return wall


def test_bench_quick_defaults_run_is_the_recorded_one():
    from keras_lth.bench import report

    log = read("docs/results/bench_quick_auto/log.txt")
    wall = _recorded_wall(log)
    assert "$ keras-lth bench --out /tmp/bq4/bench_quick_auto" in log
    assert "Percent of CPU this job got: 191%" in log
    with open(DOCS / "results" / "bench_quick_auto" / "timing.json") as f:
        timing = json.load(f)
    assert timing["runs"] == 54 and {p["jobs"] for p in timing["pieces"]} == {2}
    page = read("docs/results/bench-quick.md")
    section = page.split("## The main job with its defaults", 1)[1].split("\n## ", 1)[0]
    section = " ".join(section.split())  # line breaks aside
    assert f"Wall time {wall} for the whole main job" in section
    assert "`docs/results/bench_quick_auto/log.txt`" in read("CONTRIBUTING.md")
    assert "earlier commit" in read("CONTRIBUTING.md")  # README cites the 8d1e5e2 run
    assert f"{timing['wall_s']:.0f} s in the 54 runs" in section
    assert f"{timing['ms_per_step']:.2f} ms of wall time per training step" in section
    assert f"{timing['ratio']:.2f}x the bare" in section
    # the reproduction: cells within the noise bound of the first run's
    first = _end_accuracy_cells("docs/results/bench_quick/summary.md")
    again = _end_accuracy_cells("docs/results/bench_quick_auto/summary.md")
    assert set(first) == set(again)
    outside = [
        k for k in first if abs(again[k][0] - first[k][0]) > report.noise_bound(first[k], again[k])
    ]
    within = len(first) - len(outside)
    assert f"Of the {len(first)} mean ± std cells" in section
    assert f"{within} are within the noise bound" in section
    assert outside == [("double-feedback", "26.3%")]


def test_mnist_input_table_is_the_recorded_run():
    with open(DOCS / "results" / "pipeline" / "mnist_input.json") as f:
        result = json.load(f)
    page = read("docs/results/pipeline.md").split("## MNIST training input", 1)[1]
    for name in ("per_batch", "library", "in_memory"):
        (line,) = [l for l in page.splitlines() if l.startswith(f"| `{name}`")]
        want = [f"{result['step_ms'][name]:.3f}", f"{result['vs_in_memory'][name]:.3f}"]
        assert line.rstrip(" |").split(" | ")[-2:] == want, line
    assert f"{result['library_vs_per_batch']:.3f}× the step time" in page
    assert (
        f"{result['config']['repeats']} rounds\nof {result['config']['epochs']} timed epochs"
        in page
    )


def test_tuner_search_times_are_the_recorded_ones():
    with open(DOCS / "results" / "tuner_search" / "results.json") as f:
        result = json.load(f)
    page = read("docs/results/tuner-search.md")
    assert f"{result['search_seconds']:.0f} s of search" in page
    assert f"{result['total_seconds']:.0f} s in all" in page


# ---------------------------------------------------------------------- #
# mean ± std is the sample standard deviation everywhere


def _records(accuracies):
    """Per-seed round records with the given final test accuracies (0-1)."""
    return [[{"density": 1.0, "test": {"accuracy": a}}] for a in accuracies]


def test_every_summary_uses_the_sample_std():
    import sys

    sys.path.insert(0, str(REPO / "examples"))
    try:
        import mnist_lth
        import speech_commands_lth
    finally:
        sys.path.remove(str(REPO / "examples"))
    from keras_lth.bench import report

    acc = [0.90, 0.925, 0.93]
    expected = (statistics.mean([90, 92.5, 93]), statistics.stdev([90, 92.5, 93]))
    for module in (mnist_lth, speech_commands_lth):
        ((_, mean, std),) = module.summarize({"k": _records(acc)})["k"]
        assert (mean, std) == pytest.approx(expected), module.__name__
    mean, std, n = report.stats(acc)
    assert (100 * mean, 100 * std, n) == pytest.approx((*expected, 3))
    assert report.stats([0.5])[1] == 0.0  # one seed: no spread, not NaN


def test_no_population_std_left_in_the_reporting_code():
    """`np.std` defaults to ddof=0; every call that reports a spread says ddof=1."""
    files = glob.glob(str(REPO / "examples" / "*.py")) + glob.glob(
        str(REPO / "keras_lth" / "**" / "*.py"), recursive=True
    )
    files += glob.glob(str(REPO / "benchmarks" / "*.py"))
    bad = []
    for path in files:
        for n, line in enumerate(open(path), 1):
            if re.search(r"\b(np|numpy)\.std\(|\.std\(\)|statistics\.pstdev", line):
                if "ddof=1" not in line:
                    bad.append(f"{os.path.relpath(path, REPO)}:{n}: {line.strip()}")
    assert not bad, bad


def test_tuner_example_reports_the_sample_std():
    import sys

    pytest.importorskip("keras_tuner")
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import tuner_search
    finally:
        sys.path.remove(str(REPO / "examples"))
    plan = {
        "method": "lth",
        "rounds": 1,
        "epochs_per_round": 1,
        "total_epochs": 2,
        "exact_rate": 0.5,
        "rewind": "init",
        "scope": "layer",
        "structure": "weight",
    }
    runs = [[{"density": 0.5, "test": {"accuracy": a}}] for a in (0.908, 0.921)]
    line = tuner_search.summary_line("x", plan, runs)
    std = statistics.stdev([90.8, 92.1])
    assert line.endswith(f"| 91.45 ± {std:.2f} |"), line
    assert not math.isclose(std, 0.65, abs_tol=0.005)  # the population std of the pair


# ---------------------------------------------------------------------- #
# The API reference


API_PAGES = {
    "keras_lth.layers": "layers.md",
    "keras_lth.conversion": "conversion.md",
    "keras_lth.compaction": "compaction.md",
    "keras_lth.pruning": "pruning.md",
    "keras_lth.schedules": "schedules.md",
    "keras_lth.callbacks": "callbacks.md",
    "keras_lth.distributed": "distributed.md",
    "keras_lth.reintroduce": "reintroduce.md",
    "keras_lth.export": "export.md",
    "keras_lth.models": "models.md",
    "keras_lth.data": "data.md",
    "keras_lth.tuner": "tuner.md",
    "keras_lth.bench": "bench.md",
}


def test_every_public_module_has_an_api_page_in_the_nav():
    nav = read("mkdocs.yml")
    for module, page in API_PAGES.items():
        assert f"::: {module}" in read(f"docs/api/{page}"), module
        assert f"api/{page}" in nav, page
    assert "api/index.md" in nav


def test_every_masked_class_has_a_docstring_that_the_api_page_shows():
    """mkdocstrings reads the source: a `__doc__ = ...` assignment is not seen,
    and a class without a literal docstring is left off its page."""
    import ast

    tree = ast.parse((REPO / "keras_lth" / "layers.py").read_text(encoding="utf-8"))
    documented = {
        n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and ast.get_docstring(n)
    }
    missing = sorted(
        c.__name__ for c in lth.layers.MASKED_CLASSES.values() if c.__name__ not in documented
    )
    assert not missing, missing


def test_every_model_builder_has_a_docstring_that_the_api_page_shows():
    import ast

    tree = ast.parse((REPO / "keras_lth" / "models.py").read_text(encoding="utf-8"))
    public = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name[0] != "_"]
    assert {"conv2", "conv4", "conv6", "lenet5", "speech_cnn"} <= {n.name for n in public}
    missing = [n.name for n in public if not ast.get_docstring(n)]
    assert not missing, missing


def test_the_api_index_lists_the_whole_public_api():
    index = read("docs/api/index.md")
    for name in lth.__all__ + ["tuner"]:
        if name == "__version__":
            continue
        assert f"`{name}`" in index, name


def test_bench_speech_is_the_recorded_run(tmp_path):
    import shutil

    from keras_lth.bench import report

    out = tmp_path / "bench_speech_quick"
    shutil.copytree(DOCS / "results" / "bench_speech_quick", out)
    rebuilt = report.report_directory(str(out))  # from results.jsonl and config.json only
    committed = read("docs/results/bench_speech_quick/summary.md")
    assert report.comparable(rebuilt) == report.comparable(committed)
    assert "**synthetic speech**" in rebuilt  # recorded in config.json
    log = read("docs/results/bench_speech_quick/log.txt")
    wall = _recorded_wall(log)
    assert "$ keras-lth bench --dataset speech_commands --source /work/wt/speech96" in log
    page = " ".join(read("docs/results/bench-speech.md").split())
    assert f"The run took {wall} of wall clock" in page
    with open(out / "results.jsonl") as f:
        assert sum(1 for _ in f) == 54


def test_bench_quick_intel_run_is_the_recorded_one():
    log = read("docs/results/bench_quick_intel/log.txt")
    wall = _recorded_wall(log)
    assert "$ keras-lth bench --out /tmp/bq5/bench_quick_intel" in log
    with open(DOCS / "results" / "bench_quick_intel" / "timing.json") as f:
        timing = json.load(f)
    page = read("docs/results/bench-quick.md")
    section = page.split("## The main job on the Intel machine, at a later commit", 1)[1]
    section = " ".join(section.split("\n## ", 1)[0].split())
    assert f"Wall time {wall} for the whole main job" in section and f"({wall})" in read(
        "README.md"
    )
    assert f"{timing['ms_per_step']:.2f} ms of wall time per training step" in section
    assert f"{timing['ratio']:.2f}x the bare" in section
    first, again = _run_accuracies("bench_quick"), _run_accuracies("bench_quick_intel")
    assert len(again) == 54 and first == again  # "every one of the 54 runs"


def _run_accuracies(name):
    """`{run key: [test accuracy of each record]}` of a committed results.jsonl."""
    with open(DOCS / "results" / name / "results.jsonl") as f:
        lines = [json.loads(l) for l in f]
    return {
        json.dumps(l["key"], sort_keys=True): [r["test_accuracy"] for r in l["records"]]
        for l in lines
    }


def test_bench_quick_current_run_is_the_recorded_one():
    log = read("docs/results/bench_quick_current/log.txt")
    lines = log.splitlines()
    wall = _recorded_wall(log)
    assert lines[3] == "$ keras-lth bench --out /tmp/bq7/bench_quick_current"
    assert lines[2].startswith("commit 8d1e5e2")
    with open(DOCS / "results" / "bench_quick_current" / "timing.json") as f:
        timing = json.load(f)
    assert timing["runs"] == 54 and {p["jobs"] for p in timing["pieces"]} == {2}
    page = read("docs/results/bench-quick.md")
    section = page.split("## The main job at 8d1e5e2", 1)[1].split("\n## ", 1)[0]
    section = " ".join(section.split())
    assert f"Wall time {wall} for the whole main job" in section
    assert f"({wall})" in read("README.md")
    assert "`docs/results/bench_quick_current/log.txt`" in read("CONTRIBUTING.md")
    cpu = re.search(r"Percent of CPU this job got: (\d+)%", log)[1]
    assert f"{timing['wall_s']:.0f} s in the 54 runs as the benchmark timed them; {cpu}% CPU" in (
        section
    )
    earlier = _recorded_wall(read("docs/results/bench_quick_auto/log.txt"))
    assert f"against {earlier} for the same job at the earlier code" in section
    assert f"{timing['ms_per_step']:.2f} ms of wall time per training step" in section
    assert f"{timing['ratio']:.2f}x the bare" in section
    lo, hi = timing["pieces"][0]["bare_step_ms"]
    assert f"({lo} and {hi} ms at the start and end)" in section
    # the earlier record at 2d6f33a, on the same machine instance: its wall and bare steps
    earlier_log = read("docs/results/bench_quick_current/at_2d6f33a/log.txt")
    assert earlier_log.splitlines()[2].startswith("commit 2d6f33a")
    with open(DOCS / "results" / "bench_quick_current" / "at_2d6f33a" / "timing.json") as f:
        a, b = json.load(f)["pieces"][0]["bare_step_ms"]
    assert "at 2d6f33a, whose pruning step" in section
    assert f"took {_recorded_wall(earlier_log)} on this same machine instance" in section
    assert f"measured {a} and {b} ms at the start and end, against {lo} and {hi} ms here" in section
    before = re.search(r"load average: ([0-9.]+)", lines[0])[1]
    after = re.search(r"load average: ([0-9.]+)", lines[-1])[1]
    assert f"load average {before} at the start, {after} at the end" in section
    # the records: those of the first run and the Intel run, not all of the AMD auto run's
    now = _run_accuracies("bench_quick_current")
    assert len(now) == 54
    assert now == _run_accuracies("bench_quick") == _run_accuracies("bench_quick_intel")
    auto = _run_accuracies("bench_quick_auto")
    same = sum(now[k] == auto[k] for k in now)
    assert f"Only {same} of the 54 runs of the `--jobs auto` run above" in section
    from keras_lth.bench import report  # the summaries differ in their wall times only

    summaries = [read(f"docs/results/bench_quick_{n}/summary.md") for n in ("intel", "current")]
    assert summaries[0] != summaries[1]
    assert report.comparable(summaries[0]) == report.comparable(summaries[1])
    # the traces, by method
    with open(DOCS / "results" / "bench_quick_current" / "results.jsonl") as f:
        traces = {}
        for l in map(json.loads, f):
            traces.setdefault(l["config"]["method"]["name"], set()).add(
                (l["traces"]["train"], l["traces"]["test"])
            )
    plain = {"dense", "double-complement", "double-feedback", "scored"}
    assert all(traces[m] == {(3, 2)} for m in plain)
    assert all(traces[m] == {(5, 2)} for m in set(traces) - plain)


def _summary_ratios(path):
    """`{(jit, "a/b"): ratio}` and `{(jit, variant): (GFLOP/s, % of peak)}` of an
    overhead JSON's printed summary."""
    with open(DOCS / "results" / path) as f:
        summary = json.load(f)["summary"]
    ratios, flops = {}, {}
    for line in summary:
        m = re.match(r"jit=(on|off): (\w+/\w+) = ([0-9.]+)[ ,(]", line)
        if m and "CPU time =" not in line:
            ratios[m[1], m[2]] = m[3]
        m = re.match(r"jit=(on|off): (\w+) step [0-9.]+ ms = ([0-9.]+) GFLOP/s, ([0-9.]+)%", line)
        if m:
            flops[m[1], m[2]] = (m[3], m[4])
    return ratios, flops


def _child_ratio(path, mode, name):
    """`name`/keras3 of a `_tfmot_reference.py` JSON, as the summary prints it."""
    with open(DOCS / "results" / path) as f:
        entry = json.load(f)["results"][mode][name]
    return f"{entry['vs_keras3']['ratio']:.3f}"


def _logged_command(path):
    """A recorded log's command (its first line), less `--out` and the env prefix."""
    first = (DOCS / "results" / path).read_text().splitlines()[0].removeprefix("$ ")
    return re.sub(r" --out \S+", "", first.removeprefix("TF_USE_LEGACY_KERAS=1 ")).split()


def _mean_ratios(path):
    """`{(jit, "a/b"): ratio of mean steps}` of an overhead JSON's printed summary."""
    with open(DOCS / "results" / path) as f:
        summary = " ".join(json.load(f)["summary"])
    found = re.findall(r"jit=(on|off): (\w+/\w+) mean step = ([0-9.]+)", summary)
    return {(mode, ratio): value for mode, ratio, value in found}


def _matmul_peak(path):
    """The matmul peak (GFLOP/s, as printed) of an overhead JSON's summary."""
    with open(DOCS / "results" / path) as f:
        summary = " ".join(json.load(f)["summary"])
    return re.search(r"matmul peak \(1024x1024 float32, tf.function\): ([0-9.]+)", summary)[1]


def _overhead_section(title):
    """A section of the overhead results page and its ratio tables."""
    page = read("docs/results/overhead-issue11.md")
    section = page.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    tables = [t for t in section.split("\n\n") if t.startswith("| step-time ratio, medians")]
    return section, tables


def _assert_ratio_tables(tables, sources, means, child=None):
    """Each results table's cells are the ratios of its columns' runs.

    `sources`: per table, `[(ratios or None for the child JSON, jit mode), ...]`
    per column; a row "the same, ratio of mean steps" holds the previous
    row's ratio of mean steps (`means`).
    """
    for table, columns in zip(tables, sources):
        ratio = None  # the previous row's
        for line in table.splitlines()[2:]:
            cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
            if cells[0].startswith("the same, ratio of mean steps"):
                want = [means[mode, ratio] for _, mode in columns]
            else:
                names = re.findall(r"`(\w+)`", cells[0])
                ratio = f"{names[0]}/{names[-1]}"
                want = [
                    _child_ratio(child, mode, names[0]) if ratios is None else ratios[mode, ratio]
                    for ratios, mode in columns
                ]
            assert cells[2:] == want, (cells, want)


def _overhead_runs():
    """`benchmarks/overhead_runs.py`, imported (it renders the pooled tables)."""
    import importlib

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        return importlib.import_module("overhead_runs")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def _json(name):
    with open(DOCS / "results" / name) as f:
        return json.load(f)


def _pooled(name="overhead_amd/pooled_aside.json"):
    return _json(name)


def _steps_runs_off(folder):
    """The jit-off results of the three steps-protocol runs `<folder>/<folder>_{a,b,c}.json`."""
    return [_json(f"{folder}/{folder}_{s}.json")["keras3"]["off"] for s in "abc"]


def _mask_cost_ms(folder, dash=" to "):
    """`(masked - plain step ms, plain step ms)` over those runs, each as "min<dash>max"."""
    off = _steps_runs_off(folder)
    diffs = [o["masked"]["step_ms"] - o["plain"]["step_ms"] for o in off]
    plain = [o["plain"]["step_ms"] for o in off]
    return tuple(f"{min(v):.2f}{dash}{max(v):.2f}" for v in (diffs, plain))


def _assert_steps_reading(prose, pooled, folder, iqrs_end):
    """The reading of a steps-protocol section: every pooled mean ± std, the A/A
    range, the jit-off `masked` per-block IQRs (then `iqrs_end`) and the masks'
    cost per step against the plain step, from `folder`'s three runs."""
    for key in pooled:
        assert f"{pooled[key]['mean']:.3f} ± {pooled[key]['std']:.3f}" in prose, key
    controls = [e["control"] for q in pooled.values() for e in q["runs"]]
    assert f"The A/A controls ranged from {min(controls):.3f} to {max(controls):.3f}" in prose
    off = _steps_runs_off(folder)
    iqrs = ", ".join("{:.3f}–{:.3f}".format(*o["masked"]["vs_plain"]["paired_iqr"]) for o in off)
    assert f"per-block IQRs: {iqrs}{iqrs_end}" in prose
    cost, plain = _mask_cost_ms(folder)
    assert f"cost {cost} ms per step on a plain step of {plain} ms" in prose


def _select_cost_ratios(state, functions=("selects", "selects_again")):
    """`functions` / `elided` step-time ratios of `state` in the three `select_cost` runs."""
    runs = [_json(f"overhead_elided/select_cost_{s}.json")["states"][state] for s in "abc"]
    return [r["functions"][f]["vs_elided"]["ratio"] for r in runs for f in functions]


def test_readme_mask_cost_table_is_the_recorded_runs():
    _, flops = _summary_ratios("overhead_amd/overhead_aside.json")  # FLOP/s line
    earlier, _ = _summary_ratios("overhead_intel/overhead.json")  # re-introduction
    pooled = _pooled()["pooled"]
    section = read("README.md").split("## What the masks cost", 1)[1].split("\n## ", 1)[0]
    rows = {
        "iterative pruning, masked": "masked",
        'iterative pruning, `pruned_values="zeroed"`': "masked_zeroed",
        "gradual, `PolynomialDecay`": "masked_gradual_poly",
        'gradual, `pruned_values="zeroed"`': "masked_gradual_poly_zeroed",
    }
    instances = _pooled("overhead_inst/pooled.json")["pooled"]
    steps = _pooled("overhead_gsteps/pooled_two_days.json")["pooled"]
    rows["masked small CNN"] = "masked_cnn"
    cell = _overhead_runs().pooled_cell
    for label, name in rows.items():
        (line,) = [l for l in section.splitlines() if l.startswith(f"| {label}")]
        cells = [c.strip().replace("*", "") for c in line.strip("|").split("|")]
        for got, mode in ((cells[2], "off"), (cells[3], "on")):
            key = f"{name}, jit {mode}"
            want = "; ".join(
                [
                    cell(pooled[key]) if key in pooled else "-",
                    cell(instances[key]),
                    cell(steps[key]),
                ]
            )
            assert got == want, label
    controls = [e["control"] for p in pooled.values() for e in p["runs"]]
    prose = " ".join(section.split())
    lo, hi = min(controls), max(controls)
    assert f"The A/A controls of the fit protocols ranged from {lo:.3f} to {hi:.3f}" in prose
    controls = [e["control"] for p in steps.values() for e in p["runs"]]
    assert f"one step in turn, from {min(controls):.3f} to {max(controls):.3f}." in prose
    for key in ("masked, jit off", "masked, jit on"):
        assert f"({steps[key]['mean']:.3f} ± {steps[key]['std']:.3f}" in prose, key
    off = _steps_runs_off("overhead_elided") + _steps_runs_off("overhead_gsteps")
    cost = [o["masked"]["step_ms"] - o["plain"]["step_ms"] for o in off]
    assert f"the masks cost {min(cost):.2f}–{max(cost):.2f} ms a step" in prose
    within = [r["ratio"] <= r["budget"] for r in steps["masked, jit off"]["runs"]]
    assert f", {within.count(True)} of {len(within)} runs within;" in prose
    assert len(within) == 6 and within.count(False) == 1
    poly = steps["masked_gradual_poly, jit off"]
    assert f"is within the budget in every run ({cell(poly).split(' (')[0]} jit off)" in prose
    assert all(r["ratio"] <= r["budget"] for r in poly["runs"])
    means = [
        _json(f"overhead_gsteps/overhead_gsteps_{s}.json")["tfmot"]["results"]["off"][
            "masked_gradual_poly"
        ]["vs_keras3"]["mean_ratio"]
        for s in "abc"
    ]
    assert f"`PolynomialDecay`, {min(means):.3f}–{max(means):.3f}." in prose
    pruned, dense = _select_cost_ratios("pruned"), _select_cost_ratios("dense")
    saved = f"{100 * (statistics.fmean(pruned) - 1):.1f}"
    assert f"save about {saved}% of a step after a pruning" in prose
    assert f"`selects` / `elided` {min(pruned):.3f}–{max(pruned):.3f};" in prose
    assert f"{100 * (min(dense) - 1):.0f}–{100 * (max(dense) - 1):.0f}% before the first)" in prose
    files = [os.path.basename(f) for f in _pooled()["files"]]
    lenet = [f for f in files if re.fullmatch(r"overhead_(aside|adopt)_lenet.*\.json", f)]
    child = [f for f in files if f.startswith("tfmot_child_")]
    assert (len(lenet), len(child)) == (4, 5)
    assert "four times, tfmot's child process alone with jit off five times" in prose

    for label, ratio in (
        ("`ScoredPruning`", "scored/masked"),
        ('`DoublePruning("feedback")`', "double_feedback/masked"),
        ('`"complement"`', "double_complement/masked"),
    ):
        assert f"{label} {earlier['off', ratio]} / {earlier['on', ratio]}" in prose, label
    gflops, share = flops["off", "plain"]
    assert f"Plain jit-off step: {gflops} GFLOP/s, {share}% of the measured matmul peak" in prose
    # The commands the README shows are the logged ones (less their --out).
    for log in ("overhead_amd/log_aside.txt", "overhead_amd/log_aside_lenet.txt"):
        assert f"`{' '.join(_logged_command(log))}`" in prose, log
    base = _logged_command("overhead_amd/log_aside.txt")
    added = "--variants scored,double_feedback,double_complement,masked_010,masked_layer"
    assert f"`{added}`" in prose
    assert Counter(_logged_command("overhead_intel/log.txt")) == Counter(base + added.split())


def _assert_pooled_section(title, pooled_name, runs_shown, logs, same_commands, rows=True):
    """A section of pooled overhead runs is its artifacts: the table is what
    `overhead_runs.py` renders from the committed JSON (`pooled_name`), which
    pools exactly the files its command's patterns match; every run row's
    commit, wall and load averages are its log's; the commands shown are the
    logged ones (`logs`), and `same_commands` pairs of logs ran the same one.
    `rows=False` checks the pooled table only (a section's second pooling:
    its run rows and commands were checked with the first). Returns the
    section and the pooled JSON."""
    section = read("docs/results/overhead-issue11.md").split(f"## {title}", 1)[1]
    section = section.split("\n## ", 1)[0]
    folder = os.path.dirname(pooled_name)
    runs = _overhead_runs()
    pooled = _pooled(pooled_name)
    table = "\n".join(runs.markdown(pooled["pooled"]))
    assert table in section
    markdown = pooled_name.removesuffix(".json") + ".md"
    assert (DOCS / "results" / markdown).read_text() == table + "\n"
    (command,) = [
        l
        for l in section.splitlines()
        if l.startswith("python benchmarks/overhead_runs")
        and l.endswith(f" --markdown > docs/results/{markdown}")
    ]
    patterns = command.split(" --out ")[0].split()[2:]
    expanded = [f for p in patterns for f in sorted(glob.glob(str(REPO / p)))]
    assert [os.path.relpath(f, REPO) for f in expanded] == pooled["files"]
    # The same pooling, computed again from those files.
    assert json.loads(json.dumps(runs.pooled(expanded))) == json.loads(
        json.dumps(runs.pooled([str(REPO / f) for f in pooled["files"]]))
    )
    for key, p in runs.pooled(expanded).items():
        assert p.get("mean") == pooled["pooled"][key].get("mean"), key
    if not rows:
        return section, pooled
    # Every run row: commit, wall and load averages from its log.
    rows = [l for l in section.splitlines() if l.startswith("| `") and ".txt`" in l]
    assert len(rows) == runs_shown
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        names = re.findall(r"`([^`]+)`", cells[0])  # the JSON, the log, maybe the name run as
        json_name, log_name = names[:2]
        text = (DOCS / "results" / log_name).read_text()
        assert text.splitlines()[2].startswith(cells[1]), row
        assert cells[2] == _recorded_wall(text), row
        before = re.search(r"load average: ([0-9.]+)", text.splitlines()[1])[1]
        after = re.search(r"uptime after: .*load average: ([0-9.]+)", text)[1]
        assert cells[3] == f"{before}, {after}", row
        run_as = names[2] if len(names) > 2 else json_name
        assert text.splitlines()[0].endswith(f"--out docs/results/{run_as}")
    # The commands shown are the logged ones.
    shown = [l for l in section.splitlines() if l.startswith(("python ", "TF_USE"))]
    for log in logs:
        first = (DOCS / "results" / folder / log).read_text().splitlines()[0]
        assert first.removeprefix("$ ") in shown, log
    for a, b in same_commands:
        assert _logged_command(f"{folder}/{a}") == _logged_command(f"{folder}/{b}")
    return section, pooled


def test_pooled_runs_section_is_the_recorded_runs():
    section, pooled = _assert_pooled_section(
        "Repeated runs, pooled",
        "overhead_amd/pooled_aside.json",
        7,
        ("log_adopt_lenet_a.txt", "log_child_off_a.txt", "log_child_diag.txt"),
        (
            ("log_adopt_lenet_b.txt", "log_adopt_lenet_a.txt"),
            ("log_child_off_b.txt", "log_child_off_a.txt"),
            ("log_child_off_c.txt", "log_child_off_a.txt"),
        ),
    )
    # The diagnostic table.
    table = section.split("| `overhead_amd/tfmot_child_diag.json`, jit off | median | mean |")[1]
    with open(DOCS / "results" / "overhead_amd" / "tfmot_child_diag.json") as f:
        diag = json.load(f)["results"]["off"]
    for line in table.strip().splitlines()[1:5]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name = re.findall(r"`(\w+)`", cells[0])[0]
        e = diag[name]["vs_keras3"]
        assert cells[1:] == [f"{e['ratio']:.3f}", f"{e['mean_ratio']:.3f}"], line
    prose = " ".join(section.split())
    p = pooled["pooled"]
    for key, text in (
        ("masked, jit off", "Iterative pruning, default layers, jit off: {} over {} valid runs"),
        ("masked_gradual_poly, jit off", "`PolynomialDecay`, jit off: {} over {} valid runs"),
    ):
        cell = f"{p[key]['mean']:.3f} ± {p[key]['std']:.3f}"
        words = {4: "4", 5: "5"}[p[key]["valid_runs"]]
        assert text.format(cell, words) in prose, key


def test_four_instances_section_is_the_recorded_runs():
    section, pooled = _assert_pooled_section(
        "Four model instances per variant",
        "overhead_inst/pooled.json",
        6,
        ("log_lenet_a.txt", "log_child_a.txt", "log_cnn_a.txt"),
        tuple((f"log_{k}_b.txt", f"log_{k}_a.txt") for k in ("lenet", "child", "cnn")),
    )
    # The instance effect: what the shown command prints from the same files.
    (command,) = [
        l
        for l in section.splitlines()
        if l.endswith("--instance-effect > docs/results/overhead_inst/instance_effect.md")
    ]
    assert command.split()[2:4] == [
        "docs/results/overhead_inst/overhead_*.json",
        "docs/results/overhead_inst/tfmot_child_*.json",
    ]
    rows = _overhead_runs().instance_effects([str(REPO / f) for f in pooled["files"]])
    assert read("docs/results/overhead_inst/instance_effect.md") == "\n".join(rows) + "\n"
    tested = [r for r in rows if r.startswith("| `")]
    low = [r for r in tested if float(r.rstrip(" |").rsplit("|", 1)[1]) < 0.05]
    prose = " ".join(section.split())
    assert f"**{len(low)} of {len(tested)} variants at p < 0.05**" in prose
    p = pooled["pooled"]
    for key in ("masked, jit off", "masked, jit on", "masked_cnn, jit off", "masked_cnn, jit on"):
        assert f"{p[key]['mean']:.3f} ± {p[key]['std']:.3f}" in prose, key


def test_steps_protocol_section_is_the_recorded_runs():
    section, pooled = _assert_pooled_section(
        "Every model one step in turn",
        "overhead_steps/pooled.json",
        4,
        ("log_steps_a.txt", "log_diag_gradmask.txt"),
        (("log_steps_b.txt", "log_steps_a.txt"), ("log_steps_c.txt", "log_steps_a.txt")),
    )
    assert all(p["valid_runs"] == 3 for p in pooled["pooled"].values())
    runs = [_json(f"overhead_steps/overhead_steps_{s}.json") for s in "abc"]
    assert {r["config"]["protocol"] for r in runs} == {"steps"}
    prose = " ".join(section.split())
    _assert_steps_reading(prose, pooled["pooled"], "overhead_steps", iqrs_end=")")
    diag = _json("overhead_steps/diag_gradmask.json")["keras3"]["off"]
    ratio = {k: f"{diag[k]['vs_plain']['ratio']:.3f}" for k in ("plain_gradmask", "masked")}
    assert f"`plain_gradmask` / `plain` is {ratio['plain_gradmask']}" in prose
    assert f"`masked` / `plain` {ratio['masked']}" in prose


def test_elided_section_is_the_recorded_runs():
    folder = "overhead_elided"
    section, pooled = _assert_pooled_section(
        "Full masks traced without a select",
        f"{folder}/pooled.json",
        8,
        (
            "log_steps_a.txt",
            "log_diag_gradmask.txt",
            "log_diag_selects.txt",
            "log_select_cost_a.txt",
        ),
        (
            ("log_steps_b.txt", "log_steps_a.txt"),
            ("log_steps_c.txt", "log_steps_a.txt"),
            ("log_select_cost_b.txt", "log_select_cost_a.txt"),
            ("log_select_cost_c.txt", "log_select_cost_a.txt"),
        ),
    )
    p = pooled["pooled"]
    assert all(q["valid_runs"] == 3 for q in p.values())
    prose = " ".join(section.split())
    _assert_steps_reading(prose, p, folder, iqrs_end=".")
    assert f"plain step of {_mask_cost_ms(folder)[1]} ms." in prose
    masked = p["masked, jit off"]
    assert all(r["ratio"] <= r["budget"] for r in masked["runs"])
    assert f"(mean + std {masked['mean'] + masked['std']:.3f})" in prose
    # The earlier runs, and the day between.
    earlier = _pooled("overhead_steps/pooled.json")["pooled"]["masked, jit off"]
    assert f"runs above ({earlier['mean']:.3f} ± {earlier['std']:.3f})" in prose
    old_cost, old_plain = _mask_cost_ms("overhead_steps")
    assert f"took {old_plain} ms in the runs above" in prose
    assert f"the masks {old_cost} ms then" in prose
    # One model instance: select_cost.
    pruned, dense = _select_cost_ratios("pruned"), _select_cost_ratios("dense")
    aa_pruned = _select_cost_ratios("pruned", ("elided_again",))
    aa_dense = _select_cost_ratios("dense", ("elided_again",))
    assert (
        f"`selects` / `elided` was {min(pruned):.3f} to {max(pruned):.3f} (mean "
        f"{statistics.fmean(pruned):.3f}) over the three `select_cost` runs, against "
        f"{min(aa_pruned):.3f} to {max(aa_pruned):.3f} for the A/A"
    ) in prose
    assert (
        f"`selects` / `elided` was {min(dense):.3f} to {max(dense):.3f} (A/A "
        f"{min(aa_dense):.3f} to {max(aa_dense):.3f})"
    ) in prose
    assert max(aa_pruned) < 1.01 and min(dense) > max(aa_dense) + 0.02  # the reading's premise
    for state in ("dense", "pruned"):
        for s in "abc":
            run = _json(f"{folder}/select_cost_{s}.json")
            assert run["config"]["steps"] == 200 and run["config"]["repeats"] == 20
            assert all(f["n_steps"] == 4000 for f in run["states"][state]["functions"].values())
    # Two models: the diagnostics.
    r = lambda d, k: f"{d[k]['vs_plain']['ratio']:.3f}"  # noqa: E731
    sel = _json(f"{folder}/diag_selects.json")["keras3"]["off"]
    grad = _json(f"{folder}/diag_gradmask.json")["keras3"]["off"]
    assert (
        f"`masked` / `plain` was {r(sel, 'masked')}, `masked_selects` / `plain` "
        f"{r(sel, 'masked_selects')} and `plain_gradmask` / `plain` {r(sel, 'plain_gradmask')}, "
        f"with an A/A control of {r(sel, 'plain_again')}"
    ) in prose
    assert (
        f"measured {r(grad, 'masked')}, {r(grad, 'plain_gradmask')} and {r(grad, 'plain_again')}."
    ) in prose


def test_readme_says_where_keras_compiles_with_xla():
    """Keras 3 on TensorFlow uses XLA by default only when it sees a GPU."""
    import tensorflow as tf

    assert "Keras uses XLA (jit on) by default only with a GPU: jit off on a CPU." in " ".join(
        read("README.md").split()
    )
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")  # jit_compile="auto"
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    assert model.jit_compile is has_gpu


def test_zeroed_by_gradients_section_is_the_recorded_runs():
    section, tables = _overhead_section("Pruned values zeroed by masked gradients")
    assert len(tables) == 3
    full, flops = _summary_ratios("overhead_amd/overhead_gradmask.json")
    means = _mean_ratios("overhead_amd/overhead_gradmask.json")
    lenet, _ = _summary_ratios("overhead_amd/overhead_gradmask_lenet.json")
    prerun, _ = _summary_ratios("overhead_amd/overhead_prerun_lenet.json")
    child = "overhead_amd/tfmot_child_jit_on.json"
    sources = (
        [(full, "off"), (full, "on")],
        [(lenet, "off"), (lenet, "on"), (prerun, "off"), (prerun, "on")],
        [(None, "on")],
    )
    _assert_ratio_tables(tables, sources, means, child)
    prose = " ".join(section.split())
    for log in ("log_gradmask.txt", "log_gradmask_lenet.txt"):
        text = (DOCS / "results" / "overhead_amd" / log).read_text()
        assert text.splitlines()[2].startswith("0bab819")
        assert f"at 0bab819 ({_recorded_wall(text)} wall" in prose
    peak = _matmul_peak("overhead_amd/overhead_gradmask.json")
    (off, off_share), zeroed = flops["off", "plain"], flops["off", "masked_zeroed"][0]
    assert (
        f"(the whole benchmark's run, {peak} GFLOP/s): {off} GFLOP/s with jit off ({off_share}%); "
        f"the zeroed masked step reaches {zeroed}."
    ) in prose
    for name in ("log_prerun_lenet.txt", "log_tfmot_child_jit_on.txt"):
        assert (
            (DOCS / "results" / "overhead_amd" / name)
            .read_text()
            .splitlines()[2]
            .startswith("0bab819")
        )


def test_kept_values_aside_section_is_the_recorded_runs():
    section, tables = _overhead_section("Kept values set aside")
    assert len(tables) == 2
    full, flops = _summary_ratios("overhead_amd/overhead_aside.json")
    means = _mean_ratios("overhead_amd/overhead_aside.json")
    lenet, _ = _summary_ratios("overhead_amd/overhead_aside_lenet.json")
    lenet2, _ = _summary_ratios("overhead_amd/overhead_aside_lenet2.json")
    sources = (
        [(full, "off"), (full, "on")],
        [(lenet, "off"), (lenet, "on"), (lenet2, "off"), (lenet2, "on")],
    )
    _assert_ratio_tables(tables, sources, means)
    assert [len(t.splitlines()) - 2 for t in tables] == [10, 3]
    prose = " ".join(section.split())
    peak = _matmul_peak("overhead_amd/overhead_aside.json")
    (off, off_share), masked = flops["off", "plain"], flops["off", "masked"][0]
    assert (
        f"benchmark's run ({peak} GFLOP/s): {off} GFLOP/s with jit off ({off_share}%); the "
        f"default masked step, values set aside, reaches {masked}."
    ) in prose
    for log in ("log_aside.txt", "log_aside_lenet.txt", "log_aside_lenet2.txt"):
        text = (DOCS / "results" / "overhead_amd" / log).read_text()
        assert text.splitlines()[2].startswith("76838a3")
        assert text.startswith("$ ") and "load average" in text
        assert f"({_recorded_wall(text)} wall" in prose, log
    for log, json_name in (
        ("log_aside.txt", "overhead_aside.json"),
        ("log_aside_lenet.txt", "overhead_aside_lenet.json"),
    ):
        command = " ".join(_logged_command(f"overhead_amd/{log}"))
        assert f"{command} --out docs/results/overhead_amd/{json_name}" in prose
    assert _logged_command("overhead_amd/log_aside_lenet2.txt") == _logged_command(
        "overhead_amd/log_aside_lenet.txt"
    )


def test_zeroed_results_section_is_the_recorded_runs():
    run, flops = _summary_ratios("overhead_intel/overhead_zeroed.json")
    again, _ = _summary_ratios("overhead_intel/overhead_zeroed_lenet.json")
    page = read("docs/results/overhead-issue11.md").split("## Pruned values zeroed\n", 1)[1]
    page = page.split("\n## ", 1)[0]  # this section only
    tables = [t for t in page.split("\n\n") if t.startswith("| ratio of median step times")]
    assert len(tables) == 2
    means = _mean_ratios("overhead_intel/overhead_zeroed.json")
    with open(DOCS / "results" / "overhead_intel" / "overhead_zeroed.json") as f:
        summary = " ".join(json.load(f)["summary"])
    for table, ratios in zip(tables, (run, again)):
        ratio = None  # the previous row's
        for line in table.splitlines()[2:]:  # every row: `variant` ... / `baseline` ...
            cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
            if cells[0].startswith("the same, ratio of mean steps"):
                want = (means["off", ratio], means["on", ratio])  # of the row above
            else:
                names = re.findall(r"`(\w+)`", cells[0])
                ratio = f"{names[0]}/{names[-1]}"
                want = (ratios["off", ratio], ratios["on", ratio])
            assert tuple(cells[2:4]) == want, (cells, want)
    prose = " ".join(page.split())
    for log, commit in (("log_zeroed.txt", "0d13ca4"), ("log_zeroed_lenet.txt", "fce5186")):
        text = (DOCS / "results" / "overhead_intel" / log).read_text()
        assert text.splitlines()[2].startswith(commit)
        assert f"at {commit}" in prose and f"({_recorded_wall(text)} wall" in prose
    (off, off_share), (on, on_share) = flops["off", "plain"], flops["on", "plain"]
    assert f"{off} GFLOP/s with jit off, {on} with jit on ({off_share}% and {on_share}%)" in prose
    zeroed_off, zeroed_on = flops["off", "masked_zeroed"][0], flops["on", "masked_zeroed"][0]
    assert f"the zeroed masked step reaches {zeroed_off} and {zeroed_on}" in prose
    peak = re.search(r"matmul peak \(1024x1024 float32, tf.function\): ([0-9.]+)", summary)[1]
    assert f"({peak} GFLOP/s)" in prose.replace("(first run, ", "(")


def test_pruning_step_timings_are_the_recorded_logs():
    def recorded(commit):
        log = read(f"docs/results/prune_step/log_{commit}.txt")
        assert log.startswith(
            f"$ PYTHONPATH=<checkout of {commit}> python benchmarks/prune_step.py"
        )
        median = re.search(r"median ([0-9.]+) ms", log)[1]
        total = re.search(r"function calls .* in ([0-9.]+) seconds", log)[1]
        return log, median, total

    before, slow, total = recorded("51ba3bd")
    argsort = re.search(r"([0-9.]+) +[0-9.]+ +\{method 'argsort'", before)[1]
    _, fast, _ = recorded("55488c5")
    page = " ".join(read("docs/results/overhead-issue11.md").split())
    assert f"median of {slow} ms, {argsort} s of the {total} s profiled" in page
    assert f"at 55488c5 takes {fast} ms" in page
    assert f"takes {fast} ms instead of {slow} ms" in " ".join(read("CHANGELOG.md").split())


def test_gradual_steps_section_is_the_recorded_runs():
    folder = "overhead_gsteps"
    title = "Gradual pruning one step in turn"
    logs = ("log_steps_a.txt",)
    same = (("log_steps_b.txt", "log_steps_a.txt"), ("log_steps_c.txt", "log_steps_a.txt"))
    section, pooled = _assert_pooled_section(title, f"{folder}/pooled.json", 3, logs, same)
    _, two_days = _assert_pooled_section(
        title, f"{folder}/pooled_two_days.json", 3, logs, same, rows=False
    )
    p, both = pooled["pooled"], two_days["pooled"]
    assert all(q["valid_runs"] == 3 for q in p.values())
    assert two_days["files"] == _pooled("overhead_elided/pooled.json")["files"] + pooled["files"]
    runs = [_json(f"{folder}/{folder}_{s}.json") for s in "abc"]
    assert {r["config"]["protocol"] for r in runs} == {"steps"}
    assert {r["tfmot"]["protocol"] for r in runs} == {"steps"}
    assert {r["config"]["steps"] * r["config"]["repeats"] for r in runs} == {2400}
    prose = " ".join(section.split())
    controls = [e["control"] for q in p.values() for e in q["runs"]]
    assert f"The A/A controls ranged from {min(controls):.3f} to {max(controls):.3f}" in prose
    cell = lambda q: f"{q['mean']:.3f} ± {q['std']:.3f}"  # noqa: E731
    for key in p:
        assert cell(p[key]) in prose, key
    for key in ("masked", "masked_cnn", "masked_cnn_zeroed"):
        for mode in ("off", "on"):
            assert cell(both[f"{key}, jit {mode}"]) in prose, key
    gradual = [k for k in p if k.startswith("masked_gradual")]
    assert all(r["ratio"] <= r["budget"] for k in gradual for r in p[k]["runs"])
    m = both["masked, jit off"]
    assert f"(jit off, 5 of 6 within, mean + std {m['mean'] + m['std']:.3f})" in prose
    assert [r["ratio"] <= r["budget"] for r in m["runs"]].count(False) == 1
    fits = _pooled()["pooled"]["masked_gradual_poly, jit off"]
    assert f"the same ratio was {cell(fits)} (jit off, five runs, two of them within)" in prose
    assert (fits["valid_runs"], fits["within_budget"]) == (5, 2)
    # The ratios of mean steps: each run's, with its blocks' range.
    child = lambda r, mode, name: r["tfmot"]["results"][mode][name]  # noqa: E731
    table = section.split("| ratio of mean steps | jit | run `_a` | run `_b` | run `_c` |")[1]
    for line in table.strip().split("\n\n")[0].splitlines()[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        name, mode = re.findall(r"`(\w+)`", cells[0])[0], cells[1]
        want = []
        for r in runs:
            e = child(r, mode, name)["vs_keras3"]
            want.append("{:.3f} ({:.3f}–{:.3f})".format(e["mean_ratio"], *e["mean_paired_range"]))
        assert cells[2:] == want, line
    means = lambda name, mode: [  # noqa: E731
        child(r, mode, name)["vs_keras3"]["mean_ratio"] for r in runs
    ]
    for mode, words in (("off", "(jit off) and"), ("on", "(jit on)**")):
        v = means("masked_gradual_poly", mode)
        assert f"{min(v):.3f} to {max(v):.3f} {words}" in prose
    v = means("masked_gradual", "off") + means("masked_gradual", "on")
    assert f"the ratio of mean steps was {min(v):.3f} to {max(v):.3f}" in prose

    def blocks_above(name):
        out = []
        for r in runs:
            base = child(r, "off", "keras3")["repeat_means_ms"]
            out += [a / b for a, b in zip(child(r, "off", name)["repeat_means_ms"], base)]
        assert len(out) == 36
        return [f"{x:.3f}" for x in out if x > 1.10]

    assert (
        "two were above 1.10 for the default layers ({} and {}, both".format(
            *sorted(blocks_above("masked_gradual_poly"))
        )
        in prose
    )
    assert (
        "two for the zeroed ones ({1} and {0};".format(
            *sorted(blocks_above("masked_gradual_poly_zeroed"))
        )
        in prose
    )
    densities = {
        child(r, m, "masked_gradual_poly")["density_when_timed"]
        for r in runs
        for m in ("off", "on")
    }
    assert {f"{d:.3f}" for d in densities} == {"0.935"} and "(density 0.935 at the end)" in prose
    # Iterative pruning, this day: IQRs and the masks' cost.
    off = _steps_runs_off(folder)
    iqrs = ", ".join("{:.3f}–{:.3f}".format(*o["masked"]["vs_plain"]["paired_iqr"]) for o in off)
    assert f"IQRs: {iqrs}: three quarters of run `_c`'s blocks" in prose
    assert off[2]["masked"]["vs_plain"]["paired_iqr"][0] > 1.05
    cost, plain = _mask_cost_ms(folder)
    assert f"masks cost {cost} ms per step on a plain step of {plain} ms" in prose


def _prune_step_section(title, count):
    """A results section of `prune_step.py --in-run` logs: its table rows are the logs.

    Checks every row's log (the command, the commit), median and mean,
    wall and load averages (columns 0-2, 4, 5); returns the section and,
    per row, `(cells, the log's text, median in ms)`.
    """
    page = read("docs/results/overhead-issue11.md")
    section = page.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    rows = [l for l in section.splitlines() if l.startswith("| `prune_step/log_in_run_")]
    assert len(rows) == count
    checked = []
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        name = cells[0].strip("`")
        text = (DOCS / "results" / name).read_text()
        lines = text.splitlines()
        assert lines[0] == (
            f"$ PYTHONPATH=<checkout of {cells[1]}> python benchmarks/prune_step.py "
            "--in-run --steps 50 --profile"
        )
        assert lines[2].startswith(cells[1]) and f"_{cells[1]}_" in name
        found = re.search(r"median ([0-9.]+) ms, mean ([0-9.]+) ms per step", text)
        assert cells[2] == f"{found[1]} ms, {found[2]} ms", row
        assert cells[4] == _recorded_wall(text), row
        before = re.search(r"load average: ([0-9.]+)", lines[1])[1]
        after = re.search(r"uptime after: .*load average: ([0-9.]+)", text)[1]
        assert cells[5] == f"{before}, {after}", row
        checked.append((cells, text, float(found[1])))
    return section, checked


def test_gradual_step_in_a_run_section_is_the_recorded_runs():
    section, rows = _prune_step_section("A gradual pruning step in a run", 6)
    medians = {}
    for cells, text, median in rows:
        reset = re.search(r"\s([0-9.]+)\s+[0-9.]+ \S+optimizer_reset.py:\d+\(reset_at\)", text)
        assert cells[3] == f"{reset[1]} s", cells
        medians.setdefault(cells[1], []).append((median, float(reset[1])))
    prose = " ".join(section.split())
    old, new = medians["a9e56a2"], medians["78c8d70"]
    lo, hi = min(m for m, _ in old), max(m for m, _ in old)
    assert f"A pruning step costs {lo:.2f} to {hi:.2f} ms (median" in prose
    assert (
        f"`reset_at` took {min(r for _, r in new):.3f} to {max(r for _, r in new):.3f} s "
        f"against {min(r for _, r in old):.3f} to {max(r for _, r in old):.3f} s"
    ) in prose
    assert min(r for _, r in new) > max(r for _, r in old)  # the reading's premise
    first = (DOCS / "results" / "prune_step" / "log_in_run_a9e56a2_1.txt").read_text()
    total = re.search(r"function calls \(\d+ primitive calls\) in ([0-9.]+) seconds", first)[1]
    cum = lambda where: re.search(rf"\s([0-9.]+)\s+[0-9.]+ \S+{where}", first)[1]  # noqa: E731
    assert f"({total} s over the 50 steps)" in prose
    masks, slots = cum(r"targets.py:\d+\(set_masks\)"), cum(r"zeroing.py:\d+\(pruned\)")
    assert f"took {masks} s and resetting the slots (`ZeroHolding.pruned`) {slots} s" in prose
    # The estimate: against the pooled ratios of mean and median steps.
    p = _pooled("overhead_gsteps/pooled.json")["pooled"]["masked_gradual_poly, jit off"]
    gap = f"{p['mean_step_ratio']:.3f} − {p['mean']:.3f} = {p['mean_step_ratio'] - p['mean']:.3f}"
    assert gap in prose


def _assert_paired_prune_steps(title, pairs, old, new):
    """A section of `pairs` prune_step runs of commit `old` alternating with `new` (old first).

    Beyond `_prune_step_section`: each row's profile total (column 3), the
    reading's mean ± std of both commits' medians, and the paired ratios.
    Returns the prose, the rows and `{commit: [median ms]}`.
    """
    section, rows = _prune_step_section(title, 2 * pairs)
    runs = {}
    for cells, text, median in rows:
        total = re.search(r"function calls \(\d+ primitive calls\) in ([0-9.]+) seconds", text)
        assert cells[3] == f"{total[1]} s", cells
        runs.setdefault(cells[1], []).append(median)
    prose = " ".join(section.split())
    a, b = runs[old], runs[new]
    assert (
        f"A pruning step costs {statistics.mean(b):.2f} ± {statistics.stdev(b):.2f} ms at "
        f"{new} against {statistics.mean(a):.2f} ± {statistics.stdev(a):.2f} ms before"
    ) in prose
    ratios = [n / o for n, o in zip(b, a)]  # the rows alternate, old first
    assert f"cheaper in {sum(r < 1 for r in ratios)} of the {pairs} pairs" in prose
    assert (
        f"ranged from {min(ratios):.2f} to {max(ratios):.2f} (mean {statistics.mean(ratios):.2f})"
    ) in prose
    return prose, rows, runs


def test_writing_only_what_changes_section_is_the_recorded_runs():
    prose, rows, _ = _assert_paired_prune_steps(
        "Writing only what changes", 8, "a87f834", "2d6f33a"
    )
    phases = {
        "pruned": r"zeroing.py:\d+\(pruned\)",
        "select": r"pruning.py:\d+\(sparsity_mask\)",
        "masks": r"targets.py:\d+\(set_masks\)",
    }
    profiles = {}
    for cells, text, _ in rows:
        for phase, where in phases.items():
            cum = re.search(rf"\s([0-9.]+)\s+[0-9.]+ \S+{where}", text)[1]
            profiles.setdefault((cells[1], phase), []).append(float(cum))
    for phase, label in (("pruned", "`ZeroHolding.pruned`) "), ("select", "(`sparsity_mask`) ")):
        a, b = (statistics.median(profiles[(c, phase)]) for c in ("a87f834", "2d6f33a"))
        assert f"{label}{a:.3f} → {b:.3f} s" in prose, phase
    a, b = (statistics.median(profiles[(c, "masks")]) for c in ("a87f834", "2d6f33a"))
    assert f"{a:.3f} → {b:.3f} s, hardly less" in prose
    loads = [float(c) for cells, _, _ in rows for c in cells[5].split(",")]
    assert f"between {min(loads):.2f} and {max(loads):.2f}" in prose


def test_writing_whole_again_section_is_the_recorded_runs():
    prose, _, runs = _assert_paired_prune_steps("Writing whole again", 6, "a87f834", "274b1a1")
    both = runs["a87f834"] + runs["274b1a1"]
    assert f"(medians from {min(both):.0f} to {max(both):.0f} ms for both commits)" in prose
    assert "3.82 ms against 21.30 ± 3.89 ms" in read("CHANGELOG.md").replace("\n  ", " ")


def test_scatter_section_is_the_recorded_runs():
    folder = "overhead_writes"
    same = (("log_steps_b.txt", "log_steps_a.txt"), ("log_steps_c.txt", "log_steps_a.txt"))
    section, pooled = _assert_pooled_section(
        "A scatter's cost to the steps after it",
        f"{folder}/pooled.json",
        3,
        ("log_steps_a.txt",),
        same,
    )
    p = pooled["pooled"]
    prose = " ".join(section.split())
    cell = lambda q: f"{q['mean']:.3f} ± {q['std']:.3f}"  # noqa: E731
    poly, zeroed = p["masked_gradual_poly, jit off"], p["masked_gradual_poly_zeroed, jit off"]
    assert f"was {cell(poly)} of plain Keras 3 with jit off (zeroed layers {cell(zeroed)})" in prose
    assert not any(r["ratio"] <= r["budget"] for r in poly["runs"])  # "above 1.10 in every run"
    before = _pooled("overhead_gsteps/pooled.json")["pooled"]["masked_gradual_poly, jit off"]
    assert f"against {cell(before)} at 8b0f468" in prose
    masked, cnn = p["masked, jit off"], p["masked_cnn, jit off"]
    assert f"(masked / plain {cell(masked)} with jit off, the CNN {cell(cnn)})" in prose
    log = (DOCS / "results" / "prune_step" / "log_scatter_read.txt").read_text()
    assert log.splitlines()[0] == "$ python benchmarks/scatter_read.py"
    assert log.splitlines()[2].startswith("274b1a1")
    entries = re.findall(r"^(\w+)\s+([0-9.]+) ms per step.*?([0-9.]+) of fresh", log, re.M)
    ms, ratio = ({k: e[i] for k, *e in entries} for i in (0, 1))
    assert set(ms) == {"none", "scatter", "whole"}
    assert (
        f"took {ratio['scatter']} times the fresh one's, the model assigned whole "
        f"{ratio['whole']} times"
    ) in prose
    assert f"({ms['none']}, {ms['scatter']} and {ms['whole']} ms;" in prose


def test_steps_after_the_fix_section_is_the_recorded_runs():
    folder = "overhead_whole"
    same = (("log_steps_b.txt", "log_steps_a.txt"), ("log_steps_old.txt", "log_steps_a.txt"))
    section, pooled = _assert_pooled_section(
        "The steps protocol after the fix", f"{folder}/pooled.json", 3, ("log_steps_a.txt",), same
    )
    p = pooled["pooled"]
    prose = " ".join(section.split())
    cell = lambda q: f"{q['mean']:.3f} ± {q['std']:.3f}"  # noqa: E731
    poly = p["masked_gradual_poly, jit off"]
    assert f"`PolynomialDecay` / plain Keras 3 {cell(poly)} with jit off" in prose
    scattered = _pooled("overhead_writes/pooled.json")["pooled"]["masked_gradual_poly, jit off"]
    assert f"({cell(scattered)} with the scatter" in prose
    means = [
        _json(f"{folder}/{folder}_{s}.json")["tfmot"]["results"]["off"]["masked_gradual_poly"][
            "vs_keras3"
        ]["mean_ratio"]
        for s in "ab"
    ]
    assert f"ratio of mean steps {means[0]:.3f} and {means[1]:.3f}" in prose
    masked = p["masked, jit off"]
    old = _json(f"{folder}/{folder}_old.json")
    control = old["keras3"]["off"]["masked"]["vs_plain"]["ratio"]
    runs = ", ".join(f"{r['ratio']:.3f}" for r in masked["runs"])
    assert f"{cell(masked)} at 274b1a1 ({runs}) and {control:.3f} in the control" in prose
    controls = [r["control"] for r in masked["runs"]]
    aa = old["keras3"]["off"]["plain_again"]["vs_plain"]["ratio"]
    assert f"({', '.join(f'{c:.3f}' for c in controls)}; {aa:.3f} in the control)" in prose
    ratios = [r["ratio"] for r in masked["runs"]] + [control]
    readme = " ".join(read("README.md").split())
    assert f"({min(ratios):.3f}–{max(ratios):.3f}, A/A controls " in readme
    lo, hi = min(controls + [aa]), max(controls + [aa])
    assert f"A/A controls {lo:.3f}–{hi:.3f};" in readme


def test_shuffled_step_order_section_is_the_recorded_runs():
    folder = "overhead_order"
    same = (
        ("log_steps_c.txt", "log_steps_a.txt"),
        ("log_steps_e.txt", "log_steps_a.txt"),
        ("log_steps_f.txt", "log_steps_a.txt"),
        ("log_steps_d.txt", "log_steps_b.txt"),
    )
    logs = ("log_steps_a.txt", "log_steps_b.txt", "log_diag_gradmask.txt")
    section, pooled = _assert_pooled_section(
        "A shuffled step order", f"{folder}/pooled.json", 7, logs, same
    )
    _assert_pooled_section(
        "A shuffled step order", f"{folder}/pooled_alternating.json", 7, logs, same, rows=False
    )
    runs = {t: _json(f"{folder}/{folder}_{t}.json") for t in "abcdef"}
    orders = {t: r["config"]["step_order"] for t, r in runs.items()}
    assert orders == dict(zip("abcdef", ["shuffled", "alternating"] * 2 + ["shuffled"] * 2))
    for t, order in orders.items():
        assert f"`{folder}/log_steps_{t}.txt` ({order})" in section
    assert all(r["config"]["protocol"] == "steps" for r in runs.values())
    # The after-itself table: every model of the alternating runs that has such steps.
    rows = [l for l in section.splitlines() if re.match(r"\| `[bd]` \|", l)]
    expected = []
    for t in "bd":
        for process, results in (
            ("main", runs[t]["keras3"]),
            ("child", runs[t]["tfmot"]["results"]),
        ):
            for mode in ("off", "on"):
                for name, e in results[mode].items():
                    if "after_itself" not in e:
                        continue
                    a = e["after_itself"]
                    change = 100 * (a["median_ms"] / a["others_median_ms"] - 1)
                    expected.append(
                        f"| `{t}` | {process} | `{name}`, jit {mode} | {a['steps']} | "
                        f"{a['median_ms']:.3f} | {a['others_median_ms']:.3f} | {change:+.1f}% | "
                        f"{e['step_ms']:.3f} |"
                    )
    assert rows == expected and len(rows) == 8
    for t in "acef":  # a shuffled run has no such steps
        for results in (runs[t]["keras3"], runs[t]["tfmot"]["results"]):
            assert not any("after_itself" in e for m in results.values() for e in m.values())
    prose = " ".join(section.split())
    lenet = [r for r in expected if "cnn" not in r]
    changes = sorted(float(r.split(" | ")[6].rstrip("%")) for r in lenet)
    assert f"was {-changes[-1]:.1f} to {-changes[0]:.1f}% faster" in prose
    cnn = [r.split(" | ")[6] for r in expected if "cnn" in r]
    assert f"was not ({cnn[0]} and {cnn[1]})" in prose
    fell = []
    for t in "bd":
        plain = runs[t]["keras3"]["off"]["plain"]
        fell.append(
            f"{100 * (1 - plain['step_ms'] / plain['after_itself']['others_median_ms']):.1f}%"
        )
    assert f"`plain`'s (jit off) by {fell[0]} and {fell[1]} against" in prose
    # The pooled figures.
    p = pooled["pooled"]
    cell = lambda q: f"{q['mean']:.3f} ± {q['std']:.3f}"  # noqa: E731
    masked = p["masked, jit off"]
    *rest, last = [f"{r['control']:.3f}" for r in masked["runs"]]
    assert f"jit-off A/A controls of the main process were {', '.join(rest)} and {last}**" in prose
    each = ", ".join(f"{r['ratio']:.3f}" for r in masked["runs"])
    assert f"**iterative pruning with jit off was {cell(masked)} over four runs" in prose
    assert f"({each}): within the 1.05 budget on average" in prose
    within = sum(r["ratio"] <= 1.05 for r in masked["runs"])
    assert within == 2 and "two runs of four above it" in prose
    for key, text in (
        ("masked, jit on", "With jit on, {}"),
        ("masked_zeroed, jit off", "zeroed layers {} (jit off)"),
        ("masked_zeroed, jit on", "and {} (jit on)"),
        ("masked_gradual_poly, jit off", "`PolynomialDecay`: {} (jit off)"),
        ("masked_cnn, jit off", "The CNN: {}"),
        ("masked_cnn, jit on", "and {}."),
    ):
        assert text.format(cell(p[key])) in prose, key
    # The diagnostic.
    diag = _json(f"{folder}/diag_gradmask.json")["keras3"]["off"]
    r = {n: f"{e['vs_plain']['ratio']:.3f}" for n, e in diag.items() if "vs_plain" in e}
    assert (
        f"`masked` / `plain` was {r['masked']} and `plain_gradmask` / `plain` "
        f"{r['plain_gradmask']} (A/A {r['plain_again']})"
    ) in prose

    # The masks' absolute cost, this day and the two earlier days.
    def cost(paths):
        out = [_json(path)["keras3"]["off"] for path in paths]
        diffs = [o["masked"]["step_ms"] - o["plain"]["step_ms"] for o in out]
        plains = [o["plain"]["step_ms"] for o in out]
        return diffs, plains

    diffs, plains = cost([f"{folder}/{folder}_{t}.json" for t in "acef"])
    assert f"{min(diffs):.2f} to {max(diffs):.2f} ms a step in the four shuffled runs" in prose
    assert f"on plain steps of {min(plains):.2f} to {max(plains):.2f} ms." in prose
    earlier = [f"overhead_elided/overhead_elided_{t}.json" for t in "abc"]
    earlier += [f"overhead_gsteps/overhead_gsteps_{t}.json" for t in "abc"]
    diffs, plains = cost(earlier)
    assert f"({min(diffs):.2f} to {max(diffs):.2f} ms) on plain steps of" in prose
    assert f"{min(plains):.2f} to {max(plains):.2f} ms, a smaller share" in prose
    # The README's sentence and the CHANGELOG's figures.
    readme = " ".join(read("README.md").split())
    lo, hi = -changes[-1], -changes[0]
    main_off = [float(r.split(" | ")[6].rstrip("%")) for r in expected if "`plain`" in r]
    span = f"{-max(main_off):.1f}–{-min(main_off):.1f}% faster"
    assert lo <= -max(main_off) and -min(main_off) <= hi
    assert f"right after its own, {span};" in readme
    aa = [r["control"] for r in masked["runs"]]
    assert (
        f"four runs that day gave {cell(masked)}, within the budget on average and within "
        f"noise of it ({within} of 4 runs within; A/A {min(aa):.3f}–{max(aa):.3f};"
    ) in readme
    changelog = " ".join(read("CHANGELOG.md").split())
    assert f"such a step was {span} than its others" in changelog
    assert f"{cell(masked)} jit off (two of four within 1.05), {cell(p['masked, jit on'])}" in (
        changelog
    )
    assert f"A/A controls {min(aa):.3f}–{max(aa):.3f} with jit off" in changelog
