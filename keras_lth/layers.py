"""Masked layers: the prunable building blocks of keras-lth.

Every masked layer is the Keras layer it extends plus 0/1 masks, one per
prunable weight (the kernel; both kernels of a separable convolution; the
input and recurrent kernels of a recurrent layer; the embedding table) and
one for the bias. The masks are non-trainable boolean weights (a byte per
weight), so they are saved and loaded with the model and mirrored under a
`tf.distribute` strategy; `get_masks` and `set_masks` speak 0/1 arrays.

One mechanism serves every family. Keras layers compute with the public
attribute that holds a kernel (`Dense.call` and `BaseConv.call` read
`self.kernel`, `Embedding.call` reads `self.embeddings`, the LSTM cell reads
`self.kernel` and `self.recurrent_kernel`). A masked layer class overrides
that attribute with a property that returns `raw * mask`; the raw variable
stays what the Keras class created, so pruned weights keep their values
(rewinding and re-introduction rely on that) and receive a zero gradient.
Within one call of the layer the product is computed once per attribute,
however often the Keras class reads it (`Dense.call` reads `self.bias` in
its `is not None` test and again in the add).

`pruned_values="zeroed"` (TensorFlow backend) is the cheaper alternative:
the raw variable holds exact zeros where the mask is 0, the attribute is the
raw variable's value itself (no product in the forward pass), and its
gradient is masked in place, so pruned weights get a zero gradient as with
the product. During a `PruningScheduler` run with one of Keras's
elementwise optimizers that is all it takes (`keras_lth.zeroing`);
otherwise a variable constraint, which Keras optimizers apply after every
update, also sets the pruned entries back to zero. Masks, rewinding and
loading zero them too. Pruned values are then lost, so re-introduction
refuses such layers.

Two kinds of layer hold their masks differently:

- A *leaf* layer (`MaskedDense`, the convolutions, `MaskedEmbedding`,
  `MaskedEinsumDense`) creates its masks in `build`, right after the Keras
  layer created its weights.
- A *composite* layer (`MaskedMultiHeadAttention`, `MaskedLSTM`,
  `MaskedGRU`, `MaskedSimpleRNN`) holds Keras sublayers that its Keras build
  creates and builds in one go (the attention's four `EinsumDense`
  projections, the recurrent cell). After that build it turns each of them
  into the masked class of its family and creates their masks as its own
  weights. Pruning sees the sublayers; saving sees the composite.

`masked_layers(model)` lists the masked (sub)layers of a model. Each has
`masked_weights` (a `MaskedWeight` per prunable variable), `bias_weight`,
`set_masks`, `density`, `effective_weights` and `pruned_values`;
`zero_pruned(model)` restores the zeros of `"zeroed"` layers after raw
values were written by hand.

During a `PruningScheduler` run, kept layers compute as zeroed ones do
wherever that changes nothing they compute: their pruned values wait in
host memory (`set_pruned_values_aside`, `restore_pruned_values`; saving
writes them, `kept_values(model)` reads them in place) and the raw
variables hold zeros (`keras_lth.zeroing`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading

import keras
import numpy as np
from keras import ops

from keras_lth import pruning

GRADIENT_MODES = ("masked", "dense")
PRUNED_VALUES = ("kept", "zeroed")


def check_pruned_values(pruned_values):
    """Validates a `pruned_values` argument (`"kept"` or `"zeroed"`)."""
    if isinstance(pruned_values, str) and pruned_values in PRUNED_VALUES:
        if pruned_values == "zeroed" and keras.backend.backend() != "tensorflow":
            raise ValueError(
                "`pruned_values='zeroed'` needs the TensorFlow backend: under "
                f"{keras.backend.backend()!r}, Keras's trainer does not let the "
                "constraint that zeroes pruned weights read their mask. Use "
                f"`pruned_values='kept'` (the default). Received: pruned_values={pruned_values!r}"
            )
        return pruned_values
    raise ValueError(
        "Received an invalid value for `pruned_values`, expected one of "
        f"{PRUNED_VALUES}. Received: pruned_values={pruned_values!r}"
    )


class _PrunedValuesArgument:
    """The `pruned_values` argument, config entry and property of leaf and composite layers.

    Subclasses add the property's setter (`@_PrunedValuesArgument.pruned_values.setter`).
    """

    def __init__(self, *args, pruned_values="kept", **kwargs):
        check_pruned_values(pruned_values)
        super().__init__(*args, **kwargs)
        self.__dict__["_lth_pruned"] = pruned_values

    def get_config(self):
        config = super().get_config()
        if self.pruned_values != "kept":  # configs of the default stay as they were
            config["pruned_values"] = self.pruned_values
        return config

    @property
    def pruned_values(self):
        """`"kept"` (default) or `"zeroed"`: what the raw variable holds where the mask is 0.

        - `"kept"`: the values the weights had when they were pruned. The
          layer computes with `raw * mask`; pruned weights get a zero
          gradient. Re-introduction and a mask set back to 1 find the old
          values. During a `PruningScheduler` run the layer may instead
          compute as a zeroed one, its pruned values set aside in host
          memory until the run ends (`set_pruned_values_aside`).
        - `"zeroed"` (TensorFlow backend only): exact zeros. The layer
          computes with the raw variable's value itself (no product) and
          masks its gradient in place, so pruned weights get a zero
          gradient, as with `"kept"`; a training step is cheaper (measured
          in `benchmarks/overhead.py`). During a `PruningScheduler` run with
          one of Keras's elementwise optimizers (`keras_lth.zeroing`), the
          masked gradients and the scheduler's resets of the optimizer's
          slots at pruned positions keep the zeros; otherwise a variable
          constraint, applied by Keras optimizers after every update, also
          sets pruned entries back to zero, on top of the variable's own
          constraint. `set_masks`, rewinding (`PruningScheduler`) and
          loading zero them too. With elementwise optimizers (SGD, Adam,
          ...) the kept weights train exactly as with `"kept"`. A weight
          whose mask is set back to 1 starts from 0. Re-introduction
          (`PruningScheduler(reintroduce=...)`) refuses such layers. After
          writing raw values yourself (`model.set_weights`), call
          `zero_pruned()`.

        A composite layer (attention, recurrent) sets it on every masked
        sublayer. Setting it on a built layer installs or removes the
        constraint (and zeroes pruned values); retrace the training function
        afterwards (`model.make_train_function(force=True)`, or a new `fit`).
        """
        return self.__dict__.get("_lth_pruned", "kept")


@dataclasses.dataclass(frozen=True, eq=False)
class MaskedWeight:
    """One prunable variable of a masked layer and its mask.

    Attributes:
        layer: The masked layer (or composite's sublayer) that computes with it.
        name: The attribute the layer reads: `"kernel"`, `"embeddings"`,
            `"depthwise_kernel"`, `"pointwise_kernel"`, `"recurrent_kernel"`
            or `"bias"`.
        variable: The raw `keras.Variable` (values under the mask are kept).
        mask: The 0/1 float32 `keras.Variable` of the same shape.
        units: `(view_shape, unit_axes)`: how the variable is seen as
            `(fan_in, units)` for structured pruning. The variable is
            reshaped to `view_shape`, whose axes `unit_axes` index the
            layer's output units (neurons, filters); `None` for a variable
            whose layer has no output units of its own (the depthwise kernel
            of a separable convolution, an einsum that contracts every
            kernel axis).
    """

    layer: keras.layers.Layer
    name: str
    variable: keras.Variable
    mask: keras.Variable
    units: tuple | None

    @property
    def key(self) -> str:
        """`"<layer key>/<name>"`, unique within a model."""
        return f"{layer_key(self.layer)}/{self.name}"


def layer_key(layer) -> str:
    """The name a masked layer goes by in pruning records and `layer_rates`.

    Its own name, or `"<composite>/<sublayer>"` for a sublayer of a
    composite (`"mha/query"`); a recurrent layer's cell goes by the layer's
    name.
    """
    return layer.__dict__.get("_lth_key", layer.name)


class MaskedLayer(_PrunedValuesArgument):
    """Mixin that masks the weights a Keras layer computes with.

    Subclasses put it before the Keras class (`class MaskedDense(MaskedLayer,
    keras.layers.Dense)`) and list the attributes to mask in
    `masked_attributes`; `_masked_class` adds a property per attribute.
    """

    #: Attributes the Keras layer computes with, in saving order.
    masked_attributes: tuple = ("kernel",)

    def __init__(self, *args, **kwargs):
        for arg in ("lora_rank", "quantization_config"):
            if kwargs.get(arg) is not None:
                raise ValueError(
                    f"`{type(self).__name__}` does not support `{arg}`. "
                    f"Received: {arg}={kwargs[arg]!r}"
                )
        super().__init__(*args, **kwargs)

    def __call__(self, *args, **kwargs):
        # The masked values of this call, computed once each (see
        # `_masked_property`); per thread, as `tf.distribute` replicas
        # trace the model in threads of their own.
        calls = _CALLS.by_layer
        if id(self) in calls:  # a re-entrant call shares the outer one's
            return super().__call__(*args, **kwargs)
        calls[id(self)] = {}
        try:
            return super().__call__(*args, **kwargs)
        finally:
            del calls[id(self)]

    # -- building ------------------------------------------------------ #
    def build(self, input_shape):
        super().build(input_shape)
        _create_masks(self, self)
        _set_zeroing(self)

    # -- what pruning reads and writes --------------------------------- #
    @property
    def masked_weights(self) -> list:
        """A `MaskedWeight` for each prunable variable (biases excluded)."""
        self._check_built("masked_weights")
        return [
            MaskedWeight(
                self,
                attr,
                self.raw_variable(attr),
                self.__dict__[f"{attr}_mask"],
                self._unit_view(attr),
            )
            for attr in self.masked_attributes
        ]

    @property
    def bias_weight(self):
        """The `MaskedWeight` of the bias, or `None` without a bias."""
        self._check_built("bias_weight")
        bias = _raw(self, "bias")
        if bias is None:
            return None
        return MaskedWeight(self, "bias", bias, self.__dict__["bias_mask"], self._unit_view("bias"))

    def raw_variable(self, attr="kernel"):
        """The raw variable behind `attr` (what the Keras layer created).

        `layer.kernel` (and every masked attribute, `bias` included) reads as
        `raw * mask`, a tensor; assign new values to the raw variable.
        """
        names = (*self.masked_attributes, "bias")
        if attr not in names:
            raise ValueError(
                f"Received an invalid value for `attr`, expected one of "
                f"{names}. Received: attr={attr!r}"
            )
        return _raw(self, attr)

    @property
    def gradient_mode(self):
        """`"masked"` (pruned weights get a zero gradient) or `"dense"`.

        With `"dense"` the layer still computes with `raw * mask`, but the
        raw variable receives the gradient of the effective weight at every
        position (a straight-through estimator), pruned ones included; the
        re-introduction strategies use it. The training function must be
        retraced after a change.
        """
        return self.__dict__.get("_lth_gradient", "masked")

    @gradient_mode.setter
    def gradient_mode(self, mode):
        if mode not in GRADIENT_MODES:
            raise ValueError(
                "Received an invalid value for `gradient_mode`, expected one "
                f"of {GRADIENT_MODES}. Received: gradient_mode={mode!r}"
            )
        _check_not_aside(self, "gradient_mode", mode)
        if mode == "dense" and self.pruned_values == "zeroed":
            raise ValueError(
                f"Layer '{self.name}' has pruned_values='zeroed': its pruned "
                "weights are zeros, with no values of their own for a dense "
                "gradient to train. Set `pruned_values='kept'` first. "
                f"Received: gradient_mode={mode!r}"
            )
        self.__dict__["_lth_gradient"] = mode

    @_PrunedValuesArgument.pruned_values.setter
    def pruned_values(self, mode):
        check_pruned_values(mode)
        _check_not_aside(self, "pruned_values", mode)
        if mode == "zeroed" and self.gradient_mode == "dense":
            raise ValueError(
                f"Layer '{self.name}' trains with gradient_mode='dense' (a "
                "re-introduction strategy), which needs the pruned values. "
                f"Received: pruned_values={mode!r}"
            )
        self.__dict__["_lth_pruned"] = mode
        if f"{self.masked_attributes[0]}_mask" in self.__dict__:
            _set_zeroing(self)

    def zero_pruned(self):
        """Sets the raw values under 0 masks to zero (`pruned_values="zeroed"` keeps them so)."""
        self._check_built("masks")
        for w in self._all_weights():
            _zero(w.variable, w.mask)

    def set_masks(self, kernel_mask=None, bias_mask=None, **masks):
        """Assigns masks; a mask passed as `None` is left as it is.

        Args:
            kernel_mask: 0/1 (or boolean) array of the first masked variable's shape (the
                kernel; the embedding table for `MaskedEmbedding`; the
                depthwise kernel for a separable convolution).
            bias_mask: Optional 0/1 array of the bias's shape.
            **masks: The other masks by name, `"<attribute>_mask"`:
                `pointwise_kernel_mask=`, `recurrent_kernel_mask=`, ...
        """
        self._check_built("masks")
        first = f"{self.masked_attributes[0]}_mask"
        if kernel_mask is not None:
            if first in masks:
                raise ValueError(
                    f"Pass the mask of `{self.masked_attributes[0]}` once: "
                    f"`kernel_mask` and `{first}` were both given"
                )
            masks[first] = kernel_mask
        if bias_mask is not None:
            if self.bias_weight is None:
                raise ValueError(
                    f"Layer '{self.name}' has no bias (use_bias=False). "
                    f"Received: bias_mask of shape {np.shape(bias_mask)}"
                )
            masks["bias_mask"] = bias_mask
        known = {f"{w.name}_mask": w for w in self._all_weights()}
        unknown = sorted(set(masks) - set(known))
        if unknown:
            raise ValueError(
                f"Received unknown masks {unknown} for layer '{self.name}', "
                f"expected names among {sorted(known)}"
            )
        checked = {
            name: _check_mask(value, name, tuple(known[name].mask.shape), self.name)
            for name, value in masks.items()
            if value is not None
        }
        for name, value in checked.items():
            kept = value.astype(bool)
            known[name].mask.assign(kept)
            if not kept.all():
                _unelide(self, known[name].name)
            if self.pruned_values == "zeroed":
                _zero(known[name].variable, kept)
            elif _ASIDE in self.__dict__:  # a weight pruned (or back) during a run
                _set_weight_aside(self, known[name], kept)

    def get_masks(self) -> dict:
        """`{"<attribute>_mask": 0/1 float32 array}` for every mask, bias mask included."""
        return {f"{w.name}_mask": mask_value(w.mask) for w in self._all_weights()}

    def density(self):
        """Fraction of the prunable weights (biases excluded) that are kept."""
        kept = sum(int(np.count_nonzero(ops.convert_to_numpy(w.mask))) for w in self.masked_weights)
        size = sum(math.prod(w.mask.shape) for w in self.masked_weights)
        return kept / size

    def effective_weights(self) -> list:
        """`get_weights()` of the plain Keras layer: masks applied, masks left out."""
        masks = {id(w.variable): w.mask for w in self._all_weights()}
        mask_ids = {id(m) for m in masks.values()}
        out = []
        for v in _own_variables(self):
            if id(v) in mask_ids:
                continue
            value = ops.convert_to_numpy(v)
            if id(v) in masks:
                value = value * ops.convert_to_numpy(masks[id(v)]).astype(value.dtype)
            out.append(value)
        return out

    # -- saving: one explicit list, the same in both directions --------- #
    def _saved_variables(self):
        owned = not self.__dict__.get("_lth_owned", False)
        variables = [v for v in _own_variables(self) if not _is_mask(self, v)]
        if owned:
            variables += [w.mask for w in self._all_weights()]
        return variables

    def save_own_variables(self, store):
        if not self.built:
            return
        aside = self.__dict__.get(_ASIDE, {})
        for i, v in enumerate(self._saved_variables()):
            # A kept layer whose pruned values are set aside saves them.
            store[str(i)] = _with_aside(v, aside[id(v)]) if id(v) in aside else v

    def load_own_variables(self, store):
        if not self.built:
            return
        variables = self._saved_variables()
        keys = sorted(store.keys(), key=int)
        if len(keys) == len(variables) + 1 and type(self).__name__ == "MaskedDense":
            # keras-lth 0.1.0 saved `ScoredPruning`'s scores as a fifth
            # variable of `MaskedDense`; scores restart with every round.
            keys = keys[:-1]
        if len(keys) != len(variables):
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) expected "
                f"{len(variables)} variables ({', '.join(_short(v) for v in variables)}). "
                f"Received: {len(keys)} variables"
            )
        for var, key in zip(variables, keys):
            # Masks are stored as bools; earlier versions saved float 0/1 masks.
            var.assign(np.asarray(store[key]) != 0 if _is_mask(self, var) else store[key])
        # (a composite's masks load first: Keras loads a layer before its sublayers)
        if self.pruned_values == "zeroed":
            self.zero_pruned()
        elif _ASIDE in self.__dict__:  # the loaded values are the kept ones
            del self.__dict__[_ASIDE]
            set_pruned_values_aside(self)

    # -- what Keras features do not fit --------------------------------- #
    def enable_lora(self, *args, **kwargs):
        raise NotImplementedError(
            f"`{type(self).__name__}` does not support LoRA: its kernel "
            "would no longer be the variable that pruning masks."
        )

    def quantize(self, *args, **kwargs):
        raise NotImplementedError(
            f"`{type(self).__name__}` cannot be quantized; call "
            "`keras_lth.strip(model)` first and quantize the plain layers."
        )

    # -- internals ----------------------------------------------------- #
    def _all_weights(self):
        bias = self.bias_weight
        return self.masked_weights + ([bias] if bias is not None else [])

    def _check_built(self, what):
        if not self.built or f"{self.masked_attributes[0]}_mask" not in self.__dict__:
            raise ValueError(
                f"Layer '{self.name}' is not built yet, so it has no {what}: "
                "call it on an input (or build the model) first."
            )

    def _unit_view(self, attr):
        """`(view_shape, unit_axes)` of `attr` (see `MaskedWeight.units`)."""
        shape = tuple(self.raw_variable(attr).shape)
        return shape, (len(shape) - 1,)

    def bias_mask_for(self, alive):
        """The bias mask of a layer whose output units `alive` (1-D bool) are kept."""
        view_shape, axes = self._unit_view("bias")
        return pruning.units_to_mask(alive, tuple(_raw(self, "bias").shape), view_shape, axes)


def _short(variable):
    return variable.path.rsplit("/", 1)[-1]


def _own_variables(layer):
    """The layer's own variables (not its sublayers'), in creation order."""
    sub = {id(v) for s in layer._flatten_layers(include_self=False) for v in s.variables}
    return [v for v in layer.variables if id(v) not in sub]


def _is_mask(layer, variable):
    return any(variable is w.mask for w in layer._all_weights())  # `is`: `==` compares values


def _raw(layer, attr):
    """The raw value behind a masked attribute: the Keras class's own."""
    prop = _base_property(type(layer), attr)
    if prop is not None:
        return prop.fget(layer)
    try:
        return layer.__dict__[f"_lth_raw_{attr}"]
    except KeyError:
        if attr == "bias" and "bias" not in type(layer).__dict__:
            return None  # a family without a bias (Embedding)
        raise AttributeError(
            f"'{type(layer).__name__}' object has no attribute '{attr}' yet "
            "(the layer is not built)"
        ) from None


def _base_property(cls, attr):
    """The Keras class's property for `attr`, or None for a plain attribute."""
    for klass in cls.__mro__:
        if klass.__dict__.get("_lth_masked_class"):
            continue
        value = klass.__dict__.get(attr)
        if isinstance(value, property):
            return value
        if value is not None:
            return None
    return None


class _CallMemos(threading.local):
    """Per thread: `id(layer)` -> {attribute: masked value}, one per running call."""

    def __init__(self):
        self.by_layer = {}


_CALLS = _CallMemos()


def _masked_property(attr):
    mask_name = f"{attr}_mask"

    def fget(self):
        raw = _raw(self, attr)
        mask = self.__dict__.get(mask_name)
        if mask is None or raw is None:  # no bias; or in the Keras build, before the masks
            return raw
        memo = _CALLS.by_layer.get(id(self))
        if memo is not None and attr in memo:  # read before in this call
            return memo[attr]
        if self.__dict__.get("_lth_pruned") == "zeroed" or _ASIDE in self.__dict__:
            elided = self.__dict__.get(_ELIDED)
            if elided is not None and attr in elided[0]:
                value = raw  # its mask has no 0: traced again once it has one
            else:
                value = _gradient_masked(raw, mask)  # pruned entries are zeros already
        else:
            value = _apply_mask(raw, mask, self.__dict__.get("_lth_gradient", "masked"))
        if memo is not None:  # (None: read outside a call of the layer)
            memo[attr] = value
        return value

    def fset(self, value):
        # Keras layers whose build assigns `self.kernel = self.add_weight(...)`
        # (the transposed, depthwise and separable convolutions, the
        # recurrent cells): keep the variable as the raw value.
        prop = _base_property(type(self), attr)
        if prop is not None:
            if prop.fset is None:
                raise AttributeError(f"can't set attribute '{attr}'")
            prop.fset(self, value)
        else:
            self.__dict__[f"_lth_raw_{attr}"] = value

    return property(fget, fset, doc=f"`{attr}` times its mask (`{attr}_mask`).")


def _apply_mask(raw, mask, gradient):
    raw = ops.convert_to_tensor(raw)  # autocast inside `call` under mixed precision
    # The boolean mask, cast where it is used: under XLA the cast fuses into
    # the product (forward) and into the optimizer's update (the gradient
    # `g * mask`), which then read a byte of mask per weight instead of four.
    mask = ops.cast(mask, raw.dtype)
    if gradient == "dense":
        # The same value as `raw * mask` (exactly: r + (r - r) == r and
        # r + (0 - r) == 0), but the raw variable gets the dense gradient.
        return ops.add(raw, ops.stop_gradient(ops.multiply(raw, mask) - raw))
    return ops.multiply(raw, mask)


def _gradient_masked(raw, mask):
    """`raw` itself in the forward pass; its gradient is zero where `mask` is False.

    What zeroed layers compute with: no product in the forward pass, and one
    select on the gradient, done in place (the gradient's buffer is forwarded
    to the output). TensorFlow only, as `pruned_values="zeroed"` is.
    """
    import tensorflow as tf

    # Read here, not inside the custom gradient's function, which would then
    # see a variable (`ops.convert_to_tensor` may return the `tf.Variable`);
    # autocast inside `call` under mixed precision.
    raw = tf.convert_to_tensor(ops.convert_to_tensor(raw))
    mask = tf.convert_to_tensor(ops.convert_to_tensor(mask))

    # The mask is an input, not a capture: inside a recurrent layer's loop
    # the gradient function may not capture the loop body's tensors.
    @tf.custom_gradient
    def identity(x, keep):
        def grad(upstream):
            shape = upstream.shape
            zeros = (
                tf.zeros(shape, upstream.dtype)  # a constant once traced
                if shape.is_fully_defined()
                else tf.zeros_like(upstream)
            )
            # Select, not `tf.where` (SelectV2): on CPU without XLA, SelectV2
            # is the slower kernel even when no operand is broadcast.
            return tf.raw_ops.Select(condition=keep, x=upstream, y=zeros), None

        return tf.identity(x), grad

    return identity(raw, mask)


def mask_value(mask) -> np.ndarray:
    """The 0/1 float32 NumPy value of a mask variable (stored as bools)."""
    return ops.convert_to_numpy(mask).astype("float32")


def _create_masks(layer, owner):
    """Creates the masks of `layer` as weights of `owner` (itself or a composite)."""
    prefix = "" if owner is layer else f"{layer.name}_"
    for attr in type(layer).masked_attributes:
        raw = _raw(layer, attr)
        if not isinstance(raw, keras.Variable):
            raise ValueError(
                f"Layer '{layer.name}' ({type(layer).__name__}): expected "
                f"`{attr}` to be a variable after build, received "
                f"{type(raw).__name__} (LoRA or quantization enabled?)"
            )
        _attach(layer, owner, f"{attr}_mask", prefix, raw)
    bias = _raw(layer, "bias")
    if bias is not None:
        _attach(layer, owner, "bias_mask", prefix, bias)


def _attach(layer, owner, name, prefix, variable):
    mask = owner.add_weight(
        name=prefix + name,
        shape=tuple(variable.shape),
        initializer="ones",
        trainable=False,
        dtype="bool",
        autocast=False,
    )
    # Written past Keras's attribute tracking: the owner tracks the mask
    # (a composite's sublayers are already built and locked).
    layer.__dict__[name] = mask
    if variable.regularizer is not None and not isinstance(
        variable.regularizer, _MaskedRegularizer
    ):
        # A regularizer on the raw value would penalise pruned weights and,
        # through its gradient, change their raw values.
        variable.regularizer = _MaskedRegularizer(variable.regularizer, mask)


class _ZeroPruned:
    """A variable constraint: the variable's own `constraint`, then zeros where `mask` is 0."""

    def __init__(self, constraint, mask):
        self.constraint = constraint
        self.mask = mask

    def __call__(self, value):
        if self.constraint is not None:
            value = self.constraint(value)
        return ops.where(self.mask, value, 0.0)


def _set_zeroing(layer):
    """Installs (or removes) the zeroing constraint of each masked variable of `layer`.

    A zeroed layer has the constraint unless `hold_zeros_by_gradient`
    switched it off. Called from `build` too, before Keras marks the layer
    built.
    """
    zeroed = layer.pruned_values == "zeroed"
    constrained = zeroed and layer.__dict__.get("_lth_zero_by") != "gradient"
    for attr in (*type(layer).masked_attributes, "bias"):
        mask = layer.__dict__.get(f"{attr}_mask")
        if mask is None:  # no bias
            continue
        variable = _raw(layer, attr)
        current = variable.constraint
        if constrained and not isinstance(current, _ZeroPruned):
            variable.constraint = _ZeroPruned(current, mask)
        elif not constrained and isinstance(current, _ZeroPruned):
            variable.constraint = current.constraint
        if zeroed:
            _zero(variable, mask)


def hold_zeros_by_gradient(layer, on=True):
    """Whether a zeroed layer relies on its masked gradients alone to keep its zeros.

    A zeroed layer's pruned weights get a zero gradient; with `on=True` the
    zeroing constraint is removed, so nothing else sets them back to zero
    after an update. That is exact only if the optimizer moves no weight
    whose gradient is zero and whose slots are at their initial values,
    which `keras_lth.zeroing` (the `PruningScheduler`'s part) checks and
    maintains. `on=False` installs the constraint again. No effect on kept
    layers. Retrace the training function afterwards.
    """
    layer.__dict__["_lth_zero_by"] = "gradient" if on else "constraint"
    if f"{type(layer).masked_attributes[0]}_mask" in layer.__dict__:
        _set_zeroing(layer)


def _zero(variable, mask):
    """Sets the values of `variable` under the 0s of `mask` (a variable or a boolean array) to zero.

    Written only where a value there is not zero yet.
    """
    kept = np.asarray(ops.convert_to_numpy(mask), bool)
    if not kept.all():
        raw = ops.convert_to_numpy(variable)
        if (~kept & (raw != 0)).any():
            variable.assign(np.where(kept, raw, np.zeros((), raw.dtype)))


# ---------------------------------------------------------------------- #
# Kept layers' pruned values set aside (during a `PruningScheduler` run)
# ---------------------------------------------------------------------- #
_ASIDE = "_lth_aside"  # {id(raw variable): (pruned positions, their kept values)}


def set_pruned_values_aside(layer):
    """Moves a kept layer's pruned values to host memory, leaving zeros in the raw variables.

    The layer then computes as a zeroed layer does (the raw variable itself,
    its gradient masked in place: no product in the forward pass), while it
    still keeps its pruned values: saving writes them, a mask set back to 1
    finds its value, and `restore_pruned_values` puts them back. The
    `PruningScheduler` does this for the run's kept layers when the
    optimizer keeps zeros exactly as the kept layer keeps its values
    (`keras_lth.zeroing`); nothing else keeps the zeros, so an optimizer
    that moves weights whose gradient is zero would make the layer compute
    with them. TensorFlow backend only. Called again, it takes the masks as
    they are now (the values of weights pruned since are set aside, those
    of weights unpruned since come back) and adopts what was written since
    (`written_since_aside`): a non-zero value under a 0 mask becomes the
    pruned value, a zero there leaves the set-aside one (what `get_weights`
    read during the run and `set_weights` wrote back). Retrace the training
    function afterwards.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "`set_pruned_values_aside` needs the TensorFlow backend (the layer "
            "then masks its gradients with TensorFlow's custom gradients). "
            f"Received: backend={keras.backend.backend()!r}"
        )
    if layer.pruned_values != "kept" or layer.gradient_mode != "masked":
        raise ValueError(
            f"`set_pruned_values_aside` expected a layer with pruned_values='kept' "
            f"and gradient_mode='masked'. Received: layer '{layer.name}' with "
            f"pruned_values={layer.pruned_values!r}, gradient_mode={layer.gradient_mode!r}"
        )
    for w in layer._all_weights():
        _set_weight_aside(layer, w)


_ELIDED = "_lth_elided"  # ({attributes traced without the gradient select}, retrace)


def elide_full_masks(layer, retrace=None):
    """Lets a layer that masks its gradients in place skip the select of every mask without a 0.

    A zeroed layer, or a kept layer whose pruned values are set aside,
    computes with its raw variables and masks the gradient of each of them
    with one select, also where the mask has no 0 (the biases under weight
    pruning, every weight before the first pruning). Without XLA each
    select is an op of its own at every step: on a 2-core CPU the three
    kernels' selects cost 4-6% of a LeNet-300-100 step, the biases' about
    0.5% (`benchmarks/select_cost.py`). With `retrace`, the variables whose
    mask has no 0 now are traced without it (as a plain Keras layer's are);
    as soon as one of them gets a 0 it is traced with it again and
    `retrace()` is called, which must make the training function trace
    again before the next step (the `PruningScheduler` passes
    `model.make_train_function(force=True)`). That happens in `set_masks`,
    `set_pruned_values_aside` and `check_elided_masks`; a mask assigned
    directly (`layer.kernel_mask.assign`) is seen by the latter two only.
    `retrace=None` switches it off; retrace the training function then.

    Args:
        layer: A masked (sub)layer.
        retrace: A function of no argument, or `None`.
    """
    if retrace is None:
        layer.__dict__.pop(_ELIDED, None)
        return
    full = {w.name for w in layer._all_weights() if bool(ops.convert_to_numpy(ops.all(w.mask)))}
    layer.__dict__[_ELIDED] = (full, retrace)


def elided_masks(layer) -> set:
    """The attributes `layer` computes with now without a gradient select (`elide_full_masks`)."""
    elided = layer.__dict__.get(_ELIDED)
    return set(elided[0]) if elided is not None else set()


def check_elided_masks(layer):
    """Traces the gradient select again for any elided mask that was given a 0 directly.

    `set_masks` and `set_pruned_values_aside` see such a change themselves;
    this reads the elided masks (one reduction each, one value read back).
    """
    elided = layer.__dict__.get(_ELIDED)
    if not elided or not elided[0]:
        return
    weights = [w for w in layer._all_weights() if w.name in elided[0]]
    full = ops.convert_to_numpy(ops.stack([ops.all(w.mask) for w in weights]))
    for w, is_full in zip(weights, full):
        if not is_full:
            _unelide(layer, w.name)


def _unelide(layer, name):
    """The mask of `name` has a 0 now: its gradient select is traced again."""
    elided = layer.__dict__.get(_ELIDED)
    if elided is not None and name in elided[0]:
        elided[0].discard(name)
        elided[1]()


def _check_not_aside(layer, arg, value):
    if _ASIDE in layer.__dict__:
        raise ValueError(
            f"Layer '{layer.name}' has its pruned values set aside (a "
            "`PruningScheduler` run, or `set_pruned_values_aside`): it computes "
            f"with its raw variables until `restore_pruned_values(layer)`. "
            f"Received: {arg}={value!r} while they are aside"
        )


def restore_pruned_values(layer):
    """Writes back the values set aside by `set_pruned_values_aside`; the layer computes `raw * mask` again.

    Retrace the model's functions afterwards (`train_function`,
    `test_function`, `predict_function`): one traced while the values were
    set aside computes with the raw variables themselves.
    """
    aside = layer.__dict__.pop(_ASIDE, None)
    if not aside:
        return
    for w in layer._all_weights():
        entry = aside.get(id(w.variable))
        if entry is not None and entry[0].any():
            w.variable.assign(_with_aside(w.variable, entry))


def pruned_values_aside(layer) -> bool:
    """Whether `set_pruned_values_aside` holds `layer`'s pruned values now."""
    return _ASIDE in layer.__dict__


def kept_values(model, variables=None) -> list:
    """NumPy values of `variables` (default `model.weights`) with the pruned values set aside in place.

    What the raw variables hold under the product mechanism: the same as
    reading them, except during a `PruningScheduler` run, where kept layers
    may hold zeros under their masks (`set_pruned_values_aside`).
    """
    aside = {}
    for layer in masked_layers(model):
        aside.update(layer.__dict__.get(_ASIDE, {}))
    variables = model.weights if variables is None else variables
    return [_with_aside(v, aside.get(id(v))) for v in variables]


def _set_weight_aside(layer, w, mask=None):
    """Sets aside the values of `w` under its 0 mask (`mask`: its boolean value, when known).

    The raw variable ends with zeros under the mask and the weights' values
    elsewhere; it is written (whole) only where that changes a value.
    """
    aside = layer.__dict__.setdefault(_ASIDE, {})
    raw = ops.convert_to_numpy(w.variable)
    values = _merge_aside(raw, aside.get(id(w.variable)))
    pruned = ~(ops.convert_to_numpy(w.mask) if mask is None else np.asarray(mask, bool))
    if pruned.any():
        _unelide(layer, w.name)
    aside[id(w.variable)] = (pruned, values[pruned])
    target = np.where(pruned, np.zeros((), values.dtype), values)
    if (raw != target).any():
        # Whole: a scatter of the few changed positions would switch a
        # TensorFlow variable to copy-on-read, every later dense read of it
        # a copy (training steps 17-22% slower with jit off, measured).
        w.variable.assign(target)


def _with_aside(variable, entry):
    """The NumPy value of `variable` with its set-aside values (if any) in place."""
    return _merge_aside(ops.convert_to_numpy(variable), entry)


def _merge_aside(values, entry):
    """`values` (a raw variable's) with the set-aside values of `entry` in place.

    A set-aside position holds 0 in the raw variable unless something wrote
    to it since (`model.set_weights`, an `assign`): a value written there is
    the weight's value now, as it would be under `raw * mask`, and it wins.
    """
    if entry is not None and entry[0].any():
        values = values.copy()
        written = values[entry[0]]
        values[entry[0]] = np.where(written != 0, written, entry[1])
    return values


def written_since_aside(layer) -> bool:
    """Whether the raw variables or masks of a layer whose pruned values are aside were written from outside.

    Nothing in training changes them (the gradients are masked, the
    optimizer keeps zeros, the scheduler sets masks with `set_masks`): only
    a write such as `model.set_weights` or an `assign` does, leaving a
    non-zero raw value under a 0 mask, or a mask other than the one whose
    positions were set aside. The layer then computes with the raw
    variables as they are (written values included, set-aside values
    missing) until `set_pruned_values_aside(layer)` is called again, which
    adopts them. Two reductions on the device per masked variable (the
    set-aside positions go to the device to be compared), one value read
    back; `False` when nothing is aside.
    """
    aside = layer.__dict__.get(_ASIDE)
    if not aside:
        return False
    found = []
    for w in layer._all_weights():
        entry = aside.get(id(w.variable))
        if entry is None:
            continue
        pruned = ops.logical_not(w.mask)
        found.append(
            ops.logical_or(
                ops.any(ops.logical_and(pruned, ops.not_equal(w.variable, 0))),
                ops.any(ops.not_equal(pruned, entry[0])),  # the positions set aside
            )
        )
    return bool(found) and bool(ops.convert_to_numpy(ops.any(ops.stack(found))))


def zero_pruned(model):
    """Calls `zero_pruned()` on every masked layer of `model` with `pruned_values="zeroed"`."""
    for layer in masked_layers(model):
        if layer.pruned_values == "zeroed":
            layer.zero_pruned()


def _masked_class(base, attributes, bias=True):
    """Class decorator: one masked property per attribute of `base` (and its bias)."""

    def wrap(cls):
        cls.masked_attributes = tuple(attributes)
        cls._lth_masked_class = True
        cls.plain_class = base
        for attr in (*attributes, "bias") if bias else attributes:
            setattr(cls, attr, _masked_property(attr))
        return cls

    return wrap


class _MaskedRegularizer:
    """Applies `regularizer` to `value * mask` (pruned weights cost nothing)."""

    def __init__(self, regularizer, mask):
        self.regularizer = regularizer
        self.mask = mask

    def __call__(self, value):
        return self.regularizer(ops.multiply(value, ops.cast(self.mask, value.dtype)))

    def get_config(self):  # the variable's regularizer is not serialized; the layer's is
        return keras.regularizers.serialize(self.regularizer)


def _check_mask(mask, arg, shape, layer_name):
    mask = np.asarray(mask, dtype="float32")
    if tuple(mask.shape) != shape:
        raise ValueError(
            f"Received an invalid value for `{arg}` of layer '{layer_name}', "
            f"expected shape {shape}. Received: {arg}.shape={mask.shape}"
        )
    binary = (mask == 0.0) | (mask == 1.0)
    if not binary.all():
        bad = np.unique(mask[~binary])[:5]
        raise ValueError(
            f"Received an invalid value for `{arg}` of layer '{layer_name}', "
            f"expected only 0s and 1s. Received values such as {bad.tolist()}"
        )
    return mask


# ---------------------------------------------------------------------- #
# Leaf layers
# ---------------------------------------------------------------------- #
def _leaf(base, attributes=("kernel",), units=None, bias=True):
    def wrap(cls):
        cls = _masked_class(base, attributes, bias)(cls)
        if units is not None:
            cls._unit_view = units
        return keras.saving.register_keras_serializable(package="keras_lth")(cls)

    return wrap


def _last_axis_units(self, attr):
    shape = tuple(self.raw_variable(attr).shape)
    return shape, (len(shape) - 1,)


def _transpose_units(self, attr):
    # A transposed convolution's kernel is (*kernel_size, filters, in_channels).
    if attr == "bias":
        return tuple(self.raw_variable("bias").shape), (0,)
    shape = tuple(self.raw_variable(attr).shape)
    return shape, (len(shape) - 2,)


def _depthwise_units(self, attr):
    # (*kernel_size, in_channels, multiplier): output channel c * m + j.
    if attr == "bias":
        return tuple(self.raw_variable("bias").shape), (0,)
    shape = tuple(self.raw_variable(attr).shape)
    return shape, (len(shape) - 2, len(shape) - 1)


def _separable_units(self, attr):
    if attr == "depthwise_kernel":
        return None  # its outputs are the pointwise kernel's inputs
    return _last_axis_units(self, attr)


@_leaf(keras.layers.Dense)
class MaskedDense(MaskedLayer, keras.layers.Dense):
    """A `Dense` layer whose kernel and bias are multiplied by 0/1 masks.

    The layer computes `activation(inputs @ (kernel * kernel_mask) +
    bias * bias_mask)`. `bias_mask` is all ones unless whole neurons are
    pruned.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation function to use. Defaults to `None` (linear).
        use_bias: Boolean, whether the layer uses a bias vector.
            Defaults to `True`.
        pruned_values: `"kept"` (default) or `"zeroed"` (TensorFlow
            backend): what the raw variables hold under the masks; see
            `MaskedLayer.pruned_values`. Every masked layer takes it.
        **kwargs: The other arguments of `keras.layers.Dense`
            (initializers, regularizers, constraints, `name`, `dtype`, ...).
            LoRA and quantization are not supported.

    Masks are non-trainable boolean weights (`kernel_mask`, `bias_mask`),
    saved with the layer. `kernel` reads as `raw * mask`; the raw variable
    keeps the values of pruned weights, which receive no gradient. With
    `pruned_values="zeroed"`, `kernel` is the raw variable, which holds
    zeros under the mask.
    Regularizers apply to the effective (masked) weights. An optimizer's
    decoupled weight decay (`AdamW`, `weight_decay=`) acts on every raw value,
    pruned or not: use a regularizer when pruned raw values must be kept.

    Input shape:
        N-D tensor with shape `(batch_size, ..., input_dim)`.

    Output shape:
        N-D tensor with shape `(batch_size, ..., units)`.

    Example:

    >>> layer = MaskedDense(2)
    >>> y = layer(np.ones((1, 3)))
    >>> mask = np.array([[1, 0], [1, 0], [1, 1]], "float32")
    >>> layer.set_masks(mask)
    >>> round(layer.density(), 4)
    0.6667
    """

    def __init__(self, units, activation=None, use_bias=True, **kwargs):
        if isinstance(units, bool):  # `Dense` accepts `units=True`
            raise ValueError(
                "Received an invalid value for `units`, expected a positive "
                f"integer. Received: units={units!r}"
            )
        super().__init__(units, activation=activation, use_bias=use_bias, **kwargs)


@_leaf(keras.layers.EinsumDense)
class MaskedEinsumDense(MaskedLayer, keras.layers.EinsumDense):
    """An `EinsumDense` layer with masked kernel and bias.

    Its output units are the kernel axes that appear in the output of the
    equation (`"abc,cde->abde"`: the `d` x `e` heads and head dimensions of a
    query projection); structured pruning removes them with their bias.
    """

    def _unit_view(self, attr):
        inputs, kernel_letters, output = _parse_einsum(self.equation)
        if attr == "bias":
            return None  # see `bias_mask_for`
        shape = tuple(self.raw_variable(attr).shape)
        axes = tuple(i for i, c in enumerate(kernel_letters) if c in output)
        return (shape, axes) if axes else None

    def bias_mask_for(self, alive):
        _, kernel_letters, output = _parse_einsum(self.equation)
        kernel_shape = tuple(self.raw_variable("kernel").shape)
        unit_letters = [c for c in kernel_letters if c in output]
        unit_shape = [kernel_shape[kernel_letters.index(c)] for c in unit_letters]
        alive = np.asarray(alive, bool).reshape(unit_shape)
        bias_axes = self.bias_axes or ""
        # A bias entry serves every unit that differs only in letters it
        # does not have: it stays while one of them does.
        drop = tuple(i for i, c in enumerate(unit_letters) if c not in bias_axes)
        alive = alive.any(axis=drop) if drop else alive
        kept = [c for c in unit_letters if c in bias_axes]
        first = min(output.index(c) for c in bias_axes)
        spec = output[first:]
        order = [kept.index(c) for c in spec if c in kept]
        alive = np.transpose(alive, order) if order else alive
        shape = [alive.shape[order.index(kept.index(c))] if c in kept else 1 for c in spec]
        bias_shape = tuple(self.raw_variable("bias").shape)
        return np.broadcast_to(alive.reshape(shape), bias_shape).astype(np.float32)


def _parse_einsum(equation):
    match = re.fullmatch(r"\s*([a-zA-Z.]+),([a-zA-Z.]+)->([a-zA-Z.]+)\s*", equation)
    if match is None:
        raise ValueError(f"Cannot parse the einsum equation {equation!r}")
    return match.groups()


@_leaf(keras.layers.Conv1D)
class MaskedConv1D(MaskedLayer, keras.layers.Conv1D):
    """A `Conv1D` layer with masked kernel and bias.

    Structured pruning (`structure="neuron"`) removes filters: output
    channels, with their bias.
    """


@_leaf(keras.layers.Conv2D)
class MaskedConv2D(MaskedLayer, keras.layers.Conv2D):
    """A `Conv2D` layer with masked kernel and bias.

    Structured pruning (`structure="neuron"`) removes filters: output
    channels, with their bias.
    """


@_leaf(keras.layers.Conv3D)
class MaskedConv3D(MaskedLayer, keras.layers.Conv3D):
    """A `Conv3D` layer with masked kernel and bias.

    Structured pruning (`structure="neuron"`) removes filters: output
    channels, with their bias.
    """


@_leaf(keras.layers.Conv1DTranspose, units=_transpose_units)
class MaskedConv1DTranspose(MaskedLayer, keras.layers.Conv1DTranspose):
    """A `Conv1DTranspose` layer with masked kernel and bias.

    Structured pruning (`structure="neuron"`) removes filters: output
    channels, with their bias.
    """


@_leaf(keras.layers.Conv2DTranspose, units=_transpose_units)
class MaskedConv2DTranspose(MaskedLayer, keras.layers.Conv2DTranspose):
    """A `Conv2DTranspose` layer with masked kernel and bias.

    Structured pruning (`structure="neuron"`) removes filters: output
    channels, with their bias.
    """


@_leaf(keras.layers.Conv3DTranspose, units=_transpose_units)
class MaskedConv3DTranspose(MaskedLayer, keras.layers.Conv3DTranspose):
    """A `Conv3DTranspose` layer with masked kernel and bias.

    Structured pruning (`structure="neuron"`) removes filters: output
    channels, with their bias.
    """


@_leaf(keras.layers.DepthwiseConv1D, units=_depthwise_units)
class MaskedDepthwiseConv1D(MaskedLayer, keras.layers.DepthwiseConv1D):
    """A `DepthwiseConv1D` layer with masked kernel and bias.

    Structured pruning (`structure="neuron"`) removes filters: output
    channels, with their bias.
    """


@_leaf(keras.layers.DepthwiseConv2D, units=_depthwise_units)
class MaskedDepthwiseConv2D(MaskedLayer, keras.layers.DepthwiseConv2D):
    """A `DepthwiseConv2D` layer with masked kernel and bias.

    Structured pruning (`structure="neuron"`) removes filters: output
    channels, with their bias.
    """


@_leaf(
    keras.layers.SeparableConv1D,
    ("depthwise_kernel", "pointwise_kernel"),
    units=_separable_units,
)
class MaskedSeparableConv1D(MaskedLayer, keras.layers.SeparableConv1D):
    """A `SeparableConv1D` layer with masked depthwise and pointwise kernels.

    `set_masks(kernel_mask, ...)` takes the depthwise kernel's mask first;
    pass `pointwise_kernel_mask=` for the other. Structured pruning removes
    filters (the pointwise kernel's output channels, with their bias) and
    leaves the depthwise kernel as it is.
    """


@_leaf(
    keras.layers.SeparableConv2D,
    ("depthwise_kernel", "pointwise_kernel"),
    units=_separable_units,
)
class MaskedSeparableConv2D(MaskedLayer, keras.layers.SeparableConv2D):
    """A `SeparableConv2D` layer with masked depthwise and pointwise kernels.

    `set_masks(kernel_mask, ...)` takes the depthwise kernel's mask first;
    pass `pointwise_kernel_mask=` for the other. Structured pruning removes
    filters (the pointwise kernel's output channels, with their bias) and
    leaves the depthwise kernel as it is.
    """


@_leaf(keras.layers.Embedding, ("embeddings",), bias=False)
class MaskedEmbedding(MaskedLayer, keras.layers.Embedding):
    """An `Embedding` layer with a masked embedding table.

    Weight pruning removes single entries of the `(input_dim, output_dim)`
    table. Structured pruning (`structure="neuron"`) removes output
    dimensions (columns of the table), so that `compact` can narrow the
    layer and everything that reads it; pruning vocabulary rows would only
    map some tokens to zero vectors.
    """


# ---------------------------------------------------------------------- #
# Composite layers
# ---------------------------------------------------------------------- #
def _adopt(owner, sublayer, masked_class, key):
    """Turns a built Keras sublayer into `masked_class`, masks owned by `owner`.

    The Keras composite creates and builds its sublayers in one `build`, so
    they cannot be created masked; their class is changed instead (the
    masked class adds only properties and methods, no state of its own).
    """
    if type(sublayer) is not masked_class.plain_class:
        raise ValueError(
            f"Layer '{owner.name}': expected its sublayer '{sublayer.name}' "
            f"to be a `{masked_class.plain_class.__name__}`. Received: "
            f"{type(sublayer).__name__}"
        )
    sublayer.__class__ = masked_class
    for attr in (*masked_class.masked_attributes, "bias"):
        # An attribute the Keras build assigned now sits behind the masked
        # property; keep the variable where the property reads it.
        if attr in sublayer.__dict__:
            sublayer.__dict__[f"_lth_raw_{attr}"] = sublayer.__dict__.pop(attr)
    sublayer.__dict__["_lth_owned"] = (
        True  # a flag: a reference to the owner would make a cycle that saving walks
    )
    sublayer.__dict__["_lth_key"] = key
    sublayer.__dict__["_lth_pruned"] = owner.__dict__.get("_lth_pruned", "kept")
    _create_masks(sublayer, owner)
    _set_zeroing(sublayer)


class _CompositeMixin(_PrunedValuesArgument):
    """Saving and stripping for layers whose masks live on their sublayers."""

    @_PrunedValuesArgument.pruned_values.setter
    def pruned_values(self, mode):
        check_pruned_values(mode)
        dense = [s.name for s in self.masked_sublayers() if s.gradient_mode == "dense"]
        if mode == "zeroed" and dense:  # checked before any sublayer changes
            raise ValueError(
                f"Layer '{self.name}': sublayers {dense} train with "
                "gradient_mode='dense' (a re-introduction strategy), which needs "
                f"the pruned values. Received: pruned_values={mode!r}"
            )
        for sub in self.masked_sublayers():
            sub.pruned_values = mode
        self.__dict__["_lth_pruned"] = mode

    def masked_sublayers(self) -> list:
        """The masked sublayers, in order."""
        return [s for s in self._sublayer_slots() if s is not None]

    def effective_weights(self) -> list:
        """`get_weights()` of the plain Keras layer: masks applied, masks left out."""
        masks = {}
        for s in self.masked_sublayers():
            for w in s._all_weights():
                masks[id(w.variable)] = w.mask
        mask_ids = {id(m) for m in masks.values()}
        out = []
        for v in self.weights:
            if id(v) in mask_ids:
                continue
            value = ops.convert_to_numpy(v)
            if id(v) in masks:
                value = value * ops.convert_to_numpy(masks[id(v)]).astype(value.dtype)
            out.append(value)
        return out

    def enable_lora(self, *args, **kwargs):
        raise NotImplementedError(f"`{type(self).__name__}` does not support LoRA.")

    def quantize(self, *args, **kwargs):
        raise NotImplementedError(
            f"`{type(self).__name__}` cannot be quantized; call "
            "`keras_lth.strip(model)` first and quantize the plain layers."
        )


@keras.saving.register_keras_serializable(package="keras_lth")
class MaskedMultiHeadAttention(_CompositeMixin, keras.layers.MultiHeadAttention):
    """A `MultiHeadAttention` whose four projections are masked.

    The query, key, value and output projections (`EinsumDense` sublayers)
    become `MaskedEinsumDense` when the layer is built; their masks are
    weights of this layer (`query_kernel_mask`, `query_bias_mask`, ...).
    Pruning treats each projection as a layer of its own, named
    `"<this layer>/query"` and so on; structured pruning removes a
    projection's units (head x head-dimension entries for the query, key
    and value projections, output features for the output projection).

    Args:
        *args, **kwargs: The arguments of `keras.layers.MultiHeadAttention`.
    """

    def build(self, query_shape, value_shape, key_shape=None):
        super().build(query_shape, value_shape, key_shape)
        for sub in self._projections():
            _adopt(self, sub, MaskedEinsumDense, f"{self.name}/{sub.name}")

    def _projections(self):
        # query, key, value (and the gate, if any) and output projections
        plain = (keras.layers.EinsumDense, MaskedEinsumDense)
        return [s for s in sublayers(self) if type(s) in plain]

    def _sublayer_slots(self):
        return self._projections() if self.built else []


def _rnn_units(gates):
    def units(self, attr):
        if attr == "bias":
            shape = tuple(self.raw_variable("bias").shape)
            return shape[:-1] + (gates, shape[-1] // gates), (len(shape),)
        shape = tuple(self.raw_variable(attr).shape)
        return (shape[0], gates, shape[1] // gates), (2,)

    return units


def _masked_cell(base, gates):
    @_masked_class(base, ("kernel", "recurrent_kernel"))
    class Cell(MaskedLayer, base):
        pass

    Cell._unit_view = _rnn_units(gates)
    Cell.__name__ = Cell.__qualname__ = f"Masked{base.__name__}"
    Cell.__module__ = __name__
    Cell.__doc__ = (
        f"`{base.__name__}` with masked kernels; made by `Masked"
        f"{base.__name__[:-4]}`, which owns its masks."
    )
    return Cell


MaskedLSTMCell = _masked_cell(keras.layers.LSTMCell, 4)
MaskedGRUCell = _masked_cell(keras.layers.GRUCell, 3)
MaskedSimpleRNNCell = _masked_cell(keras.layers.SimpleRNNCell, 1)


class _MaskedRNN(_CompositeMixin):
    _cell_class = None

    def build(self, sequences_shape, initial_state_shape=None):
        super().build(sequences_shape, initial_state_shape)
        _adopt(self, self.cell, self._cell_class, self.name)

    def _sublayer_slots(self):
        return [self.cell] if self.built else []


@keras.saving.register_keras_serializable(package="keras_lth")
class MaskedLSTM(_MaskedRNN, keras.layers.LSTM):
    """A `LSTM` layer with masked input and recurrent kernels.

    Its cell becomes a `MaskedLSTMCell` when the layer is built; the masks
    (`kernel_mask`, `recurrent_kernel_mask`, `bias_mask`) are weights of this
    layer. Pruning sees one layer named like this one. A unit (neuron) of
    the layer is a hidden state entry: structured pruning removes its
    columns in every gate of both kernels and its biases, so that its state
    stays zero.

    Args:
        *args, **kwargs: The arguments of `keras.layers.LSTM`.
    """

    _cell_class = MaskedLSTMCell


@keras.saving.register_keras_serializable(package="keras_lth")
class MaskedGRU(_MaskedRNN, keras.layers.GRU):
    """A `GRU` layer with masked input and recurrent kernels.

    Its cell becomes a `MaskedGRUCell` when the layer is built; the masks
    (`kernel_mask`, `recurrent_kernel_mask`, `bias_mask`) are weights of this
    layer. Pruning sees one layer named like this one. A unit (neuron) of
    the layer is a hidden state entry: structured pruning removes its
    columns in every gate of both kernels and its biases, so that its state
    stays zero.

    Args:
        *args, **kwargs: The arguments of `keras.layers.GRU`.
    """

    _cell_class = MaskedGRUCell


@keras.saving.register_keras_serializable(package="keras_lth")
class MaskedSimpleRNN(_MaskedRNN, keras.layers.SimpleRNN):
    """A `SimpleRNN` layer with masked input and recurrent kernels.

    Its cell becomes a `MaskedSimpleRNNCell` when the layer is built; the masks
    (`kernel_mask`, `recurrent_kernel_mask`, `bias_mask`) are weights of this
    layer. Pruning sees one layer named like this one. A unit (neuron) of
    the layer is a hidden state entry: structured pruning removes its
    columns in every gate of both kernels and its biases, so that its state
    stays zero.

    Args:
        *args, **kwargs: The arguments of `keras.layers.SimpleRNN`.
    """

    _cell_class = MaskedSimpleRNNCell


for _composite, _plain in (
    (MaskedMultiHeadAttention, keras.layers.MultiHeadAttention),
    (MaskedLSTM, keras.layers.LSTM),
    (MaskedGRU, keras.layers.GRU),
    (MaskedSimpleRNN, keras.layers.SimpleRNN),
):
    _composite.plain_class = _plain

#: Keras class -> masked class, for `keras_lth.prunable`.
MASKED_CLASSES = {
    cls.plain_class: cls
    for cls in (
        MaskedDense,
        MaskedEinsumDense,
        MaskedConv1D,
        MaskedConv2D,
        MaskedConv3D,
        MaskedConv1DTranspose,
        MaskedConv2DTranspose,
        MaskedConv3DTranspose,
        MaskedDepthwiseConv1D,
        MaskedDepthwiseConv2D,
        MaskedSeparableConv1D,
        MaskedSeparableConv2D,
        MaskedEmbedding,
        MaskedMultiHeadAttention,
        MaskedLSTM,
        MaskedGRU,
        MaskedSimpleRNN,
    )
}


# ---------------------------------------------------------------------- #
# Finding masked layers
# ---------------------------------------------------------------------- #
def sublayers(layer) -> list:
    """All sublayers of `layer`, depth first, in the order they were added.

    Keras has no public recursive listing for a layer that is not a model;
    this is the one place that reads the layer tree (`_flatten_layers`,
    non-recursive, visited in order: the recursive form visits nested
    layers in reverse).
    """
    out, seen = [], set()

    def visit(parent):
        for sub in parent._flatten_layers(include_self=False, recursive=False):
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            out.append(sub)
            visit(sub)

    visit(layer)
    return out


def masked_layers(model) -> list:
    """The masked layers of `model`, nested models included, in order.

    These are the layers that pruning works on: every leaf masked layer,
    and the masked sublayers of composite layers (the projections of a
    `MaskedMultiHeadAttention`, the cell of a `MaskedLSTM`). Unbuilt
    composites contribute nothing yet.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), MaskedDense(3), MaskedDense(2)])
    >>> [l.units for l in masked_layers(model)]
    [3, 2]
    """
    candidates = [model] + sublayers(model)
    return [l for l in candidates if isinstance(l, MaskedLayer)]


def masked_weights(model) -> list:
    """Every `MaskedWeight` (biases excluded) of the built masked layers."""
    layers = masked_layers(model)
    unbuilt = [l.name for l in layers if f"{l.masked_attributes[0]}_mask" not in l.__dict__]
    if unbuilt:
        raise ValueError(
            f"Masked layers {unbuilt} are not built yet, so they have no "
            "masks: build the model (or call it on an input) first."
        )
    return [w for l in layers for w in l.masked_weights]


def density(model, per_layer: bool = False):
    """Fraction of prunable weights remaining (biases excluded).

    Args:
        model: A model (or layer) containing masked layers.
        per_layer: Also return a `{layer key: density}` dict (see
            `layer_key`).

    Returns:
        The overall density as a float, or `(overall, per_layer_dict)`.
    """
    layers = masked_layers(model)
    if not layers:
        raise ValueError(
            "Expected a model with at least one masked layer (MaskedDense, "
            "MaskedConv2D, ... or a model converted by `keras_lth.prunable`). "
            f"Received: model '{getattr(model, 'name', model)}' has none"
        )
    weights = masked_weights(model)
    kept, sizes = {}, {}
    for w in weights:
        key = layer_key(w.layer)
        kept[key] = kept.get(key, 0.0) + float(np.sum(ops.convert_to_numpy(w.mask)))
        sizes[key] = sizes.get(key, 0) + math.prod(w.mask.shape)
    overall = sum(kept.values()) / sum(sizes.values())
    if per_layer:
        return overall, {n: kept[n] / sizes[n] for n in kept}
    return overall
