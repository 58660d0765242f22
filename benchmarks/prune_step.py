"""Host time of one gradual pruning step on LeNet-300-100.

Gradual pruning (a tfmot schedule) recomputes the masks at every pruning
step: it reads the kernels and masks, picks each kernel's lowest |w| down to
tfmot's kept count (`keras_lth.pruning.sparsity_mask`) and writes the masks
that changed (`keras_lth.targets.PruningTargets.prune_to_sparsity`). This
script times that step alone, outside `fit`, the way `PolynomialDecay` calls
it: the sparsity rises a little at every call, so every mask changes.

Usage (`PYTHONPATH` selects the keras-lth checkout to time):

```
python benchmarks/prune_step.py                 # 50 steps
python benchmarks/prune_step.py --steps 20 --profile
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="pruning steps to time (>= 1)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the steps")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, received {args.steps}")
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
