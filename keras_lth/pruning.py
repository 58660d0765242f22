"""Pure mask maths: `(weights, current masks, rate) -> new masks`.

Every function here takes NumPy arrays and returns new NumPy arrays; none
touches a model. The callback reads weights out of the model, calls these,
and writes the masks back.

Conventions:
- A mask is a float32 array of 0s and 1s with the kernel's shape
  (`(fan_in, units)` for a dense kernel); 1 means "kept".
- `rate` is the share of the *currently alive* weights (or neurons) to prune
  in one round; the count removed is exactly `round(rate * alive)`.
- Pruned stays pruned: a position whose mask is 0 is never set back to 1.
- Ties are broken by position (stable sort), so results are deterministic.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence

import numpy as np

NORMS = ("l1", "l2")


def _check_rate(rate, name="rate"):
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)):
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a number in "
            f"(0, 1). Received: {name}={rate!r}"
        )
    if not 0.0 < float(rate) < 1.0:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a number in "
            f"(0, 1). Received: {name}={rate!r}"
        )
    return float(rate)


def check_norm(norm):
    if norm not in NORMS:
        raise ValueError(
            f"Received an invalid value for `norm`, expected one of {NORMS}. "
            f"Received: norm={norm!r}"
        )
    return norm


def check_scope(scope):
    if scope not in ("layer", "global"):
        raise ValueError(
            "Received an invalid value for `scope`, expected 'layer' or "
            f"'global'. Received: scope={scope!r}"
        )
    return scope


def check_structure(structure):
    if structure not in ("weight", "neuron"):
        raise ValueError(
            "Received an invalid value for `structure`, expected 'weight' or "
            f"'neuron'. Received: structure={structure!r}"
        )
    return structure


def prune_count(rate: float, alive: int) -> int:
    """Number of alive items a round removes: `round(rate * alive)`.

    Python's `round` halves to even; we round halves up so that the count is
    monotone in `rate`. A product that is a half in decimal but falls just
    below it in binary (`0.29 * 50 == 14.499999999999998`) counts as the half,
    so `rate=0.29` of 50 alive weights prunes 15, as the rule reads.
    """
    x = float(rate) * alive
    count = math.floor(x + 0.5)
    # float error on the product is ~1e-16 relative; 1e-12 only snaps
    # products that are a half up to that error
    if math.isclose(x + 0.5, count + 1, rel_tol=1e-12, abs_tol=1e-12):
        count += 1
    return int(count)


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "positive" if minimum == 1 else "non-negative"
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a {kind} "
            f"integer. Received: {name}={value!r}"
        )
    return int(value)


def rate_for_target(target_density: float, rounds: int) -> float:
    """Per-round rate that reaches `target_density` after `rounds` rounds.

    Args:
        target_density: share of the weights to keep at the end, in (0, 1).
        rounds: number of pruning rounds, a positive integer.

    Returns:
        `1 - target_density ** (1 / rounds)`.

    Example:

    >>> round(rate_for_target(0.107, 10), 3)
    0.2
    """
    target_density = _check_rate(target_density, "target_density")
    rounds = _check_int(rounds, "rounds", 1)
    return 1.0 - target_density ** (1.0 / rounds)


def density_after(rate: float, rounds: int) -> float:
    """Density of a layer after `rounds` rounds at `rate` (ignoring rounding).

    Example:

    >>> round(density_after(0.2, 10), 3)
    0.107
    """
    rate = _check_rate(rate)
    rounds = _check_int(rounds, "rounds", 0)
    return (1.0 - rate) ** rounds


def _prune_lowest(scores: np.ndarray, alive: np.ndarray, count: int) -> np.ndarray:
    """Boolean array, True at the `count` alive positions with the lowest score."""
    flat_scores = np.asarray(scores)
    if not np.issubdtype(flat_scores.dtype, np.floating):
        flat_scores = flat_scores.astype(np.float64)  # a float keeps its dtype: same order
    flat_scores = flat_scores.ravel()
    flat_alive = np.asarray(alive, dtype=bool).ravel()
    idx = np.flatnonzero(flat_alive)
    out = np.zeros(flat_scores.shape, dtype=bool)
    if count <= 0 or idx.size == 0:
        return out.reshape(np.shape(scores))
    out[idx[_lowest(flat_scores[idx], count)]] = True
    return out.reshape(np.shape(scores))


def _lowest(scores: np.ndarray, count: int) -> np.ndarray:
    """Positions of the `count` lowest `scores`, ties going to the earlier position.

    The first `count` entries of a stable argsort (NaN ranking above
    everything, as NumPy sorts it), found in linear time: a partition gives
    the `count`-th lowest score `t`; everything below `t` goes, and so do
    the first of the entries equal to `t` until `count` are gone.
    """
    if count <= 0:
        return np.arange(0)
    if count >= scores.size:
        return np.arange(scores.size)
    t = np.partition(scores, count - 1)[count - 1]
    if np.isnan(t):  # every number goes, then the first NaNs
        below, ties = ~np.isnan(scores), np.isnan(scores)
    else:
        below, ties = scores < t, scores == t
    chosen = below.copy()
    chosen[np.flatnonzero(ties)[: count - int(np.count_nonzero(below))]] = True
    return np.flatnonzero(chosen)


def magnitude_mask(kernel: np.ndarray, mask: np.ndarray, rate: float) -> np.ndarray:
    """Prunes `round(rate * alive)` of the alive weights with the smallest |w|.

    Args:
        kernel: the trained weights (raw values; pruned positions are ignored).
        mask: the current 0/1 mask, same shape as `kernel`.
        rate: share of the alive weights to prune, in (0, 1).

    Returns:
        The new mask (float32), a subset of `mask`.
    """
    rate = _check_rate(rate)
    kernel, mask = _as_pair(kernel, mask)
    alive = mask > 0
    drop = _prune_lowest(np.abs(kernel), alive, prune_count(rate, int(alive.sum())))
    return np.where(drop, 0.0, mask).astype(np.float32)


def global_magnitude_masks(
    kernels: Sequence[np.ndarray], masks: Sequence[np.ndarray], rate: float
) -> list:
    """Like `magnitude_mask`, with one threshold over all the given layers.

    Exactly `round(rate * total alive)` weights are pruned, those with the
    smallest |w| over all layers together.
    """
    rate = _check_rate(rate)
    _check_lengths(kernels, masks)
    if not kernels:
        return []
    pairs = [_as_pair(k, m) for k, m in zip(kernels, masks)]
    flat_scores = np.concatenate([np.abs(k).ravel() for k, _ in pairs])
    flat_alive = np.concatenate([(m > 0).ravel() for _, m in pairs])
    drop = _prune_lowest(flat_scores, flat_alive, prune_count(rate, int(flat_alive.sum())))
    out, start = [], 0
    for _, m in pairs:
        part = drop[start : start + m.size].reshape(m.shape)
        out.append(np.where(part, 0.0, m).astype(np.float32))
        start += m.size
    return out


def neuron_norms(kernel: np.ndarray, mask: np.ndarray, norm: str = "l1") -> np.ndarray:
    """Norm of each neuron's incoming weights (columns of `kernel * mask`)."""
    check_norm(norm)
    kernel, mask = _as_pair(kernel, mask)
    eff = (kernel * mask).reshape(-1, kernel.shape[-1]).astype(np.float64)
    if norm == "l1":
        return np.abs(eff).sum(axis=0)
    return np.sqrt((eff**2).sum(axis=0))


def alive_neurons(mask: np.ndarray) -> np.ndarray:
    """Boolean vector: which neurons (columns) still have an alive weight."""
    mask = np.asarray(mask)
    return mask.reshape(-1, mask.shape[-1]).max(axis=0) > 0


def neuron_mask(kernel: np.ndarray, mask: np.ndarray, rate: float, norm: str = "l1") -> np.ndarray:
    """Prunes `round(rate * alive neurons)` whole neurons with the lowest norm.

    Returns the new kernel mask, with the pruned neurons' columns set to 0.
    The matching bias mask is `neuron_vector(new_mask)`.
    """
    rate = _check_rate(rate)
    kernel, mask = _as_pair(kernel, mask)
    alive = alive_neurons(mask)
    drop = _prune_lowest(
        neuron_norms(kernel, mask, norm), alive, prune_count(rate, int(alive.sum()))
    )
    return np.where(drop, 0.0, mask).astype(np.float32)


def global_neuron_masks(
    kernels: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    rate: float,
    norm: str = "l1",
) -> list:
    """Neuron pruning with one threshold over all the given layers.

    Layers have different fan-ins, so a raw norm would favour pruning the
    narrow ones. Norms are therefore put on a per-weight scale before they are
    compared: the l1 norm is divided by the fan-in (mean |w|), the l2 norm by
    its square root (root mean square).
    """
    rate = _check_rate(rate)
    check_norm(norm)
    _check_lengths(kernels, masks)
    pairs = [_as_pair(k, m) for k, m in zip(kernels, masks)]
    if not pairs:
        return []
    scores, alive = [], []
    for k, m in pairs:
        fan_in = float(np.prod(k.shape[:-1]))
        scale = fan_in if norm == "l1" else math.sqrt(fan_in)
        scores.append(neuron_norms(k, m, norm) / scale)
        alive.append(alive_neurons(m))
    flat_alive = np.concatenate(alive)
    drop = _prune_lowest(
        np.concatenate(scores), flat_alive, prune_count(rate, int(flat_alive.sum()))
    )
    out, start = [], 0
    for _, m in pairs:
        units = m.shape[-1]
        part = drop[start : start + units]
        out.append(np.where(part, 0.0, m).astype(np.float32))
        start += units
    return out


def neuron_vector(mask: np.ndarray) -> np.ndarray:
    """Bias mask matching a kernel mask: 1 where the neuron is alive."""
    return alive_neurons(mask).astype(np.float32)


def random_mask(mask: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Prunes `round(rate * alive)` alive weights chosen uniformly at random."""
    rate = _check_rate(rate)
    mask = np.asarray(mask, dtype=np.float32)
    return magnitude_mask(rng.random(mask.shape), mask, rate)


def prune(
    kernels: Mapping[str, np.ndarray],
    masks: Mapping[str, np.ndarray],
    rate: float,
    layer_rates: Mapping[str, float] | None = None,
    scope: str = "layer",
    structure: str = "weight",
    norm: str = "l1",
    frozen_neurons: Sequence[str] = (),
) -> dict:
    """One pruning round over named layers: the whole strategy in one call.

    Args:
        kernels: layer name -> trained kernel.
        masks: layer name -> current kernel mask.
        rate: share of the alive weights (neurons) pruned per round.
        layer_rates: per-layer overrides of `rate`. With `scope="global"`,
            overridden layers are pruned on their own at their rate and the
            others share one global threshold.
        scope: `"layer"` (each layer loses `rate` of its own weights) or
            `"global"` (one magnitude threshold across layers).
        structure: `"weight"` (unstructured) or `"neuron"` (whole columns).
        norm: `"l1"` or `"l2"`, the neuron norm when `structure="neuron"`.
        frozen_neurons: layers whose neurons are never pruned (the output
            layer); with `structure="neuron"` they are left as they are.

    Returns:
        layer name -> new kernel mask.
    """
    rate = _check_rate(rate)
    check_norm(norm)
    if layer_rates is None:
        layer_rates = {}
    if not isinstance(layer_rates, Mapping):
        raise ValueError(
            "Received an invalid value for `layer_rates`, expected a dict of "
            f"layer name -> rate. Received: layer_rates={layer_rates!r}"
        )
    layer_rates = {n: _check_rate(r, f"layer_rates[{n!r}]") for n, r in layer_rates.items()}
    if set(masks) != set(kernels):
        raise ValueError(
            "Received an invalid value for `masks`, expected the layer names "
            f"of `kernels` {sorted(kernels)}. Received: masks for {sorted(masks)}"
        )
    for arg, given in (("layer_rates", layer_rates), ("frozen_neurons", frozen_neurons)):
        unknown = sorted(set(given) - set(kernels))
        if unknown:
            raise ValueError(
                f"Received unknown layer names in `{arg}`, expected names of "
                f"masked layers {sorted(kernels)}. Received: {arg} names {unknown}"
            )
    check_scope(scope)
    check_structure(structure)
    names = [n for n in kernels if not (structure == "neuron" and n in frozen_neurons)]
    new = {n: np.asarray(masks[n], dtype=np.float32) for n in kernels}

    def one(name, r):
        if structure == "neuron":
            return neuron_mask(kernels[name], masks[name], r, norm)
        return magnitude_mask(kernels[name], masks[name], r)

    if scope == "layer":
        for n in names:
            new[n] = one(n, layer_rates.get(n, rate))
        return new
    for n in names:
        if n in layer_rates:
            new[n] = one(n, layer_rates[n])
    shared = [n for n in names if n not in layer_rates]
    if structure == "neuron":
        out = global_neuron_masks(
            [kernels[n] for n in shared], [masks[n] for n in shared], rate, norm
        )
    else:
        out = global_magnitude_masks([kernels[n] for n in shared], [masks[n] for n in shared], rate)
    new.update(zip(shared, out))
    return new


def _as_pair(kernel, mask):
    kernel = np.asarray(kernel)
    mask = np.asarray(mask, dtype=np.float32)
    if kernel.shape != mask.shape:
        raise ValueError(
            "Received an invalid value for `mask`, expected the kernel's shape "
            f"{kernel.shape}. Received: mask.shape={mask.shape}"
        )
    return kernel, mask


def _check_lengths(kernels, masks):
    if len(kernels) != len(masks):
        raise ValueError(
            "Received an invalid value for `masks`, expected one mask per "
            f"kernel ({len(kernels)}). Received: len(masks)={len(masks)}"
        )


def gradual_kept_count(size: int, sparsity) -> int:
    """Weights a layer keeps at `sparsity`, counted exactly as tfmot counts them.

    tfmot's `prune_low_magnitude` (`pruning_impl.Pruning._update_mask`)
    keeps `max(1, round(float32(size) * (1 - sparsity)))` weights, in
    float32 arithmetic and with TensorFlow's round half to even; a layer is
    never emptied. `1 - sparsity` is a float32 subtraction when the schedule
    returns a float32 value (tfmot's own schedules return float32 tensors),
    and is cast to float32 after the subtraction for a Python number.

    Example:

    >>> gradual_kept_count(24, 0.99)  # 0.24 rounds to 0: one weight stays
    1
    >>> gradual_kept_count(10, np.float32(0.25))  # 7.5: half to even
    8
    """
    if isinstance(sparsity, np.floating) and np.dtype(type(sparsity)).itemsize <= 4:
        keep = np.float32(1) - np.float32(sparsity)
    else:
        keep = np.float32(1.0 - float(sparsity))
    return max(1, int(np.rint(np.float32(size) * keep)))


def sparsity_mask(kernel: np.ndarray, mask: np.ndarray, sparsity) -> np.ndarray:
    """Shrinks `mask` to tfmot's kept count at `sparsity`, dropping the smallest |w|.

    The absolute-sparsity form used by gradual schedules (tfmot's
    `ConstantSparsity`, `PolynomialDecay`): `sparsity` is the target share of
    the whole kernel that is pruned, and the kernel keeps
    `gradual_kept_count(kernel.size, sparsity)` weights, at least one.
    Already pruned weights stay pruned (their raw values are ignored), so a
    target below the current sparsity changes nothing. Ties in |w| are broken
    by position, so exactly that many weights are kept (tfmot keeps every
    weight equal to its threshold).
    """
    kernel, mask = _as_pair(kernel, mask)
    if isinstance(sparsity, (bool, str)) or not (
        isinstance(sparsity, numbers.Real) and 0.0 <= float(sparsity) < 1.0
    ):
        raise ValueError(
            "Received an invalid value for `sparsity`, expected a number in "
            f"[0, 1). Received: sparsity={sparsity!r}"
        )
    alive = mask > 0
    count = max(0, int(alive.sum()) - gradual_kept_count(mask.size, sparsity))
    drop = _prune_lowest(np.abs(kernel), alive, count)
    return np.where(drop, 0.0, mask).astype(np.float32)


# ---------------------------------------------------------------------- #
# Output units of any layer family as columns
# ---------------------------------------------------------------------- #
def _unit_permutation(ndim, unit_axes):
    unit_axes = tuple(int(a) % ndim for a in unit_axes)
    return [i for i in range(ndim) if i not in unit_axes] + list(unit_axes)


def unit_matrix(value: np.ndarray, view_shape, unit_axes) -> np.ndarray:
    """`value` as a `(fan_in, units)` matrix: one column per output unit.

    The neuron functions above work on columns. A layer's variable is seen
    that way by reshaping it to `view_shape` and moving the axes
    `unit_axes` (which index the layer's output units) to the end: a dense
    kernel `(in, units)` is its own view; a convolution kernel
    `(*kernel_size, in, filters)` has its filters on the last axis; a
    transposed convolution's kernel `(*kernel_size, filters, in)` on the one
    before; an LSTM kernel `(in, 4 * units)` is viewed as `(in, 4, units)`.

    Example:

    >>> unit_matrix(np.arange(8).reshape(2, 2, 2), (2, 2, 2), (1,)).shape
    (4, 2)
    """
    view = np.reshape(np.asarray(value), tuple(view_shape))
    perm = _unit_permutation(view.ndim, unit_axes)
    units = math.prod(view.shape[a] for a in perm[view.ndim - len(unit_axes) :])
    return np.transpose(view, perm).reshape(-1, units)


def from_unit_matrix(matrix: np.ndarray, shape, view_shape, unit_axes) -> np.ndarray:
    """The inverse of `unit_matrix`: back to the variable's `shape`."""
    view_shape = tuple(view_shape)
    perm = _unit_permutation(len(view_shape), unit_axes)
    moved = np.reshape(np.asarray(matrix), [view_shape[a] for a in perm])
    return np.transpose(moved, np.argsort(perm)).reshape(tuple(shape))


def units_to_mask(alive: np.ndarray, shape, view_shape, unit_axes) -> np.ndarray:
    """A 0/1 mask of `shape` that keeps everything of the `alive` units.

    Example:

    >>> units_to_mask(np.array([True, False]), (3, 2), (3, 2), (1,))[0]
    array([1., 0.], dtype=float32)
    """
    alive = np.asarray(alive, dtype=bool).ravel()
    fan_in = math.prod(tuple(view_shape)) // max(alive.size, 1)
    matrix = np.broadcast_to(alive.astype(np.float32), (fan_in, alive.size))
    return from_unit_matrix(matrix, shape, view_shape, unit_axes).astype(np.float32)


def layer_unit_matrix(values: Sequence[np.ndarray], views: Sequence) -> np.ndarray:
    """One layer's weights as a single `(fan_in, units)` matrix.

    A layer whose units are computed from several weights (an LSTM's kernel
    and recurrent kernel) has one column per unit over all of them: their
    `unit_matrix` views stacked along the fan-in. `views` holds each
    weight's `(view_shape, unit_axes)`.

    Example:

    >>> kernel, recurrent = np.ones((3, 8)), np.ones((2, 8))  # 2 LSTM units, 4 gates
    >>> layer_unit_matrix([kernel, recurrent], [((3, 4, 2), (2,)), ((2, 4, 2), (2,))]).shape
    (20, 2)
    """
    if not values:
        raise ValueError("Expected at least one weight. Received: values=[]")
    return np.concatenate([unit_matrix(v, *view) for v, view in zip(values, views)], axis=0)


def split_unit_matrix(matrix: np.ndarray, shapes: Sequence, views: Sequence) -> list:
    """The inverse of `layer_unit_matrix`: one array per weight, in its shape."""
    out, start = [], 0
    for shape, (view_shape, unit_axes) in zip(shapes, views):
        rows = math.prod(view_shape) // np.shape(matrix)[1]
        out.append(from_unit_matrix(matrix[start : start + rows], shape, view_shape, unit_axes))
        start += rows
    if start != np.shape(matrix)[0]:
        raise ValueError(
            f"Received an invalid value for `matrix`, expected {start} rows for "
            f"the weights of shapes {list(shapes)}. Received: {np.shape(matrix)[0]} rows"
        )
    return out
