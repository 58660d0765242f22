"""Re-introduction at run time: the training step, the scores, the swaps and re-selections.

`Reintroducer` is the part of `PruningScheduler` that runs a
`keras_lth.DoublePruning` or `keras_lth.ScoredPruning` strategy: it installs
the strategy's training step (`keras_lth.training`) for the run, owns the
`ScoredPruning` scores (one float32 variable per masked weight, created in
the model's distribution strategy scope, not layer weights), the swap
counts of every round, and, for re-selection at the pruning step
(`when="prune"`), the round at which every weight was pruned and the
re-entry counts of every round. It performs the swap events (`k` pruned
weights or neurons come back and `k` kept ones go, with the selection
maths of `keras_lth.reintroduce.swap_masks`) and the re-selections (the
pruning step itself, `keras_lth.reintroduce.reselect`).

Weight swaps work per masked variable (with `scope="layer"` each variable
swaps within itself); neuron swaps work on each layer's unit matrix (see
`keras_lth.targets`), so every masked family swaps whole units.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from keras_lth import distributed, training
from keras_lth import reintroduce as reintro
from keras_lth.layers import mask_value
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
        self.reselected = {}
        self.pruned_at = {}
        self._installed = None

    @property
    def at_prune(self) -> bool:
        """Whether weights come back at the pruning step (`when="prune"`)."""
        return self.strategy.when == "prune"

    # -- the run ------------------------------------------------------------ #
    def install(self, model, targets, optimizer_reset, rewinding):
        """Creates the scores and installs the strategy's training step."""
        training.check_backend()
        workers = distributed.process_count(model)
        if workers > 1:
            raise ValueError(
                "Re-introduction (`reintroduce=`) trains with a step of its own, which "
                "does not run on several `MultiWorkerMirroredStrategy` workers; use one "
                f"machine (`MirroredStrategy`). Received: {workers} workers"
            )
        zeroed = [k for k, l in targets.layers.items() if l.pruned_values == "zeroed"]
        if zeroed:
            raise ValueError(
                "Re-introduction (`reintroduce=`) needs the values of pruned weights, "
                "and layers with pruned_values='zeroed' keep only zeros there. Build "
                "them with pruned_values='kept' (the default). Received: "
                f"pruned_values='zeroed' for layers {zeroed}"
            )
        self.model = model
        self.targets = targets
        self.optimizer_reset = optimizer_reset
        self.rewinding = rewinding
        self.swaps = {}
        self.reselected = {}
        self.begin()
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

    def begin(self):
        """A fresh run's start (after `BackupAndRestore` restored the masks).

        Weights already pruned when the run starts count as pruned at round 0.
        """
        self.pruned_at = {
            w.key: np.where(ops.convert_to_numpy(w.mask) > 0, -1, 0).astype("int32")
            for w in self.targets.all_weights()
        }

    def round_started(self, r):
        """Scores restart with every round (with `when="prune"`: they decayed at the prune)."""
        if self.at_prune:
            return
        for var in self.scores.values():
            var.assign(np.zeros(var.shape, "float32"))

    def record(self, r) -> dict:
        """What round `r`'s record gains: `swaps`, or `reselected` with `when="prune"`."""
        if self.at_prune:
            rec = self.reselected.get(r, {"count": 0, "pruned_in": {}})
            return {"reselected": {"count": rec["count"], "pruned_in": dict(rec["pruned_in"])}}
        return {"swaps": dict(self.swaps.get(r, {"events": 0, "reintroduced": 0}))}

    # -- re-selection at the pruning step ------------------------------------ #
    def reselect(self, r, rate, layer_rates):
        """Round `r`'s pruning step, over the kept and the pruned weights.

        The count is iterative pruning's (`rate`, `layer_rates`, the scope,
        weights or units); the kept units are ranked by magnitude (exactly
        `PruningTargets.prune`) or by the strategy's drop criterion, then
        pruned units re-enter by `keras_lth.reintroduce.reselect`. Rewinding
        comes after, as for every kept weight.
        """
        strategy, targets, structure = self.strategy, self.targets, self.structure
        arrays = targets.space_arrays(structure)
        values, masks = arrays
        entered_total, pruned_in = 0, {}
        if masks:
            rates = targets.space_rates(layer_rates, structure)
            scores = self._read_scores()
            if scores is not None:
                scores = targets.to_space(scores, structure)
            grow, drop = strategy.criteria(values, masks, scores, structure, self.norm)
            if strategy.keeps_by_magnitude:
                _, base = targets.magnitude_masks(
                    rate, layer_rates, self.scope, structure, self.norm, arrays
                )
            else:
                base = reintro.keep_highest(drop, masks, rate, rates, self.scope, structure)
            new, entered, _ = reintro.reselect(
                grow, masks, base, strategy.fraction, self.scope, structure, own_layers=list(rates)
            )
            pruned_at = targets.to_space(self.pruned_at, structure)
            for key in masks:
                at = pruned_at[key]
                if structure == "neuron":
                    came = entered[key].any(axis=0)
                    rounds = at.max(axis=0)[came]
                else:
                    rounds = at[entered[key]]
                entered_total += int(rounds.size)
                for past, n in zip(*np.unique(rounds, return_counts=True)):
                    pruned_in[str(int(past))] = pruned_in.get(str(int(past)), 0) + int(n)
                at = np.where((masks[key] > 0) & (new[key] == 0), r, at)
                pruned_at[key] = np.where(new[key] > 0, -1, at).astype("int32")
            self.pruned_at.update(targets.from_space(pruned_at, structure))
            targets.write_masks(new, structure)
        if strategy.scored:
            for var in self.scores.values():
                var.assign(ops.convert_to_numpy(var) * strategy.score_decay)
        self.reselected[r] = {
            "count": entered_total,
            "pruned_in": dict(sorted(pruned_in.items(), key=lambda kv: int(kv[0]))),
        }

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
                biases[k] = mask_value(layer.bias_weight.mask)
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
            now = mask_value(bias.mask)
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
    # Array names in the backup: the scores under their weight keys, the
    # pruned-at rounds under this prefix (weight keys never start with it).
    _PRUNED_AT = "pruned_at:"

    def get_state(self):
        state = {
            "swaps": {str(r): v for r, v in self.swaps.items()},
            "reselected": {str(r): v for r, v in self.reselected.items()},
        }
        arrays = dict(self._read_scores() or {})
        if self.at_prune:
            arrays.update({self._PRUNED_AT + k: v for k, v in self.pruned_at.items()})
        return state, arrays

    def set_state(self, state, arrays):
        self.swaps = {int(r): dict(v) for r, v in state["swaps"].items()}
        self.reselected = {
            int(r): {"count": v["count"], "pruned_in": dict(v["pruned_in"])}
            for r, v in state.get("reselected", {}).items()
        }
        for key, var in self.scores.items():
            if key in arrays:
                var.assign(np.asarray(arrays[key], "float32"))
        for key in self.pruned_at:
            if self._PRUNED_AT + key in arrays:
                self.pruned_at[key] = np.asarray(arrays[self._PRUNED_AT + key], "int32")
