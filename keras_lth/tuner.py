"""keras-tuner searches over prune schedules: `PruningHyperModel`.

Wraps a user's `build_model(hp)` so that keras-tuner (`RandomSearch`,
`BayesianOptimization`, `Hyperband`) searches the pruning schedule next to the
model's own hyperparameters, and every trial is scored on the final, pruned
network at `target_density`. Needs `pip install "keras-lth[tuner]"`.

The schedule's hyperparameters are named `prune/...` (see `SEARCH_SPACE`).
Declare any of them yourself in the `hyperparameters=` you give the tuner
(`hp.Fixed("prune/method", "lth")`, `hp.Float("prune/rate", 0.3, 0.5)`,
with or without a condition) and the hypermodel uses your declaration instead
of its own.
"""

from __future__ import annotations

import math
import warnings

try:
    import keras_tuner
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "`keras_lth.tuner` needs keras-tuner. Install it with "
        '`pip install "keras-lth[tuner]"` (or `pip install keras-tuner`).'
    ) from e

import keras

from keras_lth import pruning
from keras_lth.callbacks import PruningScheduler
from keras_lth.rounds import RoundLayout
from keras_lth.schedules import IterativeSchedule

METHODS = ("lth", "lth-late", "imp-finetune", "double", "scored")
"""The pruning methods `prune/method` chooses from.

- `"lth"`: iterative magnitude pruning, rewinding to the initial weights.
- `"lth-late"`: the same, rewinding to the weights after epoch
  `prune/rewind_epoch` of round 0 (late rewinding).
- `"imp-finetune"`: iterative magnitude pruning without rewinding (each round
  fine-tunes the trained weights).
- `"double"`: `"lth"` plus `keras_lth.DoublePruning` re-introduction.
- `"scored"`: `"lth"` plus `keras_lth.ScoredPruning` re-introduction.
"""

_REINTRODUCING = ("double", "scored")


# name -> (kind, arguments, parent condition): the default search space.
SEARCH_SPACE = {
    "prune/method": ("Choice", {"values": list(METHODS), "default": "lth"}, None),
    "prune/rate": (
        "Float",
        {"min_value": 0.1, "max_value": 0.8, "step": 0.05, "default": 0.2},
        None,
    ),
    "prune/epochs_per_round": ("Int", {"min_value": 1, "max_value": 8, "default": 4}, None),
    "prune/rewind_epoch": (
        "Int",
        {"min_value": 1, "max_value": 4, "default": 1},
        ("prune/method", ["lth-late"]),
    ),
    "prune/scope": ("Choice", {"values": ["layer", "global"], "default": "layer"}, None),
    "prune/structure": ("Choice", {"values": ["weight", "neuron"], "default": "weight"}, None),
    "prune/norm": (
        "Choice",
        {"values": ["l1", "l2"], "default": "l1"},
        ("prune/structure", ["neuron"]),
    ),
    "prune/double_mode": (
        "Choice",
        {"values": ["complement", "feedback"], "default": "feedback"},
        ("prune/method", ["double"]),
    ),
    "prune/fraction": (
        "Float",
        {"min_value": 0.05, "max_value": 0.5, "step": 0.05, "default": 0.2},
        ("prune/method", list(_REINTRODUCING)),
    ),
    "prune/every": (
        "Int",
        {"min_value": 1, "max_value": 4, "default": 1},
        ("prune/method", list(_REINTRODUCING)),
    ),
    "prune/start": (
        "Int",
        {"min_value": 1, "max_value": 3, "default": 1},
        ("prune/method", list(_REINTRODUCING)),
    ),
    "prune/when": (
        "Choice",
        {"values": ["prune", "round"], "default": "prune"},
        ("prune/method", list(_REINTRODUCING)),
    ),
    "prune/prune_by": (
        "Choice",
        {"values": ["score", "magnitude"], "default": "score"},
        ("prune/method", ["scored"]),
    ),
    "prune/value": (
        "Choice",
        {"values": ["current", "zero", "rewind"], "default": "current"},
        ("prune/method", list(_REINTRODUCING)),
    ),
    "prune/decay": (
        "Choice",
        {"values": ["cosine", "constant"], "default": "cosine"},
        ("prune/method", list(_REINTRODUCING)),
    ),
    "prune/score_decay": (
        "Float",
        {"min_value": 0.0, "max_value": 0.75, "step": 0.25, "default": 0.0},
        ("prune/method", ["scored"]),
    ),
}
"""The schedule's hyperparameters: `{name: (kind, arguments, condition)}`.

`kind` is the `keras_tuner.HyperParameters` method, `arguments` its keyword
arguments, `condition` `(parent name, parent values)` or `None`: e.g.
`prune/rewind_epoch` only exists for `prune/method="lth-late"`.
"""


def rounds_for_target(target_density: float, rate: float) -> int:
    """Pruning rounds at `rate` per round needed to reach `target_density`.

    `ceil(log(target_density) / log(1 - rate))`, at least 1. With that many
    rounds, `IterativeSchedule(target_density=...)` then uses the slightly
    smaller rate `1 - target_density ** (1 / rounds)` that lands exactly on
    the target.

    Example:

    >>> rounds_for_target(0.05, 0.2)
    14
    >>> rounds_for_target(0.64, 0.2)
    2
    """
    target_density = pruning._check_rate(target_density, "target_density")
    rate = pruning._check_rate(rate)
    exact = math.log(target_density) / math.log(1.0 - rate)
    # 1e-9: log(0.64) / log(0.8) is 2.0000000000000004 in floating point.
    return max(1, math.ceil(exact - 1e-9))


class PruningHyperModel(keras_tuner.HyperModel):
    """A keras-tuner `HyperModel` that searches the prune schedule.

    `build(hp)` calls `build_model(hp)` (a compiled Keras 3 model with
    `MaskedDense` layers; its own hyperparameters are searched as usual) and
    declares the schedule's hyperparameters (`SEARCH_SPACE`). `fit(hp, model,
    ...)` builds the `PruningScheduler` the trial's values describe, trains
    for all its rounds in one `model.fit` and returns the metrics of the last
    epoch of the last round, i.e. of the network pruned to `target_density`:
    a denser round scoring better never counts. The checkpoint that
    `tuner.get_best_models()` loads is the one of that epoch too.

    The number of pruning rounds follows from `prune/rate`:
    `rounds_for_target(target_density, rate)`; the schedule then prunes at the
    exact rate that reaches `target_density` in that many rounds, in every
    layer (`scope="layer"`) or over all layers (`scope="global"`), counting
    weights, or neurons with `structure="neuron"` (the output layer's neurons
    are never pruned, so a neuron-pruned network keeps more weights). The
    declared `prune/rate` range starts at the smallest rate that gets there
    within `max_rounds`. The metrics `fit` returns include the measured
    `density` (share of prunable weights kept, `keras_lth.density`) and the
    number of pruning `rounds`.

    Trials that cannot reach the target within `max_rounds` / `max_epochs`,
    whose `prune/rewind_epoch` does not fit in their round length, or that
    stop before their last round (e.g. by `EarlyStopping`) raise
    `keras_tuner.errors.FailedTrialError`: the tuner marks them failed, with
    the reason in `trial.message`, and goes on.

    With `keras_tuner.Hyperband` the trial's epoch budget (`tuner/epochs`,
    up to `max_epochs` of the Hyperband tuner) is the number of epochs per
    round, replacing `prune/epochs_per_round`: every trial prunes all the way
    to `target_density`, small budgets with short rounds and promoted trials
    with longer ones. A promoted trial restarts from freshly built weights
    (a pruning run cannot continue from its predecessor's pruned checkpoint),
    so Hyperband's `initial_epoch` is not used and a promotion costs a full run.

    Args:
        build_model: Callable `build_model(hp) -> keras.Model`, compiled, with
            at least one `MaskedDense` layer.
        target_density: Share of the prunable weights to keep at the end, in
            (0, 1).
        max_rounds: Most pruning rounds a trial may take. Defaults to `20`.
        max_epochs: Most training epochs a trial may take (all rounds
            together), or `None` for no limit. Defaults to `None`.
        seed: Seed of the scheduler's `"reinit"` draws. Defaults to `None`.
        verbose: Verbosity of the trials' `PruningScheduler` (`1`: one line
            per round). Defaults to `0`.
        name: Name of the hypermodel. Defaults to `None`.

    Example:

    ```python
    hypermodel = lth.tuner.PruningHyperModel(build_model, target_density=0.05)
    tuner = keras_tuner.RandomSearch(hypermodel, objective="val_accuracy", max_trials=20)
    tuner.search(train_ds, validation_data=val_ds)
    scheduler = hypermodel.scheduler_from(tuner.get_best_hyperparameters()[0])
    ```
    """

    def __init__(
        self,
        build_model,
        target_density,
        max_rounds=20,
        max_epochs=None,
        seed=None,
        verbose=0,
        name=None,
    ):
        super().__init__(name=name)
        if not callable(build_model):
            raise ValueError(
                "Received an invalid value for `build_model`, expected a "
                f"callable `build_model(hp) -> keras.Model`. Received: "
                f"build_model={build_model!r}"
            )
        self.build_model = build_model
        self.target_density = pruning._check_rate(target_density, "target_density")
        self.max_rounds = pruning._check_int(max_rounds, "max_rounds", 1)
        self.max_epochs = (
            None if max_epochs is None else pruning._check_int(max_epochs, "max_epochs", 1)
        )
        self.seed = seed
        self.verbose = verbose

    # ------------------------------------------------------------------ #
    # keras-tuner hooks
    # ------------------------------------------------------------------ #
    def build(self, hp):
        declare_search_space(hp, min_rate=self.min_rate)
        return self.build_model(hp)

    @property
    def min_rate(self):
        """Smallest rate that reaches `target_density` within `max_rounds`."""
        return pruning.rate_for_target(self.target_density, self.max_rounds)

    def fit(self, hp, model, *args, **kwargs):
        """Trains all rounds; returns the last round's final metrics (a dict)."""
        try:
            scheduler = self.scheduler_from(hp)
        except ValueError as e:
            raise keras_tuner.errors.FailedTrialError(str(e)) from e
        values = _values(hp)
        if "tuner/trial_id" in values:
            # Hyperband promoted this trial and loaded its predecessor's
            # (pruned) checkpoint: start from fresh weights and full masks.
            model.set_weights(self.build_model(_copy(hp)).get_weights())
        kwargs.pop("initial_epoch", None)
        epochs = kwargs.pop("epochs", None)
        if epochs is not None and "tuner/epochs" not in values and epochs != scheduler.total_epochs:
            warnings.warn(
                f"`search(epochs={epochs})` is ignored: each trial trains for its "
                f"schedule's {scheduler.total_epochs} epochs.",
                stacklevel=2,
            )
        user_callbacks = list(kwargs.pop("callbacks", None) or [])
        if any(isinstance(c, PruningScheduler) for c in user_callbacks):
            raise keras_tuner.errors.FatalValueError(
                "`PruningHyperModel` adds the trial's own `PruningScheduler`; "
                "remove the `PruningScheduler` from the callbacks given to "
                f"`search`. Received: callbacks={user_callbacks!r}"
            )
        callbacks = [scheduler] + [
            _FinalRoundOnly(c, scheduler) if _is_checkpoint(c) else c for c in user_callbacks
        ]
        model.fit(*args, epochs=scheduler.total_epochs, callbacks=callbacks, **kwargs)
        return self._final_metrics(scheduler)

    # ------------------------------------------------------------------ #
    # From hyperparameters to a scheduler
    # ------------------------------------------------------------------ #
    def describe(self, hp) -> dict:
        """The schedule that `hp` describes, as plain values.

        Args:
            hp: A `keras_tuner.HyperParameters` (e.g. a trial's or
                `tuner.get_best_hyperparameters()[0]`) or a dict of values.

        Returns:
            A dict with `method`, `rate` (searched), `rounds`, `exact_rate`,
            `epochs_per_round`, `total_epochs`, `rewind`, `scope`,
            `structure`, `norm` and `reintroduce` (`None` or a dict of the
            re-introduction arguments).

        Raises:
            ValueError: when the schedule cannot reach `target_density`
                within `max_rounds` / `max_epochs`, or its values conflict.
        """
        values = _values(hp)

        def get(name):
            return values.get(name, SEARCH_SPACE[name][1]["default"])

        method = get("prune/method")
        if method not in METHODS:
            raise ValueError(
                f"Received an invalid value for `prune/method`, expected one of "
                f"{METHODS}. Received: prune/method={method!r}"
            )
        rate = round(float(get("prune/rate")), 6)  # 0.30000000000000004 from Float steps
        rounds = rounds_for_target(self.target_density, rate)
        # Hyperband's budget is the round length (see the class docstring).
        epochs_per_round = int(values.get("tuner/epochs", get("prune/epochs_per_round")))
        rewind = None if method == "imp-finetune" else "init"
        if method == "lth-late":
            rewind = int(get("prune/rewind_epoch"))
            if rewind >= epochs_per_round:
                raise ValueError(
                    f"prune/rewind_epoch={rewind} needs more than {rewind} epochs "
                    f"per round. Received: epochs_per_round={epochs_per_round}"
                )
        structure = get("prune/structure")
        reintroduce = None
        if method in _REINTRODUCING:
            when = get("prune/when")
            reintroduce = {"fraction": float(get("prune/fraction")), "when": when}
            if when == "round":
                # (with when="prune" there are no in-round events to time)
                reintroduce["value"] = get("prune/value")
                reintroduce["every"] = int(get("prune/every"))
                reintroduce["start"] = int(get("prune/start"))
                reintroduce["decay"] = get("prune/decay")
            if method == "double":
                reintroduce = {"mode": get("prune/double_mode"), **reintroduce}
            else:
                reintroduce["prune_by"] = get("prune/prune_by")
                reintroduce["score_decay"] = round(float(get("prune/score_decay")), 6)
            # Events fall after epochs start, start + every, ... of a round,
            # before its last epoch ends (keras_lth.reintroduce.event_due).
            if when == "round" and max(reintroduce["start"], 1) >= epochs_per_round:
                raise ValueError(
                    f"prune/start={reintroduce['start']} leaves no re-introduction "
                    f"event in rounds of {epochs_per_round} epochs. Received: "
                    f"epochs_per_round={epochs_per_round}"
                )
        total_epochs = RoundLayout.for_rewind(rounds, epochs_per_round, rewind).total_epochs
        plan = {
            "method": method,
            "rate": rate,
            "rounds": rounds,
            "exact_rate": pruning.rate_for_target(self.target_density, rounds),
            "epochs_per_round": epochs_per_round,
            "total_epochs": total_epochs,
            "rewind": rewind,
            "scope": get("prune/scope"),
            "structure": structure,
            "norm": get("prune/norm") if structure == "neuron" else "l1",
            "reintroduce": reintroduce,
        }
        if rounds > self.max_rounds:
            raise ValueError(
                f"Cannot reach target_density={self.target_density} within "
                f"max_rounds={self.max_rounds}: prune/rate={rate} needs {rounds} "
                "rounds."
            )
        if self.max_epochs is not None and total_epochs > self.max_epochs:
            raise ValueError(
                f"Cannot reach target_density={self.target_density} within "
                f"max_epochs={self.max_epochs}: {rounds} rounds at prune/rate="
                f"{rate} with {epochs_per_round} epochs per round take "
                f"{total_epochs} epochs."
            )
        return plan

    def scheduler_from(self, hp, **kwargs) -> PruningScheduler:
        """A ready `PruningScheduler` for the schedule that `hp` describes.

        Args:
            hp: A `keras_tuner.HyperParameters` or a dict of values, e.g.
                `tuner.get_best_hyperparameters()[0]`.
            **kwargs: Further `PruningScheduler` arguments (`test_data`,
                `seed`, `verbose`, `backup_dir`), overriding the hypermodel's.

        Returns:
            A `PruningScheduler`; train for its `total_epochs`.

        Raises:
            ValueError: as `describe`.
        """
        plan = self.describe(hp)
        schedule = IterativeSchedule(
            rounds=plan["rounds"],
            epochs_per_round=plan["epochs_per_round"],
            target_density=self.target_density,
        )
        options = {"seed": self.seed, "verbose": self.verbose, **kwargs}
        if plan["reintroduce"] is not None:
            options["reintroduce"] = _reintroducer(plan["method"], plan["reintroduce"])
        return PruningScheduler(
            schedule,
            rewind=plan["rewind"],
            scope=plan["scope"],
            structure=plan["structure"],
            norm=plan["norm"],
            **options,
        )

    def _final_metrics(self, scheduler):
        last = scheduler.schedule.rounds
        record = scheduler.rounds[-1] if scheduler.rounds else None
        if record is None or record["round"] != last:
            reached = "no round" if record is None else f"round {record['round']}"
            density = "" if record is None else f" (density {record['density']:.4f})"
            raise keras_tuner.errors.FailedTrialError(
                f"Training stopped after {reached}{density} of {last}: the "
                f"network never reached target_density={self.target_density}."
            )
        metrics = {k: v for k, v in record["final"].items() if isinstance(v, (int, float))}
        metrics["density"] = record["density"]
        metrics["rounds"] = float(last)
        return metrics


def declare_search_space(hp, min_rate=None):
    """Declares the schedule's hyperparameters (`SEARCH_SPACE`) in `hp`.

    `min_rate` raises the lower end of `prune/rate` to the first value of its
    0.05 grid at or above it (the hypermodel passes the smallest rate that
    reaches its target within `max_rounds`): keras-tuner's Bayesian oracle
    learns nothing from failed trials and would propose them again.

    A name that `hp` already knows (declared by the user, fixed or narrowed)
    keeps the user's declaration: under the same condition as ours, keras-tuner
    returns the existing one; under another condition (or none), ours is not
    declared at all.
    """
    for name, (kind, args, condition) in SEARCH_SPACE.items():
        ours = [] if condition is None else [{"name": condition[0], "values": condition[1]}]
        if any(p.name == name and [c.get_config() for c in p.conditions] != ours for p in hp.space):
            continue
        if condition is not None:
            args = {**args, "parent_name": condition[0], "parent_values": condition[1]}
        if name == "prune/rate" and min_rate is not None:
            args = _raise_min(args, min_rate)
        # Declared every time, not only once: keras-tuner finds the
        # conditional hyperparameters by watching which scopes each build opens.
        getattr(hp, kind)(name, **args)


def _raise_min(args, min_rate):
    lo, hi, step = args["min_value"], args["max_value"], args["step"]
    lo = max(lo, round(math.ceil(round(min_rate / step, 9)) * step, 6))
    if lo > hi:
        lo = hi  # only the largest rate is left; larger targets need rounds
    return {**args, "min_value": lo, "default": max(args["default"], lo)}


def _values(hp):
    return dict(hp.values if isinstance(hp, keras_tuner.HyperParameters) else hp)


def _copy(hp):
    return hp.copy() if isinstance(hp, keras_tuner.HyperParameters) else hp


def _reintroducer(method, args):
    import keras_lth

    cls_name = {"double": "DoublePruning", "scored": "ScoredPruning"}[method]
    cls = getattr(keras_lth, cls_name, None)
    if cls is None:
        raise ValueError(
            f"prune/method={method!r} needs `keras_lth.{cls_name}` (re-introduction), "
            "which this version of keras-lth does not have."
        )
    return cls(**args)


def _is_checkpoint(callback):
    # keras-tuner's own per-trial checkpoint (tuner_utils.SaveBestEpoch).
    return type(callback).__name__ == "SaveBestEpoch" and type(callback).__module__.startswith(
        "keras_tuner"
    )


class _FinalRoundOnly(keras.callbacks.Callback):
    """Lets keras-tuner's checkpoint see only the last round's epochs.

    Without it, `SaveBestEpoch` would keep the weights of the epoch with the
    best objective over all rounds, usually a denser one. Given logs without
    the objective, it saves every epoch, so the last epoch of the last round
    (the one whose metrics `fit` reports) is what stays on disk.
    """

    def __init__(self, callback, scheduler):
        super().__init__()
        self.callback = callback
        self.scheduler = scheduler

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)

    def on_epoch_end(self, epoch, logs=None):
        if self.scheduler.round_of(epoch) == self.scheduler.schedule.rounds:
            self.callback.on_epoch_end(epoch, {})
