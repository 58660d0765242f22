"""Whole-model conversion: `prunable` masks the supported layers of a Keras model.

The user's model is cloned with `keras.models.clone_model(...,
clone_function=..., recursive=True)`: every layer of a supported Keras class
(`keras_lth.layers.MASKED_CLASSES`) becomes its masked twin (same config,
weights copied, masks all ones), every other layer a copy of itself. The
copy computes exactly what the original computes; the original is left as it
is. `keras_lth.strip` (in `export.py`) goes the other way with the same
machinery.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np

from keras_lth.layers import MASKED_CLASSES, check_pruned_values, masked_layers, sublayers

#: Masked class -> the Keras class it masks.
PLAIN_CLASSES = {masked: plain for plain, masked in MASKED_CLASSES.items()}

# Layers whose weights are not kernels (scales, shifts, statistics, slopes):
# never listed as "could not be masked".
_NOT_PRUNABLE = tuple(
    getattr(keras.layers, name)
    for name in (
        "BatchNormalization",
        "LayerNormalization",
        "GroupNormalization",
        "UnitNormalization",
        "RMSNormalization",
        "SpectralNormalization",
        "Normalization",
        "PReLU",
    )
    if hasattr(keras.layers, name)
)


# Layers around another layer (Bidirectional is no `Wrapper` in Keras 3).
_WRAPPERS = (keras.layers.Wrapper, keras.layers.Bidirectional)


def prunable(model_or_layer, layers=None, exclude=None, pruned_values="kept"):
    """A copy of a Keras model whose supported layers are masked, ready to prune.

    Every layer of a supported Keras class becomes its masked twin
    (`keras.layers.Dense` -> `keras_lth.layers.MaskedDense`, ...), with the
    same configuration (dtype policy included) and the same weights; the masks
    start all ones, so the copy predicts exactly what the original predicts.
    Supported classes (exact types; a user subclass of `Dense` is not
    `Dense`): `Dense`, `EinsumDense`, `Conv1D`/`2D`/`3D` and their
    transposes, `DepthwiseConv1D`/`2D`, `SeparableConv1D`/`2D`, `Embedding`,
    `MultiHeadAttention`, `LSTM`, `GRU` and `SimpleRNN`. Masked layers already
    in the model are copied as they are, masks included. Every other layer is
    copied with its weights.

    Sequential and functional models are supported, nested ones included,
    with shared layers (one layer called several times stays one layer),
    several inputs and outputs, and unbuilt `Sequential` models. Subclassed
    models cannot be cloned: build them from masked layers
    (`keras_lth.layers.MaskedConv2D`, ...), which pruning then finds with
    `keras_lth.masked_layers(model)`.

    A layer that `prunable` cannot mask is left as it is and listed in one
    warning, with its class and the reason, when it looks prunable: it holds
    a weight with two or more dimensions (a kernel) and is not a
    normalization layer or `PReLU`. That covers custom layers, subclasses of
    the supported classes, wrappers (`TimeDistributed(Dense(...))`,
    `Bidirectional(LSTM(...))`), quantized layers, layers with LoRA enabled
    and layers whose variables are not floating point. Unbuilt layers are
    listed when their class may hold kernels (custom layers, wrappers,
    subclasses of supported classes). The conversion itself never fails
    because of such a layer.

    Args:
        model_or_layer: A `keras.Sequential` or functional `keras.Model`, or
            a single layer (then its masked twin is returned, with its
            weights if it is built).
        layers: Which layers to mask. `None` (default) masks every supported
            layer. Otherwise a layer name, a layer class (matched with
            `isinstance`), a callable `(layer) -> bool`, or a list of these;
            a layer is masked when any of them matches. A name or class that
            matches a nested model selects all the layers inside it;
            callables are called with the layers only, not the models.
        exclude: Layers to leave as they are, in the same forms as `layers`.
            Wins over `layers`.
        pruned_values: `"kept"` (default) or `"zeroed"` (TensorFlow backend),
            the `pruned_values` of the layers this call masks (see
            `keras_lth.layers.MaskedLayer.pruned_values`): `"zeroed"` layers
            hold zeros under their masks and train faster, but cannot be
            used with re-introduction. Masked layers already in the model
            keep their own.

    Returns:
        A new model (or layer). The original is not modified.

    Example:

    >>> model = keras.Sequential([
    ...     keras.Input((28, 28, 1)),
    ...     keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
    ...     keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(10, name="logits"),
    ... ])
    >>> masked = prunable(model)
    >>> [type(l).__name__ for l in masked.layers]
    ['MaskedConv2D', 'MaskedConv2D', 'Flatten', 'MaskedDense']

    Leaving the first convolution and the output layer dense, as the
    lottery-ticket literature does:

    >>> masked = prunable(model, exclude=["conv1", "logits"])
    >>> [type(l).__name__ for l in masked.layers]
    ['Conv2D', 'MaskedConv2D', 'Flatten', 'Dense']
    """
    if not isinstance(model_or_layer, keras.layers.Layer):
        raise ValueError(
            "Received an invalid value for `model_or_layer`, expected a "
            "`keras.Model` (Sequential or functional) or a `keras.layers.Layer`. "
            f"Received: model_or_layer={model_or_layer!r} of type "
            f"{type(model_or_layer).__name__}"
        )
    check_pruned_values(pruned_values)
    select = _selector(layers, "layers")
    leave = _selector(exclude, "exclude")
    if not isinstance(model_or_layer, keras.Model):
        if select is not None or leave is not None:
            raise ValueError(
                "`layers` and `exclude` choose layers inside a model. "
                f"Received: a single layer '{model_or_layer.name}' "
                f"({type(model_or_layer).__name__}) with layers={layers!r}, "
                f"exclude={exclude!r}"
            )
        return _prunable_layer(model_or_layer, pruned_values)
    model = model_or_layer
    check_graph_model(model, "prunable", _SUBCLASSED_HINT)
    found = dict(_graph_layers(model))
    names = {l.name for l, _ in found.values()} | {
        a.name for _, ancestors in found.values() for a in ancestors
    }
    for arg, items in (("layers", select), ("exclude", leave)):
        unknown = [i for i in items or () if isinstance(i, str) and i not in names]
        if unknown:
            raise ValueError(
                f"Received unknown layer names in `{arg}`: {unknown}. Expected "
                f"names of layers of model '{model.name}': {sorted(names)}"
            )

    left = []

    def chosen(layer):
        ancestors = found[id(layer)][1] if id(layer) in found else ()
        if leave is not None and _matches(layer, ancestors, leave):
            return False
        return select is None or _matches(layer, ancestors, select)

    def clone(layer):
        if _is_masked(layer):
            return _copy_layer(layer), _copy_masked_weights
        if chosen(layer):
            reason = _cannot_mask(layer)
            if reason is None:
                return _masked_twin(layer, pruned_values), _copy_into_masked
            if _looks_prunable(layer) or (
                select is not None
                and _matches(layer, (), [i for i in select if isinstance(i, str)])
            ):
                left.append(f"'{layer.name}' ({type(layer).__name__}: {reason})")
        return _copy_layer(layer), _copy_weights

    new = clone_graph(model, clone)
    if left:
        warnings.warn(
            f"`prunable` left {len(left)} layer(s) of model '{model.name}' as "
            f"they are (not masked): {', '.join(left)}. Supported classes: "
            f"{', '.join(sorted(c.__name__ for c in MASKED_CLASSES))} (exact "
            "types); a custom layer can be built from `keras_lth.layers` "
            "masked layers instead.",
            stacklevel=2,
        )
    return new


_SUBCLASSED_HINT = (
    "Subclassed models cannot be cloned: build the model from masked layers "
    "(`keras_lth.layers.MaskedConv2D`, `MaskedDense`, ...), whose masks "
    "`keras_lth.masked_layers(model)` and the pruning callback find."
)


# ---------------------------------------------------------------------- #
# The graph-model checks and the clone shared with `strip`
# ---------------------------------------------------------------------- #
def is_graph_model(layer) -> bool:
    """Whether `layer` is a Sequential or functional model (not subclassed).

    Keras exports no public class for functional models; this is the one
    place that reads it (`keras.src.models.functional.Functional`, tested in
    `tests/test_conversion.py`).
    """
    from keras.src.models.functional import Functional

    return isinstance(layer, (keras.Sequential, Functional))


def check_graph_model(model, what, hint):
    """Raises a ValueError unless `model` is a Sequential or functional model."""
    if not is_graph_model(model):
        raise ValueError(
            f"`{what}` supports Sequential and functional models. Received: "
            f"model '{model.name}' of the subclassed class "
            f"{type(model).__name__}. {hint}"
        )


def graph_sublayers(model) -> list:
    """Every layer of a graph model (not its InputLayers), nested models too."""
    return [layer for layer, _ in dict(_graph_layers(model)).values()]


def _graph_layers(model, ancestors=()):
    """`(id, (layer, ancestors))` for every layer of a graph model, depth first.

    `ancestors` are the nested graph models that contain the layer. A layer
    shared by two nested models appears once, with the first.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        yield id(layer), (layer, ancestors)
        if is_graph_model(layer):
            yield from _graph_layers(layer, ancestors + (layer,))


def clone_graph(model, clone):
    """`clone_model(model, recursive=True)` whose layers come from `clone`.

    `clone(layer)` returns `(new_layer, copy)`; once the clone is built,
    `copy(old, new)` moves the weights of every layer that was built.
    """
    pairs = []

    def clone_function(layer):
        new, copy = clone(layer)
        pairs.append((layer, new, copy))
        return new

    new_model = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    for old, new, copy in pairs:
        if old is new or not old.built:
            continue
        _build_like(old, new)
        copy(old, new)
    return new_model


def _build_like(old, new):
    if not new.built:
        config = old.get_build_config()
        if not config:
            raise ValueError(
                f"Layer '{old.name}' ({type(old).__name__}) is built, but its "
                "copy cannot be built like it: it has no build config "
                "(`get_build_config()` returned None)."
            )
        new.build_from_config(config)


# ---------------------------------------------------------------------- #
# One layer at a time
# ---------------------------------------------------------------------- #
def _prunable_layer(layer, pruned_values):
    if _is_masked(layer):
        new, copy = _copy_layer(layer), _copy_masked_weights
    else:
        reason = _cannot_mask(layer)
        if reason is not None:
            raise ValueError(
                f"`prunable` cannot mask layer '{layer.name}' "
                f"({type(layer).__name__}): {reason}. Expected one of "
                f"{', '.join(sorted(c.__name__ for c in MASKED_CLASSES))}."
            )
        new, copy = _masked_twin(layer, pruned_values), _copy_into_masked
    if layer.built:
        _build_like(layer, new)
        copy(layer, new)
    return new


def _is_masked(layer) -> bool:
    return type(layer) in PLAIN_CLASSES


def _cannot_mask(layer):
    """Why `layer` cannot be masked, or None when it can."""
    cls = type(layer)
    if cls not in MASKED_CLASSES:
        bases = [b.__name__ for b in MASKED_CLASSES if isinstance(layer, b)]
        if bases:
            return (
                f"a subclass of {bases[0]}, not {bases[0]} itself (its extra "
                "behaviour would be lost); build it from the masked class"
            )
        if isinstance(layer, _WRAPPERS):
            return "a wrapper, whose inner layer `prunable` does not convert"
        if not cls.__module__.startswith("keras."):
            return "a custom layer"
        return "not a supported class"
    policy = layer.dtype_policy
    mode = getattr(policy, "quantization_mode", None)
    if mode is not None:
        return f"quantized ({mode}); prune before quantizing"
    variable_dtype = getattr(policy, "variable_dtype", None)
    if variable_dtype is not None and "float" not in keras.backend.standardize_dtype(
        variable_dtype
    ):
        return f"its variables are {variable_dtype}, not floating point"
    if getattr(layer, "lora_enabled", False) or any(
        getattr(s, "lora_enabled", False) for s in sublayers(layer)
    ):
        return "LoRA is enabled; its kernel is not one variable"
    return None


def _looks_prunable(layer) -> bool:
    """Whether a layer that stays unmasked is worth a line in the warning."""
    if type(layer) in MASKED_CLASSES:  # a supported class that could not be masked
        return True
    if isinstance(layer, _NOT_PRUNABLE):
        return False
    if layer.built:
        return any(
            len(w.shape) >= 2 and "float" in keras.backend.standardize_dtype(w.dtype)
            for w in layer.weights
        )
    cls = type(layer)
    return (
        isinstance(layer, _WRAPPERS)
        or any(isinstance(layer, c) for c in MASKED_CLASSES)
        or not cls.__module__.startswith("keras.")
    )


def _masked_twin(layer, pruned_values):
    return MASKED_CLASSES[type(layer)].from_config(
        {**layer.get_config(), "pruned_values": pruned_values}
    )


def _copy_layer(layer):
    """A copy of `layer` from its config; the layer itself if it has none.

    A custom layer without `get_config` support cannot be copied; the new
    model then shares it with the original (with a warning).
    """
    try:
        return type(layer).from_config(layer.get_config())
    except Exception as error:  # a custom layer's constructor: any exception
        warnings.warn(
            f"Layer '{layer.name}' ({type(layer).__name__}) could not be "
            f"copied from its config ({type(error).__name__}: {error}); the "
            "new model shares it with the original.",
            stacklevel=3,
        )
        return layer


def _copy_weights(old, new):
    new.set_weights(old.get_weights())


def _copy_masked_weights(old, new):
    new.set_weights(old.get_weights())
    if "_lth_gradient" in old.__dict__:
        new.gradient_mode = old.gradient_mode
    for o, n in zip(masked_layers(old), masked_layers(new)):
        if "_lth_gradient" in o.__dict__:
            n.gradient_mode = o.gradient_mode


def mask_variables(layer) -> set:
    """The ids of every mask variable of `layer` (its masked sublayers' too)."""
    ids = set()
    for l in masked_layers(layer):
        ids.update(id(w.mask) for w in l.masked_weights)
        if l.bias_weight is not None:
            ids.add(id(l.bias_weight.mask))
    return ids


def _copy_into_masked(old, new):
    """Plain layer -> masked twin: the masked layer's weights less its masks."""
    masks = mask_variables(new)
    targets = [v for v in new.weights if id(v) not in masks]
    sources = old.get_weights()
    shapes = [tuple(v.shape) for v in targets]
    if shapes != [tuple(np.shape(s)) for s in sources]:
        raise ValueError(
            f"Layer '{old.name}' ({type(old).__name__}): the masked twin's "
            f"weights have shapes {shapes}, the layer's "
            f"{[tuple(np.shape(s)) for s in sources]}."
        )
    for variable, value in zip(targets, sources):
        variable.assign(value)


# ---------------------------------------------------------------------- #
# Choosing layers
# ---------------------------------------------------------------------- #
def _selector(value, arg):
    """`layers=`/`exclude=` as a list of names, classes and callables (or None)."""
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
    for item in items:
        ok = (
            isinstance(item, str)
            or (isinstance(item, type) and issubclass(item, keras.layers.Layer))
            or (callable(item) and not isinstance(item, type))
        )
        if not ok:
            raise ValueError(
                f"Received an invalid value for `{arg}`, expected a layer "
                "name, a layer class, a callable `(layer) -> bool`, or a list "
                f"of these. Received: {arg}={value!r} (with {item!r} of type "
                f"{type(item).__name__})"
            )
    return items


def _matches(layer, ancestors, items) -> bool:
    for item in items:
        if isinstance(item, str):
            if layer.name == item or any(a.name == item for a in ancestors):
                return True
        elif isinstance(item, type):
            if isinstance(layer, item) or any(isinstance(a, item) for a in ancestors):
                return True
        elif item(layer):
            return True
    return False
