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

A variable whose mask has no 0 (a bias under weight pruning, every weight
before the first pruning) needs no select: during the run it is traced
without one, as a plain layer's variable is, and the training function is
traced again as soon as such a mask gets a 0
(`keras_lth.layers.elide_full_masks`): at the scheduler's first pruning, at
once for `set_masks` (from any callback, inside an epoch too), and at the
next epoch's start or end for a mask assigned directly. Without XLA each
select is an operation of its own at every step (measured on a 2-core CPU:
4-6% of a LeNet-300-100 step for the three kernels' selects before the
first pruning, about 0.5% for the biases' after it).

Kept layers (the default) train the same way during a run when that changes
nothing they compute: their pruned values are set aside in host memory
(`keras_lth.layers.set_pruned_values_aside`), the raw variables hold zeros
there, and the values come back at the end of the run; saving writes them
all along. The scheduler brings them back for its own reads of the raw
values, rewinding and pruning (`values_kept`). This needs, besides the
conditions above, an optimizer whose update of each weight reads nothing
but that weight's own gradient, value and slots (`ELEMENTWISE_OPTIMIZERS`:
not Adafactor or Lamb, which scale every step by a norm of the whole
variable, pruned values included), no variable constraint on the layer
(MaxNorm and the like read whole columns), masked gradients
(`gradient_mode="masked"`), no re-introduction (which reads and changes
pruned values while training) and the TensorFlow backend. With them the
kept weights train bit for bit as with `raw * mask`; the pruned values are
those the weights had when they were pruned (or rewound), where the product
let an optimizer's momentum from before the pruning or its weight decay go
on moving them.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
from keras import ops

from keras_lth.layers import (
    check_elided_masks,
    elide_full_masks,
    hold_zeros_by_gradient,
    restore_pruned_values,
    set_pruned_values_aside,
    written_since_aside,
)

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


#: Of those, the optimizers whose update of a weight reads only that weight's
#: gradient, value and slots, so that the values of other (pruned) entries of
#: the variable change nothing.
ELEMENTWISE_OPTIMIZERS = tuple(n for n in HOLDING_OPTIMIZERS if n not in ("Adafactor", "Lamb"))


def holds_zeros(optimizer, names=HOLDING_OPTIMIZERS) -> bool:
    """Whether `optimizer` leaves a weight at 0 if its gradient is 0 and its slots are initial.

    True for the optimizers named in `names` exactly (a subclass may change
    the update), also inside a `LossScaleOptimizer`, unless they keep an
    exponential moving average of the weights (`use_ema=True`).
    """
    if type(optimizer) is keras.optimizers.LossScaleOptimizer:
        optimizer = optimizer.inner_optimizer
    known = [getattr(keras.optimizers, name, None) for name in names]
    if type(optimizer) not in [cls for cls in known if cls is not None]:
        return False
    return not getattr(optimizer, "use_ema", False)


def can_set_aside(layer) -> bool:
    """Whether a kept layer computes the same with its pruned values set aside.

    It must be kept, mask its gradients and have no constraint on a masked
    variable (the optimizer's side is `ELEMENTWISE_OPTIMIZERS`).
    """
    return (
        layer.pruned_values == "kept"
        and layer.gradient_mode == "masked"
        and all(w.variable.constraint is None for w in layer._all_weights())
    )


class ZeroHolding:
    """Which masked layers hold zeros by masked gradients in one scheduler run, and their slots.

    Attributes:
        zeroed: The run's zeroed layers switched off their constraint.
        kept: The run's kept layers whose pruned values are set aside.
    """

    def __init__(self):
        self.zeroed = []
        self.kept = []
        self.model = None
        self.optimizer_reset = None

    @property
    def layers(self) -> list:
        """Every layer that holds its zeros by masked gradients now."""
        return self.zeroed + self.kept

    def start(self, model, targets, optimizer_reset, set_aside=True):
        """Switches the run's layers to gradient masking where that is exact.

        Resets the optimizer's slots under every 0 mask of those layers (they
        may hold values from training before the masks were set) and
        retraces the training function.

        Args:
            model: The model being trained.
            targets: Its `PruningTargets`.
            optimizer_reset: The run's `OptimizerReset`.
            set_aside: Whether kept layers may set their pruned values aside
                (not under re-introduction, which trains them).
        """
        self.stop()
        self.model = model
        self.optimizer_reset = optimizer_reset
        layers = list(targets.layers.values())
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None or not holds_zeros(optimizer):
            return
        zeroed = [l for l in layers if l.pruned_values == "zeroed"]
        kept = []
        if (
            set_aside
            and keras.backend.backend() == "tensorflow"
            and holds_zeros(optimizer, ELEMENTWISE_OPTIMIZERS)
        ):
            kept = [l for l in layers if can_set_aside(l)]
        if not zeroed and not kept:
            return
        if not optimizer.built:  # Keras would build it at the first step
            with model.distribute_strategy.scope():
                optimizer.build(model.trainable_variables)
        if not optimizer_reset.resets_slots():
            return  # slots that cannot be reset at positions: keep the constraint
        self.zeroed, self.kept = zeroed, kept
        for layer in zeroed:
            hold_zeros_by_gradient(layer, True)
        for layer in kept:
            set_pruned_values_aside(layer)
        for layer in self.layers:
            for w in layer._all_weights():
                optimizer_reset.reset_at(w.variable, ~ops.convert_to_numpy(w.mask))
            elide_full_masks(layer, self._retrace)
        model.make_train_function(force=True)

    def _retrace(self):
        # A mask without a 0, traced without its gradient select, got one.
        self.model.make_train_function(force=True)

    @property
    def active(self) -> bool:
        """Whether some layers hold their zeros by gradient masking now."""
        return bool(self.layers)

    def pruned(self, weights, old_masks, new_masks):
        """After the scheduler set new masks: resets the slots where weights were just pruned.

        (A kept layer set the values of those weights aside when its masks
        were set.)

        Args:
            weights: The `MaskedWeight`s whose masks may have changed.
            old_masks: `{weight key: mask before}`.
            new_masks: `{weight key: mask after}`, as the scheduler set them.
        """
        if not self.layers:
            return
        held = {id(layer) for layer in self.layers}
        for w in weights:
            if id(w.layer) not in held or w.key not in old_masks:
                continue
            now = np.asarray(new_masks[w.key], bool)
            self.optimizer_reset.reset_at(w.variable, np.asarray(old_masks[w.key], bool) & ~now)

    @contextlib.contextmanager
    def values_kept(self):
        """The kept layers' raw values in place inside the block (for rewinding and pruning).

        The block must not train: kept layers compute with their raw
        variables. If it prunes, it resets the optimizer (as a pruning round
        does); the values of newly pruned weights are set aside on leaving.
        """
        for layer in self.kept:
            restore_pruned_values(layer)
        try:
            yield
        finally:
            for layer in self.kept:
                set_pruned_values_aside(layer)

    def adopt_writes(self):
        """Sets aside again the kept layers whose weights or masks were written from outside.

        What `model.set_weights` or an `assign` wrote is the model's state,
        as under `raw * mask`: a non-zero value under a 0 mask becomes the
        pruned value, a mask changed by hand counts, and the zeros the layer
        computes with come back (`keras_lth.layers.written_since_aside`).
        Until then the layer computes with the raw variables as written. The
        scheduler looks at every epoch's start and end: two reductions on
        the device per masked variable, one value read back per layer, and
        a host round trip of the values only for a layer written to.
        """
        for layer in self.kept:
            if written_since_aside(layer):
                set_pruned_values_aside(layer)
        for layer in self.zeroed:
            check_elided_masks(layer)  # (a kept layer's mask written is a write)

    def stop(self):
        """The constraint again for zeroed layers, the pruned values back in kept layers."""
        if not self.layers:
            return
        for layer in self.layers:
            elide_full_masks(layer, None)
        for layer in self.zeroed:
            hold_zeros_by_gradient(layer, False)
        for layer in self.kept:
            restore_pruned_values(layer)
        if self.kept:
            # Traced while kept layers computed with their raw variables.
            self.model.test_function = None
            self.model.predict_function = None
        self.zeroed, self.kept = [], []
        self.model.train_function = None  # the next `fit` traces the masks as they are
