"""Tests for `keras_lth.reintroduce`: the swap maths and the strategies' arguments."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import keras_lth as lth
from keras_lth import reintroduce as ri


# --------------------------------------------------------------------- #
# select_swap / swap_masks on hand-made inputs
# --------------------------------------------------------------------- #
def test_select_swap_takes_top_k_pruned_and_bottom_k_kept():
    grow = np.array([5.0, 1.0, 9.0, 3.0, 7.0, 0.0])
    drop = np.array([2.0, 8.0, 0.0, 6.0, 4.0, 1.0])
    alive = np.array([1, 1, 0, 1, 0, 0], bool)  # pruned: 2 (9), 4 (7), 5 (0)
    g, d = ri.select_swap(grow, drop, alive, 2)
    assert np.flatnonzero(g).tolist() == [2, 4]
    assert np.flatnonzero(d).tolist() == [0, 3]  # kept scores 2, 8, 6 -> 2 and 6


def test_select_swap_caps_k_at_the_smaller_set_and_breaks_ties_by_position():
    alive = np.array([1, 1, 1, 0], bool)
    g, d = ri.select_swap(np.zeros(4), np.zeros(4), alive, 3)
    assert g.sum() == d.sum() == 1
    assert np.flatnonzero(d).tolist() == [0]
    g, d = ri.select_swap(np.zeros(4), np.zeros(4), np.ones(4, bool), 2)
    assert not g.any() and not d.any()  # nothing pruned: nothing to swap


def test_swap_masks_layer_scope_hand_example():
    mask = np.array([[1, 0], [1, 1], [0, 1]], "float32")
    grow = np.array([[0, 5], [0, 0], [3, 0]], "float32")  # pruned: (0,1)=5, (2,0)=3
    drop = np.array([[4, 0], [1, 2], [0, 9]], "float32")  # kept: 4, 1, 2, 9
    new, grown, dropped = ri.swap_masks({"a": grow}, {"a": drop}, {"a": mask}, fraction=0.5)
    # k = round(0.5 * 4) = 2: grow (0,1) and (2,0); drop (1,0)=1 and (1,1)=2
    np.testing.assert_array_equal(new["a"], [[1, 1], [0, 0], [1, 1]])
    np.testing.assert_array_equal(np.argwhere(grown["a"]), [[0, 1], [2, 0]])
    np.testing.assert_array_equal(np.argwhere(dropped["a"]), [[1, 0], [1, 1]])


def test_swap_masks_global_scope_moves_weights_between_layers():
    masks = {"a": np.array([1, 1, 0, 0], "float32"), "b": np.array([1, 1, 0, 0], "float32")}
    grow = {"a": np.array([0, 0, 1, 2.0]), "b": np.array([0, 0, 8, 9.0])}
    drop = {"a": np.array([1, 2, 0, 0.0]), "b": np.array([5, 6, 0, 0.0])}
    new, _, _ = ri.swap_masks(grow, drop, masks, fraction=0.5, scope="global")
    # k = 2 over 4 kept: the two best pruned are in b, the two worst kept in a
    np.testing.assert_array_equal(new["a"], [0, 0, 0, 0])
    np.testing.assert_array_equal(new["b"], [1, 1, 1, 1])


def test_swap_masks_global_scope_keeps_own_rate_layers_apart():
    masks = {
        "a": np.array([1, 1, 0, 0], "float32"),
        "b": np.array([1, 1, 0, 0], "float32"),
        "c": np.array([1, 0, 0, 0], "float32"),
    }
    grow = {
        "a": np.array([0, 0, 1, 2.0]),
        "b": np.array([0, 0, 3, 4.0]),
        "c": np.array([0, 9, 9, 9.0]),
    }
    drop = {
        "a": np.array([1, 2, 0, 0.0]),
        "b": np.array([5, 6, 0, 0.0]),
        "c": np.array([0.0, 0, 0, 0]),
    }
    new, _, _ = ri.swap_masks(grow, drop, masks, fraction=0.5, scope="global", own_layers=("b",))
    assert new["b"].tolist() == [0, 1, 0, 1]  # swapped within b only (k = 1 of 2)
    # a and c share one swap: k = round(0.5 * 3) = 2, the best pruned are in
    # c (ties by position), the worst kept are c[0] and a[0]
    assert new["a"].tolist() == [0, 1, 0, 0] and new["c"].tolist() == [0, 1, 1, 0]


def test_swap_masks_neurons_swaps_whole_columns_and_skips_frozen_layers():
    mask = np.array([[1, 0, 1], [1, 0, 1]], "float32")  # neuron 1 pruned
    out = np.ones((3, 2), "float32")
    grow = {"h": np.array([0.0, 5.0, 0.0]), "out": np.zeros(2)}
    drop = {"h": np.array([3.0, 0.0, 1.0]), "out": np.zeros(2)}
    new, grown, dropped = ri.swap_masks(
        grow,
        drop,
        {"h": mask, "out": out},
        fraction=0.5,
        structure="neuron",
        frozen_neurons=("out",),
    )
    np.testing.assert_array_equal(new["h"], [[1, 1, 0], [1, 1, 0]])
    assert grown["h"][:, 1].all() and dropped["h"][:, 2].all()
    np.testing.assert_array_equal(new["out"], out)
    assert not grown["out"].any() and not dropped["out"].any()


def test_swap_masks_fraction_zero_changes_nothing():
    mask = np.array([1, 0, 1, 0], "float32")
    new, grown, dropped = ri.swap_masks(
        {"a": np.arange(4.0)}, {"a": np.arange(4.0)}, {"a": mask}, 0.0
    )
    np.testing.assert_array_equal(new["a"], mask)
    assert not grown["a"].any() and not dropped["a"].any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"fraction": 1.5}, "fraction=1.5"),
        ({"fraction": -0.1}, "fraction=-0.1"),
        ({"fraction": "0.1"}, "fraction='0.1'"),
        ({"scope": "model"}, "scope='model'"),
        ({"structure": "filter"}, "structure='filter'"),
    ],
)
def test_swap_masks_bad_arguments(kwargs, match):
    args = dict(fraction=0.5, scope="layer", structure="weight")
    args.update(kwargs)
    m = {"a": np.ones(3, "float32")}
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(".", r"\.")):
        ri.swap_masks({"a": np.zeros(3)}, {"a": np.zeros(3)}, m, **args)


def test_swap_masks_wrong_score_shape_names_the_layer():
    with pytest.raises(ValueError, match=r"grow_scores\['a'\]"):
        ri.swap_masks({"a": np.zeros(2)}, {"a": np.zeros(3)}, {"a": np.ones(3)}, 0.5)


# --------------------------------------------------------------------- #
# Property tests
# --------------------------------------------------------------------- #
@st.composite
def layers_case(draw):
    n_layers = draw(st.integers(1, 3))
    shapes = [(draw(st.integers(1, 5)), draw(st.integers(1, 5))) for _ in range(n_layers)]
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    names = [f"l{i}" for i in range(n_layers)]
    masks = {
        n: (rng.random(s) < draw(st.floats(0.1, 0.9))).astype("float32")
        for n, s in zip(names, shapes)
    }
    # integer-valued scores make ties common
    grow = {n: rng.integers(-3, 4, size=s).astype("float64") for n, s in zip(names, shapes)}
    drop = {n: rng.integers(-3, 4, size=s).astype("float64") for n, s in zip(names, shapes)}
    return masks, grow, drop, draw(st.floats(0.0, 1.0)), draw(st.sampled_from(["layer", "global"]))


@settings(max_examples=150, deadline=None)
@given(layers_case())
def test_swap_invariants(case):
    masks, grow, drop, fraction, scope = case
    new, grown, dropped = ri.swap_masks(grow, drop, masks, fraction, scope=scope)
    total = lambda ms: sum(float(m.sum()) for m in ms.values())  # noqa: E731
    assert total(new) == total(masks)  # density unchanged
    if scope == "layer":
        for n in masks:
            assert new[n].sum() == masks[n].sum()
    g_all = np.concatenate([grown[n].ravel() for n in masks])
    d_all = np.concatenate([dropped[n].ravel() for n in masks])
    assert not (g_all & d_all).any()  # nothing re-introduced and pruned at once
    was = np.concatenate([masks[n].ravel() > 0 for n in masks])
    assert not (g_all & was).any() and not (d_all & ~was).any()
    groups = [list(masks)] if scope == "global" else [[n] for n in masks]
    for names in groups:
        was = np.concatenate([masks[n].ravel() > 0 for n in names])
        g = np.concatenate([grown[n].ravel() for n in names])
        d = np.concatenate([dropped[n].ravel() for n in names])
        gs = np.concatenate([grow[n].ravel() for n in names])
        ds = np.concatenate([drop[n].ravel() for n in names])
        k = int(min(ri.pruning.prune_count(fraction, int(was.sum())), was.sum(), (~was).sum()))
        assert g.sum() == d.sum() == k
        if k:
            # the re-introduced are the top-k pruned, the dropped the bottom-k kept
            assert gs[g].min() >= gs[~was & ~g].max(initial=-np.inf)
            assert ds[d].max() <= ds[was & ~d].min(initial=np.inf)


# --------------------------------------------------------------------- #
# Event timing and the fraction schedule
# --------------------------------------------------------------------- #
def test_event_times():
    due = [t for t in range(12) if ri.event_due(t, start=2, every=3, horizon=10)]
    assert due == [2, 5, 8]
    assert [t for t in range(5) if ri.event_due(t, start=0, every=1, horizon=4)] == [1, 2, 3]
    for after in range(12):
        nxt = ri.next_event(after, start=2, every=3)
        assert nxt > after and ri.event_due(nxt, 2, 3, None)
        assert not any(ri.event_due(t, 2, 3, None) for t in range(after + 1, nxt))


def test_fraction_schedule_cosine_and_constant():
    assert ri.fraction_at(0.4, 0, 10, "cosine") == pytest.approx(0.4)
    assert ri.fraction_at(0.4, 5, 10, "cosine") == pytest.approx(0.2)
    assert ri.fraction_at(0.4, 10, 10, "cosine") == pytest.approx(0.0)
    assert ri.fraction_at(0.4, 7, 10, "constant") == 0.4
    assert ri.fraction_at(0.4, 7, None, "cosine") == 0.4


# --------------------------------------------------------------------- #
# Strategies: criteria, arguments, config
# --------------------------------------------------------------------- #
def test_double_pruning_criterion_is_magnitude_and_neuron_norm():
    k = {"a": np.array([[1.0, -4.0], [-3.0, 2.0]])}
    m = {"a": np.array([[1, 0], [1, 1]], "float32")}
    grow, drop = lth.DoublePruning().criteria(k, m, None, "weight", "l1")
    np.testing.assert_array_equal(grow["a"], np.abs(k["a"]))
    grow, _ = lth.DoublePruning().criteria(k, m, None, "neuron", "l2")
    np.testing.assert_allclose(grow["a"], [np.sqrt(10 / 2), np.sqrt(20 / 2)])


def test_scored_pruning_criteria():
    k = {"a": np.array([[1.0, -4.0], [-3.0, 2.0]])}
    s = {"a": np.array([[0.5, 0.1], [-0.2, 0.3]])}
    grow, drop = lth.ScoredPruning().criteria(k, None, s, "weight", "l1")
    np.testing.assert_array_equal(grow["a"], s["a"])
    np.testing.assert_array_equal(drop["a"], s["a"])
    _, drop = lth.ScoredPruning(prune_by="magnitude").criteria(k, None, s, "weight", "l1")
    np.testing.assert_array_equal(drop["a"], np.abs(k["a"]))
    grow, _ = lth.ScoredPruning().criteria(k, None, s, "neuron", "l1")
    np.testing.assert_allclose(grow["a"], [0.3, 0.4])


@pytest.mark.parametrize(
    "cls, kwargs, received",
    [
        (lth.DoublePruning, {"mode": "both"}, "mode='both'"),
        (lth.DoublePruning, {"fraction": 2}, "fraction=2"),
        (lth.ScoredPruning, {"fraction": None}, "fraction=None"),
        (lth.ScoredPruning, {"every": 0}, "every=0"),
        (lth.ScoredPruning, {"every": 1.5}, "every=1.5"),
        (lth.DoublePruning, {"unit": "batch"}, "unit='batch'"),
        (lth.DoublePruning, {"start": -1}, "start=-1"),
        (lth.ScoredPruning, {"decay": "linear"}, "decay='linear'"),
        (lth.ScoredPruning, {"value": "init"}, "value='init'"),
        (lth.ScoredPruning, {"prune_by": "norm"}, "prune_by='norm'"),
        (lth.ScoredPruning, {"score_decay": 1.0}, "score_decay=1.0"),
    ],
)
def test_bad_arguments_raise_naming_argument_and_value(cls, kwargs, received):
    with pytest.raises(ValueError, match=received.replace(".", r"\.")):
        cls(**kwargs)


@pytest.mark.parametrize(
    "strategy",
    [
        lth.DoublePruning(),
        lth.DoublePruning(
            "feedback",
            fraction=0.1,
            every=50,
            unit="step",
            start=10,
            decay="constant",
            value="zero",
        ),
        lth.ScoredPruning(),
        lth.ScoredPruning(fraction=0.3, prune_by="magnitude", score_decay=0.5, value="rewind"),
    ],
)
def test_config_round_trip(strategy):
    config = keras.saving.serialize_keras_object(strategy)
    again = keras.saving.deserialize_keras_object(config)
    assert type(again) is type(strategy)
    assert again.get_config() == strategy.get_config()
    assert repr(again) == repr(strategy)
