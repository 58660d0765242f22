"""Re-introducing prematurely pruned weights: Double-pruning and Scored-pruning.

Magnitude pruning removes, early on, weights that would have become
important. The two strategies here bring pruned weights back at the density
the schedule prescribes, in one of two places (`when`):

- `when="round"`: swap events *during* a round; each event re-introduces `k`
  pruned weights (or neurons) and prunes the `k` weakest kept ones, in the
  same layer for `scope="layer"` or over all layers for `scope="global"`
  (`swap_masks`);
- `when="prune"`: re-selection *at the pruning step*; the next mask is
  chosen over the kept and the pruned weights by the strategy's criterion,
  at exactly the count that iterative pruning keeps (`reselect`), so a
  weight pruned in round 1 may come back in round 5.

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
`swap_masks` at every event, or `reselect` at every pruning step (see
`keras_lth.swaps`). The functions below are pure NumPy: they take arrays and
return new arrays.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence

import keras
import numpy as np

from keras_lth import pruning

UNITS = ("epoch", "step")
DECAYS = ("cosine", "constant")
VALUES = ("current", "zero", "rewind")
WHEN = ("round", "prune")
# the in-round event arguments' defaults (with when="prune" the others warn)
_EVENT_DEFAULTS = {"every": 1, "unit": "epoch", "start": 1, "decay": "cosine", "value": "current"}


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
    out[idx[pruning._lowest(-values if largest else values, count)]] = True
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
    pruning.check_scope(scope)
    pruning.check_structure(structure)
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

    picks = {}
    for group in _groups(names, scope, own_layers):
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


def _groups(names, scope, own_layers=()):
    """The groups of layers that share one count.

    Every layer alone for `scope="layer"`; for `"global"`, the layers of
    `own_layers` (those with their own rate) alone and all others together.
    """
    if scope == "layer":
        return [[n] for n in names]
    shared = [n for n in names if n not in own_layers]
    return [[n] for n in names if n in own_layers] + ([shared] if shared else [])


def _unit_scores(scores, masks, names, structure, arg="scores"):
    """`{name: flat scores}`, checked to hold one score per unit of the mask."""
    out = {}
    for n in names:
        size = unit_alive(masks[n], structure).size
        if np.size(scores[n]) != size:
            raise ValueError(
                f"Received an invalid value for `{arg}[{n!r}]`, expected {size} "
                f"scores (one per {structure}). Received: shape {np.shape(scores[n])}"
            )
        out[n] = np.asarray(scores[n], dtype=np.float64).ravel()
    return out


def _check_names(**mappings):
    first, *rest = mappings.items()
    if any(set(m) != set(first[1]) for _, m in rest):
        listed = ", ".join(f"`{k}` {sorted(m)}" for k, m in mappings.items())
        raise ValueError(f"Expected the same layers in every argument. Received: {listed}")


def keep_highest(
    scores: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    rate: float,
    layer_rates: Mapping[str, float] | None = None,
    scope: str = "layer",
    structure: str = "weight",
    frozen_neurons: Sequence[str] = (),
) -> dict:
    """One pruning round by given scores: the lowest-scored alive units go.

    The counts and ties of `keras_lth.pruning.prune`, with any score in
    place of the magnitude: `round(rate * alive)` alive units (weights, or
    neurons with `structure="neuron"`) are pruned per layer
    (`scope="layer"`) or over the layers together (`"global"`; layers in
    `layer_rates` prune on their own at their rate), the lowest scores first
    and, among equal scores, the first position first. With `scores = |w|`
    it is magnitude pruning.

    Args:
        scores: layer name -> one score per unit (the mask's shape for
            weights, one value per neuron for `"neuron"`).
        masks: layer name -> current 0/1 mask.
        rate: share of the alive units pruned, in (0, 1).
        layer_rates: per-layer overrides of `rate`.
        scope: `"layer"` or `"global"`.
        structure: `"weight"` or `"neuron"` (a neuron is a mask column).
        frozen_neurons: layers left as they are with `structure="neuron"`.

    Returns:
        layer name -> new mask (float32), a subset of the old one.

    Example:

    >>> keep_highest({"a": np.array([3.0, -1.0, 2.0, 0.0])},
    ...              {"a": np.array([1, 1, 1, 0], "float32")}, rate=0.34)["a"]
    array([1., 0., 1., 0.], dtype=float32)
    """
    rate = pruning._check_rate(rate)
    pruning.check_scope(scope)
    pruning.check_structure(structure)
    layer_rates = dict(layer_rates or {})
    for n, r in layer_rates.items():
        pruning._check_rate(r, f"layer_rates[{n!r}]")
    _check_names(scores=scores, masks=masks)
    masks = {n: np.asarray(m, dtype=np.float32) for n, m in masks.items()}
    names = [n for n in masks if not (structure == "neuron" and n in frozen_neurons)]
    flat = _unit_scores(scores, masks, names, structure)
    new = dict(masks)
    own = [n for n in names if n in layer_rates]
    for group in _groups(names, scope, own):
        group_rate = layer_rates.get(group[0], rate) if len(group) == 1 else rate
        alive = np.concatenate([unit_alive(masks[n], structure) for n in group])
        count = pruning.prune_count(group_rate, int(alive.sum()))
        drop = pruning._prune_lowest(np.concatenate([flat[n] for n in group]), alive, count)
        start = 0
        for n in group:
            size = flat[n].size
            gone = _expand(drop[start : start + size], masks[n], structure)
            new[n] = np.where(gone, 0.0, masks[n]).astype(np.float32)
            start += size
    return new


def reselect(
    scores: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    base: Mapping[str, np.ndarray],
    fraction: float,
    scope: str = "layer",
    structure: str = "weight",
    frozen_neurons: Sequence[str] = (),
    own_layers: Sequence[str] = (),
) -> tuple[dict, dict, dict]:
    """Re-selection at a pruning step: pruned units may re-enter the next mask.

    `base` is the next mask chosen among the kept units alone (iterative
    magnitude pruning's choice, or the scores' lowest pruned); it has the
    round's exact count. Units pruned *before* (0 in `masks`) then compete
    with it on one scale, `scores`: the best-scored pruned units replace the
    worst-scored units of `base`, one for one, as long as the candidate's
    score is strictly higher, and at most `round(fraction * n)` of the `n`
    units of `base` are replaced. The result is the top-`n` of
    `base` together with the pruned units by score, subject to that cap;
    with `fraction=1` and `base` the top of the kept units by the same
    scores, it is the top-`n` of all units. Counts are per layer
    (`scope="layer"`) or over the layers together (`"global"`, with the
    `own_layers` on their own), in units (weights, or neurons with
    `structure="neuron"`). Ties go to the first position.

    Args:
        scores: layer name -> one score per unit, comparable between kept
            and pruned units (the mask's shape for weights, one per neuron
            for `"neuron"`); higher is more worth keeping.
        masks: layer name -> the mask of the round that ends (1 = kept).
        base: layer name -> the next mask without re-entries, a subset of
            `masks`.
        fraction: the cap on re-entries, a share of the next mask's count
            in [0, 1]; `0` returns `base`.
        scope: `"layer"` or `"global"`.
        structure: `"weight"` or `"neuron"`.
        frozen_neurons: layers left as `base` has them with `"neuron"`.
        own_layers: with `scope="global"`, layers that re-select within
            themselves (those with their own rate in `layer_rates`).

    Returns:
        `(new_masks, entered, left)`: the next masks, and per layer the
        boolean arrays (mask-shaped) of the pruned units that re-entered and
        of the units of `base` they replaced. Each group keeps `base`'s count.

    Example:

    >>> new, entered, left = reselect(
    ...     {"a": np.array([4.0, 1.0, 3.0, 9.0])},   # |w|, say
    ...     {"a": np.array([1, 1, 1, 0], "float32")},  # unit 3 was pruned
    ...     {"a": np.array([1, 0, 1, 0], "float32")},  # IMP keeps 0 and 2
    ...     fraction=0.5)
    >>> new["a"], np.flatnonzero(entered["a"]), np.flatnonzero(left["a"])
    (array([1., 0., 0., 1.], dtype=float32), array([3]), array([2]))
    """
    fraction = check_fraction(fraction)
    pruning.check_scope(scope)
    pruning.check_structure(structure)
    _check_names(scores=scores, masks=masks, base=base)
    masks = {n: np.asarray(m, dtype=np.float32) for n, m in masks.items()}
    base = {n: np.asarray(m, dtype=np.float32) for n, m in base.items()}
    for n in masks:
        if base[n].shape != masks[n].shape or np.any((base[n] > 0) & (masks[n] == 0)):
            raise ValueError(
                f"Received an invalid value for `base[{n!r}]`, expected a mask of "
                f"shape {masks[n].shape} that keeps only units kept in "
                f"`masks[{n!r}]`. Received: shape {base[n].shape}"
            )
    names = [n for n in masks if not (structure == "neuron" and n in frozen_neurons)]
    flat = _unit_scores(scores, masks, names, structure)
    new, entered, left = dict(base), {}, {}
    for n in masks:
        entered[n] = np.zeros(masks[n].shape, dtype=bool)
        left[n] = np.zeros(masks[n].shape, dtype=bool)
    for group in _groups(names, scope, own_layers):
        s = np.concatenate([flat[n] for n in group])
        was = np.concatenate([unit_alive(masks[n], structure) for n in group])
        keep = np.concatenate([unit_alive(base[n], structure) for n in group])
        n_keep = int(keep.sum())
        cap = min(pruning.prune_count(fraction, n_keep), int((~was).sum()), n_keep)
        if cap <= 0:
            continue
        candidates = np.flatnonzero(~was)
        candidates = candidates[np.argsort(-s[candidates], kind="stable")][:cap]
        weakest = np.flatnonzero(keep)
        weakest = weakest[np.argsort(s[weakest], kind="stable")][:cap]
        # candidates fall and the weakest rise: the swaps are a prefix
        k = int(np.sum(s[candidates] > s[weakest]))
        enter = np.zeros(s.size, dtype=bool)
        leave = np.zeros(s.size, dtype=bool)
        enter[candidates[:k]] = True
        leave[weakest[:k]] = True
        start = 0
        for n in group:
            size = flat[n].size
            entered[n] = _expand(enter[start : start + size], masks[n], structure)
            left[n] = _expand(leave[start : start + size], masks[n], structure)
            new[n] = np.where(entered[n], 1.0, np.where(left[n], 0.0, base[n])).astype(np.float32)
            start += size
    return new, entered, left


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
        fraction: With `when="round"`: share of the kept weights (neurons)
            swapped per event, in [0, 1]. With `when="prune"`: the most
            re-entries at a pruning step, as a share of the next mask's
            count (see `reselect`). `0` turns re-introduction off (the run
            is then plain iterative pruning; with `ScoredPruning`'s
            `prune_by="score"` and `when="prune"`, pruning by score).
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
        value: Value of a weight re-introduced by an in-round event:
            `"current"` (its raw value, kept while it was pruned), `"zero"`,
            or `"rewind"` (its value at the start of the round, i.e. after
            rewinding).
        when: Where weights come back. `"round"`: swap events inside every
            pruning round (`every`, `unit`, `start`, `decay`, `value` say
            when and how), at constant density. `"prune"`: at every
            pruning step, the next mask is chosen over the kept *and* the
            pruned weights by the strategy's criterion, at the count
            iterative pruning keeps (`keras_lth.reintroduce.reselect`); a
            weight pruned in round 1 can come back in round 5, and a
            re-entered weight is rewound as every kept weight is (with
            `rewind=None` it keeps its raw value). `every`, `unit`,
            `start`, `decay` and `value` are not used then. The strategies
            default to `"prune"`: in the project's sweep (MNIST-5k and a
            synthetic Speech Commands tree,
            `docs/results/reintroduction-sweep.md`) every in-round setting
            lost to plain iterative pruning beyond noise on speech, where
            one swap event moves many weights at once along the gradient
            and the training loss jumps (from 1.2 to 48 in the recorded
            case); re-selection at the pruning step stayed within about
            half a point of it on MNIST and tied with it on speech. No
            setting beat plain iterative pruning beyond noise.
    """

    #: The training step needs the dense gradient of the kept network.
    dense_gradient = False
    #: The training step runs the complement network too.
    complement = False
    #: The layers carry a per-weight score.
    scored = False

    def __init__(self, fraction, every, unit, start, decay, value, when="round"):
        self.when = _check_choice(when, "when", WHEN)
        self.fraction = check_fraction(fraction)
        self.every = pruning._check_int(every, "every", 1)
        self.unit = _check_choice(unit, "unit", UNITS)
        self.start = pruning._check_int(start, "start", 0)
        self.decay = _check_choice(decay, "decay", DECAYS)
        self.value = _check_choice(value, "value", VALUES)
        given = {"every": every, "unit": unit, "start": start, "decay": decay, "value": value}
        ignored = sorted(k for k, v in given.items() if v != _EVENT_DEFAULTS[k])
        if self.when == "prune" and ignored:
            warnings.warn(
                f"{', '.join(f'`{k}`' for k in ignored)} only shape in-round swap events "
                "(`when='round'`); with `when='prune'` they are not used. Received: "
                + ", ".join(f"{k}={given[k]!r}" for k in ignored),
                stacklevel=3,
            )

    def fraction_at(self, t, horizon):
        """The swap fraction of an event `t` units into a round of `horizon`."""
        return fraction_at(self.fraction, t, horizon, self.decay)

    def is_due(self, t, horizon):
        """Whether an event falls `t` units into a round of `horizon` units."""
        return event_due(t, self.start, self.every, horizon)

    def criteria(self, kernels, masks, scores, structure, norm):
        """`(grow_scores, drop_scores)` per layer, in unit space."""
        raise NotImplementedError

    @property
    def keeps_by_magnitude(self) -> bool:
        """Whether the kept units are ranked by magnitude at a pruning step.

        With `when="prune"` the next mask starts from iterative magnitude
        pruning's choice (exactly) when this is true, from the drop criterion's
        lowest pruned (`keep_highest`) otherwise.
        """
        return True

    def get_config(self):
        return {
            "fraction": self.fraction,
            "every": self.every,
            "unit": self.unit,
            "start": self.start,
            "decay": self.decay,
            "value": self.value,
            "when": self.when,
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

    With `when="prune"` there are no events: at every pruning step the next
    mask is iterative magnitude pruning's, except that the pruned weights
    whose |w| (trained in the pruned network during the round) beats the
    smallest |w| it keeps re-enter in their place, at most
    `round(fraction * kept)` of them (`keras_lth.reintroduce.reselect`);
    with `fraction=1` the next mask is the top of all weights by |w|.

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
            `"feedback"`, the mode measured with `when="prune"` (see
            `when`).
        fraction: Share of the kept weights swapped per event
            (`when="round"`), or the most re-entries per pruning step as a
            share of the kept count (`when="prune"`). Defaults to `0.2`.
        every: Epochs or steps between events. Defaults to `1`.
        unit: `"epoch"` or `"step"`. Defaults to `"epoch"`.
        start: Warm-up epochs (steps) of each round before the first event.
            Defaults to `1`: the pruned weights first train for an epoch, so
            that their magnitudes mean something.
        decay: `"cosine"` or `"constant"`. Defaults to `"cosine"`.
        value: `"current"`, `"zero"` or `"rewind"`. Defaults to `"current"`:
            a re-introduced weight keeps the value the pruned network trained
            it to, which is what made it large.
        when: `"prune"` (re-selection at the pruning steps) or `"round"`
            (swap events inside the rounds). Defaults to `"prune"`, for the
            reasons in `Reintroduction`.

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
        mode="feedback",
        fraction=0.2,
        every=1,
        unit="epoch",
        start=1,
        decay="cosine",
        value="current",
        when="prune",
    ):
        super().__init__(fraction, every, unit, start, decay, value, when)
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
    values stay as they were when pruned (after rewinding: their rewind
    values).

    With `when="prune"` there are no events; the scores add up over the
    whole round, and at every pruning step the next mask is chosen in two
    steps (`keras_lth.reintroduce.reselect`): the kept weights are pruned at
    the round's rate by `prune_by` (the lowest scores, or the smallest |w|
    exactly as iterative magnitude pruning does), then the pruned weights
    with the highest scores re-enter in place of the lowest-scored weights
    of that choice, one for one, while their score is strictly higher, at
    most `round(fraction * kept)` of them. Both steps compare scores, the
    one criterion that kept and pruned weights share; `|w|` says nothing
    about a pruned weight that did not train. `score_decay` then carries
    the scores into the next round.

    The scores are float32 variables that the scheduler keeps next to the
    model (not model weights), saved with the scheduler's `backup_dir`;
    under a distribution strategy each step adds the increments summed over
    the replicas.

    Args:
        fraction: Share of the kept weights swapped per event
            (`when="round"`), or the most re-entries per pruning step as a
            share of the kept count (`when="prune"`). Defaults to `0.2`.
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
            magnitude pruning does; with `when="prune"` and `fraction=0` the
            run is then iterative magnitude pruning exactly). Defaults to
            `"score"`.
        score_decay: After every event the scores are multiplied by this
            factor in [0, 1): `0` restarts them (every event judges the last
            interval only), a value like `0.5` keeps an exponentially
            decaying memory. With `when="round"` scores always restart at a
            round's start; with `when="prune"` the event is the pruning
            step, so this is the memory from one round to the next.
            Defaults to `0.0`.
        when: `"prune"` (re-selection at the pruning steps) or `"round"`
            (swap events inside the rounds). Defaults to `"prune"`, for the
            reasons in `Reintroduction`.

    Example:

    ```python
    scheduler = lth.PruningScheduler(
        lth.IterativeSchedule(rounds=5, epochs_per_round=8, rate=0.2),
        reintroduce=lth.ScoredPruning(fraction=0.2),  # at the pruning steps
    )
    in_round = lth.ScoredPruning(when="round", fraction=0.05, every=1)  # swap events
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
        when="prune",
    ):
        super().__init__(fraction, every, unit, start, decay, value, when)
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

    @property
    def keeps_by_magnitude(self) -> bool:
        return self.prune_by == "magnitude"

    def get_config(self):
        return {
            **super().get_config(),
            "prune_by": self.prune_by,
            "score_decay": self.score_decay,
        }
