"""Gradual magnitude pruning on a tfmot `PruningSchedule`, with tfmot's semantics.

tfmot's `prune_low_magnitude` counts training steps from 1 (the `n`-th
training step is step `n`, i.e. `optimizer.iterations + 1`) and, before
every step `n` at which `schedule(n)` says to prune, shrinks each weight's
mask to the scheduled sparsity, keeping
`keras_lth.pruning.gradual_kept_count(size, sparsity)` weights. Here the
masks change before the step's batch is dispatched (`on_train_batch_begin`,
or at the start of training); with `steps_per_execution > 1` they can only
change between executions, so the steps skipped in between are caught up at
once.

The schedule is evaluated only where it can change the masks. tfmot's own
schedules (`ConstantSparsity`, `PolynomialDecay`) prune at step `n` exactly
when `begin_step <= n`, `n <= end_step` (or `end_step < 0`) and
`(n - begin_step) % frequency == 0` (`PruningSchedule._should_prune_in_step`);
for them the pruning steps are found by integer arithmetic on the host
(`pruning_steps`), so that the steps in between cost a comparison and read
nothing from the device, and the schedule itself is called once per pruning
step, for its sparsity. A schedule of any other class (a user's subclass) is
called at every step, as tfmot's wrapper calls it.

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

# tfmot's schedules whose `__call__` prunes at `_should_prune_in_step(step,
# begin_step, end_step, frequency)`; recognised by exact class (a subclass may
# override `__call__`) and module, so that tfmot is never imported here.
_FREQUENCY_SCHEDULES = ("ConstantSparsity", "PolynomialDecay")


def pruning_steps(schedule):
    """`(begin_step, end_step, frequency)` of one of tfmot's own schedules, or `None`.

    `None` for every other class, user subclasses of tfmot's schedules
    included: their pruning steps are only known by calling them.
    """
    cls = type(schedule)
    if cls.__name__ not in _FREQUENCY_SCHEDULES or not cls.__module__.startswith(
        "tensorflow_model_optimization"
    ):
        return None
    try:
        return int(schedule.begin_step), int(schedule.end_step), int(schedule.frequency)
    except (AttributeError, TypeError, ValueError):
        return None


def last_pruning_step(lo, hi, begin, end, frequency):
    """The last step `n` in `[lo, hi]` at which tfmot's arithmetic prunes, or `None`.

    tfmot prunes at `n` when `n >= begin`, `n <= end` (or `end < 0`) and
    `(n - begin) % frequency == 0`.
    """
    if end >= 0:
        hi = min(hi, end)
    lo = max(lo, begin)
    if hi < lo:
        return None
    n = hi - (hi - begin) % frequency
    return n if n >= lo else None


class GradualPruning:
    """The step position of gradual pruning in one run.

    Args:
        schedule: A tfmot `PruningSchedule` (`__call__(step) -> (should_prune, sparsity)`).
    """

    def __init__(self, schedule):
        self.schedule = schedule
        self.steps = pruning_steps(schedule)
        self.next_step = None
        self.targets = None
        self.on_pruned = None

    def start(self, targets, iterations, on_pruned=None):
        """Applies the schedule up to the next training step, `iterations + 1`.

        `on_pruned(weights, old_masks, new_masks)`, if given, is called
        after every pruning with the `MaskedWeight`s and their masks before
        and after it.
        """
        self.targets = targets
        self.on_pruned = on_pruned
        self.next_step = int(iterations) + 1
        self.update(self.next_step)

    def due(self, upto) -> bool:
        """Whether `update(upto)` may change the masks (so needs the model's state).

        Host arithmetic only for tfmot's own schedules; always `True` for
        the others, which must be called to know.
        """
        if upto < self.next_step:
            return False
        if self.steps is None:
            return True
        return last_pruning_step(self.next_step, upto, *self.steps) is not None

    def skip(self, upto):
        """Moves past the steps up to `upto`, at which `due` said nothing prunes."""
        self.next_step = max(self.next_step, upto + 1)

    def update(self, upto):
        """Applies the schedule for every step in `[next_step, upto]`.

        The masks shrink once, to the sparsity of the last step in that
        range at which the schedule prunes.
        """
        target = None
        if self.steps is not None:
            step = last_pruning_step(self.next_step, upto, *self.steps)
            if step is not None:
                target = self.schedule(np.int64(step))[1]
        else:
            for step in range(self.next_step, upto + 1):
                should, sparsity = self.schedule(np.int64(step))
                if bool(ops.convert_to_numpy(should)):
                    target = sparsity
        self.skip(upto)
        if target is not None:
            old, new = self.targets.prune_to_sparsity(_scalar(target))
            if self.on_pruned is not None:
                self.on_pruned(self.targets.all_weights(), old, new)


def _scalar(value):
    """A schedule's sparsity as a NumPy scalar of its dtype, or a Python float.

    tfmot's arithmetic depends on it (`keras_lth.pruning.gradual_kept_count`).
    """
    if isinstance(value, numbers.Real) and not isinstance(value, np.generic):
        return float(value)
    return np.asarray(ops.convert_to_numpy(value))[()]
