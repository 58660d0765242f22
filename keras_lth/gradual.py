"""Gradual magnitude pruning on a tfmot `PruningSchedule`, with tfmot's semantics.

tfmot's `prune_low_magnitude` counts training steps from 1 (the `n`-th
training step is step `n`, i.e. `optimizer.iterations + 1`) and, before
every step `n` at which `schedule(n)` says to prune, shrinks each weight's
mask to the scheduled sparsity, keeping
`keras_lth.pruning.gradual_kept_count(size, sparsity)` weights. Here the
masks change at the end of the previous batch (or at the start of
training); with `steps_per_execution > 1` they can only change between
executions, so the steps skipped in between are caught up at once.

Two differences remain, both documented: where several weights have exactly
the threshold's magnitude tfmot keeps all of them, keras-lth exactly the
count (ties broken by position); and every masked weight is pruned, the
depthwise kernel of a separable convolution included (tfmot prunes only its
pointwise kernel).
"""

from __future__ import annotations

import numbers

import numpy as np
from keras import ops


class GradualPruning:
    """The step position of gradual pruning in one run.

    Args:
        schedule: A tfmot `PruningSchedule` (`__call__(step) -> (should_prune, sparsity)`).
    """

    def __init__(self, schedule):
        self.schedule = schedule
        self.next_step = None
        self.targets = None

    def start(self, targets, iterations):
        """Applies the schedule up to the next training step, `iterations + 1`."""
        self.targets = targets
        self.next_step = int(iterations) + 1
        self.update(self.next_step)

    def update(self, upto):
        """Applies the schedule for every step in `[next_step, upto]`."""
        target = None
        for step in range(self.next_step, upto + 1):
            should, sparsity = self.schedule(np.int64(step))
            if bool(ops.convert_to_numpy(should)):
                target = sparsity
        self.next_step = max(self.next_step, upto + 1)
        if target is not None:
            self.targets.prune_to_sparsity(_scalar(target))


def _scalar(value):
    """A schedule's sparsity as a NumPy scalar of its dtype, or a Python float.

    tfmot's arithmetic depends on it (`keras_lth.pruning.gradual_kept_count`).
    """
    if isinstance(value, numbers.Real) and not isinstance(value, np.generic):
        return float(value)
    return np.asarray(ops.convert_to_numpy(value))[()]
