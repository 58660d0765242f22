"""Host time of one gradual pruning step on LeNet-300-100.

Gradual pruning (a tfmot schedule) recomputes the masks at every pruning
step: it reads the kernels and masks, picks each kernel's lowest |w| down to
tfmot's kept count (`keras_lth.pruning.sparsity_mask`) and writes the masks
that changed (`keras_lth.targets.PruningTargets.prune_to_sparsity`). This
script times that step alone, outside `fit`, the way `PolynomialDecay` calls
it: the sparsity rises a little at every call, so every mask changes.

`--in-run` times instead what a pruning step costs the training loop
inside a `PruningScheduler` run: the scheduler's batch-begin hook at each
step at which tfmot's `PolynomialDecay(0, 0.8, end_step=100000,
frequency=100)` prunes (the schedule of `overhead.py`'s gradual variants),
on a LeNet-300-100 that Adam has trained, its layers held as in a run (the
pruned values set aside). That adds to the masks' selection the schedule's
own call, writing the changed masks, setting the newly pruned values aside
and resetting the optimizer's slots under them. It imports tfmot, which
sets `TF_USE_LEGACY_KERAS=1` for this process (Keras 3 is imported before).

Usage (`PYTHONPATH` selects the keras-lth checkout to time):

```
python benchmarks/prune_step.py                 # 50 steps
python benchmarks/prune_step.py --steps 20 --profile
python benchmarks/prune_step.py --in-run --steps 50 --profile
```
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras_lth as lth
from keras_lth.targets import PruningTargets

START, STEP = 0.01, 0.0024  # about PolynomialDecay(0, 0.8, end_step=100_000) per 100 steps
FREQUENCY = 100  # --in-run: PolynomialDecay's pruning steps


def time_in_run(steps, profile=None):
    """Times `steps` pruning steps of gradual pruning inside a `PruningScheduler` run.

    Returns:
        `(milliseconds per pruning step, what was timed)`.
    """
    import keras
    import tensorflow_model_optimization as tfmot  # after Keras 3 (see the docstring)

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _overhead_common import BATCH_SIZE, LEARNING_RATE, load_data

    model = lth.models.lenet_300_100(seed=0)
    model.compile(
        keras.optimizers.Adam(LEARNING_RATE),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y, _ = load_data(10)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, verbose=0)  # Adam's slots hold values
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        0.0, 0.8, begin_step=0, end_step=100_000, frequency=FREQUENCY
    )
    hooks = keras.callbacks.CallbackList(
        [lth.PruningScheduler(schedule, verbose=0)], model=model, epochs=1, verbose=0
    )
    hooks.on_train_begin()
    hooks.on_epoch_begin(0)  # the layers are held as in a run from here
    first = int(model.optimizer.iterations) + 1  # the step of batch 0
    hooks.on_train_batch_begin(FREQUENCY - first)  # untimed: the kernels' first 0
    times = [
        # the batch before which the schedule prunes for the (i + 1)-th time
        _timed(lambda i=i: hooks.on_train_batch_begin(FREQUENCY * (i + 1) - first), profile)
        for i in range(1, steps + 1)
    ]
    density = lth.density(model)
    hooks.on_epoch_end(0, {})
    hooks.on_train_end({})
    description = (
        f"{steps} pruning steps inside a PruningScheduler run (PolynomialDecay every "
        f"{FREQUENCY} steps, Adam, LeNet-300-100 held as in a run; final density {density:.4f})"
    )
    return times, description


def time_out_of_run(steps, profile=None):
    """Times `steps` calls of `targets.prune_to_sparsity` alone, the sparsity rising each time.

    Returns:
        `(milliseconds per pruning step, what was timed)`.
    """
    targets = PruningTargets(lth.models.lenet_300_100(seed=0), {}, "weight")
    sparsity = START
    targets.prune_to_sparsity(sparsity)  # warm-up
    times = []
    for _ in range(steps):
        sparsity += STEP
        times.append(_timed(lambda s=sparsity: targets.prune_to_sparsity(s), profile))
    description = (
        f"{steps} pruning steps of LeNet-300-100 (sparsity {START + STEP:.4f} to "
        f"{sparsity:.4f}, final density {targets.density():.4f})"
    )
    return times, description


def _timed(call, profile):
    """Milliseconds that `call()` takes, under `profile` when one is given."""
    if profile is not None:
        profile.enable()
    start = time.perf_counter()
    call()
    elapsed = 1e3 * (time.perf_counter() - start)
    if profile is not None:
        profile.disable()
    return elapsed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="pruning steps to time (>= 1)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the steps")
    parser.add_argument(
        "--in-run",
        action="store_true",
        help="time the scheduler's pruning steps inside a run (imports tfmot)",
    )
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, received {args.steps}")
    profile = cProfile.Profile() if args.profile else None
    if args.in_run:
        times, description = time_in_run(args.steps, profile)
        sort, lines = "cumulative", 20  # where the hook's time goes, callers included
    else:
        times, description = time_out_of_run(args.steps, profile)
        sort, lines = "tottime", 8
    print(
        f"{description}: median {statistics.median(times):.2f} ms, "
        f"mean {statistics.fmean(times):.2f} ms per step"
    )
    if profile is not None:
        pstats.Stats(profile, stream=sys.stdout).sort_stats(sort).print_stats(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
