"""Re-introducing prematurely pruned weights: Double-pruning and Scored-pruning.

Magnitude pruning removes, early on, weights that would have become
important. The two strategies here swap weights between the pruned and the
kept sets *during* a round while keeping the density exactly on schedule:
each event re-introduces `k` pruned weights (or neurons) and prunes the `k`
weakest kept ones, in the same layer for `scope="layer"` or over all layers
for `scope="global"`.

- `DoublePruning`: the pruned weights keep training too, either as a network
  of their own (`mode="complement"`: a second forward/backward pass with the
  masks `1 - M`) or from the dense gradient of the kept network
  (`mode="feedback"`, cf. Lin et al. 2020, "Dynamic Model Pruning with
  Feedback"). The pruned weights that grew largest come back.
- `ScoredPruning`: every weight accumulates the score `-w * dL/dw_eff` at each
  training step (the first-order estimate of how much the loss drops with
  the weight present); the best-scored pruned weights come back and the
  worst-scored kept ones go.

The strategies are passed to `PruningScheduler(reintroduce=...)`, which runs
the training step that they need (see `keras_lth.training`) and calls
`swap_masks` at every event. The functions below are pure NumPy: they take
arrays and return new arrays.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from keras_lth import pruning

UNITS = ("epoch", "step")
DECAYS = ("cosine", "constant")
VALUES = ("current", "zero", "rewind")


# ---------------------------------------------------------------------- #
# Pure selection maths
# ---------------------------------------------------------------------- #
def unit_alive(mask: np.ndarray, structure: str) -> np.ndarray:
    """Which units are kept: weights (flattened) or neurons (columns)."""
    if structure == "neuron":
        return pruning.alive_neurons(mask)
    return np.asarray(mask).ravel() > 0


def _top(scores, candidates, count, largest):
    """Boolean array, True at `count` candidates with the largest/smallest score.

    Ties go to the lower position (stable sort), so the choice is deterministic.
    """
    idx = np.flatnonzero(candidates)
    out = np.zeros(candidates.shape, dtype=bool)
    if count <= 0 or idx.size == 0:
        return out
    values = np.asarray(scores, dtype=np.float64)[idx]
    order = np.argsort(-values if largest else values, kind="stable")
    out[idx[order[:count]]] = True
    return out


def select_swap(grow_scores, drop_scores, alive, count):
    """Picks the units to re-introduce and to prune in one event.

    Args:
        grow_scores: 1-D scores of all units; among the pruned units (not
            `alive`), the `k` highest are re-introduced.
        drop_scores: 1-D scores of all units; among the kept units, the `k`
            lowest are pruned.
        alive: 1-D boolean, the kept units before the event.
        count: the wanted `k`; capped at the number of pruned and of kept
            units, so the density never changes.

    Returns:
        `(grow, drop)`: two disjoint 1-D boolean arrays with `k` True each.
    """
    alive = np.asarray(alive, dtype=bool).ravel()
    k = int(min(count, alive.sum(), (~alive).sum()))
    grow = _top(np.ravel(grow_scores), ~alive, k, largest=True)
    drop = _top(np.ravel(drop_scores), alive, k, largest=False)
    return grow, drop


def swap_masks(
    grow_scores: Mapping[str, np.ndarray],
    drop_scores: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    fraction: float,
    scope: str = "layer",
    structure: str = "weight",
    frozen_neurons: Sequence[str] = (),
    own_layers: Sequence[str] = (),
) -> tuple[dict, dict, dict]:
    """One re-introduction event over named layers.

    Args:
        grow_scores: layer name -> score of every unit (the kernel's shape for
            `structure="weight"`, one value per neuron for `"neuron"`); the
            highest-scored pruned units come back.
        drop_scores: layer name -> score of every unit, same shapes; the
            lowest-scored kept units are pruned.
        masks: layer name -> current 0/1 kernel mask.
        fraction: share of the kept units swapped, in [0, 1]:
            `k = round(fraction * kept)` per layer (`scope="layer"`) or over
            all layers together (`scope="global"`), capped at the number of
            pruned units.
        scope: `"layer"` or `"global"`.
        structure: `"weight"` or `"neuron"` (a neuron is a kernel column).
        frozen_neurons: layers left out with `structure="neuron"` (the
            output layer, whose neurons are never pruned).
        own_layers: with `scope="global"`, layers that swap only within
            themselves: those with their own rate in `layer_rates`, which
            `keras_lth.pruning.prune` also prunes on their own. Their kept
            counts then stay what the schedule makes them.

    Returns:
        `(new_masks, grown, dropped)`: new kernel masks for every layer, and
        per layer the boolean arrays (kernel-shaped) of the re-introduced and
        of the newly pruned weights. The number of kept weights is unchanged
        per layer (`"layer"`) or in total (`"global"`; with neurons, the
        number of kept neurons).
    """
    fraction = check_fraction(fraction)
    if scope not in ("layer", "global"):
        raise ValueError(
            "Received an invalid value for `scope`, expected 'layer' or "
            f"'global'. Received: scope={scope!r}"
        )
    if structure not in ("weight", "neuron"):
        raise ValueError(
            "Received an invalid value for `structure`, expected 'weight' or "
            f"'neuron'. Received: structure={structure!r}"
        )
    if not (set(grow_scores) == set(drop_scores) == set(masks)):
        raise ValueError(
            "Expected `grow_scores`, `drop_scores` and `masks` for the same "
            f"layers. Received: {sorted(grow_scores)}, {sorted(drop_scores)}, "
            f"{sorted(masks)}"
        )
    masks = {n: np.asarray(m, dtype=np.float32) for n, m in masks.items()}
    names = [n for n in masks if not (structure == "neuron" and n in frozen_neurons)]
    units = {}
    for n in names:
        alive = unit_alive(masks[n], structure)
        for arg, scores in (("grow_scores", grow_scores[n]), ("drop_scores", drop_scores[n])):
            if np.size(scores) != alive.size:
                raise ValueError(
                    f"Received an invalid value for `{arg}[{n!r}]`, expected "
                    f"{alive.size} scores (one per {structure}). Received: "
                    f"shape {np.shape(scores)}"
                )
        units[n] = (np.ravel(grow_scores[n]), np.ravel(drop_scores[n]), alive)

    if scope == "layer":
        groups = [[n] for n in names]
    else:
        shared = [n for n in names if n not in own_layers]
        groups = [[n] for n in names if n in own_layers] + ([shared] if shared else [])
    picks = {}
    for group in groups:
        g = np.concatenate([units[n][0] for n in group])
        d = np.concatenate([units[n][1] for n in group])
        alive = np.concatenate([units[n][2] for n in group])
        grow, drop = select_swap(g, d, alive, pruning.prune_count(fraction, int(alive.sum())))
        start = 0
        for n in group:
            size = units[n][2].size
            picks[n] = (grow[start : start + size], drop[start : start + size])
            start += size

    new, grown, dropped = dict(masks), {}, {}
    for n, m in masks.items():
        grow, drop = picks.get(n, (np.zeros(0, bool), np.zeros(0, bool)))
        grown[n] = _expand(grow, m, structure)
        dropped[n] = _expand(drop, m, structure)
        new[n] = np.where(grown[n], 1.0, np.where(dropped[n], 0.0, m)).astype(np.float32)
    return new, grown, dropped


def _expand(unit_flags, mask, structure):
    """Kernel-shaped boolean array from per-unit flags."""
    if unit_flags.size == 0:
        return np.zeros(mask.shape, dtype=bool)
    if structure == "neuron":
        return np.broadcast_to(unit_flags, mask.shape).copy()
    return unit_flags.reshape(mask.shape)


def neuron_scores(values: np.ndarray, norm: str | None = None) -> np.ndarray:
    """Per-neuron (column) aggregate of a kernel-shaped array.

    `norm=None` sums the values (scores add up to the neuron's estimated loss
    drop). `"l1"` / `"l2"` take the column norm on a per-weight scale (l1
    divided by the fan-in, l2 by its square root), as global neuron pruning
    does, so that neurons of layers with different fan-ins compare.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values.reshape(-1, values.shape[-1])
    if norm is None:
        return values.sum(axis=0)
    fan_in = values.shape[0]
    scale = fan_in if norm == "l1" else math.sqrt(fan_in)
    return pruning.neuron_norms(values, np.ones_like(values), norm) / scale


def fraction_at(fraction: float, t: float, horizon: float | None, decay: str) -> float:
    """The swap fraction of an event at time `t` of a round of length `horizon`.

    `decay="cosine"` anneals it as RigL does: `fraction * (1 + cos(pi t / T)) / 2`,
    from `fraction` at the round's start to 0 at its end; `"constant"` keeps
    it. Without a known horizon the fraction stays constant.

    Example:

    >>> fraction_at(0.2, 5, 10, "cosine")
    0.1
    """
    if decay == "constant" or not horizon:
        return float(fraction)
    t = min(max(float(t), 0.0), float(horizon))
    return float(fraction) * 0.5 * (1.0 + math.cos(math.pi * t / float(horizon)))


def event_due(t: int, start: int, every: int, horizon: int | None) -> bool:
    """Whether an event happens after `t` units (epochs or steps) of a round.

    Events fall at `t = start, start + every, start + 2 * every, ...`, never
    at `t = 0` (nothing trained yet) nor at the round's end (`t >= horizon`:
    the round's pruning comes next, and swapped weights would get no
    training).
    """
    if t <= 0 or t < start or (horizon is not None and t >= horizon):
        return False
    return (t - start) % every == 0


def next_event(after: int, start: int, every: int) -> int:
    """The first event time `t > after` (see `event_due`), ignoring the horizon.

    Example:

    >>> [next_event(a, start=2, every=3) for a in (0, 2, 3, 5)]
    [2, 5, 5, 8]
    """
    t = max(int(after) + 1, int(start), 1)
    return t + (-(t - start)) % every


def check_fraction(fraction):
    if isinstance(fraction, (bool, str)) or not isinstance(fraction, numbers.Real):
        ok = False
    else:
        ok = 0.0 <= float(fraction) <= 1.0
    if not ok:
        raise ValueError(
            "Received an invalid value for `fraction`, expected a number in "
            f"[0, 1]. Received: fraction={fraction!r}"
        )
    return float(fraction)


# ---------------------------------------------------------------------- #
# Strategies
# ---------------------------------------------------------------------- #
def _check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected one of "
            f"{choices}. Received: {name}={value!r}"
        )
    return value


class Reintroduction:
    """Base class of the re-introduction strategies (shared parameters).

    Args:
        fraction: Share of the kept weights (neurons) swapped per event, in
            [0, 1]. `0` turns swapping off (the run is then plain iterative
            pruning).
        every: Epochs or steps (see `unit`) between two events, a positive
            integer.
        unit: `"epoch"` or `"step"`, the unit of `every` and `start`. Steps
            count from the start of the round (the optimizer's iterations,
            which restart at every round); with `steps_per_execution > 1` an
            event falls at the first batch end at or after its step.
        start: Warm-up: epochs or steps of every round before its first
            event (the first event is at `max(start, 1)`), a non-negative
            integer.
        decay: `"cosine"` (the fraction anneals to 0 over the round, as in
            RigL: fewer swaps as the round converges) or `"constant"`.
        value: Value of a re-introduced weight: `"current"` (its raw value,
            kept while it was pruned), `"zero"`, or `"rewind"` (its value at
            the start of the round, i.e. after rewinding).
    """

    #: The training step needs the dense gradient of the kept network.
    dense_gradient = False
    #: The training step runs the complement network too.
    complement = False
    #: The layers carry a per-weight score.
    scored = False

    def __init__(self, fraction, every, unit, start, decay, value):
        self.fraction = check_fraction(fraction)
        self.every = pruning._check_int(every, "every", 1)
        self.unit = _check_choice(unit, "unit", UNITS)
        self.start = pruning._check_int(start, "start", 0)
        self.decay = _check_choice(decay, "decay", DECAYS)
        self.value = _check_choice(value, "value", VALUES)

    def fraction_at(self, t, horizon):
        """The swap fraction of an event `t` units into a round of `horizon`."""
        return fraction_at(self.fraction, t, horizon, self.decay)

    def is_due(self, t, horizon):
        """Whether an event falls `t` units into a round of `horizon` units."""
        return event_due(t, self.start, self.every, horizon)

    def criteria(self, kernels, masks, scores, structure, norm):
        """`(grow_scores, drop_scores)` per layer, in unit space."""
        raise NotImplementedError

    def get_config(self):
        return {
            "fraction": self.fraction,
            "every": self.every,
            "unit": self.unit,
            "start": self.start,
            "decay": self.decay,
            "value": self.value,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_lth")
class DoublePruning(Reintroduction):
    """Double-pruning: the pruned weights train too; those that grow come back.

    The kept network (mask `M`) trains as usual. The pruned weights (mask
    `1 - M`) train as well, and at every event the pruned weights with the
    largest |w| (neurons: largest l1/l2 norm of their raw incoming weights)
    replace the kept weights with the smallest |w|, `k` for `k`, so the
    density stays exactly on schedule.

    Args:
        mode: How the pruned weights train.
            `"complement"` (the algorithm as proposed): the pruned network is
            a network of its own, trained on the same batch with a second
            forward/backward pass through the masks `1 - M` (for neuron
            pruning: the pruned neurons, with the output layer shared); its
            gradient updates only the pruned weights. About twice the
            training cost.
            `"feedback"` (cheaper, cf. Lin et al. 2020): one pass, forward
            with `kernel * M`, and the pruned raw weights also receive the
            dense gradient of that network.
            Both use the model's own optimizer (each weight has its own
            optimizer state, so with element-wise optimizers such as SGD,
            Adam or RMSprop the pruned weights train exactly as a second
            network would; not so with a global `clipnorm`). Defaults to
            `"complement"`.
        fraction: Share of the kept weights swapped per event. Defaults to
            `0.2`.
        every: Epochs or steps between events. Defaults to `1`.
        unit: `"epoch"` or `"step"`. Defaults to `"epoch"`.
        start: Warm-up epochs (steps) of each round before the first event.
            Defaults to `1`: the pruned weights first train for an epoch, so
            that their magnitudes mean something.
        decay: `"cosine"` or `"constant"`. Defaults to `"cosine"`.
        value: `"current"`, `"zero"` or `"rewind"`. Defaults to `"current"`:
            a re-introduced weight keeps the value the pruned network trained
            it to, which is what made it large.

    Example:

    ```python
    scheduler = lth.PruningScheduler(
        lth.IterativeSchedule(rounds=5, epochs_per_round=8, rate=0.2),
        rewind="init",
        reintroduce=lth.DoublePruning(mode="feedback", fraction=0.2),
    )
    ```
    """

    def __init__(
        self,
        mode="complement",
        fraction=0.2,
        every=1,
        unit="epoch",
        start=1,
        decay="cosine",
        value="current",
    ):
        super().__init__(fraction, every, unit, start, decay, value)
        self.mode = _check_choice(mode, "mode", ("complement", "feedback"))
        self.dense_gradient = self.mode == "feedback"
        self.complement = self.mode == "complement"

    def criteria(self, kernels, masks, scores, structure, norm):
        grow, drop = {}, {}
        for n, k in kernels.items():
            if structure == "neuron":
                grow[n] = drop[n] = neuron_scores(k, norm)
            else:
                grow[n] = drop[n] = np.abs(k)
        return grow, drop

    def get_config(self):
        return {"mode": self.mode, **super().get_config()}


@keras.saving.register_keras_serializable(package="keras_lth")
class ScoredPruning(Reintroduction):
    """Scored-pruning: weights are scored by how they align with the gradient.

    Every weight carries a score that adds up `-w * g` at each training step,
    where `g = dL/d(kernel * mask)` is the dense gradient (nonzero at pruned
    positions too) and `w` the raw value (pruned weights keep theirs). A
    positive score means the weight points along the descent direction: the
    first-order Taylor estimate of the loss drop from having it. At each
    event the pruned weights with the highest scores come back and the kept
    weights with the lowest scores (or smallest |w|) are pruned, `k` for `k`;
    the scores then restart (or decay). Neurons are scored by the sum of
    their incoming weights' scores. Pruned weights do not train: their raw
    values stay as they were when pruned.

    The scores are a non-trainable weight `kernel_score` of each
    `MaskedDense` (added when training starts), so they are saved with the
    model; under a distribution strategy each step adds the increments
    summed over the replicas.

    Args:
        fraction: Share of the kept weights swapped per event. Defaults to
            `0.2`.
        every: Epochs or steps between events. Defaults to `1`.
        unit: `"epoch"` or `"step"`. Defaults to `"epoch"`.
        start: Warm-up epochs (steps) of each round before the first event.
            Defaults to `1`: scores first accumulate for an epoch.
        decay: `"cosine"` or `"constant"`. Defaults to `"cosine"`.
        value: `"current"`, `"zero"` or `"rewind"`. Defaults to `"current"`:
            the score was earned by the weight's raw value, so it comes back
            with that value.
        prune_by: What decides which kept weights are pruned: `"score"`
            (the lowest scores) or `"magnitude"` (the smallest |w|, as
            magnitude pruning does). Defaults to `"score"`.
        score_decay: After every event the scores are multiplied by this
            factor in [0, 1): `0` restarts them (every event judges the last
            interval only), a value like `0.5` keeps an exponentially
            decaying memory. Scores always restart at a round's start.
            Defaults to `0.0`.

    Example:

    ```python
    scheduler = lth.PruningScheduler(
        lth.IterativeSchedule(rounds=5, epochs_per_round=8, rate=0.2),
        reintroduce=lth.ScoredPruning(fraction=0.2, every=1),
    )
    ```
    """

    scored = True

    def __init__(
        self,
        fraction=0.2,
        every=1,
        unit="epoch",
        start=1,
        decay="cosine",
        value="current",
        prune_by="score",
        score_decay=0.0,
    ):
        super().__init__(fraction, every, unit, start, decay, value)
        self.prune_by = _check_choice(prune_by, "prune_by", ("score", "magnitude"))
        if isinstance(score_decay, (bool, str)) or not (
            isinstance(score_decay, numbers.Real) and 0.0 <= float(score_decay) < 1.0
        ):
            raise ValueError(
                "Received an invalid value for `score_decay`, expected a "
                f"number in [0, 1). Received: score_decay={score_decay!r}"
            )
        self.score_decay = float(score_decay)
        self.dense_gradient = True

    def criteria(self, kernels, masks, scores, structure, norm):
        grow, drop = {}, {}
        for n, k in kernels.items():
            if structure == "neuron":
                grow[n] = neuron_scores(scores[n])
                drop[n] = grow[n] if self.prune_by == "score" else neuron_scores(k, norm)
            else:
                grow[n] = np.asarray(scores[n])
                drop[n] = grow[n] if self.prune_by == "score" else np.abs(k)
        return grow, drop

    def get_config(self):
        return {
            **super().get_config(),
            "prune_by": self.prune_by,
            "score_decay": self.score_decay,
        }
