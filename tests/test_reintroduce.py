"""Tests for `keras_lth.reintroduce`: the swap maths and the strategies' arguments."""

import warnings

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
# keep_highest / reselect: re-selection at the pruning step (when="prune")
# --------------------------------------------------------------------- #
def test_reselect_hand_example_replaces_the_weakest_kept_by_the_best_pruned():
    scores = {"a": np.array([4.0, 1.0, 3.0, 9.0, 2.0, 5.0])}
    masks = {"a": np.array([1, 1, 1, 1, 0, 0], "float32")}  # 4 (2.0), 5 (5.0) pruned
    base = {"a": np.array([1, 0, 1, 1, 0, 0], "float32")}  # kept 4.0, 3.0, 9.0
    # cap = round(1.0 * 3) = 3, but only 5 (5.0 > 3.0) beats a kept one;
    # 4 (2.0) loses to the next weakest (4.0)
    new, entered, left = ri.reselect(scores, masks, base, fraction=1.0)
    np.testing.assert_array_equal(new["a"], [1, 0, 0, 1, 0, 1])
    assert np.flatnonzero(entered["a"]).tolist() == [5]
    assert np.flatnonzero(left["a"]).tolist() == [2]
    # the cap: fraction 0.2 of 3 kept rounds to 1 re-entry at most
    scores["a"][4] = 8.0
    new, entered, _ = ri.reselect(scores, masks, base, fraction=0.2)
    assert np.flatnonzero(entered["a"]).tolist() == [4] and new["a"].sum() == 3


def test_reselect_fraction_zero_returns_base_and_nothing_enters():
    masks = {"a": np.array([1, 1, 0, 0], "float32")}
    base = {"a": np.array([1, 0, 0, 0], "float32")}
    new, entered, left = ri.reselect({"a": np.array([0, 0, 9, 9.0])}, masks, base, 0.0)
    np.testing.assert_array_equal(new["a"], base["a"])
    assert not entered["a"].any() and not left["a"].any()


def test_reselect_global_scope_moves_weights_between_layers_and_keeps_own_layers_apart():
    masks = {n: np.array([1, 1, 0, 0], "float32") for n in "abc"}
    base = {n: np.array([1, 0, 0, 0], "float32") for n in "abc"}
    scores = {
        "a": np.array([1.0, 0, 0, 0]),
        "b": np.array([2.0, 0, 7, 8]),
        "c": np.array([5.0, 0, 0, 6]),
    }
    new, _, _ = ri.reselect(scores, masks, base, 1.0, scope="global", own_layers=("c",))
    # a and b share 2 places: b's pruned 8 and 7 beat a's 1 and b's 2
    assert new["a"].tolist() == [0, 0, 0, 0] and new["b"].tolist() == [0, 0, 1, 1]
    assert new["c"].tolist() == [0, 0, 0, 1]  # within c only: 6 beats 5


def test_reselect_neurons_moves_whole_columns_and_skips_frozen_layers():
    masks = {"a": np.array([[1, 1, 0], [1, 1, 0]], "float32"), "out": np.ones((3, 2), "float32")}
    base = {"a": np.array([[1, 0, 0], [1, 0, 0]], "float32"), "out": np.ones((3, 2), "float32")}
    scores = {"a": np.array([3.0, 1.0, 5.0]), "out": np.array([0.0, 0.0])}
    new, entered, _ = ri.reselect(
        scores, masks, base, 1.0, structure="neuron", frozen_neurons=("out",)
    )
    np.testing.assert_array_equal(new["a"], [[0, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(entered["a"], [[0, 0, 1], [0, 0, 1]])
    np.testing.assert_array_equal(new["out"], masks["out"])


@pytest.mark.parametrize(
    "base, match",
    [
        ({"a": np.array([1, 0, 1, 0], "float32")}, r"base\['a'\]"),  # keeps a pruned one
        ({"a": np.ones(3, "float32")}, r"base\['a'\]"),
        ({"b": np.zeros(4, "float32")}, "same layers"),
    ],
)
def test_reselect_bad_base_names_the_argument(base, match):
    masks = {"a": np.array([1, 1, 0, 0], "float32")}
    with pytest.raises(ValueError, match=match):
        ri.reselect({"a": np.zeros(4)}, masks, base, 0.5)


def test_reselect_and_keep_highest_bad_arguments():
    m = {"a": np.ones(3, "float32")}
    with pytest.raises(ValueError, match="fraction=1.5"):
        ri.reselect({"a": np.zeros(3)}, m, m, 1.5)
    with pytest.raises(ValueError, match="scope='model'"):
        ri.keep_highest({"a": np.zeros(3)}, m, 0.5, scope="model")
    with pytest.raises(ValueError, match=r"scores\['a'\]"):
        ri.keep_highest({"a": np.zeros(2)}, m, 0.5)


@settings(max_examples=100, deadline=None)
@given(layers_case(), st.floats(0.05, 0.95))
def test_keep_highest_by_magnitude_is_magnitude_pruning(case, rate):
    masks, grow, _, _, scope = case
    got = ri.keep_highest({n: np.abs(g) for n, g in grow.items()}, masks, rate, scope=scope)
    expected = ri.pruning.prune(grow, masks, rate, scope=scope)
    for n in masks:
        np.testing.assert_array_equal(got[n], expected[n])


@settings(max_examples=150, deadline=None)
@given(layers_case(), st.floats(0.05, 0.95))
def test_reselect_invariants(case, rate):
    masks, scores, drop, fraction, scope = case
    base = ri.keep_highest(drop, masks, rate, scope=scope)
    new, entered, left = ri.reselect(scores, masks, base, fraction, scope=scope)
    groups = [list(masks)] if scope == "global" else [[n] for n in masks]
    for names in groups:
        flat = lambda d, names=names: np.concatenate([np.ravel(d[n]) for n in names])  # noqa: E731
        was, keep, now = flat(masks) > 0, flat(base) > 0, flat(new) > 0
        e, l, s = flat(entered), flat(left), flat(scores)
        assert now.sum() == keep.sum()  # the round's exact count
        assert not (e & was).any()  # re-entered units come from the pruned set
        assert not (l & ~keep).any() and not (now & ~was & ~e).any()
        np.testing.assert_array_equal(now, (keep & ~l) | e)
        cap = ri.pruning.prune_count(fraction, int(keep.sum()))
        assert e.sum() == l.sum() <= cap
        if e.any():
            # the criterion's top-k of the pruned units is what re-enters ...
            assert s[e].min() >= s[~was & ~e].max(initial=-np.inf)
            # ... each in place of a weaker unit of the base
            assert s[e].min() > s[l].max()
        if e.sum() < min(cap, (~was).sum()):
            # it stopped early: no further pruned unit beats a remaining one
            assert s[~was & ~e].max(initial=-np.inf) <= s[now & was].min(initial=np.inf)


@settings(max_examples=100, deadline=None)
@given(layers_case(), st.floats(0.05, 0.95))
def test_reselect_fraction_one_is_the_top_of_all_units(case, rate):
    masks, scores, _, _, scope = case
    base = ri.keep_highest(scores, masks, rate, scope=scope)
    new, _, _ = ri.reselect(scores, masks, base, 1.0, scope=scope)
    groups = [list(masks)] if scope == "global" else [[n] for n in masks]
    for names in groups:
        flat = lambda d, names=names: np.concatenate([np.ravel(d[n]) for n in names])  # noqa: E731
        s, now = flat(scores), flat(new) > 0
        n_keep = int(now.sum())
        # the kept scores are the n_keep highest of all units (ties aside)
        np.testing.assert_array_equal(np.sort(s[now]), np.sort(s)[s.size - n_keep :])


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
        (lth.DoublePruning, {"when": "epoch"}, "when='epoch'"),
        (lth.ScoredPruning, {"when": None}, "when=None"),
    ],
)
def test_bad_arguments_raise_naming_argument_and_value(cls, kwargs, received):
    with pytest.raises(ValueError, match=received.replace(".", r"\.")):
        cls(**kwargs)


def test_event_arguments_with_when_prune_warn_they_are_not_used():
    with pytest.warns(UserWarning, match=r"`every`, `value`.*every=5, value='zero'"):
        lth.DoublePruning(when="prune", every=5, value="zero")
    with pytest.warns(UserWarning, match=r"`every`.*every=5"):  # the default is when="prune"
        lth.ScoredPruning(every=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lth.ScoredPruning(when="prune", fraction=0.5, score_decay=0.5)
        lth.ScoredPruning(when="round", every=5)  # used by when="round"


@pytest.mark.parametrize(
    "strategy",
    [
        lth.DoublePruning(),
        lth.DoublePruning(
            "feedback",
            when="round",
            fraction=0.1,
            every=50,
            unit="step",
            start=10,
            decay="constant",
            value="zero",
        ),
        lth.ScoredPruning(),
        lth.ScoredPruning(
            fraction=0.3, prune_by="magnitude", score_decay=0.5, value="rewind", when="round"
        ),
        lth.DoublePruning("feedback", fraction=0.5, when="prune"),
        lth.ScoredPruning(fraction=1.0, prune_by="magnitude", score_decay=0.9, when="prune"),
    ],
)
def test_config_round_trip(strategy):
    config = keras.saving.serialize_keras_object(strategy)
    again = keras.saving.deserialize_keras_object(config)
    assert type(again) is type(strategy)
    assert again.get_config() == strategy.get_config()
    assert repr(again) == repr(strategy)


def test_the_defaults_are_the_sweeps_choice():
    # docs/results/reintroduction-sweep.md: re-selection at the pruning step,
    # Double-pruning in feedback mode, Scored-pruning by score, fraction 0.2
    double, scored = lth.DoublePruning(), lth.ScoredPruning()
    assert (double.when, double.mode, double.fraction) == ("prune", "feedback", 0.2)
    assert (scored.when, scored.prune_by, scored.fraction, scored.score_decay) == (
        "prune",
        "score",
        0.2,
        0.0,
    )
    assert double.dense_gradient and not double.complement  # one pass per step
