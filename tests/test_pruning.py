"""Tests for `keras_lth.pruning`: the pure mask maths.

Invariants are checked with hypothesis on random kernels and masks; exact
results (neuron norms, tie-breaking, global normalisation) on hand-made
arrays.
"""

import math
from fractions import Fraction

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keras_lth import pruning

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True)

# |w| values with many ties (small integers) and some spread
_values = st.one_of(
    st.integers(-4, 4).map(float),
    st.floats(-10, 10, allow_nan=False, width=32),
)
_rates = st.floats(0.01, 0.99)


@st.composite
def kernel_and_mask(draw, shape=None):
    if shape is None:
        shape = draw(hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8))
    kernel = draw(hnp.arrays(np.float32, shape, elements=_values))
    mask = draw(hnp.arrays(np.float32, shape, elements=st.sampled_from([0.0, 1.0])))
    return kernel, mask


def _expected_count(rate, alive):
    """round(rate * alive) with halves rounded up, computed exactly."""
    return math.floor(Fraction(str(rate)) * alive + Fraction(1, 2))


def _check_round(kernels, old, new, rate):
    """Exact count, only shrinks, and pruned |w| <= kept |w| over the scope."""
    alive = sum(int(m.sum()) for m in old)
    pruned_now, kept = [], []
    for k, m0, m1 in zip(kernels, old, new):
        assert m1.dtype == np.float32
        assert np.isin(m1, (0.0, 1.0)).all()
        assert np.all(m1 <= m0), "a pruned weight came back"
        pruned_now.append(np.abs(k)[(m0 == 1) & (m1 == 0)])
        kept.append(np.abs(k)[m1 == 1])
    pruned_now, kept = np.concatenate(pruned_now), np.concatenate(kept)
    assert pruned_now.size == pruning.prune_count(rate, alive)
    if pruned_now.size and kept.size:
        assert pruned_now.max() <= kept.min()


# --------------------------------------------------------------------------- #
# Counts
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "rate, alive, expected",
    [
        (0.5, 3, 2),  # 1.5 -> 2: halves round up
        (0.5, 5, 3),  # 2.5 -> 3 (Python's round would give 2)
        (0.25, 2, 1),
        (0.2, 10, 2),
        (0.2, 0, 0),
        (0.29, 50, 15),  # 0.29 * 50 == 14.499999999999998 in binary
        (0.35, 90, 32),  # 31.499999999999996
        (0.1, 4, 0),
    ],
)
def test_prune_count_rounds_half_up(rate, alive, expected):
    assert pruning.prune_count(rate, alive) == expected


@SETTINGS
@given(st.integers(1, 99), st.integers(0, 10**6))
def test_prune_count_is_round_half_up_of_the_decimal_rate(percent, alive):
    rate = percent / 100
    assert pruning.prune_count(rate, alive) == _expected_count(rate, alive)


def test_prune_count_exhaustive_for_percent_rates():
    # products like 0.29 * 50 fall just below the half in binary
    wrong = [
        (p, n)
        for p in range(1, 100)
        for n in range(0, 1001)
        if pruning.prune_count(p / 100, n) != (p * n + 50) // 100  # exact
    ]
    assert wrong == []


@SETTINGS
@given(st.integers(0, 5000), st.integers(1, 98))
def test_prune_count_is_monotone_in_rate(alive, percent):
    assert pruning.prune_count(percent / 100, alive) <= pruning.prune_count(
        (percent + 1) / 100, alive
    )


# --------------------------------------------------------------------------- #
# Layer-wise magnitude pruning
# --------------------------------------------------------------------------- #
@SETTINGS
@given(kernel_and_mask(), _rates)
def test_magnitude_mask_invariants(km, rate):
    kernel, mask = km
    new = pruning.magnitude_mask(kernel, mask, rate)
    _check_round([kernel], [mask], [new], rate)


def test_magnitude_mask_hand_set():
    kernel = np.array([[0.5, -3.0, 0.1], [-0.2, 2.0, 1.0]], "float32")
    mask = np.ones_like(kernel)
    # 6 alive, rate 0.5 -> 3 smallest |w|: 0.1, -0.2, 0.5
    new = pruning.magnitude_mask(kernel, mask, 0.5)
    np.testing.assert_array_equal(new, [[0, 1, 0], [0, 1, 1]])
    # next round: 3 alive, 0.5 * 3 = 1.5 -> 2 pruned: 1.0 and 2.0
    newer = pruning.magnitude_mask(kernel, new, 0.5)
    np.testing.assert_array_equal(newer, [[0, 1, 0], [0, 0, 0]])


def test_magnitude_mask_ignores_raw_values_of_pruned_weights():
    # the pruned position holds the smallest raw value, but it is already
    # gone: the round must prune from the alive ones
    kernel = np.array([[0.0, 1.0, 2.0, 3.0]], "float32")
    mask = np.array([[0, 1, 1, 1]], "float32")
    new = pruning.magnitude_mask(kernel, mask, 0.34)  # round(1.02) = 1
    np.testing.assert_array_equal(new, [[0, 0, 1, 1]])


_scores = st.one_of(
    st.integers(-2, 2).map(float),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan]),
    st.floats(-10, 10, allow_nan=False),
)


@SETTINGS
@given(st.data())
def test_lowest_is_the_head_of_a_stable_argsort(data):
    # The linear-time selection every pruning function uses picks exactly
    # what a stable sort would: ties (and signed zeros) by position, NaN last.
    scores = data.draw(hnp.arrays(np.float64, st.integers(1, 40), elements=_scores))
    count = data.draw(st.integers(0, scores.size))
    expected = np.sort(np.argsort(scores, kind="stable")[:count])
    np.testing.assert_array_equal(pruning._lowest(scores, count), expected)


def test_ties_are_broken_by_position():
    kernel = np.full((3, 4), 0.5, "float32")
    mask = np.ones_like(kernel)
    mask[0, 1] = 0
    new = pruning.magnitude_mask(kernel, mask, 0.5)  # 11 alive -> 6 pruned
    alive_positions = np.flatnonzero(mask.ravel())
    expected = mask.ravel().copy()
    expected[alive_positions[:6]] = 0
    np.testing.assert_array_equal(new.ravel(), expected)
    # deterministic: same inputs, same output
    np.testing.assert_array_equal(new, pruning.magnitude_mask(kernel, mask, 0.5))


@SETTINGS
@given(st.integers(0, 2**31 - 1), _rates, st.integers(2, 6))
def test_rounds_only_shrink_masks(seed, rate, rounds):
    rng = np.random.default_rng(seed)
    mask = np.ones((6, 5), "float32")
    alive = [int(mask.sum())]
    for _ in range(rounds):
        kernel = rng.normal(size=mask.shape).astype("float32")  # "retrained"
        new = pruning.magnitude_mask(kernel, mask, rate)
        _check_round([kernel], [mask], [new], rate)
        mask = new
        alive.append(int(mask.sum()))
    for before, after in zip(alive, alive[1:]):
        assert after == before - pruning.prune_count(rate, before)


# --------------------------------------------------------------------------- #
# Global magnitude pruning
# --------------------------------------------------------------------------- #
@SETTINGS
@given(st.lists(kernel_and_mask(), min_size=1, max_size=3), _rates)
def test_global_magnitude_invariants(pairs, rate):
    kernels = [k for k, _ in pairs]
    masks = [m for _, m in pairs]
    new = pruning.global_magnitude_masks(kernels, masks, rate)
    assert [m.shape for m in new] == [m.shape for m in masks]
    _check_round(kernels, masks, new, rate)


def test_global_magnitude_uses_one_threshold():
    small = np.array([[0.1, 0.2], [0.3, 0.4]], "float32")  # all below `big`
    big = np.array([[1.0, 2.0, 3.0, 4.0]], "float32")
    new = pruning.global_magnitude_masks(
        [small, big], [np.ones_like(small), np.ones_like(big)], 0.5
    )
    # 8 alive, 4 pruned: all of `small`, none of `big`
    np.testing.assert_array_equal(new[0], np.zeros_like(small))
    np.testing.assert_array_equal(new[1], np.ones_like(big))
    # layer scope would have pruned half of each
    layer = pruning.prune(
        {"s": small, "b": big}, {"s": np.ones_like(small), "b": np.ones_like(big)}, 0.5
    )
    assert layer["s"].sum() == 2 and layer["b"].sum() == 2


def test_global_magnitude_empty():
    assert pruning.global_magnitude_masks([], [], 0.2) == []


# --------------------------------------------------------------------------- #
# `prune`: per-layer rates, global scope with overrides
# --------------------------------------------------------------------------- #
def _layers(seed, shapes=(("a", (6, 5)), ("b", (5, 4)), ("out", (4, 3)))):
    rng = np.random.default_rng(seed)
    kernels = {n: rng.normal(size=s).astype("float32") for n, s in shapes}
    masks = {n: (rng.random(s) < 0.8).astype("float32") for n, s in shapes}
    return kernels, masks


@SETTINGS
@given(st.integers(0, 2**31 - 1), _rates, _rates)
def test_prune_layer_scope_with_layer_rates(seed, rate, out_rate):
    kernels, masks = _layers(seed)
    new = pruning.prune(kernels, masks, rate, layer_rates={"out": out_rate})
    for name in kernels:
        r = out_rate if name == "out" else rate
        _check_round([kernels[name]], [masks[name]], [new[name]], r)


@SETTINGS
@given(st.integers(0, 2**31 - 1), _rates, _rates)
def test_prune_global_scope_with_override(seed, rate, out_rate):
    kernels, masks = _layers(seed)
    new = pruning.prune(kernels, masks, rate, layer_rates={"out": out_rate}, scope="global")
    # the overridden layer is pruned on its own at its rate
    _check_round([kernels["out"]], [masks["out"]], [new["out"]], out_rate)
    # the others share one threshold and one exact count
    shared = ["a", "b"]
    _check_round(
        [kernels[n] for n in shared], [masks[n] for n in shared], [new[n] for n in shared], rate
    )


def test_prune_returns_new_arrays_and_leaves_inputs_alone():
    kernels, masks = _layers(0)
    before = {n: m.copy() for n, m in masks.items()}
    new = pruning.prune(kernels, masks, 0.5)
    for n in masks:
        np.testing.assert_array_equal(masks[n], before[n])
        assert new[n] is not masks[n]


# --------------------------------------------------------------------------- #
# Neuron pruning
# --------------------------------------------------------------------------- #
# Column norms (fan-in 3):
#   col 0: [3, 0, 0]        l1 = 3.0   l2 = 3.0
#   col 1: [1, -1, 1.5]     l1 = 3.5   l2 = sqrt(4.25) = 2.06
#   col 2: [2, 2, 2]        l1 = 6.0   l2 = sqrt(12)   = 3.46
#   col 3: [-4, 0, 1]       l1 = 5.0   l2 = sqrt(17)   = 4.12
NEURON_KERNEL = np.array(
    [[3.0, 1.0, 2.0, -4.0], [0.0, -1.0, 2.0, 0.0], [0.0, 1.5, 2.0, 1.0]], "float32"
)


def test_neuron_norms_hand_computed():
    ones = np.ones_like(NEURON_KERNEL)
    np.testing.assert_allclose(pruning.neuron_norms(NEURON_KERNEL, ones, "l1"), [3, 3.5, 6, 5])
    np.testing.assert_allclose(
        pruning.neuron_norms(NEURON_KERNEL, ones, "l2"),
        [3, math.sqrt(4.25), math.sqrt(12), math.sqrt(17)],
    )
    # norms are of the effective weights: masked weights do not count
    mask = ones.copy()
    mask[0, 3] = 0
    assert pruning.neuron_norms(NEURON_KERNEL, mask, "l1")[3] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "norm, rate, pruned",
    [
        ("l1", 0.25, [0]),  # 1 neuron: lowest l1 is col 0
        ("l2", 0.25, [1]),  # 1 neuron: lowest l2 is col 1
        ("l1", 0.5, [0, 1]),
        ("l2", 0.5, [1, 0]),
        ("l1", 0.625, [0, 1, 3]),  # 2.5 -> 3 neurons
        ("l2", 0.625, [0, 1, 2]),
    ],
)
def test_neuron_mask_hand_computed(norm, rate, pruned):
    new = pruning.neuron_mask(NEURON_KERNEL, np.ones_like(NEURON_KERNEL), rate, norm)
    expected = np.ones_like(NEURON_KERNEL)
    expected[:, pruned] = 0
    np.testing.assert_array_equal(new, expected)
    bias = np.ones(4, "float32")
    bias[pruned] = 0
    np.testing.assert_array_equal(pruning.neuron_vector(new), bias)


def test_neuron_mask_keeps_weight_pruned_holes_and_counts_alive_neurons():
    mask = np.ones_like(NEURON_KERNEL)
    mask[:, 2] = 0  # already a dead neuron
    mask[1, 3] = 0  # a pruned weight in a live neuron
    new = pruning.neuron_mask(NEURON_KERNEL, mask, 0.34, "l1")  # 3 alive -> 1
    expected = mask.copy()
    expected[:, 0] = 0
    np.testing.assert_array_equal(new, expected)
    np.testing.assert_array_equal(pruning.neuron_vector(new), [0, 1, 0, 1])


@SETTINGS
@given(kernel_and_mask(), _rates, st.sampled_from(["l1", "l2"]))
def test_neuron_mask_invariants(km, rate, norm):
    kernel, mask = km
    new = pruning.neuron_mask(kernel, mask, rate, norm)
    alive = pruning.alive_neurons(mask)
    now = pruning.alive_neurons(new)
    assert np.all(new <= mask)
    assert not np.any(now & ~alive)
    assert int((alive & ~now).sum()) == pruning.prune_count(rate, int(alive.sum()))
    # surviving neurons keep their column mask unchanged; pruned ones are empty
    np.testing.assert_array_equal(new[:, now], mask[:, now])
    assert not new[:, ~now].any()
    norms = pruning.neuron_norms(kernel, mask, norm)
    if (alive & ~now).any() and now.any():
        assert norms[alive & ~now].max() <= norms[now].min()


def test_global_neuron_masks_normalise_by_fan_in():
    # layer a: fan-in 2, weakest column l1 = 2 (mean |w| 1.0)
    # layer b: fan-in 8, weakest column l1 = 4 (mean |w| 0.5)
    # raw norms would prune a's column; per-weight scale prunes b's.
    a = np.array([[1.0, 5.0], [1.0, 5.0]], "float32")
    b = np.concatenate([np.full((8, 1), 0.5), np.full((8, 1), 3.0)], axis=1).astype("float32")
    ones = [np.ones_like(a), np.ones_like(b)]
    new_a, new_b = pruning.global_neuron_masks([a, b], ones, 0.25, "l1")  # 4 -> 1
    np.testing.assert_array_equal(new_a, ones[0])
    np.testing.assert_array_equal(new_b[:, 0], 0)
    np.testing.assert_array_equal(new_b[:, 1], 1)
    # l2: a's column has rms 1.0, b's rms 0.5: b's column goes again
    new_a, new_b = pruning.global_neuron_masks([a, b], ones, 0.25, "l2")
    np.testing.assert_array_equal(new_a, ones[0])
    np.testing.assert_array_equal(new_b[:, 0], 0)
    # the behaviour is the documented one
    doc = pruning.global_neuron_masks.__doc__
    assert "fan-in" in doc and "root mean square" in doc


def test_global_neuron_mask_compares_normalised_norms_across_layers():
    rng = np.random.default_rng(3)
    kernels = [rng.normal(size=(7, 5)).astype("float32"), rng.normal(size=(5, 6)).astype("float32")]
    masks = [np.ones_like(k) for k in kernels]
    new = pruning.global_neuron_masks(kernels, masks, 0.4, "l2")
    gone, kept = [], []
    for k, m, n in zip(kernels, masks, new):
        s = pruning.neuron_norms(k, m, "l2") / math.sqrt(k.shape[0])
        alive = pruning.alive_neurons(n)
        gone.append(s[~alive])
        kept.append(s[alive])
    gone, kept = np.concatenate(gone), np.concatenate(kept)
    assert gone.size == pruning.prune_count(0.4, 11)
    assert gone.max() <= kept.min()


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_frozen_output_layer_untouched_in_neuron_mode(scope):
    kernels, masks = _layers(1)
    new = pruning.prune(
        kernels,
        masks,
        0.5,
        layer_rates={"out": 0.5},
        scope=scope,
        structure="neuron",
        frozen_neurons=("out",),
    )
    np.testing.assert_array_equal(new["out"], masks["out"])
    alive = {n: int(pruning.alive_neurons(masks[n]).sum()) for n in ("a", "b")}
    now = {n: int(pruning.alive_neurons(new[n]).sum()) for n in ("a", "b")}
    if scope == "layer":
        for n in alive:
            assert alive[n] - now[n] == pruning.prune_count(0.5, alive[n])
    else:
        total = sum(alive.values())
        assert total - sum(now.values()) == pruning.prune_count(0.5, total)


def test_frozen_neurons_do_not_freeze_weight_pruning():
    kernels, masks = _layers(2)
    new = pruning.prune(kernels, masks, 0.5, frozen_neurons=("out",))
    _check_round([kernels["out"]], [masks["out"]], [new["out"]], 0.5)


def test_prune_neuron_structure_uses_norm():
    kernels = {"h": NEURON_KERNEL, "out": np.ones((4, 2), "float32")}
    masks = {n: np.ones_like(k) for n, k in kernels.items()}
    for norm, col in (("l1", 0), ("l2", 1)):
        new = pruning.prune(
            kernels, masks, 0.25, structure="neuron", norm=norm, frozen_neurons=("out",)
        )
        assert not new["h"][:, col].any()
        assert pruning.alive_neurons(new["h"]).sum() == 3


# --------------------------------------------------------------------------- #
# Absolute sparsity (tfmot schedules)
# --------------------------------------------------------------------------- #
@SETTINGS
@given(kernel_and_mask(), st.lists(st.floats(0.0, 0.99), min_size=1, max_size=5))
def test_sparsity_mask_reaches_target_monotone_never_unprunes(km, targets):
    kernel, mask = km
    for s in targets:
        new = pruning.sparsity_mask(kernel, mask, s)
        assert np.all(new <= mask)
        kept_now, alive = int(new.sum()), int(mask.sum())
        assert kept_now == min(alive, pruning.gradual_kept_count(mask.size, s))
        assert kept_now >= min(alive, 1)  # a layer is never emptied
        gone, kept = np.abs(kernel)[(mask == 1) & (new == 0)], np.abs(kernel)[new == 1]
        if gone.size and kept.size:
            assert gone.max() <= kept.min()
        mask = new


def test_sparsity_mask_hand_set():
    kernel = np.arange(1, 11, dtype="float32").reshape(2, 5)
    mask = np.ones_like(kernel)
    half = pruning.sparsity_mask(kernel, mask, 0.5)
    np.testing.assert_array_equal(half.ravel(), [0] * 5 + [1] * 5)
    # a lower target changes nothing: pruned stays pruned
    np.testing.assert_array_equal(pruning.sparsity_mask(kernel, half, 0.2), half)
    np.testing.assert_array_equal(pruning.sparsity_mask(kernel, half, 0.0), half)
    np.testing.assert_array_equal(
        pruning.sparsity_mask(kernel, half, 0.7).ravel(), [0] * 7 + [1] * 3
    )


@pytest.mark.parametrize(
    "size, sparsity, kept",
    [
        (24, 0.99, 1),  # 0.24 rounds to 0: tfmot keeps one weight (half-up counting kept 0)
        (1, 0.9, 1),
        (10, 0.25, 8),  # 7.5: half to even -> 8
        (6, 0.25, 4),  # 4.5: half to even -> 4 (half up would keep 5)
        (18, 0.25, 14),  # 13.5 -> 14
        (5, 0.5, 2),  # 2.5 -> 2
        (7, 0.5, 4),  # 3.5 -> 4
        (2, 0.75, 1),  # 0.5 -> 0, then at least 1
        (100, 0.0, 100),
    ],
)
def test_gradual_kept_count_is_tfmots_on_ties_and_tiny_layers(size, sparsity, kept):
    # these sparsities are exact in binary, so the products are exact halves
    assert pruning.gradual_kept_count(size, np.float32(sparsity)) == kept
    assert pruning.gradual_kept_count(size, sparsity) == kept
    kernel = np.arange(1, size + 1, dtype="float32")
    new = pruning.sparsity_mask(kernel, np.ones(size, "float32"), np.float32(sparsity))
    assert int(new.sum()) == kept
    np.testing.assert_array_equal(new[size - kept :], 1)  # the largest |w| stay


def test_gradual_kept_count_uses_float32_arithmetic():
    # float32(1) - float32(0.85) = 0.14999998: 10 * it = 1.4999998 -> 1
    assert pruning.gradual_kept_count(10, np.float32(0.85)) == 1
    # a Python sparsity is subtracted in float64, then cast (how TensorFlow
    # promotes a Python number): float32(0.15000000000000002) * 10 = 1.5000001 -> 2
    assert pruning.gradual_kept_count(10, 0.85) == 2
    # float32(1) - float32(0.42) = 0.58000004: 25 * it = 14.500001 -> 15
    assert pruning.gradual_kept_count(25, np.float32(0.42)) == 15


def test_gradual_kept_count_matches_tensorflow_rounding():
    """The same arithmetic as tfmot's `_update_mask`, run by TensorFlow itself."""
    tf = pytest.importorskip("tensorflow")
    sizes = np.arange(1, 130)
    for sparsity in np.float32(np.linspace(0.0, 0.995, 41)):
        s = tf.constant(sparsity, tf.float32)
        want = tf.cast(
            tf.maximum(tf.round(tf.cast(sizes, tf.float32) * (1 - s)), 1), tf.int32
        ).numpy()
        got = [pruning.gradual_kept_count(int(n), sparsity) for n in sizes]
        np.testing.assert_array_equal(got, want, err_msg=str(sparsity))


# --------------------------------------------------------------------------- #
# One layer's units over several weights
# --------------------------------------------------------------------------- #
_UNIT_LAYERS = {
    # name: [(shape, (view_shape, unit_axes)), ...] of the weights that share units
    "dense": [((3, 4), ((3, 4), (1,)))],
    "conv2d": [((2, 2, 3, 5), ((2, 2, 3, 5), (3,)))],
    "conv2d_transpose": [((2, 2, 5, 3), ((2, 2, 5, 3), (2,)))],
    "lstm": [((3, 8), ((3, 4, 2), (2,))), ((2, 8), ((2, 4, 2), (2,)))],
    "attention_query": [((6, 2, 3), ((6, 2, 3), (1, 2)))],
}


@pytest.mark.parametrize("name", sorted(_UNIT_LAYERS))
def test_layer_unit_matrix_round_trip_and_columns(name):
    rng = np.random.default_rng(0)
    layout = _UNIT_LAYERS[name]
    values = [rng.normal(size=shape) for shape, _ in layout]
    views = [view for _, view in layout]
    matrix = pruning.layer_unit_matrix(values, views)
    fan_in = sum(math.prod(shape) for shape, _ in layout) // matrix.shape[1]
    assert matrix.shape[0] == fan_in
    back = pruning.split_unit_matrix(matrix, [shape for shape, _ in layout], views)
    for got, want in zip(back, values):
        np.testing.assert_array_equal(got, want)
    # killing unit j of the matrix kills exactly what units_to_mask says is unit j
    units = matrix.shape[1]
    for j in range(units):
        alive = np.ones(units, bool)
        alive[j] = False
        dead = np.ones_like(matrix)
        dead[:, j] = 0
        for (shape, view), part in zip(
            layout, pruning.split_unit_matrix(dead, [s for s, _ in layout], views)
        ):
            np.testing.assert_array_equal(part, pruning.units_to_mask(alive, shape, *view))


@SETTINGS
@given(st.integers(0, 2**31 - 1), _rates, st.sampled_from(["l1", "l2"]))
def test_neuron_pruning_of_unit_matrices_invariants(seed, rate, norm):
    """Structured pruning of any family: exact unit counts, monotone, norms ordered."""
    rng = np.random.default_rng(seed)
    names = sorted(_UNIT_LAYERS)
    kernels, masks, alive0 = {}, {}, {}
    for name in names:
        layout = _UNIT_LAYERS[name]
        views = [view for _, view in layout]
        values = [rng.normal(size=shape).astype("float32") for shape, _ in layout]
        kernels[name] = pruning.layer_unit_matrix(values, views)
        units = kernels[name].shape[1]
        alive = rng.random(units) < 0.8
        masks[name] = np.broadcast_to(alive.astype("float32"), kernels[name].shape).copy()
        alive0[name] = alive
    frozen = ("dense",)
    for scope in ("layer", "global"):
        new = pruning.prune(
            kernels, masks, rate, scope=scope, structure="neuron", norm=norm, frozen_neurons=frozen
        )
        np.testing.assert_array_equal(new["dense"], masks["dense"])  # skipped: as it was
        pruned = [n for n in names if n not in frozen]
        now = {n: pruning.alive_neurons(new[n]) for n in pruned}
        for n in pruned:
            assert not np.any(now[n] & ~alive0[n])  # monotone
            assert np.all((new[n] == 0).all(axis=0) | (new[n] == masks[n]).all(axis=0))
        if scope == "layer":
            for n in pruned:
                lost = int((alive0[n] & ~now[n]).sum())
                assert lost == pruning.prune_count(rate, int(alive0[n].sum()))
                norms = pruning.neuron_norms(kernels[n], masks[n], norm)
                gone, kept = norms[alive0[n] & ~now[n]], norms[now[n]]
                if gone.size and kept.size:
                    assert gone.max() <= kept.min()
        else:
            total = sum(int(alive0[n].sum()) for n in pruned)
            lost = sum(int((alive0[n] & ~now[n]).sum()) for n in pruned)
            assert lost == pruning.prune_count(rate, total)


# --------------------------------------------------------------------------- #
# Rates and densities
# --------------------------------------------------------------------------- #
@SETTINGS
@given(st.floats(0.01, 0.99), st.integers(1, 20))
def test_rate_for_target_density_after_inverse(target, rounds):
    rate = pruning.rate_for_target(target, rounds)
    assert 0 < rate < 1
    assert pruning.density_after(rate, rounds) == pytest.approx(target, rel=1e-9)


def test_density_after_hand():
    assert pruning.density_after(0.2, 0) == 1.0
    assert pruning.density_after(0.2, 2) == pytest.approx(0.64)
    assert pruning.density_after(0.5, 3) == pytest.approx(0.125)


@pytest.mark.parametrize("target, rounds", [(0.107, 10), (0.5, 3), (0.01, 7)])
def test_target_density_is_reached_in_n_rounds(target, rounds):
    rng = np.random.default_rng(0)
    mask = np.ones((100, 100), "float32")
    rate = pruning.rate_for_target(target, rounds)
    for _ in range(rounds):
        mask = pruning.magnitude_mask(rng.normal(size=mask.shape), mask, rate)
    # each round's count is off by at most half a weight
    assert abs(mask.sum() - target * mask.size) <= 0.5 * rounds


# --------------------------------------------------------------------------- #
# Random pruning
# --------------------------------------------------------------------------- #
@SETTINGS
@given(kernel_and_mask(), _rates, st.integers(0, 2**31 - 1))
def test_random_mask_counts(km, rate, seed):
    _, mask = km
    new = pruning.random_mask(mask, rate, np.random.default_rng(seed))
    assert np.all(new <= mask)
    assert int(mask.sum() - new.sum()) == pruning.prune_count(rate, int(mask.sum()))
    again = pruning.random_mask(mask, rate, np.random.default_rng(seed))
    np.testing.assert_array_equal(new, again)


def test_random_mask_depends_on_the_generator():
    mask = np.ones((20, 20), "float32")
    a = pruning.random_mask(mask, 0.5, np.random.default_rng(0))
    b = pruning.random_mask(mask, 0.5, np.random.default_rng(1))
    assert a.sum() == b.sum() == 200
    assert not np.array_equal(a, b)


# --------------------------------------------------------------------------- #
# Bad arguments
# --------------------------------------------------------------------------- #
BAD_RATES = [0, 1, 0.0, 1.0, -0.2, 1.5, True, False, "0.2", None, float("nan"), [0.2]]
K = np.ones((3, 2), "float32")
M = np.ones((3, 2), "float32")


def _raises_naming(match_name, value):
    return pytest.raises(ValueError, match=_named(match_name, value))


def _named(name, value):
    import re

    return re.escape(f"`{name}`") + r"(.|\n)*" + re.escape(f"{name}={value!r}")


@pytest.mark.parametrize("rate", BAD_RATES)
@pytest.mark.parametrize(
    "call",
    [
        lambda r: pruning.magnitude_mask(K, M, r),
        lambda r: pruning.global_magnitude_masks([K], [M], r),
        lambda r: pruning.neuron_mask(K, M, r),
        lambda r: pruning.global_neuron_masks([K], [M], r),
        lambda r: pruning.random_mask(M, r, np.random.default_rng(0)),
        lambda r: pruning.prune({"a": K}, {"a": M}, r),
        # `rate` is checked even when every layer has its own rate
        lambda r: pruning.prune({"a": K}, {"a": M}, r, layer_rates={"a": 0.2}),
        lambda r: pruning.density_after(r, 2),
    ],
    ids=[
        "magnitude",
        "global",
        "neuron",
        "global_neuron",
        "random",
        "prune",
        "prune_overridden",
        "density_after",
    ],
)
def test_bad_rate(call, rate):
    with _raises_naming("rate", rate):
        call(rate)


@pytest.mark.parametrize("rate", BAD_RATES)
def test_bad_layer_rate(rate):
    with _raises_naming("layer_rates['a']", rate):
        pruning.prune({"a": K}, {"a": M}, 0.2, layer_rates={"a": rate})


@pytest.mark.parametrize("target", [0, 1, -0.5, 2, True, "0.1", None])
def test_bad_target_density(target):
    with _raises_naming("target_density", target):
        pruning.rate_for_target(target, 3)


@pytest.mark.parametrize("rounds", [0, -1, 1.5, True, "3", None])
def test_bad_rounds(rounds):
    with _raises_naming("rounds", rounds):
        pruning.rate_for_target(0.5, rounds)


def test_density_after_accepts_zero_rounds_not_negative():
    assert pruning.density_after(0.3, 0) == 1.0
    with _raises_naming("rounds", -1):
        pruning.density_after(0.3, -1)


@pytest.mark.parametrize("sparsity", [-0.1, 1, 1.0, 2, True, "0.5", None, float("nan")])
def test_bad_sparsity(sparsity):
    with _raises_naming("sparsity", sparsity):
        pruning.sparsity_mask(K, M, sparsity)


@pytest.mark.parametrize("scope", ["Layer", "globl", None, 1])
def test_bad_scope(scope):
    with _raises_naming("scope", scope):
        pruning.prune({"a": K}, {"a": M}, 0.2, scope=scope)


@pytest.mark.parametrize("structure", ["neurons", "channel", None])
def test_bad_structure(structure):
    with _raises_naming("structure", structure):
        pruning.prune({"a": K}, {"a": M}, 0.2, structure=structure)


@pytest.mark.parametrize("norm", ["l0", "L1", "linf", None, 1])
@pytest.mark.parametrize(
    "call",
    [
        lambda n: pruning.neuron_mask(K, M, 0.2, n),
        lambda n: pruning.neuron_norms(K, M, n),
        lambda n: pruning.global_neuron_masks([K], [M], 0.2, n),
        lambda n: pruning.prune({"a": K}, {"a": M}, 0.2, structure="neuron", norm=n),
        # checked even where the norm is not used
        lambda n: pruning.prune({"a": K}, {"a": M}, 0.2, norm=n),
        pruning.check_norm,
    ],
)
def test_bad_norm(call, norm):
    with _raises_naming("norm", norm):
        call(norm)


@pytest.mark.parametrize(
    "call",
    [
        lambda m: pruning.magnitude_mask(K, m, 0.2),
        lambda m: pruning.neuron_mask(K, m, 0.2),
        lambda m: pruning.sparsity_mask(K, m, 0.2),
        lambda m: pruning.global_magnitude_masks([K], [m], 0.2),
        lambda m: pruning.global_neuron_masks([K], [m], 0.2),
        lambda m: pruning.prune({"a": K}, {"a": m}, 0.2),
    ],
)
def test_mismatched_shapes(call):
    bad = np.ones((2, 3), "float32")
    with pytest.raises(ValueError, match=r"`mask`(.|\n)*Received: mask.shape=\(2, 3\)"):
        call(bad)


@pytest.mark.parametrize(
    "call",
    [
        lambda: pruning.global_magnitude_masks([K, K], [M], 0.2),
        lambda: pruning.global_neuron_masks([K, K], [M], 0.2),
    ],
)
def test_mismatched_lengths(call):
    with pytest.raises(ValueError, match=r"`masks`(.|\n)*len\(masks\)=1"):
        call()


def test_masks_for_other_layers():
    with pytest.raises(ValueError, match=r"`masks`(.|\n)*\['b'\]"):
        pruning.prune({"a": K}, {"b": M}, 0.2)


def test_unknown_layer_names():
    with pytest.raises(ValueError, match=r"`layer_rates`(.|\n)*\['nope'\]"):
        pruning.prune({"a": K}, {"a": M}, 0.2, layer_rates={"nope": 0.1})
    with pytest.raises(ValueError, match=r"`frozen_neurons`(.|\n)*\['nope'\]"):
        pruning.prune({"a": K}, {"a": M}, 0.2, frozen_neurons=("nope",))


@pytest.mark.parametrize("layer_rates", [[("a", 0.1)], 0.1, "a"])
def test_layer_rates_not_a_dict(layer_rates):
    with _raises_naming("layer_rates", layer_rates):
        pruning.prune({"a": K}, {"a": M}, 0.2, layer_rates=layer_rates)


@SETTINGS
@given(st.data(), st.sampled_from([np.float16, np.float32]))
def test_selection_in_the_scores_own_float_dtype_chooses_what_float64_would(data, dtype):
    # `_prune_lowest` partitions float scores in their own dtype (a float32
    # kernel's |w| at half float64's memory traffic): the same choice.
    scores = data.draw(hnp.arrays(np.float64, st.integers(1, 40), elements=_scores)).astype(dtype)
    alive = data.draw(hnp.arrays(bool, scores.shape))
    count = data.draw(st.integers(0, int(alive.sum())))
    np.testing.assert_array_equal(
        pruning._prune_lowest(scores, alive, count),
        pruning._prune_lowest(scores.astype(np.float64), alive, count),
    )
