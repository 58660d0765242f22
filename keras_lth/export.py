"""From a pruned model to a deployable one: `strip` and `compact`."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_lth.layers import MaskedDense, masked_layers

def _dense_config(layer):
    config = layer.get_config()
    config.pop("lora_rank", None)
    config.pop("lora_alpha", None)
    config.pop("quantization_config", None)
    return config


def strip(model):
    """A plain-Keras copy of `model`: `MaskedDense` -> `Dense`, masks applied.

    The copy needs no `keras_lth` to load: each `MaskedDense` becomes a
    `keras.layers.Dense` with the same configuration whose kernel and bias are
    the effective (masked) values, so pruned weights are exact zeros. Other
    layers are cloned with their weights. Works for Sequential and functional
    models, nested ones included.

    Example:

    >>> plain = strip(model)
    >>> plain.save("pruned.keras")   # loads with plain Keras
    """
    if not masked_layers(model):
        raise ValueError(
            "Expected a model with at least one `MaskedDense` layer. "
            f"Received: model '{model.name}' has none"
        )

    def clone(layer):
        if isinstance(layer, MaskedDense):
            return keras.layers.Dense.from_config(_dense_config(layer))
        if isinstance(layer, keras.Model):
            return keras.models.clone_model(layer, clone_function=clone)
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(model, clone_function=clone)
    _copy_weights(model, new)
    return new


def _copy_weights(old, new):
    old_layers = old._flatten_layers(include_self=False, recursive=True)
    new_layers = {l.name: l for l in new._flatten_layers(include_self=False, recursive=True)}
    for layer in old_layers:
        target = new_layers.get(layer.name)
        if target is None or isinstance(layer, keras.Model):
            continue
        if isinstance(layer, MaskedDense):
            target.set_weights(layer.effective_weights())
        else:
            target.set_weights(layer.get_weights())


def compact(model):
    """Physically removes neuron-pruned units from a sequential MLP.

    Every unit of a `MaskedDense` with no alive incoming weight (a pruned
    neuron) is dropped from the layer, and the matching input rows from the
    next dense layer. Such a unit still outputs the constant
    `activation(effective bias)` (0 for a pruned ReLU neuron, whose bias is
    masked too); that constant's contribution is folded into the next layer's
    bias, so predictions are identical. The result is a plain-Keras
    `Sequential` model of `Dense` and the stateless layers in between.

    Args:
        model: A Sequential (or linear functional) model whose layers are
            `MaskedDense`/`Dense` and shape-preserving layers without weights
            (activations, dropout, ...).

    Returns:
        A smaller `keras.Sequential`.
    """
    layers = [
        l for l in model._flatten_layers(include_self=False, recursive=True)
        if not isinstance(l, (keras.Model, keras.layers.InputLayer))
    ]
    if not any(isinstance(l, MaskedDense) for l in layers):
        raise ValueError(
            "Expected a model with at least one `MaskedDense` layer. "
            f"Received: model '{model.name}' has none"
        )
    for l in layers:
        if not isinstance(l, keras.layers.Dense) and l.weights:
            raise ValueError(
                "`compact` supports MLPs of Dense/MaskedDense layers and "
                f"weightless layers between them. Received: layer '{l.name}' "
                f"({type(l).__name__}) has weights"
            )
    dense = [l for l in layers if isinstance(l, keras.layers.Dense)]
    kernels, biases, keep = [], [], []
    for l in dense:
        if isinstance(l, MaskedDense):
            weights = l.effective_weights()
            alive = ops.convert_to_numpy(l.kernel_mask).max(axis=0) > 0
        else:
            weights = [ops.convert_to_numpy(w) for w in l.get_weights()]
            alive = np.ones(l.units, bool)
        kernels.append(weights[0].astype(np.float64))
        biases.append(
            (weights[1] if l.use_bias else np.zeros(l.units)).astype(np.float64)
        )
        keep.append(alive)
    keep[-1][:] = True  # the output units are the model's outputs
    for i in range(len(dense) - 1):
        dead = ~keep[i]
        if dead.any():
            # a unit with no alive input weight outputs the constant
            # activation(effective bias): 0 for a pruned ReLU neuron
            act = dense[i].activation or keras.activations.linear
            const = ops.convert_to_numpy(act(biases[i][dead][None].astype("float32")))[0]
            biases[i + 1] = biases[i + 1] + const.astype(np.float64) @ kernels[i + 1][dead]
        kernels[i] = kernels[i][:, keep[i]]
        biases[i] = biases[i][keep[i]]
        kernels[i + 1] = kernels[i + 1][keep[i]]

    new_layers, dense_index = [keras.Input(model.inputs[0].shape[1:])], 0
    for l in layers:
        if isinstance(l, keras.layers.Dense):
            config = _dense_config(l)
            config["units"] = int(kernels[dense_index].shape[1])
            config["use_bias"] = True
            new_layers.append(keras.layers.Dense.from_config(config))
            dense_index += 1
        else:
            new_layers.append(l.__class__.from_config(l.get_config()))
    new = keras.Sequential(new_layers, name=f"{model.name}_compact")
    dense_new = [l for l in new.layers if isinstance(l, keras.layers.Dense)]
    for l, k, b in zip(dense_new, kernels, biases):
        l.set_weights([k.astype("float32"), b.astype("float32")])
    return new
