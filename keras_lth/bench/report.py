"""`summary.md` and the plots, computed from the results files alone.

Everything here is a function of the results lines (and the plan that names
the columns), so the summary can be rebuilt at any time without training:
`keras-lth bench report DIR` (`report_directory`) merges the results files
of a directory (every shard's) and rewrites it. What depends on the machine
and its load (wall times, latencies) sits between `TIMING_BEGIN` and
`TIMING_END` lines, so `comparable(text)` compares two summaries exactly on
everything else.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid

import numpy as np

from keras_lth.bench.results import (
    atomic_write,
    in_plan_order,
    line_key,
    merged_lines,
    read_config,
)

NOISE_Z = 2.0  # "within noise": |difference of means| <= 2 standard errors
# The seed proposal's algorithms, placed against every other method.
SEED_METHODS = ("double-complement", "double-feedback", "scored")
TIMING_FILE = "timing.json"
# HTML comments (not rendered) around the summary's machine-dependent parts.
TIMING_BEGIN = "<!-- timing: machine- and load-dependent -->"
TIMING_END = "<!-- /timing -->"


def rows(lines) -> list:
    """One flat dict per record (method x density x seed)."""
    out = []
    for line in lines:
        for rec in line["records"]:
            out.append({"method": line["key"]["method"], "seed": line["key"]["seed"], **rec})
    return out


def target_accuracy(rows_, offset=0.005):
    """The dense net's mean final validation accuracy minus `offset` (or None)."""
    dense = [r["val_accuracy"][-1] for r in rows_ if r["method"] == "dense"]
    return float(np.mean(dense)) - offset if dense else None


def epochs_to_target(row, target, steps_per_pass):
    """`(epochs, steps)` from the start of the record's round until the
    validation accuracy first reaches `target` at the record's density, or
    `None` when it never does; epochs are passes over the training set."""
    for i, (acc, dens) in enumerate(zip(row["val_accuracy"], row["epoch_density"])):
        if acc >= target and math.isclose(dens, row["epoch_density"][-1], abs_tol=1e-9):
            steps = (i + 1) * row["steps_per_epoch"]
            return steps / steps_per_pass, steps
    return None


def stats(values):
    """`(mean, sample std, n)`; std is 0 for a single value."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std, len(values)


def within_noise(a, b):
    """Whether two `stats` differ by at most `NOISE_Z` standard errors."""
    (ma, sa, na), (mb, sb, nb) = a, b
    return abs(ma - mb) <= NOISE_Z * math.sqrt(sa**2 / na + sb**2 / nb)


def noise_bound(a, b) -> float:
    """`NOISE_Z` standard errors of the difference of two `stats`' means."""
    (_, sa, na), (_, sb, nb) = a, b
    return NOISE_Z * math.sqrt(sa**2 / na + sb**2 / nb)


def outcome(a, b) -> tuple:
    """`(word, difference, bound)` of `stats` `a` against `b`: `"wins"` when
    `a`'s mean is above `b`'s by more than `noise_bound`, `"loses"` when below
    by more, else `"ties"` (within noise)."""
    diff, bound = a[0] - b[0], noise_bound(a, b)
    word = "wins" if diff > bound else "loses" if diff < -bound else "ties"
    return word, diff, bound


def same_budget(table, column, method, methods, rel=0.01) -> list:
    """The methods other than `method` whose mean budget (cumulative passes)
    at `column` is within `rel` of `method`'s."""
    if (method, column) not in table:
        return []
    own = table[method, column]["budget"][0]
    return [
        m
        for m in methods
        if m != method
        and (m, column) in table
        and abs(table[m, column]["budget"][0] - own) <= rel * own
    ]


def passes_to_target_total(row, target, steps_per_pass):
    """Cumulative passes from the start of the run until the validation
    accuracy first reaches `target` at the record's density (the rounds
    before the record's included), or `None`."""
    reach = epochs_to_target(row, target, steps_per_pass)
    if reach is None:
        return None
    round_passes = row["epochs"] * row["steps_per_epoch"] / steps_per_pass
    return row["budget_epochs"] - round_passes + reach[0]


def placements(table, column, method, others) -> list:
    """`[(other, word, difference, bound), ...]` of `method`'s test accuracy
    against each of `others` present at `column` (see `outcome`)."""
    if (method, column) not in table:
        return []
    mine = table[method, column]["acc"]
    return [
        (o, *outcome(mine, table[o, column]["acc"]))
        for o in others
        if o != method and (o, column) in table
    ]


def _cell(s, scale=100.0, digits=2):
    if s is None:
        return "—"
    mean, std, _ = s
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def summarize(plan, lines, target=None) -> dict:
    """Per (method, column) statistics; columns are 1.0 and the plan's densities."""
    all_rows = rows(lines)
    given = target is not None
    if not given:
        target = target_accuracy(all_rows)
    columns = (1.0,) + tuple(plan.densities)
    methods = [m.name for m in plan.methods]
    table = {}
    for m in methods:
        for c in columns:
            sel = [r for r in all_rows if r["method"] == m and r["level"] == c]
            if not sel:
                continue
            reach = [
                epochs_to_target(r, target, plan.steps_per_pass) if target is not None else None
                for r in sel
            ]
            table[m, c] = {
                "n": len(sel),
                "acc": stats([r["test_accuracy"] for r in sel]),
                "acc_early": stats([r["test_accuracy_early_stop"] for r in sel]),
                "density": stats([r["density"] for r in sel]),
                "reached": sum(x is not None for x in reach),
                "to_target": stats([x[0] for x in reach if x is not None]),
                "total_to_target": stats(
                    [
                        passes_to_target_total(r, target, plan.steps_per_pass)
                        for r in sel
                        if target is not None
                    ]
                ),
                "steps_to_target": stats([x[1] for x in reach if x is not None]),
                "budget": stats([r["budget_epochs"] for r in sel]),
                "wall": stats([r["wall_s"] for r in sel]),
                "params": stats([r.get("compact_params") for r in sel]),
                "latency": stats([r.get("latency_ratio") for r in sel]),
            }
    present = {line_key(line) for line in lines}
    return {
        "columns": columns,
        "methods": methods,
        "table": table,
        "missing": [r.label() for r in plan.runs() if line_key(r) not in present],
        "runs": len(plan.runs()),
        "target": target,
        "target_rule": "given (--target)"
        if given
        else ("the dense net's mean final validation accuracy − 0.5 points"),
    }


def verdict(summary) -> list:
    """Best method per density and the methods within noise of it."""
    out = []
    table = summary["table"]
    for c in summary["columns"][1:]:
        cands = [(m, table[m, c]["acc"]) for m in summary["methods"] if (m, c) in table]
        if not cands:
            continue
        best, bs = max(cands, key=lambda x: x[1][0])
        tied = [m for m, s in cands if m != best and within_noise(bs, s)]
        line = f"- **{100 * c:.1f}%**: best `{best}` ({_cell(bs)})"
        if bs[2] < 2:
            line += "; one seed, so no noise estimate"
        elif tied:
            line += "; within noise of it: " + ", ".join(f"`{m}`" for m in tied)
        else:
            line += "; every other method is below it by more than the noise"
        out.append(line + ".")
    return out


def _placed(items):
    groups = {"wins over": [], "ties with": [], "loses to": []}
    names = {"wins": "wins over", "ties": "ties with", "loses": "loses to"}
    for other, word, diff, bound in items:
        groups[names[word]].append(f"`{other}` ({100 * diff:+.2f} ± {100 * bound:.2f})")
    return "; ".join(f"{k} {', '.join(v)}" for k, v in groups.items() if v)


def seed_verdict(summary) -> list:
    """Where each seed algorithm wins, ties or loses, per density, at equal
    density (every other method there, and the dense net) and at equal budget
    (the methods with the same cumulative passes at that density)."""
    methods = summary["methods"]
    others = [o for o in methods if o not in SEED_METHODS]
    out = []
    for c in summary["columns"][1:]:
        table = dict(summary["table"])
        if ("dense", 1.0) in table:
            table["dense", c] = table["dense", 1.0]  # the reference at every density
        for m in SEED_METHODS:
            if (m, c) not in table:
                continue
            density = placements(table, c, m, others)
            budget = placements(table, c, m, same_budget(table, c, m, others))
            line = f"- **{100 * c:.1f}%**, `{m}` ({_cell(table[m, c]['acc'])})"
            line += f": at equal density it {_placed(density) or 'has no other method'}"
            if budget:
                passes = table[m, c]["budget"][0]
                line += f". At equal budget ({passes:.1f} passes) it {_placed(budget)}"
            out.append(line + ".")
    return out


def agreement(summary, a="gradual", b="tfmot") -> list:
    """`(density, mean a, mean b, difference, noise bound, agree)` per density."""
    out = []
    table = summary["table"]
    for c in summary["columns"][1:]:
        if (a, c) not in table or (b, c) not in table:
            continue
        sa, sb = table[a, c]["acc"], table[b, c]["acc"]
        bound = NOISE_Z * math.sqrt(sa[1] ** 2 / sa[2] + sb[1] ** 2 / sb[2])
        out.append((c, sa[0], sb[0], sa[0] - sb[0], bound, abs(sa[0] - sb[0]) <= bound))
    return out


def markdown(plan, summary, command=None, timing=None) -> str:
    s = plan.settings
    cols, table = summary["columns"], summary["table"]
    head = "| method | " + " | ".join(f"{100 * c:.1f}%" for c in cols) + " |"
    rule = "|---|" + "---:|" * len(cols)

    def grid(fn):
        lines = [head, rule]
        for m in summary["methods"]:
            cells = [fn(table[m, c]) if (m, c) in table else "" for c in cols]
            if any(cells):
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    seeds = sorted({n["n"] for n in table.values()})
    out = ["# keras-lth bench: summary", ""]
    if command:
        out += [f"`{command}`", ""]
    passes = plan.steps_per_epoch / plan.steps_per_pass
    data = s.dataset
    from keras_lth.bench.runner import _is_synthetic_tree

    # (a config.json written before `Plan.synthetic` existed: the tree's marker)
    if s.dataset == "speech_commands" and (plan.synthetic or _is_synthetic_tree(s.source)):
        data = (
            "**synthetic speech**: a Speech Commands tree of espeak-ng voices "
            "(`keras_lth.data.synthetic_speech`), not the recorded dataset; speech_commands"
        )
    out += [
        (
            f"{data} (source `{s.source}`, {plan.num_train} training examples), model "
            f"`{getattr(s, 'model', 'mlp')}`, preset "
            f"`{s.preset}`: Adam {s.learning_rate:g}, batch {s.batch_size}, an evaluation "
            f'every {plan.steps_per_epoch} steps ("epoch" below: {passes:.2f} passes over the '
            f"training set), {s.epochs_per_round} epochs per round, rates {s.rate:g} (hidden) "
            f"/ {s.output_rate:g} (output) per round, {plan.rounds} rounds; seeds per cell: "
            f"{', '.join(map(str, seeds))}. Mean ± std (n − 1) over seeds. Columns: % of "
            "weights remaining (nominal; iterative methods at the round reaching it)."
        ),
        "",
    ]
    if summary["missing"]:
        missing = summary["missing"]
        out += [
            (
                f"**Incomplete**: {len(missing)} of {summary['runs']} runs of the plan are not "
                f"in the results yet: {', '.join(missing[:10])}"
                + (", ..." if len(missing) > 10 else "")
                + "."
            ),
            "",
        ]
    out += [
        "## Test accuracy (%) at the end of training",
        "",
        grid(lambda e: _cell(e["acc"])),
        "",
        "## Test accuracy (%) at the early-stop epoch (least validation loss)",
        "",
        grid(lambda e: _cell(e["acc_early"])),
        "",
    ]
    target = summary["target"]
    if target is not None:
        out += [
            f"## Passes over the training set to reach {100 * target:.2f}% validation accuracy",
            "",
            (
                f"Target: {summary['target_rule']}. Counted "
                "from the start of the round that trains at that density (gradual, tfmot: from "
                "the start of the run, at the final density only); (k/n): seeds that reached "
                "it; — : none did."
            ),
            "",
            grid(
                lambda e: (
                    f"{_cell(e['to_target'], 1)} ({e['reached']}/{e['n']})"
                    if e["reached"]
                    else f"— (0/{e['n']})"
                )
            ),
            "",
        ]
        out += [
            "## Cumulative passes to reach the target, from the start of the run",
            "",
            (
                "The passes of the rounds before the one at that density included (the "
                "training budget a method needs to reach the target at that density)."
            ),
            "",
            grid(
                lambda e: (
                    f"{_cell(e['total_to_target'], 1)} ({e['reached']}/{e['n']})"
                    if e["reached"]
                    else f"— (0/{e['n']})"
                )
            ),
            "",
        ]
    out += [
        "## Budget: cumulative passes over the training set to obtain the density",
        "",
        (
            "Iterative methods pay for every round before it; the `-matched` baselines "
            "are given the same passes at each density (Renda et al., 2020)."
        ),
        "",
        grid(lambda e: f"{e['budget'][0]:.1f}"),
        "",
        TIMING_BEGIN,
        "## Wall time (s) to obtain the density",
        "",
        grid(lambda e: f"{e['wall'][0]:.0f}"),
        "",
    ]
    if timing:
        from keras_lth.bench.runner import timing_line

        out += [
            "## The benchmark's own speed",
            "",
            (
                "Wall time of the `keras-lth bench` calls that trained the runs (every run, "
                "evaluations and process starts included, up to each call's last finished "
                "run) per training step, against a bare `tf.function` training step "
                "(forward, backward, Adam) of the same network measured in the same process "
                f"at each call's start and end (`{TIMING_FILE}`):"
            ),
            "",
            timing_line(timing) + ".",
            "",
        ]
    out += [
        TIMING_END,
        "",
    ]
    neuron = [m for m in summary["methods"] if m.startswith("neuron")]
    if any((m, c) in table and table[m, c]["params"] for m in neuron for c in cols):
        out += [
            "## Neuron pruning: compacted model (`lth.compact`)",
            "",
            "Parameters of the compacted model.",
            "",
            grid(lambda e: f"{e['params'][0]:,.0f}" if e["params"] else ""),
            "",
            TIMING_BEGIN,
            (
                "Its inference latency / the dense net's (`predict_on_batch` on 1,000 inputs, "
                "median of 10, interleaved)."
            ),
            "",
            grid(lambda e: f"{e['latency'][0]:.2f}×" if e["latency"] else ""),
            "",
            TIMING_END,
            "",
        ]
    out += ["## Verdict", "", "Best test accuracy at each density:", ""]
    out += verdict(summary)
    placed = seed_verdict(summary)
    if placed:
        out += [
            "",
            "### The seed's algorithms, at equal density and at equal budget",
            "",
            (
                "Difference of test accuracy means (points) ± the noise bound; the dense "
                "net is compared at every density. Equal budget: the methods with the same "
                "cumulative passes at that density (the iterative methods and the "
                "`-matched` baselines)."
            ),
            "",
        ]
        out += placed
    out += [
        "",
        (
            f"Within noise (ties): the difference of means is at most {NOISE_Z:g} standard "
            "errors (sqrt(s1²/n1 + s2²/n2), sample std over seeds)."
        ),
        "",
    ]
    agree = agreement(summary)
    if agree:
        out += [
            "### gradual (keras-lth) vs tfmot (prune_low_magnitude), same schedule",
            "",
            "| density | gradual | tfmot | difference | noise bound | agree |",
            "|---:|---:|---:|---:|---:|:---:|",
        ]
        for c, a, b, d, bound, ok in agree:
            out.append(
                f"| {100 * c:.1f}% | {100 * a:.2f} | {100 * b:.2f} | {100 * d:+.2f} | "
                f"{100 * bound:.2f} | {'yes' if ok else 'no'} |"
            )
        out.append("")
    return "\n".join(out)


def plot(plan, lines, summary, out_dir) -> list:
    """The three PNG plots; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_rows = rows(lines)
    target = summary["target"]
    methods = summary["methods"]
    plan_kinds = {m.name: m.kind for m in plan.methods}
    # the dark half of tab20 first, then the light half: 14 distinguishable lines
    colors = plt.get_cmap("tab20")([*range(0, 20, 2), *range(1, 20, 2)])
    styles = ["-", "--", "-.", ":"]
    markers = "osD^v<>pP*Xhd8"

    def curves(m):
        """(x density %, budget, acc mean, acc std, to_target) per point of m."""
        groups = {}
        for r in all_rows:
            if r["method"] == m:
                groups.setdefault((r["round"], r["level"]), []).append(r)
        pts = []
        for group in groups.values():
            acc = [r["test_accuracy"] for r in group]
            reach = [
                epochs_to_target(r, target, plan.steps_per_pass) if target is not None else None
                for r in group
            ]
            reach = [x[0] for x in reach if x is not None]
            pts.append(
                (
                    100 * np.mean([r["density"] for r in group]),
                    np.mean([r["budget_epochs"] for r in group]),
                    100 * np.mean(acc),
                    100 * (np.std(acc, ddof=1) if len(acc) > 1 else 0.0),
                    np.mean(reach) if reach else np.nan,
                )
            )
        return np.array(sorted(pts, reverse=True))

    paths = []
    specs = (
        (
            "accuracy_vs_density.png",
            0,
            2,
            "% of weights remaining (log scale)",
            "test accuracy (%)",
        ),
        (
            "epochs_to_target.png",
            0,
            4,
            "% of weights remaining (log scale)",
            "passes to target validation accuracy",
        ),
        (
            "accuracy_vs_budget.png",
            1,
            2,
            "cumulative training budget (passes over the training set)",
            "test accuracy (%)",
        ),
    )
    for name, xi, yi, xlabel, ylabel in specs:
        if yi == 4 and target is None:
            continue
        fig, ax = plt.subplots(figsize=(8, 5.5))
        for i, m in enumerate(methods):
            pts = curves(m)
            if not len(pts):
                continue
            if m == "dense" and xi == 0:
                # one point at 100%: a reference line across the plot instead
                y, err = pts[0, yi], pts[0, 3] if yi == 2 else 0.0
                ax.axhline(y, color="0.3", linestyle="--", linewidth=1, label="dense")
                if err:
                    ax.axhspan(y - err, y + err, color="0.5", alpha=0.12)
                continue
            if xi == 1:
                pts = pts[np.argsort(pts[:, 1])]
            kw = {
                "color": colors[i % 20],
                "linestyle": styles[i % 4],
                "marker": markers[i % len(markers)],
                "markersize": 4,
                "label": m,
            }
            if m == "tfmot":  # drawn over `gradual`: keep both visible where they agree
                kw.update(linestyle=":", marker="x", markersize=8, linewidth=2)
            if xi == 1 and plan_kinds.get(m) == "target":
                kw["linestyle"] = "none"  # one budget, several densities: points only
            ax.plot(pts[:, xi], pts[:, yi], **kw)
            if yi == 2:
                ax.fill_between(
                    pts[:, xi],
                    pts[:, 2] - pts[:, 3],
                    pts[:, 2] + pts[:, 3],
                    color=colors[i % 20],
                    alpha=0.12,
                )
        if xi == 0:
            ax.set_xscale("log")
            ax.invert_xaxis()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        title = f"{plan.settings.dataset}, preset {plan.settings.preset}"
        if yi == 4:
            title += f": target {100 * target:.2f}% (seeds that reached it)"
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        _save_figure(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


def _save_figure(fig, path):
    # atomic like every file of the directory; a name of its own (two shards
    # on two machines may share a process id)
    tmp = f"{path}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_report(plan, lines, out_dir, command=None, target=None) -> str:
    """Writes `summary.md` and the plots into `out_dir`; returns the markdown."""
    summary = summarize(plan, lines, target)
    timing = None
    path = os.path.join(out_dir, TIMING_FILE)
    if os.path.exists(path):
        with open(path) as f:
            timing = json.load(f)
    text = markdown(plan, summary, command, timing)
    atomic_write(os.path.join(out_dir, "summary.md"), text)
    plot(plan, lines, summary, out_dir)
    return text


def report_directory(out, command=None, target=None) -> str:
    """Merges the results files of `out` (every shard's) and rewrites its
    `summary.md` and plots for the plan in `out/config.json`; returns the
    markdown. Runs of the plan that are not there yet are listed in it.

    Raises:
        ValueError: when `out` is no benchmark directory.
    """
    from keras_lth.bench.runner import Plan

    config = read_config(out) if os.path.isdir(out) else None
    if config is None:
        raise ValueError(
            "Received an invalid value for `DIR`, expected a benchmark directory with a "
            "config.json (a directory that `keras-lth bench` wrote before config.json "
            "existed gets one when its command is rerun: finished runs are skipped). "
            f"Received: DIR={out!r}"
        )
    plan = Plan.from_config(config["plan"])
    lines = in_plan_order(plan, merged_lines(out))
    return write_report(plan, lines, out, command=command, target=target)


def comparable(text) -> str:
    """A summary without its command line and its timing blocks: what must
    be equal for two benchmarks of the same plan and results."""
    text = re.sub(
        rf"^{re.escape(TIMING_BEGIN)}\n.*?^{re.escape(TIMING_END)}\n",
        "",
        text,
        flags=re.M | re.S,
    )
    return re.sub(r"\A(# .*\n\n)`[^\n]*`\n\n", r"\1", text)
