"""`keras-lth bench`: the command line of the unified pruning benchmark.

keras-lth bench                      # the quick preset (the main job)
keras-lth bench --preset paper --source /data/mnist
keras-lth bench --list               # the methods
python -m keras_lth.bench ...        # the same without the console script
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from keras_lth.bench.methods import METHODS, listing
from keras_lth.bench.presets import DATASETS, PRESETS


def _densities(text):
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated densities in (0, 1), received {text!r}"
        ) from None
    bad = [v for v in values if not 0 < v < 1]
    if bad:
        raise argparse.ArgumentTypeError(
            f"expected densities (shares of weights kept) in (0, 1), received {bad}"
        )
    return values


def _methods(text):
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in METHODS and n != "all"]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"expected method names among {list(METHODS)} or 'all', received {unknown or text!r}"
        )
    return names


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="keras-lth", description="keras-lth tools.")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "bench",
        help="the unified pruning benchmark",
        description="Runs every pruning method on the same network, data, budgets and "
        "seeds; writes OUT/results.jsonl (resumable), OUT/summary.md and plots.",
    )
    p.add_argument("--dataset", choices=DATASETS, default="mnist")
    p.add_argument(
        "--source",
        help="MNIST: embedded (quick default), tfds (paper default) or an IDX directory; "
        "Speech Commands: tfds or a directory tree",
    )
    p.add_argument("--methods", type=_methods, default=["all"], help="comma-separated, or all")
    p.add_argument(
        "--densities", type=_densities, help="target densities in (0, 1), comma-separated"
    )
    p.add_argument("--seeds", type=int, help="number of seeds (preset: quick 3, paper 5)")
    p.add_argument("--preset", choices=tuple(PRESETS), default="quick")
    p.add_argument("--epochs-per-round", type=int, help="override the preset's")
    p.add_argument("--steps-per-epoch", type=int, help="steps between evaluations")
    p.add_argument(
        "--target",
        type=float,
        help="target validation accuracy in (0, 1) for epochs-to-target "
        "(default: the dense net's mean - 0.005)",
    )
    p.add_argument("--out", help="output directory (default runs/bench_<dataset>_<preset>)")
    p.add_argument("--list", action="store_true", help="list the methods and exit")
    p.add_argument(
        "-v",
        "--verbose",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="0 quiet, 1 progress over runs (default), 2 also Keras's per-epoch output",
    )
    return top


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.list:
        print(listing())
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from keras_lth.bench.presets import settings
    from keras_lth.bench.runner import make_plan, run_benchmark

    try:
        s = settings(
            args.dataset,
            args.preset,
            source=args.source,
            seeds=args.seeds,
            densities=args.densities,
            epochs_per_round=args.epochs_per_round,
            steps_per_epoch=args.steps_per_epoch,
        )
        plan = make_plan(s, args.methods)
        if args.target is not None and not 0 < args.target < 1:
            raise ValueError(
                "Received an invalid value for `--target`, expected a validation "
                f"accuracy in (0, 1). Received: target={args.target!r}"
            )
    except ValueError as e:
        print(f"keras-lth bench: error: {e}", file=sys.stderr)
        return 2
    out = args.out or os.path.join("runs", f"bench_{args.dataset}_{args.preset}")
    command = "keras-lth " + " ".join(shlex.quote(a) for a in argv)
    run_benchmark(plan, out, verbose=args.verbose, command=command, target=args.target)
    if args.verbose:
        print(f"[keras-lth bench] wrote {out}/results.jsonl, summary.md and plots", file=sys.stderr)
        with open(os.path.join(out, "summary.md")) as f:
            print(f.read())
    return 0


if __name__ == "__main__":
    sys.exit(main())
