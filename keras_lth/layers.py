"""Masked layers: the prunable building blocks of keras-lth."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="keras_lth")
class MaskedDense(keras.layers.Dense):
    """A `Dense` layer whose kernel (and bias) are multiplied by 0/1 masks.

    The layer computes `activation(inputs @ (kernel * kernel_mask) +
    bias * bias_mask)`. The masks are non-trainable weights, so they are saved
    and loaded with the model and mirrored under a `tf.distribute` strategy.
    Pruning only ever writes the masks: the raw value of a pruned weight stays
    in `kernel` (it receives no gradient while masked), so algorithms that
    score or re-introduce pruned weights can still read it. `bias_mask` is
    all ones unless whole neurons are pruned.

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
        for arg in ("lora_rank", "quantization_config"):
            if kwargs.get(arg) is not None:
                raise ValueError(
                    f"`MaskedDense` does not support `{arg}`. "
                    f"Received: {arg}={kwargs[arg]!r}"
                )
        super().__init__(units, activation=activation, use_bias=use_bias, **kwargs)

    def build(self, input_shape):
        super().build(input_shape)
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

    def call(self, inputs, training=None):
        kernel = ops.multiply(self._kernel, ops.cast(self.kernel_mask, self._kernel.dtype))
        x = ops.matmul(inputs, ops.cast(kernel, inputs.dtype))
        if self.bias is not None:
            bias = ops.multiply(self.bias, ops.cast(self.bias_mask, self.bias.dtype))
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

    # Dense stores only kernel and bias; the masks must travel too.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def set_masks(self, kernel_mask, bias_mask=None):
        """Assigns the kernel mask and (optionally) the bias mask."""
        kernel_mask = np.asarray(kernel_mask, dtype="float32")
        if tuple(kernel_mask.shape) != tuple(self.kernel_mask.shape):
            raise ValueError(
                f"Expected `kernel_mask` of shape {tuple(self.kernel_mask.shape)} "
                f"for layer '{self.name}'. Received: shape {kernel_mask.shape}"
            )
        self.kernel_mask.assign(kernel_mask)
        if bias_mask is not None:
            if self.bias_mask is None:
                raise ValueError(
                    f"Layer '{self.name}' has no bias (use_bias=False). "
                    "Received a `bias_mask`."
                )
            bias_mask = np.asarray(bias_mask, dtype="float32")
            if tuple(bias_mask.shape) != (self.units,):
                raise ValueError(
                    f"Expected `bias_mask` of shape {(self.units,)} for layer "
                    f"'{self.name}'. Received: shape {bias_mask.shape}"
                )
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


def masked_layers(model) -> list:
    """All `MaskedDense` layers of `model`, nested models included, in order."""
    if isinstance(model, MaskedDense):
        return [model]
    return [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, MaskedDense)
    ]


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
    kept = {l.name: float(np.sum(ops.convert_to_numpy(l.kernel_mask))) for l in layers}
    sizes = {l.name: int(np.prod(l.kernel_mask.shape)) for l in layers}
    overall = sum(kept.values()) / sum(sizes.values())
    if per_layer:
        return overall, {n: kept[n] / sizes[n] for n in kept}
    return overall
