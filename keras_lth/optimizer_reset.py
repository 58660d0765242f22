"""Restarting the optimizer after a pruning: as if it had just been created.

A pruning round starts a new training run from the rewound weights, so the
optimizer restarts too: its iteration count, its slots (momenta, second
moments, accumulators) and, for a `LossScaleOptimizer`, its dynamic loss
scale; never the learning rate, which stays what the user (or a callback
such as `ReduceLROnPlateau`) set.

Not every optimizer variable starts at zero (Adagrad's accumulators start at
`initial_accumulator_value`, the loss scale at `initial_scale`), and the
optimizer may already have trained when the scheduler first sees it (a
second `fit`, a pretrained model, a resumed run). The initial values are
therefore taken from the optimizer itself: a throwaway copy,
`type(opt).from_config(opt.get_config())`, is built on the same model
variables and read once. While it is built, every
`add_variable_from_reference` call is recorded, so each slot is matched to
the model variable it belongs to (by position in `optimizer.variables`,
checked by name and shape), not by a name prefix: layers named `h1` and
`h1_kernel` keep their slots apart.
"""

from __future__ import annotations

import contextlib
import re
import warnings

import keras
import numpy as np
from keras import ops


class OptimizerReset:
    """Resets `model.optimizer` to its initial state, all of it or at some positions."""

    def __init__(self):
        self.model = None
        self._plan = None
        self._for = None
        self._warned = False

    def start(self, model):
        """A new run: the initial values are taken again at the first reset."""
        self.model = model
        self._plan = None
        self._for = None

    def reset(self):
        """Every optimizer variable back to its initial value, the learning rate kept."""
        plan = self._get_plan()
        if plan is None:
            return
        for var, value, keep in zip(self.model.optimizer.variables, plan.values, plan.keep):
            if not keep:
                var.assign(np.broadcast_to(value, var.shape).astype(var.dtype))

    def reset_at(self, variable, where):
        """The slots of model variable `variable` back to their initial values at `where`."""
        plan = self._get_plan()
        if plan is None:
            return
        where = np.asarray(where, bool)
        if not where.any():
            return
        for slot, value in plan.slots.get(id(variable), ()):
            # Read and assigned whole: a scatter would switch the slot to
            # copy-on-read, every later dense read of it a copy.
            current = ops.convert_to_numpy(slot)
            current[where] = np.broadcast_to(value, current.shape)[where]
            slot.assign(current)

    def resets_slots(self) -> bool:
        """Whether `reset_at` can reset the slots: the optimizer is built and its copy matches."""
        plan = self._get_plan()
        return plan is not None and plan.exact

    def _get_plan(self):
        opt = getattr(self.model, "optimizer", None)
        if opt is None or not opt.built:
            return None  # nothing trained yet: nothing to reset
        if self._plan is None or self._for is not opt:
            self._for = opt
            try:
                self._plan = initial_state(opt, self.model.trainable_variables, self.model)
            except _NoRoundTrip as e:
                self._plan = _fallback(opt)
                if not self._warned:
                    self._warned = True
                    warnings.warn(
                        f"Cannot take the initial state of the optimizer "
                        f"`{type(opt).__name__}` from its configuration ({e}): only "
                        "its iteration count is reset after a pruning, its other "
                        "variables keep their values.",
                        stacklevel=3,
                    )
        return self._plan


class _Plan:
    def __init__(self, values, keep, slots, exact=True):
        self.values = values  # initial value (scalar where constant) per optimizer variable
        self.keep = keep  # True for the learning rates
        self.slots = slots  # id(model variable) -> [(slot variable, initial value)]
        self.exact = exact  # False: the fallback, which knows no slot


class _NoRoundTrip(Exception):
    pass


def initial_state(optimizer, trainable_variables, model=None) -> _Plan:
    """The initial value of every variable of `optimizer`, and its slots per model variable.

    Args:
        optimizer: A built Keras optimizer.
        trainable_variables: The model variables it was built on.
        model: Optional model whose distribution strategy scope the throwaway
            optimizer is built in (TensorFlow).

    Raises:
        _NoRoundTrip: when the configuration does not give the same variables.
    """
    # Under a distribution strategy the copy must be created in its scope,
    # as the optimizer was.
    with _strategy_scope(model):
        try:
            fresh = type(optimizer).from_config(optimizer.get_config())
        except Exception as e:  # any failure means no round trip
            raise _NoRoundTrip(f"from_config failed: {e}") from e
        references = _record_references(fresh)
        try:
            fresh.build(trainable_variables)
        except Exception as e:
            raise _NoRoundTrip(f"build failed: {e}") from e
    real, new = optimizer.variables, fresh.variables
    described = [(_base_name(v.name), tuple(v.shape)) for v in real]
    if described != [(_base_name(v.name), tuple(v.shape)) for v in new]:
        raise _NoRoundTrip(
            f"its copy has the variables {[(v.name, tuple(v.shape)) for v in new]}, "
            f"the optimizer {described}"
        )
    reference_of = {id(created): ref for ref, created in references}
    learning_rates = _learning_rates(optimizer)
    values, keep, slots = [], [], {}
    for var, init in zip(real, new):
        value = _compact(ops.convert_to_numpy(init))
        values.append(value)
        keep.append(id(var) in learning_rates or var.name == "learning_rate")
        ref = reference_of.get(id(init))
        if ref is not None and tuple(ref.shape) == tuple(var.shape):
            slots.setdefault(id(ref), []).append((var, value))
    return _Plan(values, keep, slots)


def _base_name(name):
    """A variable's name without the suffix Keras adds to make a default name unique.

    An optimizer's own unnamed variables (Nadam's running product) are
    `variable` in the optimizer and `variable_1` in its copy.
    """
    return re.sub(r"_\d+$", "", name)


def _fallback(optimizer):
    values, keep = [], []
    for var in optimizer.variables:
        is_count = var.name in ("iteration", "iterations")
        values.append(np.zeros((), var.dtype) if is_count else None)
        keep.append(not is_count)
    return _Plan(values, keep, {}, exact=False)


def _record_references(optimizer):
    """Records `(reference variable, created variable)` of every slot the optimizer adds.

    Patches `add_variable_from_reference` on this throwaway instance (and on
    the optimizers it wraps, e.g. a `LossScaleOptimizer`'s inner optimizer).
    """
    recorded = []
    chain = []
    o = optimizer
    while isinstance(o, keras.optimizers.Optimizer) and o not in chain:
        chain.append(o)
        o = getattr(o, "inner_optimizer", None)
    for o in chain:
        original = o.add_variable_from_reference

        def add(reference_variable, name=None, initializer="zeros", _original=original):
            created = _original(reference_variable, name=name, initializer=initializer)
            recorded.append((reference_variable, created))
            return created

        object.__setattr__(o, "add_variable_from_reference", add)
    return recorded


def _learning_rates(optimizer):
    ids = set()
    o = optimizer
    while isinstance(o, keras.optimizers.Optimizer):
        lr = o.learning_rate
        if isinstance(lr, keras.Variable):
            ids.add(id(lr))
        o = getattr(o, "inner_optimizer", None)
    return ids


def _compact(value):
    """A constant array as its scalar (slots are mostly zeros or one constant)."""
    flat = value.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return np.asarray(flat[0], value.dtype)
    return value


def _strategy_scope(model):
    strategy = getattr(model, "distribute_strategy", None)
    return strategy.scope() if strategy is not None else contextlib.nullcontext()
