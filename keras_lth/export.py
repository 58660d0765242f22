"""From a pruned model to a deployable one: `strip` (`compact` is in `compaction.py`)."""

from __future__ import annotations

import warnings

import keras

from keras_lth.conversion import PLAIN_CLASSES, check_graph_model, clone_graph, is_graph_model
from keras_lth.layers import masked_layers

# Arguments that the masked layers refuse (LoRA, quantization): left out of a
# stripped layer's config when unset, so that the file also loads with Keras
# releases whose layers do not know them.
_UNSET_ARGUMENTS = ("lora_rank", "lora_alpha", "quantization_config")


def plain_config(layer) -> dict:
    """The config of the plain Keras layer behind a masked one."""
    config = layer.get_config()
    for arg in _UNSET_ARGUMENTS:
        if arg in config and config[arg] is None:
            config.pop(arg)
    config.pop("pruned_values", None)  # keras-lth's own argument
    return config


def strip(model):
    """A plain-Keras copy of `model`: every masked layer -> its Keras layer, masks applied.

    Each masked layer becomes the Keras layer it masks, with the same
    configuration, and whose weights are the effective ones
    (`layer.effective_weights()`), so that pruned weights are exact zeros:
    `MaskedDense` -> `Dense`, `MaskedConv2D` -> `Conv2D`, `MaskedEmbedding`
    -> `Embedding`, `MaskedMultiHeadAttention` -> `MultiHeadAttention`,
    `MaskedLSTM` -> `LSTM`, and so on for every class of
    `keras_lth.layers.MASKED_CLASSES`. Other layers are copied with their
    weights. The copy predicts exactly what `model` predicts and loads
    without `keras_lth`. Sequential and functional models, nested ones
    included; a single masked layer gives its plain twin. The original is
    not modified.

    Subclassed models cannot be cloned (ValueError); for them, copy
    `layer.effective_weights()` into plain layers by hand. Masked layers that
    `strip` cannot reach (inside a custom layer or a wrapper such as
    `TimeDistributed`) stay masked, with a warning.

    Args:
        model: A Sequential or functional model with at least one masked
            layer, or a masked layer.

    Returns:
        A new model (or layer) made of plain Keras layers.

    Example:

    >>> model = keras_lth.prunable(keras.Sequential(
    ...     [keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)]))
    >>> plain = strip(model)
    >>> [type(l).__name__ for l in plain.layers]
    ['Dense', 'Dense']
    >>> plain.save("pruned.keras")   # loads with plain Keras
    """
    if not isinstance(model, keras.Model):
        if type(model) not in PLAIN_CLASSES:
            raise ValueError(
                "Received an invalid value for `model`, expected a model or "
                "a masked layer (`MaskedDense`, `MaskedConv2D`, ...). "
                f"Received: {model!r} of type {type(model).__name__}"
            )
        new = PLAIN_CLASSES[type(model)].from_config(plain_config(model))
        if model.built:
            new.build_from_config(model.get_build_config())
            new.set_weights(model.effective_weights())
        return new
    check_graph_model(
        model,
        "strip",
        "Build the deployable model from plain Keras layers and copy "
        "`layer.effective_weights()` of each masked layer into them.",
    )
    if not masked_layers(model):
        raise ValueError(
            "Expected a model with at least one masked layer (MaskedDense, "
            "MaskedConv2D, ..., or a model made by `keras_lth.prunable`). "
            f"Received: model '{model.name}' has none"
        )

    def clone(layer):
        if type(layer) in PLAIN_CLASSES:
            new = PLAIN_CLASSES[type(layer)].from_config(plain_config(layer))
            return new, lambda old, new: new.set_weights(old.effective_weights())
        new = type(layer).from_config(layer.get_config())
        return new, lambda old, new: new.set_weights(old.get_weights())

    new = clone_graph(model, clone)
    left = [
        l
        for l in _outer_layers(new)
        if not is_graph_model(l) and (type(l) not in PLAIN_CLASSES) and masked_layers(l)
    ]
    if left:
        warnings.warn(
            "`strip` could not reach the masked layers inside "
            + ", ".join(f"'{l.name}' ({type(l).__name__})" for l in left)
            + ": they stay masked, and the copy needs keras_lth to load.",
            stacklevel=2,
        )
    return new


def _outer_layers(model):
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        out.append(layer)
        if is_graph_model(layer):
            out.extend(_outer_layers(layer))
    return out
