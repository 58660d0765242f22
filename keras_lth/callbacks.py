"""`PruningScheduler`: finds lottery tickets inside one `model.fit` call."""

from __future__ import annotations

import importlib
import json
import os
import warnings

import keras
import numpy as np
from keras import ops

from keras_lth import pruning, training
from keras_lth import reintroduce as reintro
from keras_lth.layers import density, masked_layers
from keras_lth.schedules import IterativeSchedule, is_tfmot_schedule

REWIND_MODES = ("init", "reinit", None)
_STATE_FILE = "keras_lth_scheduler.json"
_REWIND_FILE = "keras_lth_rewind.npz"


@keras.saving.register_keras_serializable(package="keras_lth")
class PruningScheduler(keras.callbacks.Callback):
    """Iterative magnitude pruning with rewinding, as a Keras callback.

    Round 0 trains the dense network. At the end of every round the callback
    prunes the `MaskedDense` layers by magnitude (see `keras_lth.pruning`),
    rewinds all trainable weights as `rewind` says, resets the optimizer's
    state (iteration count and slot variables, never its learning rate) and
    starts the next round. Train for `scheduler.total_epochs` epochs:

    ```python
    model.fit(train_ds, validation_data=val_ds,
              epochs=scheduler.total_epochs, callbacks=[scheduler])
    ```

    Each epoch's logs gain `density` (share of prunable weights kept) and
    `round`, so `History`, `CSVLogger` and `TensorBoard` record them when they
    come after the scheduler in `callbacks`. After training,
    `scheduler.rounds` holds one record per round (see `rounds`).

    With a `tfmot.sparsity.keras.PruningSchedule` (`ConstantSparsity`,
    `PolynomialDecay`, ...) as `schedule`, the callback does gradual
    magnitude pruning instead, with the step semantics of tfmot's
    `prune_low_magnitude`: steps count from 1 (the `n`-th training step is
    step `n`, i.e. `optimizer.iterations + 1`), and before every step `n` for
    which `schedule(n)` says to prune, each layer's mask is shrunk to the
    scheduled sparsity (the callback does it at the end of the previous batch,
    or at the start of training). With `steps_per_execution > 1` the masks
    can only change between executions; the steps skipped in between are
    caught up at once. There are no rounds and no rewinding then.

    Args:
        schedule: An `IterativeSchedule` / `OneShotSchedule`, or a tfmot
            `PruningSchedule`.
        rewind: What the weights restart from after each pruning:
            `"init"` (the values at the start of training; lottery tickets),
            an integer `k` (the values after epoch `k` of round 0; "late
            rewinding": later rounds then train `epochs_per_round - k`
            epochs), `"reinit"` (a fresh random draw from each layer's
            initializers: the random re-initialisation control) or `None`
            (keep the trained weights: fine-tuning). Defaults to `"init"`.
        scope: `"layer"` (every layer loses its own `rate`) or `"global"`
            (one magnitude threshold over all masked layers, except those
            with a rate in `layer_rates`). Defaults to `"layer"`.
        structure: `"weight"` (unstructured) or `"neuron"` (whole units:
            kernel column and bias; the output layer's neurons are never
            pruned). Defaults to `"weight"`.
        norm: `"l1"` or `"l2"`, the neuron norm for `structure="neuron"`.
            Defaults to `"l1"`.
        test_data: Optional dataset (or `(x, y)` tuple) evaluated at the end
            of every round; its metrics go into the round record as `test`.
        seed: Seed of the `"reinit"` draws. Defaults to `None` (random; a
            resumed run then needs the seed it started with to re-draw the
            same values, so pass one when using `backup_dir`).
        backup_dir: Optional directory where the callback keeps the rewind
            point and round records at every epoch end, so that a `fit`
            interrupted and resumed with `keras.callbacks.BackupAndRestore`
            (epoch-level saving) continues exactly. Masks live in the model's
            weights and are restored by `BackupAndRestore` itself. The files
            are deleted when training ends, as `BackupAndRestore` does.
        verbose: `1` prints one line per finished round. Defaults to `1`.
        reintroduce: Optional `keras_lth.DoublePruning` or
            `keras_lth.ScoredPruning`: swaps weights between the pruned and
            the kept sets during every pruning round, at constant density
            (see `keras_lth.reintroduce`). The callback then trains with the
            strategy's training step (TensorFlow backend) and restores the
            model's own step when training ends. Round records gain `swaps`
            (events and weights or neurons re-introduced). Not with a tfmot
            schedule. Defaults to `None`.

    Example:

    >>> model = keras.Sequential([keras.Input((4,)), MaskedDense(8), MaskedDense(2)])
    >>> model.compile("adam", "mse")
    >>> scheduler = PruningScheduler(
    ...     IterativeSchedule(rounds=2, epochs_per_round=1, rate=0.5), verbose=0)
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 2)), verbose=0,
    ...               epochs=scheduler.total_epochs, callbacks=[scheduler])
    >>> [r["density"] for r in scheduler.rounds]
    [1.0, 0.5, 0.25]
    """

    def __init__(
        self,
        schedule,
        rewind="init",
        scope="layer",
        structure="weight",
        norm="l1",
        test_data=None,
        seed=None,
        backup_dir=None,
        verbose=1,
        reintroduce=None,
    ):
        super().__init__()
        self.gradual = is_tfmot_schedule(schedule)
        if not self.gradual and not isinstance(schedule, IterativeSchedule):
            raise ValueError(
                "Received an invalid value for `schedule`, expected an "
                "`IterativeSchedule`, `OneShotSchedule` or a tfmot "
                f"`PruningSchedule`. Received: schedule={schedule!r}"
            )
        if isinstance(rewind, bool) or not (rewind in REWIND_MODES or isinstance(rewind, int)):
            raise ValueError(
                "Received an invalid value for `rewind`, expected 'init', "
                f"'reinit', None or an epoch index. Received: rewind={rewind!r}"
            )
        if isinstance(rewind, int) and not self.gradual:
            if not 0 <= rewind < schedule.epochs_per_round:
                raise ValueError(
                    "Received an invalid value for `rewind`, expected an epoch "
                    f"index in [0, epochs_per_round={schedule.epochs_per_round}). "
                    f"Received: rewind={rewind!r}"
                )
        pruning.check_scope(scope)
        pruning.check_structure(structure)
        pruning.check_norm(norm)
        if self.gradual:
            if scope != "layer" or structure != "weight":
                raise ValueError(
                    "A tfmot `PruningSchedule` prunes weights layer by layer: "
                    "expected scope='layer' and structure='weight'. Received: "
                    f"scope={scope!r}, structure={structure!r}"
                )
            if rewind is not None and rewind != "init":
                warnings.warn(
                    f"`rewind={rewind!r}` is ignored with a tfmot schedule: "
                    "gradual pruning trains without rounds or rewinding.",
                    stacklevel=2,
                )
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(
                f"Received an invalid value for `seed`, expected an integer or "
                f"None. Received: seed={seed!r}"
            )
        if reintroduce is not None:
            if not isinstance(reintroduce, reintro.Reintroduction):
                raise ValueError(
                    "Received an invalid value for `reintroduce`, expected a "
                    "`keras_lth.DoublePruning`, a `keras_lth.ScoredPruning` or "
                    f"None. Received: reintroduce={reintroduce!r}"
                )
            if self.gradual:
                raise ValueError(
                    "`reintroduce` works with an `IterativeSchedule` or "
                    "`OneShotSchedule`, not with a tfmot schedule. Received: "
                    f"schedule={schedule!r}"
                )
            if reintroduce.value == "rewind" and rewind is None:
                raise ValueError(
                    "`reintroduce` with value='rewind' needs a rewind point, "
                    "expected rewind='init', 'reinit' or an epoch index. "
                    "Received: rewind=None"
                )
        self.reintroduce = reintroduce
        self.schedule = schedule
        self.rewind = rewind
        self.scope = scope
        self.structure = structure
        self.norm = norm
        self.test_data = test_data
        self.seed = seed
        self.backup_dir = None if backup_dir is None else os.fspath(backup_dir)
        self.verbose = verbose
        self.rounds = []

    # ------------------------------------------------------------------ #
    # The round layout
    # ------------------------------------------------------------------ #
    @property
    def _late(self):
        return self.rewind if isinstance(self.rewind, int) else 0

    @property
    def total_epochs(self):
        """Epochs the whole schedule takes (`None` for a tfmot schedule)."""
        if self.gradual:
            return None
        s = self.schedule
        return s.epochs_per_round + s.rounds * (s.epochs_per_round - self._late)

    def round_of(self, epoch):
        """Index of the round that epoch `epoch` (0-based) belongs to."""
        if self.gradual:
            return 0
        e = self.schedule.epochs_per_round
        if epoch < e:
            return 0
        return min(self.schedule.rounds, 1 + (epoch - e) // (e - self._late))

    def round_start(self, r):
        """First epoch (0-based) of round `r`."""
        e = self.schedule.epochs_per_round
        return 0 if r == 0 else e + (r - 1) * (e - self._late)

    def _round_end(self, r):
        if self.gradual or r == self.schedule.rounds:
            return None  # the last round runs until training stops
        return self.round_start(r + 1) - 1

    # ------------------------------------------------------------------ #
    # Keras hooks
    # ------------------------------------------------------------------ #
    def on_train_begin(self, logs=None):
        self._layers = masked_layers(self.model)
        if not self._layers:
            raise ValueError(
                "`PruningScheduler` expected a model with at least one "
                f"`MaskedDense` layer. Received: model '{self.model.name}' has "
                "none (nested models were searched too)"
            )
        names = [l.name for l in self._layers]
        if len(set(names)) != len(names):
            raise ValueError(
                f"`PruningScheduler` needs unique `MaskedDense` names. Received: {names}"
            )
        unknown = sorted(set(getattr(self.schedule, "layer_rates", {})) - set(names))
        if unknown:
            raise ValueError(
                "Received unknown layer names in `layer_rates`, expected names "
                f"of MaskedDense layers {names}. Received: {unknown}"
            )
        self._frozen = _output_masked_layers(self.model, names)
        epochs = self.params.get("epochs") if self.params else None
        if epochs is not None and self.total_epochs is not None and epochs != self.total_epochs:
            warnings.warn(
                f"`fit(epochs={epochs})` does not match the schedule's "
                f"`total_epochs={self.total_epochs}`: "
                + (
                    "the last rounds will not run."
                    if epochs < self.total_epochs
                    else "the last round will train longer."
                ),
                stacklevel=2,
            )
        # State of one run; reset here so the callback can be reused.
        self.rounds = []
        self._epoch_logs = []
        self._run_seed = (
            self.seed
            if self.seed is not None
            else int(np.random.SeedSequence().generate_state(1)[0])
        )
        self._rewind_values = self._snapshot()
        self._optimizer_init = self._optimizer_snapshot()
        self._loaded = self._load_state()
        self._synced = False
        self._pruned_at = None
        self._swaps = {}
        if self.reintroduce is not None:
            self._install_reintroduction()
        if self.gradual:
            # tfmot counts steps from 1: the next training step is step
            # `iterations + 1`, and its mask must be in place before it runs.
            self._next_step = int(ops.convert_to_numpy(self.model.optimizer.iterations)) + 1
            self._gradual_update(self._next_step)
        # The rewind file is written once `_sync` knows whether this is a
        # fresh run: on a resume it must keep the rewind point of the
        # interrupted run, not the weights found at `on_train_begin`.

    def on_epoch_begin(self, epoch, logs=None):
        if not self._synced:
            self._sync(epoch)
        r = self.round_of(epoch)
        if r >= 1 and epoch == self.round_start(r) and self._pruned_at != epoch:
            self._prune_and_rewind(r)
            self._pruned_at = epoch
            if self.reintroduce is not None and self.reintroduce.scored:
                for layer in self._layers:  # scores restart with every round
                    layer.kernel_score.assign(np.zeros(layer.kernel_score.shape, "float32"))
        self._epoch = epoch
        self._steps_seen = self._iterations()

    def on_train_batch_end(self, batch, logs=None):
        if self.gradual:
            self._gradual_update(self._iterations() + 1)
        elif self.reintroduce is not None and self.reintroduce.unit == "step":
            # Optimizer iterations restart with every round: they count the
            # round's steps. With steps_per_execution > 1, an event due at a
            # step inside the last execution happens now.
            r = self.round_of(self._epoch)
            now = self._iterations()
            due = reintro.next_event(
                self._steps_seen, self.reintroduce.start, self.reintroduce.every
            )
            self._steps_seen = now
            horizon = self._round_length(r) * (self.params.get("steps") or 0) or None
            # Never at the round's end: swapped weights would get no training.
            if r >= 1 and due <= now and (horizon is None or now < horizon):
                self._reintroduce_event(r, now, horizon)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        r = self.round_of(epoch)
        if self.reintroduce is not None and self.reintroduce.unit == "epoch" and r >= 1:
            t, horizon = epoch - self.round_start(r) + 1, self._round_length(r)
            if self.reintroduce.is_due(t, horizon):
                self._reintroduce_event(r, t, horizon)
        logs["density"] = density(self.model)
        logs["round"] = r
        if r == 0 and self._late and epoch == self._late - 1:
            self._rewind_values = self._snapshot()
            self._save_rewind()
        del self._epoch_logs[epoch:]
        self._epoch_logs.extend([None] * (epoch - len(self._epoch_logs)))
        self._epoch_logs.append({k: _to_float(v) for k, v in logs.items()})
        if epoch == self._round_end(r):
            self._finish_round(r, epoch)
        self._save_state()

    def on_train_end(self, logs=None):
        if self.reintroduce is not None:
            self._uninstall_reintroduction()
        last = len(self._epoch_logs) - 1
        if last >= 0:
            r = self.round_of(last)
            if not any(rec["round"] == r for rec in self.rounds):
                self._finish_round(r, last)
        if self.backup_dir:
            for name in (_STATE_FILE, _REWIND_FILE):
                path = os.path.join(self.backup_dir, name)
                if os.path.exists(path):
                    os.remove(path)

    # ------------------------------------------------------------------ #
    # Pruning, rewinding and the optimizer
    # ------------------------------------------------------------------ #
    def _prune_and_rewind(self, r):
        """What happens between two rounds, in order: masks, weights, optimizer."""
        self._prune()
        self._rewind(r)
        self._reset_optimizer()

    def _prune(self):
        kernels = {l.name: ops.convert_to_numpy(l._kernel) for l in self._layers}
        masks = {l.name: ops.convert_to_numpy(l.kernel_mask) for l in self._layers}
        new = pruning.prune(
            kernels,
            masks,
            rate=self.schedule.rate,
            layer_rates=self.schedule.layer_rates,
            scope=self.scope,
            structure=self.structure,
            norm=self.norm,
            frozen_neurons=self._frozen,
        )
        for layer in self._layers:
            bias_mask = None
            if self.structure == "neuron" and layer.use_bias and layer.name not in self._frozen:
                bias_mask = pruning.neuron_vector(new[layer.name])
            layer.set_masks(new[layer.name], bias_mask)

    def _rewind(self, r):
        if self.rewind is None:
            return  # fine-tuning: keep the trained weights
        if self.rewind == "reinit":
            values = self._reinit_values(r)
        else:
            values = self._rewind_values
        for var, value in zip(self.model.trainable_variables, values):
            var.assign(value)

    def _snapshot(self):
        return [ops.convert_to_numpy(v) for v in self.model.trainable_variables]

    def _reinit_values(self, r):
        """Fresh draws from each layer's initializers, seeded by (seed, round)."""
        fresh = {}
        layers = self.model._flatten_layers(include_self=False, recursive=True)
        for i, layer in enumerate(layers):
            for attr in ("kernel", "bias"):
                var = _layer_variable(layer, attr)
                init = getattr(layer, f"{attr}_initializer", None)
                if var is None or init is None:
                    continue
                entropy = [self._run_seed, r, i, int(attr == "bias")]
                seed = int(np.random.SeedSequence(entropy).generate_state(1)[0] >> 1)
                value = _seeded(init, seed)(tuple(var.shape), dtype=var.dtype)
                fresh[id(var)] = ops.convert_to_numpy(value)
        return [
            fresh.get(id(v), value)
            for v, value in zip(self.model.trainable_variables, self._rewind_values)
        ]

    def _optimizer_snapshot(self):
        opt = self.model.optimizer
        if opt is None:
            return None
        # Outside a distribution strategy, `fit` builds the optimizer (creates
        # its slot variables) only at the first step, after `on_train_begin`:
        # build it now so the snapshot covers every variable to reset.
        if not opt.built:
            opt.build(self.model.trainable_variables)
        fresh = int(ops.convert_to_numpy(opt.iterations)) == 0
        return [
            ops.convert_to_numpy(v) if fresh else np.zeros(v.shape, v.dtype) for v in opt.variables
        ]

    def _reset_optimizer(self):
        opt = self.model.optimizer
        if opt is None:
            return
        for var, value in zip(opt.variables, self._optimizer_init):
            if _is_learning_rate(opt, var):
                continue  # the LR is an optimizer variable too; keep it
            if var is opt.iterations or var.path.endswith("iteration"):
                var.assign(np.zeros(var.shape, var.dtype))
            else:
                var.assign(value)

    def _iterations(self):
        return int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def _round_length(self, r):
        """Nominal epochs of round `r`."""
        return self.schedule.epochs_per_round - (self._late if r >= 1 else 0)

    # ------------------------------------------------------------------ #
    # Re-introduction (Double- / Scored-pruning)
    # ------------------------------------------------------------------ #
    def _install_reintroduction(self):
        training.check_backend()
        if self.reintroduce.scored:
            with self.model.distribute_strategy.scope():
                for layer in self._layers:
                    layer.add_scores()
        frozen = self._frozen if self.structure == "neuron" else ()
        model = self.model
        self._own_train_step = model.__dict__.get("train_step")
        model.train_step = training.make_train_step(model, self._layers, self.reintroduce, frozen)
        model.make_train_function(force=True)

    def _uninstall_reintroduction(self):
        model = self.model
        if self._own_train_step is None:
            model.__dict__.pop("train_step", None)
        else:
            model.train_step = self._own_train_step
        model.train_function = None  # the next `fit` builds the model's own step

    def _reintroduce_event(self, r, t, horizon):
        """Swaps `k` pruned and `k` kept weights (neurons) at constant density."""
        strategy = self.reintroduce
        fraction = strategy.fraction_at(t, horizon)
        kernels = {l.name: ops.convert_to_numpy(l._kernel) for l in self._layers}
        masks = {l.name: ops.convert_to_numpy(l.kernel_mask) for l in self._layers}
        scores = None
        if strategy.scored:
            scores = {l.name: ops.convert_to_numpy(l.kernel_score) for l in self._layers}
        grow, drop = strategy.criteria(kernels, masks, scores, self.structure, self.norm)
        new, grown, dropped = reintro.swap_masks(
            grow,
            drop,
            masks,
            fraction,
            self.scope,
            self.structure,
            frozen_neurons=self._frozen,
            own_layers=tuple(self.schedule.layer_rates),
        )
        rewound = self._rewind_target(r) if strategy.value == "rewind" else None
        count = 0
        for layer in self._layers:
            g, d = grown[layer.name], dropped[layer.name]
            bias_mask = None
            if self.structure == "neuron" and layer.use_bias and layer.name not in self._frozen:
                bias_mask = pruning.neuron_vector(new[layer.name])
            if g.any():
                self._set_reintroduced(layer, g, rewound)
            layer.set_masks(new[layer.name], bias_mask)
            changed = g | d
            if changed.any():
                self._reset_optimizer_at(layer._kernel, changed)
                if bias_mask is not None:
                    self._reset_optimizer_at(layer.bias, changed.any(axis=0))
            if strategy.scored:
                layer.kernel_score.assign(scores[layer.name] * strategy.score_decay)
            count += int(g.any(axis=0).sum() if self.structure == "neuron" else g.sum())
        swaps = self._swaps.setdefault(r, {"events": 0, "reintroduced": 0})
        swaps["events"] += 1
        swaps["reintroduced"] += count

    def _set_reintroduced(self, layer, where, rewound):
        """Gives re-introduced weights the value that `value` asks for."""
        value = self.reintroduce.value
        if value == "current":
            return
        variables = [(layer._kernel, where)]
        if self.structure == "neuron" and layer.bias is not None:
            variables.append((layer.bias, where.any(axis=0)))
        for var, at in variables:
            raw = ops.convert_to_numpy(var)
            if value == "zero":
                raw[at] = 0.0
            else:
                raw[at] = rewound[id(var)][at]
            var.assign(raw)

    def _rewind_target(self, r):
        """`{id(variable): value}`: what the rewinding of round `r` restored."""
        values = self._reinit_values(r) if self.rewind == "reinit" else self._rewind_values
        return {id(v): value for v, value in zip(self.model.trainable_variables, values)}

    def _reset_optimizer_at(self, var, where):
        """Resets the optimizer's slots of `var` to their initial values at `where`."""
        opt = self.model.optimizer
        if opt is None:
            return
        prefix = var.path.replace("/", "_") + "_"
        for slot, init in zip(opt.variables, self._optimizer_init):
            if tuple(slot.shape) == tuple(var.shape) and slot.name.startswith(prefix):
                value = ops.convert_to_numpy(slot)
                value[where] = np.broadcast_to(init, value.shape)[where]
                slot.assign(value)

    def _gradual_update(self, upto):
        """Applies the tfmot schedule for every step in [next_step, upto]."""
        target = None
        for step in range(self._next_step, upto + 1):
            should, sparsity = self.schedule(np.int64(step))
            if bool(ops.convert_to_numpy(should)):
                target = float(ops.convert_to_numpy(sparsity))
        self._next_step = upto + 1
        if target is None:
            return
        for layer in self._layers:
            layer.set_masks(
                pruning.sparsity_mask(
                    ops.convert_to_numpy(layer._kernel),
                    ops.convert_to_numpy(layer.kernel_mask),
                    target,
                )
            )

    # ------------------------------------------------------------------ #
    # Records
    # ------------------------------------------------------------------ #
    def _finish_round(self, r, last_epoch):
        first = 0 if self.gradual else self.round_start(r)
        logs = [l for l in self._epoch_logs[first : last_epoch + 1] if l is not None]
        if not logs:
            return
        key = "val_loss" if "val_loss" in logs[0] else "loss"
        best = int(np.argmin([l.get(key, np.inf) for l in logs]))
        overall, per_layer = density(self.model, per_layer=True)
        record = {
            "round": r,
            "density": overall,
            "layer_density": per_layer,
            "epochs": len(logs),
            "final": _metrics(logs[-1]),
            "best": _metrics(logs[best]),
            "early_stop_epoch": best + 1,
        }
        if self.reintroduce is not None:
            record["swaps"] = dict(self._swaps.get(r, {"events": 0, "reintroduced": 0}))
        if self.test_data is not None:
            record["test"] = self._evaluate_test()
        self.rounds.append(record)
        if self.verbose:
            parts = [f"density={record['density']:.4f}", f"epochs={record['epochs']}"]
            parts += [f"{k}={v:.4f}" for k, v in record["final"].items() if k.startswith("val_")]
            parts += [f"test_{k}={v:.4f}" for k, v in record.get("test", {}).items()]
            print(f"[keras-lth] round {r}: " + " ".join(parts))

    def _evaluate_test(self):
        data = self.test_data
        if isinstance(data, tuple):
            out = self.model.evaluate(*data, verbose=0, return_dict=True)
        else:
            out = self.model.evaluate(data, verbose=0, return_dict=True)
        return {k: _to_float(v) for k, v in out.items()}

    # ------------------------------------------------------------------ #
    # Resume support (BackupAndRestore)
    # ------------------------------------------------------------------ #
    def _sync(self, epoch):
        """Adopts the saved state when `fit` resumes at `epoch` > 0."""
        self._synced = True
        state = self._loaded
        if epoch > 0 and state is None and not self.gradual:
            warnings.warn(
                f"`fit` starts at epoch {epoch}, but the scheduler has no "
                "backup of its state (pass `backup_dir` to resume with "
                "`BackupAndRestore`): the rewind point is taken from the "
                "current weights and earlier rounds have no records.",
                stacklevel=2,
            )
        if epoch == 0 or state is None:
            self._save_rewind()  # a fresh run: keep what on_train_begin recorded
            return
        self._run_seed = state["seed"]
        if state.get("rewind") is not None:
            self._rewind_values = state["rewind"]
        logs = state["epoch_logs"][:epoch]
        if len(logs) < epoch:
            warnings.warn(
                f"Resuming at epoch {epoch}, but the scheduler's backup in "
                f"'{self.backup_dir}' only has records up to epoch {len(logs)}.",
                stacklevel=2,
            )
            logs = logs + [None] * (epoch - len(logs))
        self._epoch_logs = logs
        self.rounds = [
            rec
            for rec in state["rounds"]
            if self._round_end(rec["round"]) is not None and self._round_end(rec["round"]) < epoch
        ]
        # Pruning happens at the first epoch of a round, after the backup of
        # the round's last epoch; resuming there prunes again from the
        # restored (unpruned) weights, as the uninterrupted run did.

    def _save_rewind(self):
        if not self.backup_dir or self.gradual:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        path = os.path.join(self.backup_dir, _REWIND_FILE)
        tmp = path + ".tmp.npz"
        np.savez(tmp, *self._rewind_values)
        os.replace(tmp, path)

    def _save_state(self):
        if not self.backup_dir:
            return
        os.makedirs(self.backup_dir, exist_ok=True)
        path = os.path.join(self.backup_dir, _STATE_FILE)
        state = {"seed": self._run_seed, "epoch_logs": self._epoch_logs, "rounds": self.rounds}
        with open(path + ".tmp", "w") as f:
            json.dump(state, f)
        os.replace(path + ".tmp", path)

    def _load_state(self):
        if not self.backup_dir:
            return None
        path = os.path.join(self.backup_dir, _STATE_FILE)
        if not os.path.exists(path):
            return None
        with open(path) as f:
            state = json.load(f)
        rewind_path = os.path.join(self.backup_dir, _REWIND_FILE)
        state["rewind"] = None
        if os.path.exists(rewind_path):
            with np.load(rewind_path) as data:
                state["rewind"] = [data[f"arr_{i}"] for i in range(len(data.files))]
        return state

    # ------------------------------------------------------------------ #
    # Serialization
    # ------------------------------------------------------------------ #
    def get_config(self):
        return {
            "schedule": _serialize_schedule(self.schedule),
            "rewind": self.rewind,
            "scope": self.scope,
            "structure": self.structure,
            "norm": self.norm,
            "seed": self.seed,
            "backup_dir": self.backup_dir,
            "verbose": self.verbose,
            "reintroduce": (
                None
                if self.reintroduce is None
                else keras.saving.serialize_keras_object(self.reintroduce)
            ),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["schedule"] = _deserialize_schedule(config["schedule"])
        if config.get("reintroduce") is not None:
            config["reintroduce"] = keras.saving.deserialize_keras_object(config["reintroduce"])
        return cls(**config)


def _serialize_schedule(schedule):
    if not is_tfmot_schedule(schedule):
        return keras.saving.serialize_keras_object(schedule)
    # tfmot schedules are not Keras-3 serializable: their `get_config` wraps
    # the arguments in {"class_name", "config"} and `from_config` wants the
    # arguments alone. Keep the class's import path to find it again.
    config = schedule.get_config()
    if isinstance(config, dict) and set(config) == {"class_name", "config"}:
        config = config["config"]
    cls = type(schedule)
    return {"tfmot_schedule": cls.__name__, "module": cls.__module__, "config": config}


def _deserialize_schedule(config):
    if not (isinstance(config, dict) and "tfmot_schedule" in config):
        return keras.saving.deserialize_keras_object(config)
    name = config["tfmot_schedule"]
    cls = keras.saving.get_registered_object(name)  # custom_objects first
    if cls is None:
        cls = getattr(importlib.import_module(config["module"]), name)
    return cls.from_config(config["config"])


def _seeded(initializer, seed):
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = seed
    return type(initializer).from_config(config)


def _is_learning_rate(optimizer, var):
    lr = getattr(optimizer, "_learning_rate", None)
    return var is lr or var.path.endswith("learning_rate")


def _to_float(value):
    try:
        return float(ops.convert_to_numpy(value))
    except (TypeError, ValueError):
        return value


def _metrics(logs):
    return {k: v for k, v in logs.items() if k not in ("density", "round")}


def _layer_variable(layer, attr):
    """The variable behind `layer.kernel` / `layer.bias` (Dense keeps `_kernel`)."""
    for name in (f"_{attr}", attr):
        var = getattr(layer, name, None)
        if isinstance(var, keras.Variable):
            return var
    return None


def _output_masked_layers(model, names):
    """Names of masked layers whose output is a model output (never neuron-pruned)."""
    found = []

    def visit(m):
        for t in getattr(m, "outputs", None) or []:
            layer = t._keras_history.operation
            if isinstance(layer, keras.Model):
                visit(layer)
            elif layer.name in names:
                found.append(layer.name)

    try:
        visit(model)
    except AttributeError:
        found = []
    if not found:  # subclassed models: assume the last masked layer
        found = [names[-1]]
    return tuple(found)
