"""`PruningScheduler`: finds lottery tickets inside one `model.fit` call.

The callback orchestrates; the parts, each owning its state, live in their
own modules:

- `keras_lth.rounds.RoundLayout`: which epoch belongs to which round;
- `keras_lth.targets.PruningTargets`: the model's masked weights, pruned by
  the NumPy maths of `keras_lth.pruning`;
- `keras_lth.rewinding.Rewinding`: the rewind point, late rewinding, reinit;
- `keras_lth.optimizer_reset.OptimizerReset`: the optimizer's restart;
- `keras_lth.gradual.GradualPruning`: tfmot schedules;
- `keras_lth.zeroing.ZeroHolding`: how layers keep their pruned weights at
  zero while they train (kept layers set their pruned values aside);
- `keras_lth.swaps.Reintroducer`: re-introduction (training step, scores,
  swap events);
- `keras_lth.records.RoundRecords`: epoch logs and round records;
- `keras_lth.resume.ResumeState`: the backup of all of the above.
"""

from __future__ import annotations

import importlib
import os
import warnings

import keras
from keras import ops

from keras_lth import distributed, pruning
from keras_lth import reintroduce as reintro
from keras_lth.gradual import GradualPruning
from keras_lth.layers import zero_pruned
from keras_lth.optimizer_reset import OptimizerReset
from keras_lth.records import RoundRecords
from keras_lth.resume import ResumeState
from keras_lth.rewinding import Rewinding
from keras_lth.schedules import IterativeSchedule, is_tfmot_schedule
from keras_lth.swaps import Reintroducer
from keras_lth.targets import PruningTargets
from keras_lth.zeroing import ZeroHolding

REWIND_MODES = ("init", "reinit", None)
Callback = keras.callbacks.Callback


@keras.saving.register_keras_serializable(package="keras_lth")
class PruningScheduler(keras.callbacks.Callback):
    """Iterative magnitude pruning with rewinding, as a Keras callback.

    Round 0 trains the dense network. At the start of every later round the
    callback prunes the model's masked layers (every family of
    `keras_lth.layers`, in nested and subclassed models too) by magnitude
    (see `keras_lth.pruning`), rewinds the model's weights as `rewind` says,
    restarts the optimizer from its initial state (iteration count, slots,
    loss scale; never its learning rate) and trains again. Train for
    `scheduler.total_epochs` epochs:

    ```python
    model.fit(train_ds, validation_data=val_ds,
              epochs=scheduler.total_epochs, callbacks=[scheduler])
    ```

    Each epoch's logs gain `density` (share of prunable weights kept) and
    `round`, so `History`, `CSVLogger` and `TensorBoard` record them when they
    come after the scheduler in `callbacks`. After training,
    `scheduler.rounds` holds one record per round (see `keras_lth.records`;
    `layer_density` is keyed by `keras_lth.layers.layer_key`).

    Plain iterative pruning works at epoch boundaries only: the callback has
    no batch-level hook then, so Keras keeps dispatching batches
    asynchronously. It works with any backend (`keras.ops` only; under JAX
    the changes made at an epoch's start are picked up by the trainer).

    With a `tfmot.sparsity.keras.PruningSchedule` (`ConstantSparsity`,
    `PolynomialDecay`, ...) as `schedule`, the callback does gradual
    magnitude pruning instead, with the step semantics of tfmot's
    `prune_low_magnitude`: steps count from 1 (the `n`-th training step is
    step `n`, i.e. `optimizer.iterations + 1`), and before every step `n` for
    which `schedule(n)` says to prune, each masked weight's mask is shrunk
    to the scheduled sparsity, keeping tfmot's count
    `max(1, round_half_even(size * (1 - sparsity)))` (see
    `keras_lth.gradual`; done before the step's batch, or at the start of
    training). tfmot's `ConstantSparsity` and `PolynomialDecay` are
    evaluated only at their pruning steps (`begin_step`, `end_step`,
    `frequency`): between those the batch hook reads nothing from the
    device and batch ends stay asynchronous; a schedule of another class is
    called at every step. With `steps_per_execution > 1` the masks can only
    change between executions; the steps skipped in between are caught up
    at once. There are no rounds and no rewinding then.

    Args:
        schedule: An `IterativeSchedule` / `OneShotSchedule`, or a tfmot
            `PruningSchedule`.
        rewind: What the weights restart from after each pruning:
            `"init"` (the values at the start of training; lottery tickets),
            an integer `k` (the values after epoch `k` of round 0; "late
            rewinding": later rounds then train `epochs_per_round - k`
            epochs), `"reinit"` (a fresh random draw from each layer's
            initializers: the random re-initialisation control) or `None`
            (keep the trained weights: fine-tuning). The rewind point is
            every weight of the model but the masks, BatchNormalization's
            moving statistics included (see `keras_lth.rewinding`).
            Defaults to `"init"`.
        scope: `"layer"` (every masked weight loses its own `rate`) or
            `"global"` (one magnitude threshold over all masked weights,
            except those of layers with a rate in `layer_rates`). Defaults
            to `"layer"`.
        structure: `"weight"` (unstructured) or `"neuron"` (whole output
            units with their bias entries: neurons of `Dense`, filters of
            convolutions, head x head-dimension entries of attention
            projections, hidden units of recurrent layers). The output
            layers' units are never pruned, nor layers without units of
            their own (a warning names them). Defaults to `"weight"`.
        norm: `"l1"` or `"l2"`, the neuron norm for `structure="neuron"`.
            Defaults to `"l1"`.
        test_data: Optional dataset (or `(x, y)` tuple) evaluated at the end
            of every round; its metrics go into the round record as `test`.
        seed: Seed of the `"reinit"` draws. Defaults to `None` (random; a
            resumed run then needs the seed it started with to re-draw the
            same values, so pass one when using `backup_dir`).
        backup_dir: Optional directory where the callback keeps its state
            (rewind point, seed, round records, re-introduction scores,
            swap counts and pruned-at rounds) at every epoch end, so that a `fit` interrupted and
            resumed with `keras.callbacks.BackupAndRestore` (epoch-level
            saving) continues exactly, whether the scheduler comes before or
            after it in `callbacks` (see `keras_lth.resume`). Masks live in
            the model's weights and are restored by `BackupAndRestore`
            itself. The files are deleted when training ends, as
            `BackupAndRestore` does.
        verbose: `1` prints one line per finished round. Defaults to `1`.
        reintroduce: Optional `keras_lth.DoublePruning` or
            `keras_lth.ScoredPruning`: brings pruned weights back at the
            schedule's density (see `keras_lth.reintroduce`), by swaps during
            every pruning round (`when="round"`) or by re-selection over the
            kept and the pruned weights at every pruning step
            (`when="prune"`). The callback then trains with the strategy's
            training step (TensorFlow backend only) and restores the model's
            own step when training ends. Epoch-unit events happen at the
            start of the epoch after the one they follow, so the model never
            changes after an epoch's end. Round records gain `swaps` (events
            and weights or neurons re-introduced), or with `when="prune"`
            `reselected`: `{"count": n, "pruned_in": {"1": k1, ...}}`, the
            weights (neurons) that re-entered at the round's start and the
            rounds whose pruning had removed them. Not with a tfmot schedule.
            Defaults to `None`.

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
        # the layout checks a late-rewinding epoch
        self.layout = None if self.gradual else schedule.layout(rewind)
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
        # The parts; each owns its state.
        self._records = RoundRecords(test_data, verbose)
        # (gradual pruning never rewinds: no rewind point to keep)
        self._rewinding = Rewinding(None if self.gradual else rewind, seed)
        self._optimizer = OptimizerReset()
        self._zeroing = ZeroHolding()
        self._gradual = GradualPruning(schedule) if self.gradual else None
        self._reintroducer = None
        if reintroduce is not None:
            self._reintroducer = Reintroducer(
                reintroduce, scope, structure, norm, tuple(schedule.layer_rates)
            )
        self._backup = None if backup_dir is None else ResumeState(self.backup_dir)
        # Batch hooks only where needed. Keras keeps dispatching batch ends
        # asynchronously while no callback overrides `on_train_batch_end`
        # (it checks when `fit` starts, before `on_train_begin`); it calls
        # `on_train_batch_begin` in the training loop whatever the callbacks.
        # Gradual pruning therefore works at batch beginnings, where between
        # two pruning steps its hook is one integer comparison.
        own = type(self)
        if self.gradual and own.on_train_batch_begin is Callback.on_train_batch_begin:
            self.on_train_batch_begin = self._on_train_batch_begin
        steps = self._events_in_rounds("step")
        if steps and own.on_train_batch_end is Callback.on_train_batch_end:
            self.on_train_batch_end = self._on_train_batch_end

    # ------------------------------------------------------------------ #
    # The round layout
    # ------------------------------------------------------------------ #
    @property
    def rounds(self):
        """One record per finished round (see `keras_lth.records`)."""
        return self._records.rounds

    @property
    def total_epochs(self):
        """Epochs the whole schedule takes (`None` for a tfmot schedule)."""
        return None if self.layout is None else self.layout.total_epochs

    def round_of(self, epoch):
        """Index of the round that epoch `epoch` (0-based) belongs to."""
        return 0 if self.layout is None else self.layout.round_of(epoch)

    def round_start(self, r):
        """First epoch (0-based) of round `r`."""
        return 0 if self.layout is None else self.layout.round_start(r)

    def _round_end(self, r):
        return None if self.layout is None else self.layout.round_end(r)

    # ------------------------------------------------------------------ #
    # Keras hooks
    # ------------------------------------------------------------------ #
    def on_train_begin(self, logs=None):
        model = self.model
        layer_rates = getattr(self.schedule, "layer_rates", {})
        self._targets = PruningTargets(model, layer_rates, self.structure)
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
        # Several processes training together (JAX multi-process, or
        # MultiWorkerMirroredStrategy workers): the chief alone prints and
        # writes the backup (`keras_lth.distributed`).
        chief = distributed.is_chief(model)
        self._records.test_data = self.test_data
        self._records.verbose = self.verbose if chief else 0
        if self._backup is not None:
            self._backup.writer = chief
        self._records.start()
        self._optimizer.start(model)
        self._started = False
        self._pruned_at = None
        if self._reintroducer is not None:
            self._reintroducer.install(model, self._targets, self._optimizer, self._rewinding)
        # Everything else waits for the first epoch: `BackupAndRestore` may
        # restore the model in its `on_train_begin`, before or after this one.

    def on_epoch_begin(self, epoch, logs=None):
        if not self._started:
            self._start(epoch)  # (sets the values aside as the weights are now)
        else:
            self._zeroing.adopt_writes()  # weights set by other callbacks since
        self._epoch = epoch
        if self._gradual is not None:
            # tfmot's step of the epoch's batch 0; later batches count on the host
            self._first_step = self._iterations() + 1
        if self.layout is None:
            return
        r = self.layout.round_of(epoch)
        start = self.layout.round_start(r)
        if r >= 1 and epoch == start and self._pruned_at != epoch:
            self._prune_and_rewind(r)
            self._pruned_at = epoch
        elif r >= 1 and self._events_in_rounds("epoch"):
            # An event after `t` epochs of the round happens before the next
            # epoch, so the model never changes after `BackupAndRestore`
            # saved it at an epoch end.
            t, horizon = epoch - start, self.layout.round_length(r)
            if self.reintroduce.is_due(t, horizon):
                self._reintroducer.event(r, t, horizon)
        if self._events_in_rounds("step"):
            self._steps_seen = self._iterations()

    def _events_in_rounds(self, unit):
        """Whether swap events fall inside the rounds, counted in `unit`."""
        strategy = self.reintroduce
        return strategy is not None and strategy.when == "round" and strategy.unit == unit

    def _on_train_batch_begin(self, batch, logs=None):
        # Assigned as `on_train_batch_begin` in `__init__` for gradual
        # pruning. Before batch `batch` (the first of an execution with
        # `steps_per_execution > 1`) the next step is `first + batch`; only
        # when the schedule may prune up to it is the model touched.
        upto = self._first_step + batch
        if not self._gradual.due(upto):
            self._gradual.skip(upto)
            return
        self._sync_state()
        self._gradual.update(upto)

    def _sync_state(self):
        # JAX keeps the training state outside the variables during an
        # epoch: bring it back first (Keras 3.15's `Callback.model` already
        # does when read; earlier Keras 3 releases did not). The trainer
        # then reads the variables again before the next step.
        sync = getattr(self.model, "jax_state_sync", None)
        if sync is not None:
            sync()

    def _on_train_batch_end(self, batch, logs=None):
        # Assigned as `on_train_batch_end` in `__init__` only for step-unit
        # re-introduction: Keras dispatches batch ends asynchronously when no
        # callback overrides them.
        self._sync_state()
        # Optimizer iterations restart with every round: they count the
        # round's steps. With steps_per_execution > 1, an event due at a
        # step inside the last execution happens now.
        r = self.layout.round_of(self._epoch)
        now = self._iterations()
        due = reintro.next_event(self._steps_seen, self.reintroduce.start, self.reintroduce.every)
        self._steps_seen = now
        horizon = self.layout.round_length(r) * (self.params.get("steps") or 0) or None
        # Never at the round's end: swapped weights would get no training.
        if r >= 1 and due <= now and (horizon is None or now < horizon):
            self._reintroducer.event(r, now, horizon)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self._zeroing.adopt_writes()
        if self._gradual is not None:
            # The masks of the next step, before the logs and the backup see them.
            self._gradual.update(self._iterations() + 1)
        r = self.round_of(epoch)
        logs["density"] = self._targets.density()
        logs["round"] = r
        if self.layout is not None and self._rewinding.due_after(epoch):
            with self._zeroing.values_kept():
                self._rewinding.take()  # late rewinding: the values after epoch k
        self._records.log_epoch(epoch, logs)
        if epoch == self._round_end(r):
            self._finish_round(r, epoch)
        if self._backup is not None:
            self._backup.save(epoch, self._parts())

    def on_train_end(self, logs=None):
        if self._reintroducer is not None:
            self._reintroducer.uninstall()
        self._zeroing.stop()
        last = len(self._records.epoch_logs) - 1
        if last >= 0:
            r = self.round_of(last)
            if not self._records.has(r):
                self._finish_round(r, last)
        if self._backup is not None:
            self._backup.clear()

    # ------------------------------------------------------------------ #
    # What happens between two rounds, in order: masks, weights, optimizer
    # ------------------------------------------------------------------ #
    def _prune_and_rewind(self, r):
        s = self.schedule
        with self._zeroing.values_kept():
            if self._reintroducer is not None and self._reintroducer.at_prune:
                self._reintroducer.reselect(r, s.rate, s.layer_rates)
            else:
                self._targets.prune(s.rate, s.layer_rates, self.scope, self.structure, self.norm)
            self._rewinding.rewind_to(r)
            zero_pruned(self.model)  # rewound values under 0 masks (pruned_values="zeroed")
            self._optimizer.reset()
        if self._reintroducer is not None:
            self._reintroducer.round_started(r)

    def _iterations(self):
        return int(ops.convert_to_numpy(self.model.optimizer.iterations))

    def _finish_round(self, r, last_epoch):
        extra = None
        if self._reintroducer is not None:
            extra = self._reintroducer.record(r)
        self._records.finish_round(
            self.model,
            r,
            self.round_start(r),
            last_epoch,
            self._targets.density(per_layer=True),
            extra,
        )

    # ------------------------------------------------------------------ #
    # The start of a run, fresh or resumed (BackupAndRestore)
    # ------------------------------------------------------------------ #
    def _start(self, epoch):
        self._started = True
        self._targets.recount()  # the masks as `BackupAndRestore` left them
        if self._reintroducer is not None:
            self._reintroducer.begin()
        state = None
        if epoch > 0 and self._backup is not None:
            state = self._backup.load(epoch - 1)
        if epoch > 0 and state is None and self._gradual is None:
            if self._backup is None:
                why = "has no backup of its state (pass `backup_dir` to resume with `BackupAndRestore`)"
            else:
                why = (
                    f"has no backup of epoch {epoch - 1} in '{self.backup_dir}' "
                    f"(it has epochs {self._backup.epochs()})"
                )
            warnings.warn(
                f"`fit` starts at epoch {epoch}, but the scheduler {why}: the "
                "rewind point is taken from the current weights and earlier "
                "rounds have no records.",
                stacklevel=2,
            )
        self._rewinding.start(self.model, fresh=state is None)
        if state is not None:
            self._restore(state, epoch)
        # After `BackupAndRestore` restored masks and optimizer, before the
        # first step is traced.
        self._zeroing.start(
            self.model, self._targets, self._optimizer, set_aside=self._reintroducer is None
        )
        if self._gradual is not None:
            self._gradual.start(self._targets, self._iterations(), self._zeroing.pruned)

    def _parts(self):
        parts = {"records": self._records, "rewinding": self._rewinding}
        if self._reintroducer is not None:
            parts["reintroduce"] = self._reintroducer
        return parts

    def _restore(self, state, epoch):
        """Adopts every part's state from the backup of epoch `epoch - 1`."""
        self._records.set_state(*state["records"], epoch, self._round_end)
        self._rewinding.set_state(*state["rewinding"])
        if self._reintroducer is not None and "reintroduce" in state:
            self._reintroducer.set_state(*state["reintroduce"])
        # Pruning happens at the first epoch of a round, after the backup of
        # the round's last epoch; resuming there prunes again from the
        # restored (unpruned) weights, as the uninterrupted run did.

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
