"""keras-lth 0.1.0's `MaskedDense`, kept for the overhead benchmark's
same-process comparison ("masked Dense is no slower than 0.1.0").

The `build` and `call` of `keras_lth/layers.py` at commit 2a37198^ (version
0.1.0, the last commit before one mask mechanism for every family), minus the thread-local override machinery of its
re-introduction step (a dictionary lookup at trace time, not in the traced
step) and the masked regularizers (the benchmark uses none). Not part of the
package: nothing imports it but `overhead.py`.
"""

from __future__ import annotations

import keras
from keras import ops


class MaskedDense010(keras.layers.Dense):
    """0.1.0's layer: `activation(inputs @ (kernel * kernel_mask) + bias * bias_mask)`."""

    def build(self, input_shape):
        super().build(input_shape)
        self.kernel_mask = self.add_weight(
            name="kernel_mask", shape=self._kernel.shape, initializer="ones", trainable=False
        )
        self.bias_mask = (
            self.add_weight(
                name="bias_mask", shape=(self.units,), initializer="ones", trainable=False
            )
            if self.use_bias
            else None
        )

    def call(self, inputs, training=None):
        kernel_mask = ops.cast(self.kernel_mask, self._kernel.dtype)
        kernel = ops.multiply(self._kernel, kernel_mask)
        x = ops.matmul(inputs, ops.cast(kernel, inputs.dtype))
        if self.bias is not None:
            bias = self.bias
            if self.bias_mask is not None:
                bias = ops.multiply(bias, ops.cast(self.bias_mask, self.bias.dtype))
            x = ops.add(x, ops.cast(bias, x.dtype))
        if self.activation is not None:
            x = self.activation(x)
        return x
