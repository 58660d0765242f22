"""The prunable weights of one model, as pruning sees them.

`PruningTargets` is built when training starts. It groups the model's
`MaskedWeight`s by layer (`keras_lth.layers.layer_key`), knows which layers
are the model's outputs (never neuron-pruned) and which have no output units
of their own, reads weights and masks out of the model, and writes new masks
back. Everything in between is the pure NumPy of `keras_lth.pruning`.

Structured pruning (`structure="neuron"`) sees a layer as one
`(fan_in, units)` matrix: the `unit_matrix` views of its weights that have
units (an LSTM's kernel and recurrent kernel, a separable convolution's
pointwise kernel) stacked along the fan-in, one column per output unit
(neuron, filter, attention head entry, hidden unit).

It also keeps the kept/total counts of every mask it wrote, so the density
logged after every epoch needs no read of the masks.
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
from keras import ops

from keras_lth import pruning
from keras_lth.layers import layer_key, mask_value, masked_layers, masked_weights, sublayers


class PruningTargets:
    """The masked layers of `model` and their weights, for one run.

    Args:
        model: A built model with at least one masked layer.
        layer_rates: Layer keys that must exist (a schedule's `layer_rates`).
        structure: `"weight"` or `"neuron"`; with `"neuron"`, layers without
            output units are named in a warning (they are left as they are).

    Attributes:
        layers: `{layer key: masked layer}`, in `masked_layers` order.
        weights: `{layer key: [MaskedWeight, ...]}` (biases excluded).
        output_keys: Keys of the layers whose output is a model output.
        unitless: Keys of the layers none of whose weights has output units.
    """

    def __init__(self, model, layer_rates=(), structure="weight"):
        layers = masked_layers(model)
        if not layers:
            raise ValueError(
                "`PruningScheduler` expected a model with at least one masked "
                "layer (`MaskedDense`, `MaskedConv2D`, ... or a model converted by "
                f"`keras_lth.prunable`). Received: model '{model.name}' has none "
                "(nested models were searched too)"
            )
        keys = [layer_key(l) for l in layers]
        if len(set(keys)) != len(keys):
            raise ValueError(
                f"`PruningScheduler` needs unique masked layer names. Received: {keys}"
            )
        unknown = sorted(set(layer_rates) - set(keys))
        if unknown:
            raise ValueError(
                "Received unknown layer names in `layer_rates`, expected names "
                f"of masked layers {keys}. Received: {unknown}"
            )
        masked_weights(model)  # raises, naming them, if some layers are not built
        self.model = model
        self.layers = dict(zip(keys, layers))
        self.weights = {k: l.masked_weights for k, l in self.layers.items()}
        self.output_keys = _output_keys(model, self.layers)
        self.unitless = tuple(
            k for k, ws in self.weights.items() if all(w.units is None for w in ws)
        )
        if structure == "neuron":
            skipped = [k for k in self.unitless if k not in self.output_keys]
            if skipped:
                warnings.warn(
                    f"Layers {skipped} have no output units of their own, so "
                    "`structure='neuron'` leaves them as they are.",
                    stacklevel=3,
                )
        self._kept = None

    # -- reading ---------------------------------------------------------- #
    def all_weights(self) -> list:
        """Every `MaskedWeight`, layer by layer."""
        return [w for ws in self.weights.values() for w in ws]

    def neuron_frozen(self) -> tuple:
        """Keys that structured pruning leaves alone: outputs and unitless layers."""
        return tuple(dict.fromkeys(self.output_keys + self.unitless))

    def unit_weights(self, key) -> list:
        """The weights of layer `key` that have output units."""
        return [w for w in self.weights[key] if w.units is not None]

    def unit_matrix(self, key, arrays) -> np.ndarray:
        """Layer `key` as one `(fan_in, units)` matrix of `arrays[weight key]`."""
        ws = self.unit_weights(key)
        return pruning.layer_unit_matrix([arrays[w.key] for w in ws], [w.units for w in ws])

    def split_units(self, key, matrix) -> dict:
        """`{weight key: array}` from a unit matrix of layer `key`."""
        ws = self.unit_weights(key)
        parts = pruning.split_unit_matrix(
            matrix, [tuple(w.variable.shape) for w in ws], [w.units for w in ws]
        )
        return {w.key: p for w, p in zip(ws, parts)}

    # -- writing ---------------------------------------------------------- #
    def set_masks(self, masks, old=None):
        """Writes `{weight key: mask}`; masks equal to `old[weight key]` are skipped."""
        counts = self._counts()
        for w in self.all_weights():
            new = masks.get(w.key)
            if new is None or (old is not None and np.array_equal(new, old[w.key])):
                continue
            w.layer.set_masks(**{f"{w.name}_mask": new})
            counts[w.key] = float(np.sum(new))

    def set_unit_masks(self, unit_masks, old=None):
        """Writes unit-matrix masks `{layer key: (fan_in, units) mask}` and the biases'.

        Each layer's weights with units get their part of the matrix; its bias
        mask keeps the bias entries of the alive units (`bias_mask_for`).
        """
        masks = {}
        for key, matrix in unit_masks.items():
            masks.update(self.split_units(key, matrix))
        self.set_masks(masks, old)
        for key, matrix in unit_masks.items():
            layer = self.layers[key]
            if layer.bias_weight is not None:
                layer.set_masks(bias_mask=layer.bias_mask_for(pruning.alive_neurons(matrix)))

    # -- pruning's space ---------------------------------------------------- #
    # Pruning compares units: with structure="weight" every masked variable
    # is a "layer" of its own (keyed by weight key); with "neuron" every
    # layer that neuron pruning touches is one unit matrix (keyed by layer
    # key). The re-introduction part works in the same space.
    def space_keys(self, structure) -> list:
        """The keys pruning works on: weight keys, or the neuron-prunable layer keys."""
        if structure == "weight":
            return [w.key for w in self.all_weights()]
        return [k for k in self.weights if k not in self.neuron_frozen()]

    def to_space(self, arrays, structure) -> dict:
        """`{weight key: array}` in pruning's space (unit matrices for `"neuron"`)."""
        if structure == "weight":
            return {k: arrays[k] for k in self.space_keys("weight")}
        return {k: self.unit_matrix(k, arrays) for k in self.space_keys("neuron")}

    def from_space(self, arrays, structure) -> dict:
        """The inverse of `to_space`: `{weight key: array}` of the weights it covers."""
        if structure == "weight":
            return dict(arrays)
        out = {}
        for key, matrix in arrays.items():
            out.update(self.split_units(key, matrix))
        return out

    def space_arrays(self, structure) -> tuple:
        """`(values, masks)` of the model's weights, read once, in pruning's space."""
        keys = self.space_keys(structure)
        if structure == "weight":
            weights = self.all_weights()
        else:
            weights = [w for k in keys for w in self.unit_weights(k)]
        values, masks = values_of(weights), masks_of(weights)
        return self.to_space(values, structure), self.to_space(masks, structure)

    def space_rates(self, layer_rates, structure) -> dict:
        """`layer_rates` (by layer key) for the keys of pruning's space."""
        layer_rates = dict(layer_rates or {})
        if structure == "weight":
            return {
                w.key: layer_rates[k]
                for k, ws in self.weights.items()
                if k in layer_rates
                for w in ws
            }
        keys = self.space_keys("neuron")
        return {k: r for k, r in layer_rates.items() if k in keys}

    def write_masks(self, new, structure):
        """Writes masks given in pruning's space (and, for neurons, their biases')."""
        if structure == "weight":
            self.set_masks(new, masks_of(self.all_weights()))
            return
        weights = [w for k in new for w in self.unit_weights(k)]
        self.set_unit_masks(new, masks_of(weights))

    # -- pruning ------------------------------------------------------------ #
    def magnitude_masks(
        self, rate, layer_rates=None, scope="layer", structure="weight", norm="l1", arrays=None
    ) -> tuple:
        """`(masks, new)`: the current masks and magnitude pruning's next ones.

        Both in pruning's space (`space_keys`); `new` is what `prune` writes
        (see `keras_lth.pruning.prune`). `arrays` is `space_arrays(structure)`
        when the caller has read it already.
        """
        values, masks = self.space_arrays(structure) if arrays is None else arrays
        if not masks:
            return masks, masks
        rates = self.space_rates(layer_rates, structure)
        return masks, pruning.prune(values, masks, rate, rates, scope, structure, norm)

    def prune(self, rate, layer_rates=None, scope="layer", structure="weight", norm="l1"):
        """One round of magnitude pruning (see `keras_lth.pruning.prune`).

        `structure="weight"`: every masked variable loses `rate` of its alive
        weights (`scope="layer"`), or one threshold is shared by all of them
        (`"global"`); a layer in `layer_rates` prunes each of its weights at
        its own rate. `structure="neuron"`: every layer loses `rate` of its
        alive units, with their bias entries; the output layers and the
        layers without units are left as they are.
        """
        _, new = self.magnitude_masks(rate, layer_rates, scope, structure, norm)
        if new:
            self.write_masks(new, structure)

    def prune_to_sparsity(self, sparsity) -> tuple:
        """Gradual pruning: every masked variable keeps tfmot's count at `sparsity`.

        Returns:
            `(masks before, masks after)`, each `{weight key: 0/1 array}`.
        """
        weights = self.all_weights()
        values, masks = values_of(weights), masks_of(weights)
        new = {k: pruning.sparsity_mask(values[k], masks[k], sparsity) for k in values}
        self.set_masks(new, masks)
        return masks, new

    # -- density without reading the masks back --------------------------- #
    def density(self, per_layer=False):
        """Share of the prunable weights kept, as `keras_lth.density` computes it."""
        counts = self._counts()
        kept, sizes = {}, {}
        for key, ws in self.weights.items():
            kept[key] = sum(counts[w.key] for w in ws)
            sizes[key] = sum(math.prod(w.mask.shape) for w in ws)
        overall = sum(kept.values()) / sum(sizes.values())
        if per_layer:
            return overall, {k: kept[k] / sizes[k] for k in kept}
        return overall

    def recount(self):
        """Reads the masks once (after they were loaded or set from outside)."""
        self._kept = {
            w.key: float(np.count_nonzero(ops.convert_to_numpy(w.mask))) for w in self.all_weights()
        }

    def _counts(self):
        if self._kept is None:
            self.recount()
        return self._kept


def read(variables) -> dict:
    """`{weight key: NumPy value}` of `(key, variable)` pairs."""
    return {key: ops.convert_to_numpy(v) for key, v in variables}


def values_of(weights) -> dict:
    """`{weight key: raw value}` of `MaskedWeight`s."""
    return read((w.key, w.variable) for w in weights)


def masks_of(weights) -> dict:
    """`{weight key: mask}` of `MaskedWeight`s."""
    return {w.key: mask_value(w.mask) for w in weights}


def _output_keys(model, layers) -> tuple:
    """Keys of the masked layers that produce a model output.

    A functional or Sequential model names its output tensors' layers (the
    one place that reads a Keras tensor's producing layer); a composite layer
    (attention, recurrent) counts through its last masked sublayer (the
    output projection, the cell). Without that information (a subclassed
    model), or when no output comes from a masked layer, the last masked
    layer counts as the output.
    """
    by_layer = {id(layer): key for key, layer in layers.items()}
    for c in [model] + sublayers(model):
        owned = c.masked_sublayers() if hasattr(c, "masked_sublayers") else []
        if owned:
            by_layer[id(c)] = layer_key(owned[-1])

    found = []

    def visit(m):
        for t in getattr(m, "outputs", None) or []:
            history = getattr(t, "_keras_history", None)
            op = getattr(history, "operation", None)
            if isinstance(op, keras.Model):
                visit(op)
            elif op is not None:
                key = by_layer.get(id(op))
                if key is not None and key not in found:
                    found.append(key)

    try:
        visit(model)
    except (AttributeError, ValueError):
        found = []
    if not found:
        found = [list(layers)[-1]]
    return tuple(found)
