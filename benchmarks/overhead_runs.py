"""Several runs of the overhead benchmark pooled: each budgeted ratio over the runs whose A/A control is valid.

One run of `benchmarks/overhead.py` (or of its tfmot child,
`benchmarks/_tfmot_reference.py`) on a shared machine moves by a few percent
from one run to the next, as its A/A control shows; a budget of 1.05 cannot
be judged from one such run. This script reads the JSON files of several
runs and, for every budgeted step-time ratio (median step against the
variant's baseline, in the same process) and jit mode:

- lists the ratio of every run with its process's A/A control
  (`plain_again / plain` in the main process, `plain_cnn_again /
  plain_cnn` for the CNN rows where the run has it, `keras3_again /
  keras3` in the child) and whether that control is within ±5%;
- pools the runs with a valid control: mean ± sample standard deviation,
  lowest and highest, how many are within the budget;
- gives a verdict: `within` (mean + std within the budget), `within on
  average, within noise of it` (mean within, mean + std not), `above on
  average, within noise of it` (mean above, mean - std within), `ABOVE`
  (mean - std above), or `no valid run`.

The gradual rows (`masked_gradual*`, child process) also pool the ratio of
mean steps (pruning steps included), as a diagnostic without a budget.
Runs timed under different protocols (`--protocol fits` or `steps`) or
with different numbers of model instances per variant (`--instances`) are
not pooled together (`ValueError`).

`--instance-effect` tests instead, for every variant of every run timed
with several instances, whether the instances differ by more than the
repeats do: a one-way analysis of variance of the per-repeat median steps
grouped by instance (F and its p-value), as a Markdown table.

```bash
python benchmarks/overhead_runs.py docs/results/overhead_amd/overhead_aside_lenet.json \\
    docs/results/overhead_amd/overhead_aside_lenet2.json --out pooled.json
```
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import _overhead_common
import _tfmot_reference
import overhead

CONTROL_TOLERANCE = 0.05  # an A/A control counts within 1 ± this
MAIN_CONTROL = ("plain_again", "vs_plain")
CHILD_CONTROL = ("keras3_again", "vs_keras3")


def instances_of(result):
    """Model instances per variant (`--instances`) of one result: `overhead.py`'s or its child's.

    `overhead.py` records them in its `config`, the child at its top level
    (also where `overhead.py` embeds the child's result); 1 for runs from
    before the option.
    """
    return result.get("config", {}).get("instances", result.get("instances", 1))


def _process_rows(path, variants, controls, budgets, key, instances):
    """`{(name, mode): entry}` of one process's budgeted ratios in one file.

    `controls(name)` lists the A/A controls that may judge `name`'s ratio,
    as `(variant, ratio key)`, the process's usual one last; the first
    present in the file is used, and named in the entry if not the usual.
    """
    rows = {}
    for mode, by_name in variants.items():
        for name, e in by_name.items():
            if name not in budgets or key not in e:
                continue
            candidates = controls(name)
            control = next((c for c in candidates if c[1] in by_name.get(c[0], {})), None)
            aa = None if control is None else by_name[control[0]][control[1]]["ratio"]
            rows[(name, mode)] = {
                "file": path,
                "budget": budgets[name],
                "instances": instances,
                "ratio": e[key]["ratio"],
                "mean_ratio": e[key]["mean_ratio"],
                "control": aa,
                "valid": aa is not None and abs(aa - 1) <= CONTROL_TOLERANCE,
            }
            if control is not None and control != candidates[-1]:  # not the usual one
                rows[(name, mode)]["control_variant"] = control[0]
    return rows


def _main_controls(name):
    """A main-process row's A/A control: its baseline's, else `plain_again`.

    Runs before `plain_cnn_again` existed judged the CNN rows by the
    LeNet-300-100 control `plain_again`; they still do.
    """
    bases = {v.name: v.baseline for v in overhead.VARIANTS}
    own = overhead.CONTROLS.get(bases[name], MAIN_CONTROL[0])
    return [(own, "vs_plain"), MAIN_CONTROL]


def runs_of(path, result):
    """`{(variant, jit mode): one run's entry}` of every budgeted ratio in one result file.

    Args:
        path: The file's name, kept in each entry.
        result: Its JSON: `benchmarks/overhead.py`'s (`"keras3"`, with the
            child's results under `"tfmot"` when it ran) or the child's own
            (`"results"`).
    """
    main_budgets = {v.name: v.budget for v in overhead.VARIANTS if v.budget is not None}
    if "keras3" in result:
        child_result = result.get("tfmot", {})
        instances = instances_of(result)
        rows = _process_rows(
            path, result["keras3"], _main_controls, main_budgets, "vs_plain", instances
        )
    elif "results" in result:
        child_result, rows = result, {}
    else:
        raise ValueError(
            f"{path}: expected the JSON of benchmarks/overhead.py (a 'keras3' key) or of "
            f"its tfmot child (a 'results' key). Received keys: {sorted(result)}"
        )
    child = child_result.get("results", {})
    gradual = {
        name: overhead.GRADUAL_BUDGET
        for by_name in child.values()
        for name in by_name
        if name.startswith("masked_gradual") and name not in _tfmot_reference.DIAGNOSTICS
    }
    instances = instances_of(child_result)
    rows.update(
        _process_rows(path, child, lambda name: [CHILD_CONTROL], gradual, "vs_keras3", instances)
    )
    return rows


def verdict(mean, std, budget):
    """Where the pooled mean lies against `budget`, counting one sample std as noise."""
    if mean + std <= budget:
        return "within"
    if mean <= budget:
        return "within on average, within noise of it"
    if mean - std <= budget:
        return "above on average, within noise of it"
    return "ABOVE"


def pool(entries, budget):
    """Pools one ratio's runs: those with a valid A/A control count."""
    valid = [e["ratio"] for e in entries if e["valid"]]
    out = {"budget": budget, "runs": entries, "valid_runs": len(valid)}
    if not valid:
        out["verdict"] = "no valid run"
        return out
    mean = statistics.fmean(valid)
    std = statistics.stdev(valid) if len(valid) > 1 else 0.0
    out.update(
        mean=mean,
        std=std,
        lowest=min(valid),
        highest=max(valid),
        within_budget=sum(r <= budget for r in valid),
        verdict=verdict(mean, std, budget) if len(valid) > 1 else "one valid run",
        mean_step_ratio=statistics.fmean(e["mean_ratio"] for e in entries if e["valid"]),
    )
    return out


def protocol_of(result):
    """How a result file's rows were timed: `"steps"` and its order, or `"fits"` and `--instances`.

    `overhead.py` records its protocol in its `config`, the child at its top
    level; the child runs the protocol of the `overhead.py` run that started
    it. Files from before the option timed fit calls; steps files from
    before `--step-order` used the alternating order.
    """
    where = result.get("config", result)
    if where.get("protocol", result.get("protocol")) == "steps":
        return f"steps, {where.get('step_order', 'alternating')} order"
    return f"fits, {instances_of(result)} instance(s)"


def pooled(paths):
    """`{"<variant>, jit <mode>": pool(...)}` over the result files `paths`."""
    grouped = {}
    protocols = {}
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        protocols[path] = protocol_of(result)
        for key, entry in runs_of(path, result).items():
            grouped.setdefault(key, []).append(entry)
    for (name, mode), entries in grouped.items():
        these = {e["file"]: protocols[e["file"]] for e in entries}
        if len(set(these.values())) > 1:
            raise ValueError(
                f"expected runs timed with the same protocol (--protocol) and number of "
                f"model instances per variant (--instances) to pool {name}, jit {mode}. "
                f"Received: {these}"
            )
    return {
        f"{name}, jit {mode}": pool(entries, entries[0]["budget"])
        for (name, mode), entries in sorted(grouped.items())
    }


def lines(result):
    out = []
    for key, p in result.items():
        controls = ", ".join(
            f"{e['ratio']:.3f} (A/A {_control_label(e)}{e['control']:.3f}"
            f"{'' if e['valid'] else ', not valid'})"
            if e["control"] is not None
            else f"{e['ratio']:.3f} (no A/A control)"
            for e in p["runs"]
        )
        head = f"{key}: budget {p['budget']:.2f}; runs {controls}"
        if "mean" in p:
            head += (
                f"; valid {p['valid_runs']}: {p['mean']:.3f} ± {p['std']:.3f}, "
                f"{p['within_budget']}/{p['valid_runs']} within: {p['verdict']}"
            )
        else:
            head += f": {p['verdict']}"
        out.append(head)
    return out


def _baseline(name):
    bases = {v.name: v.baseline for v in overhead.VARIANTS}
    return bases.get(name, _tfmot_reference.KERAS3_BASELINE)


def pooled_cell(p):
    """`mean ± std (valid runs)`, `ratio (1)` for one valid run, `-` for none."""
    if "mean" not in p:
        return "-"
    if p["valid_runs"] == 1:
        return f"{p['mean']:.3f} (1)"
    return f"{p['mean']:.3f} ± {p['std']:.3f} ({p['valid_runs']})"


def _control_label(entry):
    """Names the A/A control where it is not the process's usual one."""
    return f"{entry['control_variant']} " if "control_variant" in entry else ""


def markdown(result):
    """The pooled results as Markdown table rows, one per ratio and jit mode."""
    rows = [
        "| ratio | budget | jit | every run (its A/A control) | pooled (valid runs) "
        "| within | verdict |",
        "|---|---:|---|---|---:|---:|---|",
    ]
    for key, p in result.items():
        name, mode = key.split(", jit ")
        runs = ", ".join(
            f"{e['ratio']:.3f} ({_control_label(e)}{e['control']:.3f}"
            f"{'' if e['valid'] else ', not valid'})"
            for e in p["runs"]
        )
        within = f"{p['within_budget']}/{p['valid_runs']}" if "mean" in p else "-"
        rows.append(
            f"| `{name}` / `{_baseline(name)}` | {p['budget']:.2f} | {mode} | {runs} "
            f"| {pooled_cell(p)} | {within} | {p['verdict']} |"
        )
    return rows


def instance_effect(repeat_medians, instances):
    """One-way analysis of variance of per-repeat medians grouped by model instance.

    Repeat `r` timed instance `_overhead_common.instance_of(r, instances)`.

    Returns:
        `{"F": ..., "p": ..., "df": [between, within]}`: F is the variance
        of the instance means (times the repeats per instance) over the mean
        variance within an instance; p is the chance of an F this large if
        the instances did not differ.
    """
    from scipy import stats

    groups = [
        [v for r, v in enumerate(repeat_medians) if _overhead_common.instance_of(r, instances) == i]
        for i in range(instances)
    ]
    if instances < 2 or min(len(g) for g in groups) < 2:
        raise ValueError(
            f"expected at least 2 instances with 2 repeats each. Received: {instances} "
            f"instances, {len(repeat_medians)} repeats"
        )
    f, p = stats.f_oneway(*groups)
    return {"F": float(f), "p": float(p), "df": [instances - 1, len(repeat_medians) - instances]}


def instance_effects(paths):
    """Markdown rows: `instance_effect` of every variant of every run with several instances."""
    rows = [
        "| run | jit | variant | median step of each instance (ms) | F | p |",
        "|---|---|---|---|---:|---:|",
    ]
    tested = significant = 0
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        if "keras3" in result:
            modes = result["keras3"]
        else:
            modes = result.get("results", {})
        instances = instances_of(result)
        if instances < 2:
            continue
        for mode, by_name in modes.items():
            for name, e in by_name.items():
                if "repeat_medians_ms" not in e:
                    continue
                effect = instance_effect(e["repeat_medians_ms"], instances)
                tested += 1
                significant += effect["p"] < 0.05
                medians = ", ".join(f"{v:.2f}" for v in e["instance_medians_ms"])
                rows.append(
                    f"| `{path.split('docs/results/')[-1]}` | {mode} | `{name}` | {medians} "
                    f"| {effect['F']:.2f} | {effect['p']:.3f} |"
                )
    if not tested:
        raise ValueError(f"expected runs timed with --instances 2 or more. Received: {paths}")
    rows.append(f"\n{significant} of {tested} variants differ between instances at p < 0.05.")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="JSON files of overhead.py or its tfmot child")
    parser.add_argument("--out", default=None, help="write the pooled results as JSON here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--instance-effect",
        action="store_true",
        help="print whether the model instances of each variant differ (analysis of variance)",
    )
    args = parser.parse_args(argv)
    if args.instance_effect:
        print("\n".join(instance_effects(args.files)))
        return 0
    result = pooled(args.files)
    if not result:
        raise ValueError(f"no budgeted ratio in {args.files}")
    for line in markdown(result) if args.markdown else lines(result):
        print(line)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"files": args.files, "pooled": result}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
