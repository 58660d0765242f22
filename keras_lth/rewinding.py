"""Rewinding: the point the weights restart from after every pruning.

The rewind point is every weight of the model (`model.weights`: trainable
and non-trainable, so BatchNormalization's moving statistics are rewound
too) except keras-lth's own state, the masks. It is taken at the start of
training (`rewind="init"`, `"reinit"`) or after epoch `k` of round 0
(`rewind=k`, late rewinding).

`rewind="reinit"` (the random re-initialisation control) draws fresh values
instead: every trainable variable that a layer creates from an initializer
(its `<name>_initializer`: kernels, biases, recurrent, depthwise and
pointwise kernels, embeddings, BatchNormalization's gamma and beta) is drawn
again with a seed of its own for every (run seed, round, variable), and
BatchNormalization's moving statistics restart from their initializers; the
other weights go back to the rewind point.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_lth.distributed import same_seed
from keras_lth.layers import masked_layers, sublayers
from keras_lth.rounds import late_epoch

# `<prefix>_initializer` -> the attributes that may hold the variable it
# initialises, where the names differ (`DepthwiseConv2D` keeps its depthwise
# kernel as `kernel`, `SeparableConv2D` as `depthwise_kernel`).
_INITIALIZED = {
    "recurrent": ("recurrent_kernel",),
    "depthwise": ("depthwise_kernel", "kernel"),
    "pointwise": ("pointwise_kernel",),
}


class Rewinding:
    """The rewind point of one run and what rewinding restores.

    Args:
        rewind: `"init"`, `"reinit"`, an epoch index `k` or `None` (see
            `PruningScheduler`).
        seed: Seed of the `"reinit"` draws, or `None` for a random one.
    """

    def __init__(self, rewind, seed=None):
        self.rewind = rewind
        self.seed = seed
        self.late = late_epoch(rewind)
        self.run_seed = None
        self.values = None
        self._variables = []
        self._cache = (None, None)
        self.state_version = 0

    def start(self, model, fresh=True):
        """A new run: picks the run seed and, unless late, takes the rewind point.

        With `fresh=False` (a resumed run) nothing is taken: `set_state`
        brings the interrupted run's seed and rewind point.
        """
        masks = set()
        for layer in masked_layers(model):
            for w in layer.masked_weights + [layer.bias_weight]:
                if w is not None:
                    masks.add(id(w.mask))
        self.model = model
        self._variables = [v for v in model.weights if id(v) not in masks]
        # Without a seed, every process of a multi-process run draws with
        # the chief's (`keras_lth.distributed`).
        self.run_seed = (
            self.seed
            if self.seed is not None
            else same_seed(int(np.random.SeedSequence().generate_state(1)[0]), model)
        )
        self.values = None
        self._cache = (None, None)
        if fresh and self.rewind is not None and self.late == 0:
            self.take()

    def take(self):
        """Takes the rewind point from the model's current weights."""
        self.values = [ops.convert_to_numpy(v) for v in self._variables]
        self._cache = (None, None)
        self.state_version += 1

    def due_after(self, epoch) -> bool:
        """Whether the late rewind point is taken at the end of `epoch`."""
        return self.rewind is not None and self.late > 0 and epoch == self.late - 1

    def rewind_to(self, r):
        """Restores the weights for round `r` (nothing with `rewind=None`)."""
        if self.rewind is None:
            return
        for var, value in zip(self._variables, self.target(r)):
            var.assign(value)

    def target(self, r) -> list:
        """The values rewinding restores at the start of round `r`, in weight order."""
        if self.values is None:
            raise ValueError(
                "The rewind point is not taken yet: late rewinding takes it at "
                f"the end of epoch {self.late - 1} of round 0."
            )
        if self.rewind != "reinit":
            return self.values
        if self._cache[0] != r:
            self._cache = (r, self._reinit_values(r))
        return self._cache[1]

    def target_of(self, r) -> dict:
        """`{id(variable): value}` of `target(r)`."""
        return {id(v): value for v, value in zip(self._variables, self.target(r))}

    def _reinit_values(self, r):
        fresh = {}
        for index, (var, initializer, forget) in _initialized_variables(
            self.model, self._variables
        ):
            entropy = [self.run_seed, r, index]
            seed = int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)
            value = _draw(initializer, seed, tuple(var.shape), var.dtype, forget)
            fresh[index] = ops.convert_to_numpy(value)
        return [fresh.get(i, value) for i, value in enumerate(self.values)]

    # -- resume ------------------------------------------------------------ #
    def get_state(self):
        return {"run_seed": self.run_seed}, ({"values": self.values} if self.values else {})

    def set_state(self, state, arrays):
        self.run_seed = state["run_seed"]
        values = arrays.get("values")
        if values is not None:
            shapes = [tuple(v.shape) for v in self._variables]
            if [tuple(np.shape(a)) for a in values] != shapes:
                raise ValueError(
                    "The scheduler's backup does not fit this model: expected "
                    f"rewind values of shapes {shapes}. Received: "
                    f"{[tuple(np.shape(a)) for a in values]}"
                )
        self.values = values
        self._cache = (None, None)
        self.state_version += 1


def _initialized_variables(model, variables):
    """`(index in variables, (variable, initializer, forget units))`: what `"reinit"` draws.

    Trainable variables of trainable layers that a layer attribute
    `<name>_initializer` initialises, and the moving statistics of
    BatchNormalization-like layers (`moving_mean_initializer`, ...).
    """
    index = {id(v): i for i, v in enumerate(variables)}
    found = {}
    for layer in [model] + sublayers(model):
        if not layer.trainable:
            continue
        for attr in dir(type(layer)) + list(vars(layer)):
            if not attr.endswith("_initializer") or attr.startswith("_"):
                continue
            initializer = getattr(layer, attr, None)
            if not callable(initializer):
                continue
            prefix = attr[: -len("_initializer")]
            var = next(
                (
                    v
                    for v in (_variable(layer, a) for a in _INITIALIZED.get(prefix, (prefix,)))
                    if v is not None
                ),
                None,
            )
            if var is None or id(var) not in index or id(var) in found:
                continue
            if not (var.trainable or prefix.startswith("moving_")):
                continue
            found[id(var)] = (var, initializer, _forget_units(layer, prefix))
    return sorted(((index[k], v) for k, v in found.items()), key=lambda t: t[0])


def _variable(layer, attr):
    """The variable behind `layer.<attr>` (a masked layer's attributes read `raw * mask`)."""
    raw = getattr(layer, "raw_variable", None)
    var = None
    if raw is not None:
        try:
            var = raw(attr)
        except (AttributeError, ValueError):
            var = None
    if var is None:
        try:
            var = getattr(layer, attr, None)
        except AttributeError:
            return None
    return var if isinstance(var, keras.Variable) else None


def _forget_units(layer, prefix):
    """Units of an LSTM cell whose bias build sets the forget gate to 1, else None."""
    if prefix == "bias" and isinstance(layer, keras.layers.LSTMCell) and layer.unit_forget_bias:
        return layer.units
    return None


def _draw(initializer, seed, shape, dtype, forget_units):
    """A fresh draw of `initializer` (made deterministic by `seed`)."""
    initializer = _seeded(initializer, seed)
    if forget_units is None:
        return initializer(shape, dtype=dtype)
    u = forget_units  # as `LSTMCell.build` does it: [input, forget = 1, cell, output]
    return ops.concatenate(
        [
            initializer((u,), dtype=dtype),
            ops.ones((u,), dtype=dtype),
            initializer((2 * u,), dtype=dtype),
        ]
    )


def _seeded(initializer, seed):
    """`initializer` with its `seed` replaced (a Keras 3 initializer repeats its draws)."""
    get_config = getattr(initializer, "get_config", None)
    if get_config is None:
        return initializer
    config = get_config()
    if "seed" not in config:
        return initializer  # deterministic (zeros, ones, constant)
    config["seed"] = seed
    return type(initializer).from_config(config)
