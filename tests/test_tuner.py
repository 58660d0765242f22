"""keras-tuner searches over prune schedules (`keras_lth.tuner`).

Tiny models on NumPy data; each search runs one to four trials of a few
epochs. The distributed test starts a chief and a worker on 127.0.0.1.
"""

import importlib
import os
import socket
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

keras_tuner = pytest.importorskip("keras_tuner")

import keras_lth  # noqa: E402
from keras_lth import tuner as lth_tuner  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(n=64, features=8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int32")
    return x, y


def build_model(hp):
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras_lth.MaskedDense(hp.Int("units", 8, 16, step=8), activation="relu"),
            keras_lth.MaskedDense(2, name="output"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class Recorder(keras.callbacks.Callback):
    """Keeps every fit's epoch logs; class-level, since tuners deep-copy callbacks."""

    runs = []

    def on_train_begin(self, logs=None):
        Recorder.runs.append([])

    def on_epoch_end(self, epoch, logs=None):
        Recorder.runs[-1].append(dict(logs))


@pytest.fixture(autouse=True)
def _clear_recorder():
    Recorder.runs = []
    yield


def _search(tuner_cls, hypermodel, hp=None, callbacks=(), **kwargs):
    x, y = _data()
    tuner = tuner_cls(
        hypermodel,
        hyperparameters=hp,
        objective=keras_tuner.Objective("val_accuracy", "max"),
        directory=kwargs.pop("directory"),
        seed=1,
        **kwargs,
    )
    tuner.search(
        x,
        y,
        validation_data=(x, y),
        batch_size=32,
        verbose=0,
        callbacks=[Recorder(), *callbacks],
    )
    return tuner


def _trials(tuner):
    return sorted(tuner.oracle.trials.values(), key=lambda t: t.trial_id)


# ---------------------------------------------------------------------- #
# Import, rounds and the search space
# ---------------------------------------------------------------------- #
def test_keras_lth_imports_without_keras_tuner(monkeypatch):
    monkeypatch.delitem(sys.modules, "keras_lth.tuner")
    monkeypatch.delattr(keras_lth, "tuner")
    monkeypatch.setitem(sys.modules, "keras_tuner", None)
    lth = importlib.reload(keras_lth)  # `import keras_lth` works
    assert lth.PruningScheduler is not None
    with pytest.raises(ImportError, match=r'pip install "keras-lth\[tuner\]"'):
        _ = lth.tuner


@pytest.mark.parametrize(
    "target, rate, rounds",
    [
        (0.05, 0.2, 14),
        (0.64, 0.2, 2),
        (0.5, 0.5, 1),
        (0.9, 0.5, 1),
        (0.05, 0.8, 2),
        (0.01, 0.1, 44),
    ],
)
def test_rounds_for_target(target, rate, rounds):
    assert lth_tuner.rounds_for_target(target, rate) == rounds
    # that many rounds reach the target, one fewer does not
    assert (1 - rate) ** rounds <= target + 1e-12
    assert rounds == 1 or (1 - rate) ** (rounds - 1) > target


@pytest.mark.parametrize("target, rate", [(0, 0.2), (1, 0.2), (0.05, 0), (0.05, 1.0)])
def test_rounds_for_target_rejects(target, rate):
    with pytest.raises(ValueError, match="Received"):
        lth_tuner.rounds_for_target(target, rate)


def test_search_space_contents():
    hp = keras_tuner.HyperParameters()
    lth_tuner.declare_search_space(hp)
    space = {p.name: p for p in hp.space}
    assert list(space) == list(lth_tuner.SEARCH_SPACE)
    assert set(space["prune/method"].values) == {
        "lth",
        "lth-late",
        "imp-finetune",
        "double",
        "scored",
    }
    assert space["prune/scope"].values == ["layer", "global"]
    assert space["prune/structure"].values == ["weight", "neuron"]
    assert (space["prune/rate"].min_value, space["prune/rate"].max_value) == (0.1, 0.8)

    def parent(name):
        return [c.get_config() for c in space[name].conditions]

    assert parent("prune/rewind_epoch") == [{"name": "prune/method", "values": ["lth-late"]}]
    assert parent("prune/norm") == [{"name": "prune/structure", "values": ["neuron"]}]
    assert parent("prune/double_mode") == [{"name": "prune/method", "values": ["double"]}]
    for name in (
        "prune/fraction",
        "prune/every",
        "prune/start",
        "prune/when",
        "prune/value",
        "prune/decay",
    ):
        assert parent(name) == [{"name": "prune/method", "values": ["double", "scored"]}]
    for name in ("prune/prune_by", "prune/score_decay"):
        assert parent(name) == [{"name": "prune/method", "values": ["scored"]}]
    assert space["prune/value"].values == ["current", "zero", "rewind"]
    assert space["prune/when"].values == ["prune", "round"]
    # defaults: the lottery-ticket schedule, method-specific values inactive
    assert hp.values == {
        "prune/method": "lth",
        "prune/rate": 0.2,
        "prune/epochs_per_round": 4,
        "prune/scope": "layer",
        "prune/structure": "weight",
    }


@pytest.mark.parametrize(
    "target, max_rounds, low", [(0.05, 20, 0.15), (0.05, 10, 0.3), (0.5, 20, 0.1)]
)
def test_rate_range_starts_where_max_rounds_reach_the_target(target, max_rounds, low):
    hm = lth_tuner.PruningHyperModel(build_model, target_density=target, max_rounds=max_rounds)
    hp = keras_tuner.HyperParameters()
    hm.build(hp)
    (rate,) = [p for p in hp.space if p.name == "prune/rate"]
    assert rate.min_value == pytest.approx(low)
    assert lth_tuner.rounds_for_target(target, rate.min_value) <= max_rounds
    assert lth_tuner.rounds_for_target(target, rate.min_value - rate.step) > max_rounds or (
        rate.min_value == 0.1
    )


def test_users_fix_and_narrow_the_space(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Fixed("prune/method", "lth-late")
    hp.Float("prune/rate", 0.3, 0.5, step=0.1)
    hp.Int("prune/rewind_epoch", 1, 2)  # without the condition: kept as declared
    hypermodel = lth_tuner.PruningHyperModel(build_model, target_density=0.3)
    tuner = keras_tuner.RandomSearch(
        hypermodel,
        hyperparameters=hp,
        objective="val_accuracy",
        max_trials=1,
        directory=tmp_path,
    )
    space = {p.name: p for p in tuner.oracle.get_space().space}
    assert type(space["prune/method"]).__name__ == "Fixed"
    assert (space["prune/rate"].min_value, space["prune/rate"].max_value) == (0.3, 0.5)
    assert space["prune/rewind_epoch"].max_value == 2
    assert space["prune/rewind_epoch"].conditions == []
    assert len([p for p in tuner.oracle.get_space().space if p.name == "prune/rewind_epoch"]) == 1
    assert "units" in space  # the model's own hyperparameters


def test_describe_maps_values_to_schedules():
    hm = lth_tuner.PruningHyperModel(build_model, target_density=0.05)
    base = {"prune/rate": 0.2, "prune/epochs_per_round": 3}
    lth = hm.describe({**base, "prune/method": "lth"})
    assert (lth["rounds"], lth["rewind"], lth["total_epochs"]) == (14, "init", 45)
    assert lth["exact_rate"] == pytest.approx(1 - 0.05 ** (1 / 14))
    late = hm.describe({**base, "prune/method": "lth-late", "prune/rewind_epoch": 1})
    assert (late["rewind"], late["total_epochs"]) == (1, 3 + 14 * 2)
    assert hm.describe({**base, "prune/method": "imp-finetune"})["rewind"] is None
    neuron = hm.describe({**base, "prune/structure": "neuron", "prune/norm": "l2"})
    assert (neuron["structure"], neuron["norm"]) == ("neuron", "l2")
    double = hm.describe(
        {
            **base,
            "prune/method": "double",
            "prune/double_mode": "feedback",
            "prune/when": "round",
            "prune/fraction": 0.3,
            "prune/every": 2,
            "prune/start": 1,
        }
    )
    assert double["reintroduce"] == {
        "mode": "feedback",
        "fraction": 0.3,
        "when": "round",
        "value": "current",
        "every": 2,
        "start": 1,
        "decay": "cosine",
    }
    # the defaults are the library's: feedback mode, re-selection at the pruning step
    assert hm.describe({**base, "prune/method": "double"})["reintroduce"] == {
        "mode": "feedback",
        "fraction": 0.2,
        "when": "prune",
    }
    # re-selection at the pruning step: no events to time, so any start fits
    scored = hm.describe(
        {
            **base,
            "prune/method": "scored",
            "prune/when": "prune",
            "prune/prune_by": "magnitude",
            "prune/fraction": 0.5,
            "prune/start": 3,
            "prune/value": "rewind",
            "prune/score_decay": 0.25,
        }
    )
    assert scored["reintroduce"] == {  # (value: in-round only)
        "fraction": 0.5,
        "when": "prune",
        "prune_by": "magnitude",
        "score_decay": 0.25,
    }
    made = hm.scheduler_from(
        {**base, "prune/method": "scored", "prune/when": "round", "prune/value": "zero"}
    )
    assert (made.reintroduce.value, made.reintroduce.score_decay) == ("zero", 0.0)
    assert double["rewind"] == "init"
    # Hyperband's budget is the round length
    assert hm.describe({**base, "tuner/epochs": 2})["epochs_per_round"] == 2


@pytest.mark.parametrize(
    "values, kwargs, match",
    [
        ({"prune/rate": 0.2}, {"max_rounds": 10}, "within max_rounds=10: prune/rate=0.2 needs 14"),
        ({"prune/rate": 0.5}, {"max_epochs": 10}, "within max_epochs=10: 5 rounds"),
        ({"prune/method": "lth-late", "prune/rewind_epoch": 4}, {}, "rewind_epoch=4 needs more"),
        ({"prune/method": "magnitude"}, {}, "invalid value for `prune/method`"),
        (
            {
                "prune/method": "scored",
                "prune/when": "round",
                "prune/start": 3,
                "prune/epochs_per_round": 3,
            },
            {},
            "prune/start=3 leaves no re-introduction event in rounds of 3 epochs",
        ),
    ],
)
def test_describe_rejects_infeasible_schedules(values, kwargs, match):
    hm = lth_tuner.PruningHyperModel(build_model, target_density=0.05, **kwargs)
    with pytest.raises(ValueError, match=match):
        hm.describe(values)


def test_hypermodel_argument_checks():
    with pytest.raises(ValueError, match="target_density"):
        lth_tuner.PruningHyperModel(build_model, target_density=1.5)
    with pytest.raises(ValueError, match="build_model"):
        lth_tuner.PruningHyperModel("model", target_density=0.5)
    with pytest.raises(ValueError, match="max_rounds"):
        lth_tuner.PruningHyperModel(build_model, target_density=0.5, max_rounds=0)


# ---------------------------------------------------------------------- #
# Searches
# ---------------------------------------------------------------------- #
def _fixed(method="lth", rate=0.5, epochs=2, **more):
    hp = keras_tuner.HyperParameters()
    hp.Fixed("prune/method", method)
    hp.Fixed("prune/rate", rate)
    hp.Fixed("prune/epochs_per_round", epochs)
    hp.Fixed("prune/structure", "weight")
    hp.Fixed("units", 16)
    for name, value in more.items():
        hp.Fixed(name, value)
    return hp


def test_objective_is_the_last_rounds_metric(tmp_path):
    # 3% of the weights cannot sum 8 features: the dense round 0 scores
    # higher than the final round, and the trial must report the final one.
    hm = lth_tuner.PruningHyperModel(build_model, target_density=0.03)
    tuner = _search(
        keras_tuner.RandomSearch,
        hm,
        _fixed(rate=0.5, epochs=3),
        max_trials=1,
        directory=tmp_path,
    )
    (trial,) = _trials(tuner)
    (epochs,) = Recorder.runs
    assert trial.status == "COMPLETED"
    assert len(epochs) == 3 * (1 + 6)  # 6 rounds at rate 0.5 reach 3%
    final = epochs[-1]
    assert final["round"] == 6
    earlier_best = max(e["val_accuracy"] for e in epochs if e["round"] < 6)
    assert earlier_best > final["val_accuracy"]  # the case this test is about
    assert trial.score == pytest.approx(final["val_accuracy"])
    assert trial.metrics.get_last_value("density") == pytest.approx(final["density"])
    assert trial.metrics.get_last_value("rounds") == 6
    # the checkpoint is the pruned network of that last epoch
    (best,) = tuner.get_best_models(1)
    assert keras_lth.density(best) == pytest.approx(final["density"])
    x, y = _data()
    acc = best.evaluate(x, y, verbose=0, return_dict=True)["accuracy"]
    assert acc == pytest.approx(final["val_accuracy"])


def test_trial_over_budget_fails_with_reason(tmp_path):
    hm = lth_tuner.PruningHyperModel(build_model, target_density=0.05, max_rounds=3)
    tuner = _search(
        keras_tuner.RandomSearch, hm, _fixed(rate=0.2), max_trials=1, directory=tmp_path
    )
    (trial,) = _trials(tuner)
    assert trial.status == "FAILED"
    assert "FailedTrialError" in trial.message
    assert "Cannot reach target_density=0.05 within max_rounds=3" in trial.message
    assert Recorder.runs == []  # failed before training


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_trial_stopped_before_last_round_fails(tmp_path):
    hm = lth_tuner.PruningHyperModel(build_model, target_density=0.25)
    tuner = _search(
        keras_tuner.RandomSearch,
        hm,
        _fixed(rate=0.5),
        max_trials=1,
        callbacks=[StopAfterFirstEpoch()],
        directory=tmp_path,
    )
    (trial,) = _trials(tuner)
    assert trial.status == "FAILED"
    assert "Training stopped after round 0" in trial.message
    assert "never reached target_density=0.25" in trial.message


def test_scheduler_from_best_reproduces_the_trial(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Choice("prune/method", ["lth", "lth-late", "imp-finetune"])
    hp.Choice("prune/rate", [0.4, 0.6])
    hp.Choice("prune/epochs_per_round", [2, 3])
    hp.Fixed("prune/structure", "weight")
    hm = lth_tuner.PruningHyperModel(build_model, target_density=0.2)
    tuner = _search(keras_tuner.RandomSearch, hm, hp, max_trials=2, directory=tmp_path)
    trials = _trials(tuner)
    done = [t for t in trials if t.status == "COMPLETED"]
    assert done
    best_trial = tuner.oracle.get_best_trials(1)[0]
    best_hp = tuner.get_best_hyperparameters()[0]
    assert best_hp.values == best_trial.hyperparameters.values
    run = Recorder.runs[trials.index(best_trial)]

    scheduler = hm.scheduler_from(best_hp, verbose=0)
    plan = hm.describe(best_hp)
    assert scheduler.rewind == plan["rewind"]
    assert scheduler.scope == best_hp.values["prune/scope"]
    assert scheduler.schedule.rounds == best_trial.metrics.get_last_value("rounds")
    assert scheduler.schedule.epochs_per_round == best_hp.values["prune/epochs_per_round"]
    model = build_model(best_hp)
    x, y = _data()
    history = model.fit(
        x,
        y,
        validation_data=(x, y),
        batch_size=32,
        verbose=0,
        epochs=scheduler.total_epochs,
        callbacks=[scheduler],
    )
    # same round layout and the same density after every epoch
    assert history.history["round"] == [e["round"] for e in run]
    assert history.history["density"] == pytest.approx([e["density"] for e in run])
    assert scheduler.rounds[-1]["density"] == pytest.approx(
        best_trial.metrics.get_last_value("density")
    )


@pytest.mark.parametrize("method", ["double", "scored"])
def test_reselection_at_the_pruning_step_from_hyperparameters(method):
    hm = lth_tuner.PruningHyperModel(build_model, target_density=0.25)
    hp = _fixed(method=method, rate=0.5, **{"prune/fraction": 0.3, "prune/when": "prune"})
    lth_tuner.declare_search_space(hp)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no unused event arguments passed on
        scheduler = hm.scheduler_from(hp)
    assert scheduler.reintroduce.when == "prune"
    assert scheduler.reintroduce.fraction == 0.3


@pytest.mark.parametrize("method", ["double", "scored"])
def test_reintroduction_methods(method):
    hm = lth_tuner.PruningHyperModel(build_model, target_density=0.25)
    hp = _fixed(
        method=method, rate=0.5, **{"prune/fraction": 0.3, "prune/every": 1, "prune/start": 1}
    )
    lth_tuner.declare_search_space(hp)
    scheduler = hm.scheduler_from(hp)
    expected = {"double": keras_lth.DoublePruning, "scored": keras_lth.ScoredPruning}[method]
    assert isinstance(scheduler.reintroduce, expected)
    assert scheduler.reintroduce.fraction == 0.3
    x, y = _data()
    metrics = hm.fit(
        hp,
        build_model(hp),
        x,
        y,
        validation_data=(x, y),
        batch_size=32,
        verbose=0,
        callbacks=[Recorder()],
    )
    (run,) = Recorder.runs
    assert len(run) == 2 * 3 and run[-1]["round"] == 2
    assert metrics["val_accuracy"] == pytest.approx(run[-1]["val_accuracy"])
    assert metrics["density"] == pytest.approx(0.25, abs=0.02)


def test_own_pruning_scheduler_in_callbacks_is_fatal():
    hm = lth_tuner.PruningHyperModel(build_model, target_density=0.25)
    hp = _fixed()
    lth_tuner.declare_search_space(hp)
    x, y = _data()
    scheduler = hm.scheduler_from(hp)
    with pytest.raises(keras_tuner.errors.FatalValueError, match="remove the `PruningScheduler`"):
        hm.fit(hp, build_model(hp), x, y, callbacks=[scheduler], verbose=0)


def test_bayesian_optimization(tmp_path):
    hp = keras_tuner.HyperParameters()
    hp.Choice("prune/method", ["lth", "imp-finetune"])
    hp.Choice("prune/epochs_per_round", [1, 2])
    hm = lth_tuner.PruningHyperModel(build_model, target_density=0.3, max_rounds=4)
    tuner = _search(
        keras_tuner.BayesianOptimization,
        hm,
        hp,
        max_trials=2,
        num_initial_points=1,
        directory=tmp_path,
    )
    trials = _trials(tuner)
    assert len(trials) == len(Recorder.runs) == 2  # one random, one from the GP
    for trial, run in zip(trials, Recorder.runs):
        assert trial.status == "COMPLETED"
        assert trial.score == pytest.approx(run[-1]["val_accuracy"])
        assert run[-1]["round"] == trial.metrics.get_last_value("rounds")


def test_hyperband_budget_is_epochs_per_round(tmp_path):
    hm = lth_tuner.PruningHyperModel(build_model, target_density=0.25)
    hp = keras_tuner.HyperParameters()
    hp.Fixed("prune/method", "lth")
    hp.Fixed("prune/rate", 0.5)
    hp.Fixed("prune/structure", "weight")
    tuner = _search(
        keras_tuner.Hyperband,
        hm,
        hp,
        max_epochs=2,
        factor=2,
        hyperband_iterations=1,
        directory=tmp_path,
    )
    trials = _trials(tuner)
    assert len(trials) == len(Recorder.runs) >= 3
    promoted = 0
    for trial, run in zip(trials, Recorder.runs):
        budget = trial.hyperparameters.values["tuner/epochs"]
        assert trial.status == "COMPLETED"
        assert len(run) == budget * 3  # rounds 0, 1 and 2, `budget` epochs each
        assert run[0]["density"] == 1.0  # promoted trials restart unpruned
        assert run[-1]["density"] == pytest.approx(0.25, abs=0.02)
        promoted += "tuner/trial_id" in trial.hyperparameters.values
    assert promoted >= 1


# ---------------------------------------------------------------------- #
# Distributed: a chief Oracle and one worker on 127.0.0.1
# ---------------------------------------------------------------------- #
_DISTRIBUTED_SCRIPT = """
import os, sys
import numpy as np, keras, keras_tuner
sys.path.insert(0, {tests!r})
from test_tuner import build_model, _data
import keras_lth

x, y = _data()
hp = keras_tuner.HyperParameters()
hp.Fixed("prune/method", "lth")
hp.Choice("prune/rate", [0.4, 0.6])
hp.Fixed("prune/epochs_per_round", 1)
hm = keras_lth.tuner.PruningHyperModel(build_model, target_density=0.3)
tuner = keras_tuner.RandomSearch(hm, hyperparameters=hp, objective="val_accuracy",
                                 max_trials=2, directory={directory!r}, project_name="p")
tuner.search(x, y, validation_data=(x, y), batch_size=32, verbose=0)
if os.environ["KERASTUNER_TUNER_ID"] == "chief":
    best = tuner.oracle.get_best_trials(1)[0]
    print("CHIEF", len(tuner.oracle.trials), best.score, best.metrics.get_last_value("rounds"))
else:
    print("WORKER done")
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_distributed_chief_and_worker_on_loopback(tmp_path):
    script = tmp_path / "search.py"
    tests_dir = os.path.join(REPO, "tests")
    script.write_text(_DISTRIBUTED_SCRIPT.format(tests=tests_dir, directory=str(tmp_path)))
    base = dict(os.environ)
    base.update(
        KERASTUNER_ORACLE_IP="127.0.0.1",
        KERASTUNER_ORACLE_PORT=str(_free_port()),
        PYTHONPATH=os.pathsep.join([REPO, base.get("PYTHONPATH", "")]),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    procs = {}
    try:
        for tuner_id in ("chief", "tuner0"):
            procs[tuner_id] = subprocess.Popen(
                [sys.executable, str(script)],
                env={**base, "KERASTUNER_TUNER_ID": tuner_id},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        out = {k: p.communicate(timeout=240)[0] for k, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    assert procs["tuner0"].returncode == 0, out["tuner0"][-3000:]
    assert procs["chief"].returncode == 0, out["chief"][-3000:]
    assert "WORKER done" in out["tuner0"]
    chief = [l for l in out["chief"].splitlines() if l.startswith("CHIEF")]
    assert chief, out["chief"][-3000:]
    _, trials, score, rounds = chief[0].split()
    assert int(trials) == 2 and 0 <= float(score) <= 1 and float(rounds) in (2.0, 3.0)
