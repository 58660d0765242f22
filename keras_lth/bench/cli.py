"""`keras-lth bench`: the command line of the unified pruning benchmark.

keras-lth bench                      # the quick preset (the main job)
keras-lth bench --preset paper --source /data/mnist
keras-lth bench --jobs 4             # 4 worker processes (default auto: one per core or GPU)
keras-lth bench --shard 0/8 --out /shared/dir   # shard 0 of 8 (0-based)
keras-lth bench report /shared/dir   # merge the results files, rewrite the summary
keras-lth bench --list               # the methods
python -m keras_lth.bench ...        # the same without the console script
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import sys

from keras_lth.bench.methods import METHODS, listing
from keras_lth.bench.presets import DATASETS, MODELS, PRESETS
from keras_lth.bench.results import Shard, line_key
from keras_lth.bench.workers import check_jobs


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


def _jobs(text):
    try:
        value = int(text)
    except ValueError:
        value = text.strip().lower()
    try:
        return check_jobs(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _shard(text):
    try:
        return Shard.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _check_target(target):
    if target is not None and not 0 < target < 1:
        raise ValueError(
            "Received an invalid value for `--target`, expected a validation "
            f"accuracy in (0, 1). Received: target={target!r}"
        )


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
        "--model",
        choices=MODELS,
        default="mlp",
        help="mlp: LeNet-300-100 (MNIST) / speech_mlp; cnn: LeNet-5 (MNIST) / the "
        "cnn-trad-fpool3 speech_cnn (default mlp)",
    )
    p.add_argument(
        "--source",
        help="MNIST: embedded (quick default), tfds (paper default) or an IDX directory; "
        "Speech Commands: tfds or a directory tree",
    )
    p.add_argument(
        "--methods",
        type=_methods,
        help="comma-separated, or all (default: the preset's methods; quick: the dense net, "
        "the seed's algorithms and the baselines they are compared with)",
    )
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
    p.add_argument(
        "--jobs",
        type=_jobs,
        default="auto",
        help="worker processes on this machine, each with cores // N TensorFlow threads "
        "or its own GPU; 1: the runs in this process; auto (default): one per GPU, "
        "else one per core that memory allows (2 GB each)",
    )
    p.add_argument(
        "--shard",
        type=_shard,
        help="K/N: run only shard K of N (0-based, e.g. "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT), into OUT/results-K-of-N.jsonl; "
        "N machines can share one --out directory",
    )
    p.add_argument("--list", action="store_true", help="list the methods and exit")
    p.add_argument(
        "-v",
        "--verbose",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="0 quiet, 1 progress over runs (default), 2 also Keras's per-epoch output",
    )
    actions = p.add_subparsers(
        dest="action",
        metavar="{report}",
        help="report DIR: merge the results files of DIR and rewrite its summary (no training)",
    )
    r = actions.add_parser(
        "report",
        help="merge the results files of DIR, rewrite summary.md and the plots",
        description="Merges every results file of DIR (results.jsonl and each shard's "
        "results-K-of-N.jsonl) and rewrites DIR/summary.md and the plots for the plan "
        "recorded in DIR/config.json, without training.",
    )
    r.add_argument("dir", metavar="DIR", help="the benchmark's --out directory")
    r.add_argument(
        "--target",
        type=float,
        help="target validation accuracy in (0, 1) (default: the dense net's mean - 0.005)",
    )
    r.add_argument("-v", "--verbose", type=int, default=1, choices=(0, 1))
    return top


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    if args.list:
        print(listing())
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    command = "keras-lth " + " ".join(shlex.quote(a) for a in argv)
    # SLURM and Kubernetes stop a job with SIGTERM: end like Ctrl-C, so the
    # workers are stopped too (the results files are consistent either way).
    with _sigterm_as_exit():
        if args.action == "report":
            return _report(args, command)
        try:
            return _bench(args, command)
        except KeyboardInterrupt:
            print(
                "\n[keras-lth bench] interrupted: the finished runs are saved; the same "
                "command resumes",
                file=sys.stderr,
            )
            return 130


def _report(args, command) -> int:
    from keras_lth.bench.report import report_directory

    try:
        _check_target(args.target)
        text = report_directory(args.dir, command=command, target=args.target)
    except ValueError as e:
        print(f"keras-lth bench report: error: {e}", file=sys.stderr)
        return 2
    if args.verbose:
        print(f"[keras-lth bench] wrote {args.dir}/summary.md and plots", file=sys.stderr)
        print(text)
    return 0


def _bench(args, command) -> int:
    from keras_lth.bench.workers import resolve_jobs

    args.jobs = resolve_jobs(args.jobs)
    if args.jobs > 1:
        from keras_lth.bench.workers import hide_gpus

        hide_gpus()  # the GPUs are the workers'; before anything is built here
    from keras_lth.bench.presets import default_methods, settings
    from keras_lth.bench.results import DirectoryError
    from keras_lth.bench.runner import make_plan, run_benchmark

    model = "" if args.model == "mlp" else f"_{args.model}"
    out = args.out or os.path.join("runs", f"bench_{args.dataset}{model}_{args.preset}")
    try:
        s = settings(
            args.dataset,
            args.preset,
            source=args.source,
            model=args.model,
            seeds=args.seeds,
            densities=args.densities,
            epochs_per_round=args.epochs_per_round,
            steps_per_epoch=args.steps_per_epoch,
        )
        plan = make_plan(s, args.methods or default_methods(args.preset))
        _check_target(args.target)
    except ValueError as e:
        print(f"keras-lth bench: error: {e}", file=sys.stderr)
        return 2
    try:
        lines = run_benchmark(
            plan,
            out,
            verbose=args.verbose,
            command=command,
            target=args.target,
            jobs=args.jobs,
            shard=args.shard,
        )
    except DirectoryError as e:  # other settings in --out, a second writer
        print(f"keras-lth bench: error: {e}", file=sys.stderr)
        return 2
    complete = {line_key(r) for r in plan.runs()} <= {line_key(line) for line in lines}
    if args.verbose:
        written = "results.jsonl" if args.shard is None else args.shard.file
        print(f"[keras-lth bench] wrote {out}/{written}", file=sys.stderr)
        if complete:
            print(f"[keras-lth bench] wrote {out}/summary.md and plots", file=sys.stderr)
            with open(os.path.join(out, "summary.md")) as f:
                print(f.read())
    return 0


@contextlib.contextmanager
def _sigterm_as_exit():
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
