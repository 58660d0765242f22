"""From a pruned model to a deployable one: `strip` and `compact`."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_lth.layers import MaskedDense, masked_layers
from keras_lth.layers import sublayers as _sublayers


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
    old_layers = _sublayers(old)
    new_layers = {l.name: l for l in _sublayers(new)}
    for layer in old_layers:
        target = new_layers.get(layer.name)
        if target is None or isinstance(layer, keras.Model):
            continue
        if isinstance(layer, MaskedDense):
            target.set_weights(layer.effective_weights())
        else:
            target.set_weights(layer.get_weights())


# Weightless layers that act unit by unit at inference: the constant output
# of a removed unit can be pushed through them on its own.
_UNITWISE = (
    keras.layers.Activation,
    keras.layers.ActivityRegularization,
    keras.layers.AlphaDropout,
    keras.layers.Dropout,
    keras.layers.ELU,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.Identity,
    keras.layers.LeakyReLU,
    keras.layers.ReLU,
)
# Activations that mix units: a removed unit's output is then not a constant.
_MIXING = ("softmax", "log_softmax")


def compact(model):
    """Physically removes neuron-pruned units from a sequential MLP.

    Every unit of a `MaskedDense` with no alive incoming weight (a pruned
    neuron, or a column emptied by weight pruning) is dropped from the layer,
    and the matching input rows from the next dense layer. Such a unit still
    outputs the constant `activation(effective bias)`: 0 for a pruned ReLU
    neuron (whose bias is masked too), but 0.5 for a sigmoid one, or the bias
    itself for a linear unit whose bias is alive. That constant, passed
    through any unit-wise layers in between, is folded into the next dense
    layer's bias, so predictions are identical. The output layer keeps all
    its units. The result is a plain-Keras `Sequential` model of `Dense` and
    the weightless layers of the original.

    Args:
        model: A Sequential (or linear functional) model with one input and
            one output whose layers are `MaskedDense`/`Dense` and layers
            without weights. Between two dense layers only unit-wise layers
            (`Activation`, `Dropout`, `ReLU`, ...) may sit; any weightless
            layer may come before the first or after the last dense layer.

    Returns:
        A smaller `keras.Sequential`.

    Example:

    >>> small = compact(model)   # after neuron pruning
    >>> small.layers[0].units    # fewer units than model.layers[0]
    """
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(
            "`compact` supports models with one input and one output. Received: "
            f"model '{model.name}' has {len(model.inputs)} inputs and "
            f"{len(model.outputs)} outputs"
        )
    layers = [
        l for l in _sublayers(model) if not isinstance(l, (keras.Model, keras.layers.InputLayer))
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
        if any(len(node.input_tensors) != 1 for node in l._inbound_nodes):
            raise ValueError(
                "`compact` supports a linear stack of layers. Received: layer "
                f"'{l.name}' ({type(l).__name__}) takes several inputs"
            )
    positions = [i for i, l in enumerate(layers) if isinstance(l, keras.layers.Dense)]
    dense = [layers[i] for i in positions]
    kernels, biases, keep = [], [], []
    for l in dense:
        if isinstance(l, MaskedDense):
            weights = l.effective_weights()
            alive = ops.convert_to_numpy(l.kernel_mask).max(axis=0) > 0
        else:
            weights = [ops.convert_to_numpy(w) for w in l.get_weights()]
            alive = np.ones(l.units, bool)
        kernels.append(weights[0].astype(np.float64))
        biases.append((weights[1] if l.use_bias else np.zeros(l.units)).astype(np.float64))
        keep.append(alive)
    keep[-1][:] = True  # the output units are the model's outputs
    for i in range(len(dense) - 1):
        dead = ~keep[i]
        between = layers[positions[i] + 1 : positions[i + 1]]
        for l in between:
            if not isinstance(l, _UNITWISE):
                raise ValueError(
                    "`compact` can only fold unit-wise layers (activations, "
                    "dropout, ...) between dense layers. Received: layer "
                    f"'{l.name}' ({type(l).__name__}) between '{dense[i].name}' "
                    f"and '{dense[i + 1].name}'"
                )
        if not dead.any():
            continue
        for l in [dense[i]] + between:
            name = _activation_name(getattr(l, "activation", None))
            if name in _MIXING:
                raise ValueError(
                    f"`compact` cannot remove units of '{dense[i].name}': "
                    f"layer '{l.name}' applies `{name}`, which mixes units. "
                    f"Received: {int(dead.sum())} dead units"
                )
        # a dead unit outputs the constant activation(effective bias)
        act = dense[i].activation or keras.activations.linear
        const = act(ops.convert_to_tensor(biases[i][dead][None], "float32"))
        for l in between:
            const = l(const, training=False)
        const = ops.convert_to_numpy(const)[0].astype(np.float64)
        biases[i + 1] = biases[i + 1] + const @ kernels[i + 1][dead]
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


def _activation_name(fn):
    if fn is None:
        return None
    try:
        name = keras.activations.serialize(fn)
    except Exception:  # a custom callable
        return getattr(fn, "__name__", None)
    return name if isinstance(name, str) else getattr(fn, "__name__", None)
