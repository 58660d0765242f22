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
        `(milliseconds per pruning step, the model's density at the end)`.
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
    times = []
    for i in range(steps + 1):  # the first pruning step untimed (the kernels' first 0)
        batch = FREQUENCY * (i + 1) - first  # the batch before which the schedule prunes
        if profile is not None and i:
            profile.enable()
        t = time.perf_counter()
        hooks.on_train_batch_begin(batch)
        if i:
            times.append(1e3 * (time.perf_counter() - t))
        if profile is not None:
            profile.disable()
    density = lth.density(model)
    hooks.on_epoch_end(0, {})
    hooks.on_train_end({})
    return times, density


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
    if args.in_run:
        profile = cProfile.Profile() if args.profile else None
        times, density = time_in_run(args.steps, profile)
        print(
            f"{args.steps} pruning steps inside a PruningScheduler run (PolynomialDecay every "
            f"{FREQUENCY} steps, Adam, LeNet-300-100 held as in a run; final density "
            f"{density:.4f}): median {statistics.median(times):.2f} ms, "
            f"mean {statistics.fmean(times):.2f} ms per step"
        )
        if profile is not None:
            pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(20)
        return 0
    targets = PruningTargets(lth.models.lenet_300_100(seed=0), {}, "weight")
    sparsity = START
    targets.prune_to_sparsity(sparsity)  # warm-up
    profile = cProfile.Profile() if args.profile else None
    times = []
    for _ in range(args.steps):
        sparsity += STEP
        if profile is not None:
            profile.enable()
        t = time.perf_counter()
        targets.prune_to_sparsity(sparsity)
        times.append(1e3 * (time.perf_counter() - t))
        if profile is not None:
            profile.disable()
    print(
        f"{args.steps} pruning steps of LeNet-300-100 (sparsity {START + STEP:.4f} to "
        f"{sparsity:.4f}, final density {targets.density():.4f}): "
        f"median {statistics.median(times):.2f} ms, mean {statistics.fmean(times):.2f} ms per step"
    )
    if profile is not None:
        pstats.Stats(profile, stream=sys.stdout).sort_stats("tottime").print_stats(8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
