"""Holding zeroed layers' pruned weights at zero during a `PruningScheduler` run.

A layer with `pruned_values="zeroed"` computes with its raw variables, whose
pruned entries are exact zeros; something must keep them zero while the
optimizer updates the variables. Outside a scheduler's run a variable
constraint does (`keras_lth.layers`): after every update it selects the
pruned entries of the whole variable and assigns the result, which is
right whatever the optimizer but costs a pass over every variable and a new
buffer at every step.

During a run the scheduler knows the optimizer and changes the masks itself,
so it can use a cheaper mechanism: the layer masks the gradient of its raw
variables (`keras_lth.layers.hold_zeros_by_gradient`), one select done in
place on the gradient, so pruned weights get a zero gradient as kept layers'
do. A pruned weight then stays at zero as long as the optimizer moves no
weight whose gradient is zero and whose slots are at their initial values.
`ZeroHolding` makes sure of both:

- the optimizer: only Keras's own elementwise optimizers qualify
  (`holds_zeros`), without an exponential moving average of the weights
  (which would write averaged, non-zero values back); with any other the
  constraint stays;
- the slots: reset to their initial values (`OptimizerReset.reset_at`)
  wherever a weight is pruned, when the run starts and whenever the
  scheduler prunes (after a pruning round the whole optimizer restarts
  anyway).

At the end of the run the constraint comes back, so a later `fit` without
the scheduler, or a mask set by hand, stays exact.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_lth.layers import hold_zeros_by_gradient

#: Keras optimizers whose update of a weight with a zero gradient, zero value
#: and initial slots is zero: each entry's step is proportional to its own
#: gradient or moments (Adafactor and Lamb also scale it by a norm of the
#: whole variable), and weight decay scales the value. Each is checked by
#: `tests/test_zeroing.py`.
HOLDING_OPTIMIZERS = (
    "SGD",
    "Adam",
    "AdamW",
    "Adamax",
    "Nadam",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "Adafactor",
    "Ftrl",
    "Lion",
    "Lamb",
)


def holds_zeros(optimizer) -> bool:
    """Whether `optimizer` leaves a weight at 0 if its gradient is 0 and its slots are initial.

    True for the optimizers of `HOLDING_OPTIMIZERS` exactly (a subclass may
    change the update), also inside a `LossScaleOptimizer`, unless they
    keep an exponential moving average of the weights (`use_ema=True`).
    """
    if type(optimizer) is keras.optimizers.LossScaleOptimizer:
        optimizer = optimizer.inner_optimizer
    known = [getattr(keras.optimizers, name, None) for name in HOLDING_OPTIMIZERS]
    if type(optimizer) not in [cls for cls in known if cls is not None]:
        return False
    return not getattr(optimizer, "use_ema", False)


class ZeroHolding:
    """Which zeroed layers mask their gradients in one scheduler run, and their slots."""

    def __init__(self):
        self.layers = []
        self.model = None
        self.optimizer_reset = None

    def start(self, model, targets, optimizer_reset):
        """Switches the run's zeroed layers to gradient masking where that is exact.

        Resets the optimizer's slots under every 0 mask of those layers (they
        may hold values from training before the masks were set) and
        retraces the training function.
        """
        self.stop()
        self.model = model
        self.optimizer_reset = optimizer_reset
        zeroed = [l for l in targets.layers.values() if l.pruned_values == "zeroed"]
        optimizer = getattr(model, "optimizer", None)
        if not zeroed or optimizer is None or not holds_zeros(optimizer):
            return
        if not optimizer.built:  # Keras would build it at the first step
            with model.distribute_strategy.scope():
                optimizer.build(model.trainable_variables)
        if not optimizer_reset.resets_slots():
            return  # slots that cannot be reset at positions: keep the constraint
        self.layers = zeroed
        for layer in zeroed:
            hold_zeros_by_gradient(layer, True)
            for w in layer._all_weights():
                optimizer_reset.reset_at(w.variable, ~ops.convert_to_numpy(w.mask))
        model.make_train_function(force=True)

    @property
    def active(self) -> bool:
        """Whether some layers hold their zeros by gradient masking now."""
        return bool(self.layers)

    def pruned(self, weights, old_masks):
        """After the scheduler set new masks: resets the slots where weights were just pruned.

        Args:
            weights: The `MaskedWeight`s whose masks may have changed.
            old_masks: `{weight key: mask before}`.
        """
        if not self.layers:
            return
        held = {id(layer) for layer in self.layers}
        for w in weights:
            if id(w.layer) not in held or w.key not in old_masks:
                continue
            now = ops.convert_to_numpy(w.mask)
            self.optimizer_reset.reset_at(w.variable, np.asarray(old_masks[w.key], bool) & ~now)

    def stop(self):
        """The constraint again for every layer switched by `start`."""
        if not self.layers:
            return
        for layer in self.layers:
            hold_zeros_by_gradient(layer, False)
        self.layers = []
        self.model.train_function = None  # the next `fit` traces the constraint
