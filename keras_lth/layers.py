"""Masked layers: the prunable building blocks of keras-lth."""

from __future__ import annotations

import contextlib
import threading

import keras
import numpy as np
from keras import ops

# Per-thread overrides of how `MaskedDense.call` builds its kernel, set by
# `keras_lth.training` while it traces a training step. Thread-local because
# `tf.distribute.MirroredStrategy` traces each replica's step in its own
# thread.
_local = threading.local()


def _overrides():
    if not hasattr(_local, "masks"):
        _local.masks, _local.dense_gradient = {}, set()
    return _local


@contextlib.contextmanager
def masks_overridden(masks):
    """Within the block, layers call with other masks (traced code only).

    Args:
        masks: `{layer: (kernel_mask, bias_mask)}` with tensors; a `None`
            bias mask means no bias mask.
    """
    state = _overrides()
    saved = dict(state.masks)
    state.masks.update({id(layer): value for layer, value in masks.items()})
    try:
        yield
    finally:
        state.masks = saved


@contextlib.contextmanager
def dense_gradient(layers):
    """Within the block, `layers` forward `kernel * mask` but pass the dense
    gradient to the raw kernel (a straight-through estimator): the gradient
    of the raw kernel is then `dL/d(kernel * mask)` at every position."""
    state = _overrides()
    saved = set(state.dense_gradient)
    state.dense_gradient.update(id(layer) for layer in layers)
    try:
        yield
    finally:
        state.dense_gradient = saved


@keras.saving.register_keras_serializable(package="keras_lth")
class MaskedDense(keras.layers.Dense):
    """A `Dense` layer whose kernel (and bias) are multiplied by 0/1 masks.

    The layer computes `activation(inputs @ (kernel * kernel_mask) +
    bias * bias_mask)`. The masks are non-trainable weights, so they are saved
    and loaded with the model and mirrored under a `tf.distribute` strategy.
    Pruning only ever writes the masks: the raw value of a pruned weight stays
    in `kernel` (it receives no gradient while masked), so algorithms that
    score or re-introduce pruned weights can still read it. `bias_mask` is
    all ones unless whole neurons are pruned. Kernel and bias regularizers are
    applied to the effective (masked) weights, so pruned weights add no
    penalty and no gradient. An optimizer's decoupled weight decay
    (`weight_decay=...`, `AdamW`) is applied by the optimizer to every raw
    value, pruned or not: use a regularizer instead when the raw values of
    pruned weights must be kept.

    Masks are written by `keras_lth.PruningScheduler` (or by hand with
    `set_masks`). `keras_lth.strip` turns the layer back into a plain `Dense`
    with the masked weights zeroed.

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation function to use. Defaults to `None` (linear).
        use_bias: Boolean, whether the layer uses a bias vector.
            Defaults to `True`.
        kernel_initializer: Initializer for the kernel. Defaults to
            `"glorot_uniform"`.
        bias_initializer: Initializer for the bias. Defaults to `"zeros"`.
        **kwargs: The other arguments of `keras.layers.Dense` (regularizers,
            constraints, `name`, `dtype`, ...). LoRA and quantization are not
            supported.

    Input shape:
        N-D tensor with shape `(batch_size, ..., input_dim)`.

    Output shape:
        N-D tensor with shape `(batch_size, ..., units)`.

    Example:

    >>> layer = MaskedDense(2)
    >>> y = layer(np.ones((1, 3)))
    >>> mask = np.array([[1, 0], [1, 0], [1, 1]], "float32")
    >>> layer.set_masks(mask)
    >>> float(layer.density())
    0.6666666865348816
    """

    def __init__(self, units, activation=None, use_bias=True, **kwargs):
        if isinstance(units, bool):  # `Dense` accepts `units=True`
            raise ValueError(
                "Received an invalid value for `units`, expected a positive "
                f"integer. Received: units={units!r}"
            )
        for arg in ("lora_rank", "quantization_config"):
            if kwargs.get(arg) is not None:
                raise ValueError(
                    f"`MaskedDense` does not support `{arg}`. Received: {arg}={kwargs[arg]!r}"
                )
        super().__init__(units, activation=activation, use_bias=use_bias, **kwargs)
        self.kernel_score = None

    def build(self, input_shape):
        super().build(input_shape)
        self.kernel_score = None  # added by `add_scores` when needed
        self.kernel_mask = self.add_weight(
            name="kernel_mask",
            shape=self._kernel.shape,
            initializer="ones",
            trainable=False,
        )
        if self.use_bias:
            self.bias_mask = self.add_weight(
                name="bias_mask",
                shape=(self.units,),
                initializer="ones",
                trainable=False,
            )
        else:
            self.bias_mask = None
        # A regularizer on the raw kernel would penalise pruned weights and,
        # through its gradient, change their raw values; it sees the
        # effective (masked) weights instead.
        if self.kernel_regularizer is not None:
            self._kernel.regularizer = _MaskedRegularizer(self.kernel_regularizer, self.kernel_mask)
        if self.use_bias and self.bias_regularizer is not None:
            self.bias.regularizer = _MaskedRegularizer(self.bias_regularizer, self.bias_mask)

    def call(self, inputs, training=None):
        kernel_mask, bias_mask = self.kernel_mask, self.bias_mask
        state = _overrides()
        if id(self) in state.masks:
            kernel_mask, bias_mask = state.masks[id(self)]
        kernel_mask = ops.cast(kernel_mask, self._kernel.dtype)
        if id(self) in state.dense_gradient:
            # Same value as `kernel * mask` (exactly: k + (k - k) == k and
            # k + (0 - k) == 0), but the raw kernel gets the dense gradient.
            kernel = ops.add(
                self._kernel,
                ops.stop_gradient(ops.multiply(self._kernel, kernel_mask) - self._kernel),
            )
        else:
            kernel = ops.multiply(self._kernel, kernel_mask)
        x = ops.matmul(inputs, ops.cast(kernel, inputs.dtype))
        if self.bias is not None:
            bias = self.bias
            if bias_mask is not None:
                bias = ops.multiply(bias, ops.cast(bias_mask, self.bias.dtype))
            x = ops.add(x, ops.cast(bias, x.dtype))
        if self.activation is not None:
            x = self.activation(x)
        return x

    def enable_lora(self, *args, **kwargs):
        raise NotImplementedError("`MaskedDense` does not support LoRA.")

    def quantize(self, *args, **kwargs):
        raise NotImplementedError(
            "`MaskedDense` cannot be quantized; call `keras_lth.strip(model)` "
            "first and quantize the plain `Dense` layers."
        )

    # Dense stores only kernel and bias; the masks (and scores) must travel too.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        # A layer saved while `ScoredPruning` trained it has one more
        # variable, its scores: add them before loading.
        if self.built and self.kernel_score is None:
            if len(store.keys()) == len(self.weights) + 1:
                self.add_scores()
        keras.layers.Layer.load_own_variables(self, store)

    def add_scores(self):
        """Adds `kernel_score`, a non-trainable per-weight score (float32).

        Used by `keras_lth.ScoredPruning`; a no-op if the layer has scores.
        Under a distribution strategy, call it inside `strategy.scope()`.
        """
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' is not built yet: build the model before adding scores."
            )
        if self.kernel_score is not None:
            return self.kernel_score
        locked = self._tracker.locked
        self._tracker.unlock()
        try:
            self.kernel_score = self.add_weight(
                name="kernel_score",
                shape=self._kernel.shape,
                initializer="zeros",
                trainable=False,
                dtype="float32",
                # the training step adds increments already summed over
                # replicas; every replica holds the same scores
                aggregation="only_first_replica",
            )
        finally:
            if locked:
                self._tracker.lock()
        return self.kernel_score

    def set_masks(self, kernel_mask, bias_mask=None):
        """Assigns the kernel mask and (optionally) the bias mask.

        Args:
            kernel_mask: 0/1 array of the kernel's shape `(input_dim, units)`.
            bias_mask: Optional 0/1 array of shape `(units,)`. Left as it is
                when `None`.
        """
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' is not built yet, so it has no masks: "
                "call it on an input (or build the model) before `set_masks`."
            )
        kernel_mask = _check_mask(
            kernel_mask, "kernel_mask", tuple(self.kernel_mask.shape), self.name
        )
        if bias_mask is not None:
            if self.bias_mask is None:
                raise ValueError(
                    f"Layer '{self.name}' has no bias (use_bias=False). "
                    f"Received: bias_mask={bias_mask!r}"
                )
            bias_mask = _check_mask(bias_mask, "bias_mask", (self.units,), self.name)
        self.kernel_mask.assign(kernel_mask)
        if bias_mask is not None:
            self.bias_mask.assign(bias_mask)

    def density(self):
        """Fraction of the kernel's weights that are kept."""
        return ops.mean(self.kernel_mask)

    def effective_weights(self):
        """`[kernel * kernel_mask, bias * bias_mask]` as NumPy arrays."""
        kernel = ops.convert_to_numpy(self._kernel) * ops.convert_to_numpy(self.kernel_mask)
        if self.bias is None:
            return [kernel]
        return [kernel, ops.convert_to_numpy(self.bias) * ops.convert_to_numpy(self.bias_mask)]


class _MaskedRegularizer:
    """Applies `regularizer` to `value * mask` (pruned weights cost nothing)."""

    def __init__(self, regularizer, mask):
        self.regularizer = regularizer
        self.mask = mask

    def __call__(self, value):
        return self.regularizer(ops.multiply(value, ops.cast(self.mask, value.dtype)))


def _check_mask(mask, arg, shape, layer_name):
    mask = np.asarray(mask, dtype="float32")
    if tuple(mask.shape) != shape:
        raise ValueError(
            f"Received an invalid value for `{arg}` of layer '{layer_name}', "
            f"expected shape {shape}. Received: {arg}.shape={mask.shape}"
        )
    if not np.isin(mask, (0.0, 1.0)).all():
        bad = np.unique(mask[~np.isin(mask, (0.0, 1.0))])[:5]
        raise ValueError(
            f"Received an invalid value for `{arg}` of layer '{layer_name}', "
            f"expected only 0s and 1s. Received values such as {bad.tolist()}"
        )
    return mask


def _sublayers(layer) -> list:
    """All sublayers of `layer`, depth first, in the order they were added.

    `Layer._flatten_layers` visits nested layers in reverse order (it uses
    `deque.extendleft`), which would put a nested model's layers backwards.
    """
    out, seen = [], set()

    def visit(parent):
        for sub in parent._layers:
            if id(sub) in seen:
                continue
            seen.add(id(sub))
            out.append(sub)
            visit(sub)

    visit(layer)
    return out


def masked_layers(model) -> list:
    """All `MaskedDense` layers of `model`, nested models included, in order.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), MaskedDense(3), MaskedDense(2)])
    >>> [l.units for l in masked_layers(model)]
    [3, 2]
    """
    if isinstance(model, MaskedDense):
        return [model]
    return [layer for layer in _sublayers(model) if isinstance(layer, MaskedDense)]


def density(model, per_layer: bool = False):
    """Fraction of prunable weights remaining (kernels of `MaskedDense` layers).

    Args:
        model: a model (or layer) containing `MaskedDense` layers.
        per_layer: also return a `{layer name: density}` dict.

    Returns:
        The overall density as a float, or `(overall, per_layer_dict)`.
    """
    layers = masked_layers(model)
    if not layers:
        raise ValueError(
            "Expected a model with at least one `MaskedDense` layer. "
            f"Received: model '{getattr(model, 'name', model)}' has none"
        )
    unbuilt = [l.name for l in layers if not l.built]
    if unbuilt:
        raise ValueError(
            f"`MaskedDense` layers {unbuilt} are not built yet, so they have "
            "no masks: build the model (or call it on an input) first."
        )
    kept = {l.name: float(np.sum(ops.convert_to_numpy(l.kernel_mask))) for l in layers}
    sizes = {l.name: int(np.prod(l.kernel_mask.shape)) for l in layers}
    overall = sum(kept.values()) / sum(sizes.values())
    if per_layer:
        return overall, {n: kept[n] / sizes[n] for n in kept}
    return overall
