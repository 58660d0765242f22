"""What the CNN lottery-ticket examples share: early-stopping records and the report.

`mnist_cnn_lth.py` and `speech_commands_cnn_lth.py` train the same experiment
on different data: for each seed, a winning-ticket run (`rewind="init"`) and a
random re-initialisation run (`rewind="reinit"`) of one `PruningScheduler`.
This module turns their `fit` histories into per-round records and writes
`results.md` (a table with the command, commit, wall time and load),
`results.json` (settings, provenance, summary and raw records) and
`accuracy_vs_density.png`.

Test accuracy is read at each round's early-stopping epoch (lowest
validation loss), as Frankle & Carbin (2019) report it. A difference of
means counts as "beyond noise" when it exceeds two standard errors of the
difference, `2 * sqrt(s1**2 / n + s2**2 / n)`, with sample standard
deviations (ddof=1).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

REWINDS = ("init", "reinit")
NOISE_Z = 2.0


class EvaluateTestSet(keras.callbacks.Callback):
    """Adds the test set's metrics to every epoch's logs as `test_<name>`.

    Put it before the `PruningScheduler` in `callbacks`: `fit`'s `History`
    then holds `test_accuracy` next to `val_loss` and the scheduler's
    `density` and `round`.
    """

    def __init__(self, data):
        super().__init__()
        self.data = data

    def on_epoch_end(self, epoch, logs=None):
        results = self.model.evaluate(self.data, verbose=0, return_dict=True)
        if logs is not None:
            logs.update({f"test_{k}": float(v) for k, v in results.items()})


def per_round(history) -> list:
    """One record per round of `fit`'s history: the early-stopping epoch's metrics."""
    h = history.history
    out = []
    for r in sorted({int(v) for v in h["round"]}):
        epochs = [i for i, v in enumerate(h["round"]) if int(v) == r]
        best = min(epochs, key=lambda i: h["val_loss"][i])
        out.append(
            {
                "round": r,
                "density": float(h["density"][epochs[-1]]),
                "early_stop_epoch": best - epochs[0] + 1,
                "test_accuracy": float(h["test_accuracy"][best]),
                "val_accuracy": float(h["val_accuracy"][best]),
                "final_test_accuracy": float(h["test_accuracy"][epochs[-1]]),
            }
        )
    return out


def mean_std(values):
    """`(mean, sample std)`; the std is 0 for a single value."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def summarize(records) -> list:
    """Per round: the density and each rewind's (mean, std), and the noise check.

    Args:
        records: `{"init": [rounds of seed 0, ...], "reinit": [...]}`, the
            `per_round` lists of every run.
    """
    rows = []
    n = len(records["init"])
    for r in range(len(records["init"][0])):
        row = {"round": r, "density": records["init"][0][r]["density"]}
        for rewind in REWINDS:
            runs = [rounds[r] for rounds in records[rewind]]
            row[rewind] = {
                key: mean_std([rec[key] for rec in runs])
                for key in ("test_accuracy", "early_stop_epoch", "density", "final_test_accuracy")
            }
        (mi, si), (mr, sr) = row["init"]["test_accuracy"], row["reinit"]["test_accuracy"]
        row["difference"] = mi - mr
        row["standard_error"] = float(np.sqrt(si**2 / n + sr**2 / n))
        row["beyond_noise"] = bool(n > 1 and abs(mi - mr) > NOISE_Z * row["standard_error"])
        rows.append(row)
    return rows


def table(rows, n_seeds) -> str:
    """The markdown table of `summarize`'s rows, with its legend."""
    lines = [
        "| round | weights remaining | test acc, ticket (rewind='init') "
        "| test acc, random re-init (rewind='reinit') | ticket − re-init "
        "| beyond noise? | early-stop epoch, ticket | early-stop epoch, re-init |",
        "|---:|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for row in rows:
        (mi, si), (mr, sr) = row["init"]["test_accuracy"], row["reinit"]["test_accuracy"]
        ei, er = row["init"]["early_stop_epoch"][0], row["reinit"]["early_stop_epoch"][0]
        lines.append(
            f"| {row['round']} | {100 * row['density']:.1f}% "
            f"| {100 * mi:.2f} ± {100 * si:.2f} | {100 * mr:.2f} ± {100 * sr:.2f} "
            f"| {100 * row['difference']:+.2f} (SE {100 * row['standard_error']:.2f}) "
            f"| {_noise(row, n_seeds)} | {ei:.1f} | {er:.1f} |"
        )
    lines += [
        "",
        "Test accuracy (%) at each round's early-stopping epoch (lowest validation "
        f"loss), mean ± sample std (ddof=1) over {n_seeds} seed(s); early-stop "
        "epochs are means. Round 0 is the dense network (the same run for both "
        "rewinds). 'Beyond noise': |ticket − re-init| > 2 standard errors of the "
        "difference (SE).",
    ]
    return "\n".join(lines)


def _noise(row, n_seeds):
    if n_seeds < 2:
        return "—"
    return "yes" if row["beyond_noise"] else "no"


def verdict(rows, n_seeds) -> str:
    """One sentence on the last round and the dense network."""
    last, dense = rows[-1], rows[0]["init"]["test_accuracy"]
    (mi, si), (mr, sr) = last["init"]["test_accuracy"], last["reinit"]["test_accuracy"]
    return (
        f"At {100 * last['density']:.1f}% of the weights: ticket {100 * mi:.2f} ± "
        f"{100 * si:.2f}%, random re-init {100 * mr:.2f} ± {100 * sr:.2f}%, difference "
        f"{100 * last['difference']:+.2f} points (SE {100 * last['standard_error']:.2f}), "
        + {"yes": "beyond noise", "no": "within noise"}.get(
            _noise(last, n_seeds), "no noise estimate from one seed"
        )
        + f"; dense network {100 * dense[0]:.2f} ± {100 * dense[1]:.2f}%."
    )


def plot(rows, path, title):
    """Test accuracy at early stopping vs. % of weights remaining (log x axis)."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    d = np.array([100 * row["density"] for row in rows])
    for rewind, label in (
        ("init", "winning ticket (rewind to init)"),
        ("reinit", "random re-init"),
    ):
        m = np.array([100 * row[rewind]["test_accuracy"][0] for row in rows])
        s = np.array([100 * row[rewind]["test_accuracy"][1] for row in rows])
        ax.errorbar(d, m, yerr=s, marker="o", capsize=3, label=label)
    dense, dense_std = (100 * v for v in rows[0]["init"]["test_accuracy"])
    ax.axhline(dense, color="gray", linestyle="--", label="dense network (± std)")
    ax.axhspan(dense - dense_std, dense + dense_std, color="gray", alpha=0.15)
    ax.set_xscale("log")
    ticks = [t for t in (100, 50, 30, 20, 10, 5, 3, 2, 1) if 0.95 * d.min() <= t <= d.max()]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.invert_xaxis()
    ax.set_xlabel("% of weights remaining (log scale)")
    ax.set_ylabel("test accuracy at early stopping (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def provenance() -> dict:
    """The commit (and whether the code differs from it), versions, CPUs, load."""

    def git(*args):
        try:
            return subprocess.run(
                ["git", *args], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    dirty = git("status", "--porcelain", "--", "keras_lth", "examples")
    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(dirty),
        "python": platform.python_version(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "cpus": os.cpu_count(),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
    }


def write(out_dir, title, command, settings, info, records, note=""):
    """Writes results.md, results.json and accuracy_vs_density.png; returns the rows."""
    rows = summarize(records)
    n_seeds = len(records["init"])
    load = ", ".join(f"{v:.2f}" for v in info["load_average_start"])
    load_end = ", ".join(f"{v:.2f}" for v in info["load_average_end"])
    dirty = " (with uncommitted changes)" if info["dirty"] else ""
    text = "\n\n".join(
        part
        for part in (
            f"# {title}: winning ticket vs. random re-initialisation",
            note,
            f"`{command}`",
            f"Commit `{info['commit']}`{dirty}; Keras {info['keras']} ({info['backend']}), "
            f"{info['cpus']} CPUs. Wall time {info['wall_seconds'] / 60:.1f} min; load "
            f"average (1, 5, 15 min, as `uptime` shows it) {load} at the start, "
            f"{load_end} at the end.",
            table(rows, n_seeds),
            verdict(rows, n_seeds),
        )
        if part
    )
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(
            {"settings": settings, "provenance": info, "summary": rows, "records": records},
            f,
            indent=1,
        )
    plot(rows, os.path.join(out_dir, "accuracy_vs_density.png"), title)
    print(f"\n{table(rows, n_seeds)}\n\n{verdict(rows, n_seeds)}")
    print(f"\nWrote {out_dir}/results.md, results.json and accuracy_vs_density.png")
    return rows
