"""Re-introduction at run time: the training step, the scores and the swap events.

`Reintroducer` is the part of `PruningScheduler` that runs a
`keras_lth.DoublePruning` or `keras_lth.ScoredPruning` strategy: it installs
the strategy's training step (`keras_lth.training`) for the run, owns the
`ScoredPruning` scores (one float32 variable per masked weight, created in
the model's distribution strategy scope, not layer weights) and the swap
counts of every round, and performs the swap events: `k` pruned weights
(neurons) come back and `k` kept ones go, with the selection maths of
`keras_lth.reintroduce.swap_masks`.

Weight swaps work per masked variable (with `scope="layer"` each variable
swaps within itself); neuron swaps work on each layer's unit matrix (see
`keras_lth.targets`), so every masked family swaps whole units.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_lth import reintroduce as reintro
from keras_lth import training
from keras_lth.targets import masks_of, values_of


class Reintroducer:
    """One run of a re-introduction strategy.

    Args:
        strategy: A `keras_lth.reintroduce.Reintroduction`.
        scope: `"layer"` or `"global"`.
        structure: `"weight"` or `"neuron"`.
        norm: The neuron norm (`"l1"`, `"l2"`).
        layer_rates: The schedule's `layer_rates` (those layers swap only
            within themselves under `scope="global"`).
    """

    def __init__(self, strategy, scope, structure, norm, layer_rates=()):
        self.strategy = strategy
        self.scope = scope
        self.structure = structure
        self.norm = norm
        self.layer_rates = tuple(layer_rates)
        self.swaps = {}
        self.scores = {}
        self._installed = None

    # -- the run ------------------------------------------------------------ #
    def install(self, model, targets, optimizer_reset, rewinding):
        """Creates the scores and installs the strategy's training step."""
        training.check_backend()
        self.model = model
        self.targets = targets
        self.optimizer_reset = optimizer_reset
        self.rewinding = rewinding
        self.swaps = {}
        weights = targets.all_weights()
        self.scores = {}
        if self.strategy.scored:
            with model.distribute_strategy.scope():
                for w in weights:
                    self.scores[w.key] = keras.Variable(
                        np.zeros(w.variable.shape, "float32"),
                        trainable=False,
                        dtype="float32",
                        # the step adds increments already summed over
                        # replicas; every replica holds the same scores
                        aggregation="only_first_replica",
                        name=f"{w.key.replace('/', '_')}_score",
                    )
        own_step = model.__dict__.get("train_step")
        left_over = getattr(own_step, "keras_lth_step", False)  # a run that crashed
        modes = []
        for layer in targets.layers.values():
            modes.append((layer, "masked" if left_over else layer.gradient_mode))
            layer.gradient_mode = "dense" if self.strategy.dense_gradient else "masked"
        biases = [l.bias_weight for l in targets.layers.values() if l.bias_weight is not None]
        step = training.make_train_step(
            model, self.strategy, weights, biases, self.scores, self._shared(biases)
        )
        step.keras_lth_step = True
        model.train_step = step
        model.make_train_function(force=True)
        self._installed = (None if left_over else own_step, modes)

    def uninstall(self):
        """Restores the model's own training step and the layers' gradient modes."""
        if self._installed is None:
            return
        own_step, modes = self._installed
        self._installed = None
        model = self.model
        if own_step is None:
            model.__dict__.pop("train_step", None)
        else:
            model.train_step = own_step
        for layer, mode in modes:
            layer.gradient_mode = mode
        model.train_function = None  # the next `fit` builds the model's own step

    def _shared(self, biases):
        """What the complement network shares with the kept one (neuron pruning)."""
        if self.structure != "neuron":
            return ()
        frozen = set(self.targets.neuron_frozen())
        shared = [
            w.key
            for key, ws in self.targets.weights.items()
            for w in ws
            if key in frozen or w.units is None
        ]
        shared += [b.key for b in biases if b.key.rsplit("/", 1)[0] in frozen]
        return tuple(shared)

    def round_started(self, r):
        """Scores restart with every round."""
        for var in self.scores.values():
            var.assign(np.zeros(var.shape, "float32"))

    def record(self, r) -> dict:
        return dict(self.swaps.get(r, {"events": 0, "reintroduced": 0}))

    # -- events ------------------------------------------------------------- #
    def event(self, r, t, horizon):
        """Swaps `k` pruned and `k` kept weights (neurons) at constant density."""
        strategy = self.strategy
        fraction = strategy.fraction_at(t, horizon)
        if self.structure == "neuron":
            count = self._neuron_event(r, fraction)
        else:
            count = self._weight_event(r, fraction)
        if strategy.scored:
            for var in self.scores.values():
                var.assign(ops.convert_to_numpy(var) * strategy.score_decay)
        swaps = self.swaps.setdefault(r, {"events": 0, "reintroduced": 0})
        swaps["events"] += 1
        swaps["reintroduced"] += count

    def _weight_event(self, r, fraction):
        weights = self.targets.all_weights()
        values, masks = values_of(weights), masks_of(weights)
        scores = self._read_scores()
        grow, drop = self.strategy.criteria(values, masks, scores, "weight", self.norm)
        own = [w.key for k, ws in self.targets.weights.items() if k in self.layer_rates for w in ws]
        new, grown, dropped = reintro.swap_masks(
            grow, drop, masks, fraction, self.scope, "weight", own_layers=own
        )
        rewound = self._rewound(r)
        for w in weights:
            self._set_values(w.variable, grown[w.key], values[w.key], rewound)
            self.optimizer_reset.reset_at(w.variable, grown[w.key] | dropped[w.key])
        self.targets.set_masks(new, masks)
        return int(sum(g.sum() for g in grown.values()))

    def _neuron_event(self, r, fraction):
        targets = self.targets
        keys = [k for k in targets.weights if k not in targets.neuron_frozen()]
        if not keys:
            return 0
        weights = [w for k in keys for w in targets.unit_weights(k)]
        values, masks = values_of(weights), masks_of(weights)
        scores = self._read_scores()
        matrices = {k: targets.unit_matrix(k, values) for k in keys}
        unit_masks = {k: targets.unit_matrix(k, masks) for k in keys}
        unit_scores = None
        if scores is not None:
            unit_scores = {k: targets.unit_matrix(k, scores) for k in keys}
        grow, drop = self.strategy.criteria(matrices, unit_masks, unit_scores, "neuron", self.norm)
        own = [k for k in keys if k in self.layer_rates]
        new, grown, dropped = reintro.swap_masks(
            grow, drop, unit_masks, fraction, self.scope, "neuron", own_layers=own
        )
        rewound = self._rewound(r)
        biases = {}
        for k in keys:
            layer = targets.layers[k]
            if layer.bias_weight is not None:
                biases[k] = ops.convert_to_numpy(layer.bias_weight.mask)
        count = 0
        for k in keys:
            g = targets.split_units(k, grown[k])
            d = targets.split_units(k, dropped[k])
            for w in targets.unit_weights(k):
                self._set_values(w.variable, g[w.key], values[w.key], rewound)
                self.optimizer_reset.reset_at(w.variable, g[w.key] | d[w.key])
            count += int(grown[k].any(axis=0).sum())
        targets.set_unit_masks(new, masks)
        for k, old in biases.items():
            bias = targets.layers[k].bias_weight
            now = ops.convert_to_numpy(bias.mask)
            if self.strategy.value != "current":
                self._set_values(bias.variable, (now > 0) & (old == 0), None, rewound)
            self.optimizer_reset.reset_at(bias.variable, now != old)
        return count

    def _read_scores(self):
        if not self.scores:
            return None
        return {k: ops.convert_to_numpy(v) for k, v in self.scores.items()}

    def _rewound(self, r):
        if self.strategy.value != "rewind":
            return None
        return self.rewinding.target_of(r)

    def _set_values(self, variable, where, current, rewound):
        """Gives re-introduced weights the value that the strategy's `value` asks for."""
        value = self.strategy.value
        if value == "current" or not np.any(where):
            return
        raw = ops.convert_to_numpy(variable) if current is None else np.array(current)
        raw[where] = 0.0 if value == "zero" else rewound[id(variable)][where]
        variable.assign(raw)

    # -- resume ------------------------------------------------------------- #
    def get_state(self):
        swaps = {str(r): v for r, v in self.swaps.items()}
        return {"swaps": swaps}, self._read_scores() or {}

    def set_state(self, state, arrays):
        self.swaps = {int(r): dict(v) for r, v in state["swaps"].items()}
        for key, var in self.scores.items():
            if key in arrays:
                var.assign(np.asarray(arrays[key], "float32"))
