"""Tests of `keras-lth bench` on tiny settings (4 steps per epoch, 1 seed)."""

import json
import os
import shutil
import sys

import pytest

from keras_lth.bench import (
    METHODS,
    cli,
    make_plan,
    report,
    results,
    run_benchmark,
    runner,
    settings,
    timing,
)
from keras_lth.bench.report import agreement, epochs_to_target, summarize

# Every metric a record carries, and those of the neuron methods on top.
METRICS = {
    "round",
    "level",
    "density",
    "layer_density",
    "epochs",
    "test_accuracy",
    "test_loss",
    "early_stop_epoch",
    "test_accuracy_early_stop",
    "val_accuracy",
    "val_loss",
    "epoch_density",
    "steps_per_epoch",
    "budget_steps",
    "budget_epochs",
    "wall_s",
}
NEURON_METRICS = {
    "compact_params",
    "dense_params",
    "compact_units",
    "latency_ms",
    "dense_latency_ms",
    "latency_ratio",
    "latency_batch",
}
MAIN_METHODS = [m.name for m in METHODS.values() if m.process == "main" and not m.reintroduce]
REINTRODUCE = [m.name for m in METHODS.values() if m.reintroduce]


def tiny(**overrides):
    values = {
        "seeds": 1,
        "densities": (0.8,),
        "epochs_per_round": 2,
        "steps_per_epoch": 4,
        "steps_per_execution": 2,
        "gradual_frequency": 1,
    }
    values.update(overrides)
    return settings("mnist", "quick", **values)


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def without_timing(line):
    """A results line without the fields that measure time."""
    return runner.without_timing(line)


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    """Every main-process method once, uninterrupted (the reference run)."""
    out = str(tmp_path_factory.mktemp("bench_all"))
    methods = MAIN_METHODS + REINTRODUCE
    plan = make_plan(tiny(), methods)
    lines = run_benchmark(plan, out, verbose=0)
    return plan, lines, out


# ---------------------------------------------------------------------- #
# Methods, settings and the command line
# ---------------------------------------------------------------------- #
def test_every_named_method_is_listed(capsys):
    assert cli.main(["bench", "--list"]) == 0
    text = capsys.readouterr().out
    expected = [
        "dense",
        "oneshot",
        "oneshot-matched",
        "imp-finetune",
        "lth",
        "lth-late",
        "lth-reinit",
        "random-mask",
        "neuron-l1",
        "neuron-l2",
        "gradual",
        "gradual-matched",
        "tfmot",
        "double-complement",
        "double-feedback",
        "scored",
        "double-prune",
        "scored-prune",
    ]
    assert list(METHODS) == expected
    for name in expected:
        assert name in text


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"dataset": "cifar"}, ["`dataset`", "cifar", "mnist"]),
        ({"preset": "huge"}, ["`preset`", "huge", "quick"]),
        ({"densities": (0.5, 1.0)}, ["`densities`", "(0, 1)", "1.0"]),
        ({"densities": (0.0,)}, ["`densities`", "(0, 1)", "0.0"]),
        ({"source": "/no/such/dir"}, ["`source`", "/no/such/dir", "directory"]),
        ({"dataset": "speech_commands"}, ["`source`", "None"]),
        ({"dataset": "speech_commands", "source": "/no/such"}, ["`source`", "/no/such"]),
        ({"seeds": 0}, ["`seeds`", "positive integer", "seeds=0"]),
        ({"late_rewind": 12}, ["`late_rewind`", "late_rewind=12"]),
        ({"model": "rnn"}, ["`model`", "rnn", "cnn"]),
    ],
)
def test_bad_settings_name_argument_expected_and_received(kwargs, words):
    with pytest.raises(ValueError) as info:
        settings(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_unknown_method_is_a_value_error():
    with pytest.raises(ValueError, match=r"`methods`.*'lth'.*Received: methods=\['nope'\]"):
        make_plan(tiny(), ["nope"])


@pytest.mark.parametrize(
    "argv",
    [
        ["--methods", "nope"],
        ["--dataset", "cifar"],
        ["--densities", "0.5,1.5"],
        ["--densities", "half"],
        ["--preset", "huge"],
    ],
)
def test_cli_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", *argv])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_missing_data_directory(capsys):
    assert cli.main(["bench", "--source", "/no/such/mnist", "--out", "/tmp/unused"]) == 2
    err = capsys.readouterr().err
    assert "`source`" in err and "/no/such/mnist" in err


def test_cli_target_outside_zero_one(capsys, tmp_path):
    assert cli.main(["bench", "--target", "1.5", "--methods", "dense", "--out", str(tmp_path)]) == 2
    assert "`--target`" in capsys.readouterr().err


def test_plan_rounds_reach_the_densities():
    plan = make_plan(settings("mnist", "quick"))
    assert plan.rounds == 15
    assert [round(100 * d, 1) for d in plan.densities] == [51.3, 26.3, 10.8, 3.6]
    hit = [round(100 * d, 1) for d in plan.round_densities()]
    assert hit[3] == 51.3 and hit[6] == 26.3 and hit[10] == 10.8 and hit[15] == 3.6
    assert [plan.matched_rounds(d) for d in plan.densities] == [3, 6, 10, 15]


def test_matched_runs_get_the_iterative_budget_and_gradual_prunes_at_epoch_starts():
    plan = make_plan(settings("mnist", "quick"), ["lth", "oneshot", "oneshot-matched", "gradual"])
    e = plan.settings.epochs_per_round
    epochs = {(r.method.name, r.density): plan.epochs(r) for r in plan.runs() if r.seed == 0}
    assert epochs["lth", None] == 16 * e
    assert [epochs["oneshot-matched", d] for d in plan.densities] == [4 * e, 7 * e, 11 * e, 16 * e]
    assert {epochs["oneshot", d] for d in plan.densities} == {2 * e}
    spe = plan.steps_per_epoch
    for run in plan.runs():
        if run.method.name == "gradual":
            g = runner.gradual_steps(plan, run)
            assert g["frequency"] == spe == plan.steps_per_execution(run)
            assert g["begin_step"] % spe == 1 and g["end_step"] % spe == 1
            assert (g["end_step"] - g["begin_step"]) % spe == 0


def test_preset_methods():
    from keras_lth.bench.presets import default_methods

    quick = default_methods("quick")
    assert {"dense", "lth", "double-complement", "double-feedback", "scored"} <= set(quick)
    assert "oneshot-matched" in quick and "gradual-matched" not in quick  # in standard
    assert default_methods("standard") == "all"
    assert [m.name for m in make_plan(tiny(), quick).methods] == list(quick)


def test_target_layer_rates_match_the_iterative_split():
    sizes = {"hidden_1": 235200, "hidden_2": 30000, "output": 1000}
    rates = {"hidden_1": 0.2, "hidden_2": 0.2, "output": 0.1}
    d = runner.nominal_density(sizes, rates, 4)
    got = runner.target_layer_rates(sizes, rates, d)
    assert got["hidden_1"] == pytest.approx(1 - 0.8**4)
    assert got["output"] == pytest.approx(1 - 0.9**4)


# ---------------------------------------------------------------------- #
# Runs
# ---------------------------------------------------------------------- #
def test_each_method_runs_and_records_every_metric(main_run):
    plan, lines, _ = main_run
    by_method = {line["key"]["method"]: line for line in lines}
    assert set(by_method) == {m.name for m in plan.methods}
    for name, line in by_method.items():
        method = METHODS[name]
        assert line["versions"]["tensorflow"] and line["config"]["method"]["name"] == name
        assert line["records"], name
        for rec in line["records"]:
            assert METRICS <= set(rec), (name, METRICS - set(rec))
            if method.structure == "neuron":
                assert NEURON_METRICS <= set(rec), name
                assert rec["compact_params"] <= rec["dense_params"]
            if method.reintroduce in ("complement", "feedback", "scored"):  # in-round
                assert rec["swaps"] is not None, name
            elif method.reintroduce:  # re-selection at the pruning steps
                assert rec["swaps"] is None and (rec["round"] == 0 or "reselected" in rec), name
            assert 0 < rec["test_accuracy"] <= 1
            assert 1 <= rec["early_stop_epoch"] <= rec["epochs"]
            best = rec["early_stop_epoch"] - 1
            final = [i for i, d in enumerate(rec["epoch_density"]) if d == rec["epoch_density"][-1]]
            assert rec["val_loss"][best] == min(rec["val_loss"][i] for i in final)
            if best == rec["epochs"] - 1:  # the early-stop network is the final one
                assert rec["test_accuracy_early_stop"] == rec["test_accuracy"]
        levels = [rec["level"] for rec in line["records"]]
        assert (1.0 if name == "dense" else 0.8) in levels, name
    # iterative methods: one record per round, paying for every round before
    lth_records = by_method["lth"]["records"]
    assert [r["round"] for r in lth_records] == [0, 1]
    assert [r["budget_steps"] for r in lth_records] == [8, 16]
    late = by_method["lth-late"]["records"]
    assert [r["budget_steps"] for r in late] == [8, 12]  # rewound to epoch 1
    assert by_method["oneshot"]["records"][0]["budget_steps"] == 16
    # the budget-matched one-shot run: the iterative methods' passes at 0.8
    assert (
        by_method["oneshot-matched"]["records"][0]["budget_steps"] == lth_records[1]["budget_steps"]
    )
    for name, line in by_method.items():
        assert line["train_steps"] == line["records"][-1]["budget_steps"], name
        assert line["traces"]["train"] >= 1, name
    assert by_method["random-mask"]["records"][0]["budget_steps"] == 8
    for name in ("oneshot", "random-mask", "lth"):
        assert by_method[name]["records"][-1]["density"] == pytest.approx(0.8, abs=0.002)


def test_summary_and_plots_are_written(main_run):
    plan, lines, out = main_run
    text = read(os.path.join(out, "summary.md"))
    for heading in ("Test accuracy (%) at the end", "early-stop", "Budget", "Verdict", "Passes"):
        assert heading in text
    for name in ("accuracy_vs_density.png", "epochs_to_target.png", "accuracy_vs_budget.png"):
        assert os.path.getsize(os.path.join(out, name)) > 1000
    summary = summarize(plan, lines)
    assert summary["target"] == pytest.approx(lines[0]["records"][0]["val_accuracy"][-1] - 0.005)


def test_epochs_to_target_counts_only_the_final_density():
    row = {
        "val_accuracy": [0.95, 0.5, 0.92, 0.97],
        "epoch_density": [1.0, 0.5, 0.5, 0.5],
        "steps_per_epoch": 10,
    }
    assert epochs_to_target(row, 0.9, steps_per_pass=20) == (1.5, 30)
    assert epochs_to_target(row, 0.99, steps_per_pass=20) is None


def test_resume_skips_finished_runs_and_ends_identical(main_run, tmp_path, monkeypatch):
    _, reference, _ = main_run
    methods = ["dense", "lth", "random-mask"]
    plan = make_plan(tiny(), methods)
    out = str(tmp_path)
    real = runner.run_one
    calls = []

    def killed_after_two(plan_, run, verbose=1):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the kill
        calls.append(run.key)
        return real(plan_, run, verbose)

    monkeypatch.setattr(runner, "run_one", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(plan, out, verbose=0)
    path = os.path.join(out, results.RESULTS_FILE)
    before = read(path).splitlines()
    assert len(before) == 2

    calls.clear()
    monkeypatch.setattr(runner, "run_one", lambda p, r, v=1: calls.append(r.key) or real(p, r, v))
    run_benchmark(plan, out, verbose=0)
    assert calls == [{"method": "random-mask", "seed": 0, "density": 0.8}]
    after = read(path).splitlines()
    assert after[:2] == before  # finished lines untouched
    with open(os.path.join(out, report.TIMING_FILE)) as f:
        got = json.load(f)  # the killed call's two runs, then the resumed call's one
    assert [p["runs"] for p in got["pieces"]] == [2, 1] and got["runs"] == 3
    assert [p["complete"] for p in got["pieces"]] == [False, True]
    expected = [without_timing(line) for line in reference if line["key"]["method"] in methods]
    assert [without_timing(json.loads(line)) for line in after] == expected

    # a rerun of a finished benchmark trains nothing and changes no file
    files = {n: read(os.path.join(out, n), "rb") for n in sorted(os.listdir(out))}
    calls.clear()
    run_benchmark(plan, out, verbose=0)
    assert calls == []
    assert {n: read(os.path.join(out, n), "rb") for n in sorted(os.listdir(out))} == files


def test_another_configuration_in_the_same_directory_is_an_error(main_run):
    _, _, out = main_run
    plan = make_plan(tiny(epochs_per_round=3), ["dense"])
    with pytest.raises(ValueError, match="another configuration"):
        run_benchmark(plan, out, verbose=0)


def test_tfmot_methods_run_in_a_child_and_leave_this_process_alone(tmp_path):
    had_tfmot = "tensorflow_model_optimization" in sys.modules
    env_before = os.environ.get("TF_USE_LEGACY_KERAS")
    plan = make_plan(tiny(), ["gradual", "tfmot"])
    lines = run_benchmark(plan, str(tmp_path), verbose=0)
    assert os.environ.get("TF_USE_LEGACY_KERAS") == env_before
    if not had_tfmot:
        assert "tensorflow_model_optimization" not in sys.modules
    by_method = {line["key"]["method"]: line for line in lines}
    assert set(by_method) == {"gradual", "tfmot"}
    assert by_method["tfmot"]["versions"]["tfmot"]
    for line in lines:
        (rec,) = line["records"]
        assert METRICS <= set(rec)
        assert rec["density"] == pytest.approx(0.8, abs=0.002)
    (row,) = agreement(summarize(plan, lines))
    assert abs(row[3]) < 0.02  # same init, data order and schedule


def test_gradual_refuses_to_run_in_this_process():
    plan = make_plan(tiny(), ["gradual"])
    (run,) = plan.runs()
    with pytest.raises(RuntimeError, match="child process"):
        runner.run_one(plan, run, verbose=0)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_speech_commands_runs_on_a_synthetic_tree(tmp_path, model):
    sys.path.insert(0, os.path.dirname(__file__))
    import speech_tree

    if not speech_tree.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path / "speech_commands"
    speech_tree.make_speech_tree(str(root))
    s = settings(
        "speech_commands",
        source=str(root),
        model=model,
        cnn_filters=4,
        seeds=1,
        levels=(1,),  # round 1's density (the CNN's convolutions lose 10% only)
        epochs_per_round=1,
        steps_per_epoch=2,
        batch_size=16,
    )
    plan = make_plan(s, ["lth"])
    if model == "mlp":
        assert plan.sizes == {"hidden_1": 1960 * 256, "hidden_2": 256 * 256, "output": 256 * 12}
    else:
        assert set(plan.sizes) == {"conv_1", "conv_2", "linear", "hidden_1", "output"}
    (line,) = run_benchmark(plan, str(tmp_path / "out"), verbose=0)
    assert [r["level"] for r in line["records"]] == [None, plan.densities[0]]
    assert METRICS <= set(line["records"][-1])
    summary = read(str(tmp_path / "out" / "summary.md"))
    assert f"model `{model}`" in summary
    assert "**synthetic speech**" in summary  # the tree's marker labels the results
    out = str(tmp_path / "out")
    config_path = os.path.join(out, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    assert plan.synthetic and config["plan"]["synthetic"] is True
    shutil.rmtree(root)  # reported where the tree is not: the record says synthetic
    report.report_directory(out)
    assert "**synthetic speech**" in read(os.path.join(out, "summary.md"))
    del config["plan"]["synthetic"]  # a config.json without the record, no tree there
    with open(config_path, "w") as f:
        json.dump(config, f)
    report.report_directory(out)
    assert "synthetic" not in read(os.path.join(out, "summary.md"))


def test_densities_off_the_iterative_rounds_warn():
    with pytest.warns(UserWarning, match="No iterative round reaches the densities"):
        plan = make_plan(tiny(densities=(0.5,)), ["lth"])
    assert plan.rounds == 4  # 0.8 ** 4 < 0.5 * 1.01


# ---------------------------------------------------------------------- #
# The verdict (pure functions on hand-made statistics)
# ---------------------------------------------------------------------- #
def test_outcome_wins_ties_and_loses_by_the_noise_bound():
    a, b = (0.90, 0.01, 3), (0.88, 0.01, 3)
    bound = 2 * (2 * 0.01**2 / 3) ** 0.5  # 0.01633
    word, diff, got = report.outcome(a, b)
    assert (word, got) == ("wins", pytest.approx(bound)) and diff == pytest.approx(0.02)
    assert report.outcome(b, a)[0] == "loses"
    assert report.outcome((0.89, 0.01, 3), b)[0] == "ties"  # 0.01 < 0.0163
    assert report.outcome((0.88, 0.0, 1), (0.88, 0.0, 1))[0] == "ties"


def _entry(acc, budget):
    return {"acc": acc, "budget": (budget, 0.0, 3)}


def test_same_budget_and_seed_verdict_on_a_hand_made_table():
    table = {
        ("dense", 1.0): _entry((0.94, 0.002, 3), 12.0),
        ("lth", 0.1): _entry((0.93, 0.002, 3), 48.0),
        ("oneshot", 0.1): _entry((0.90, 0.002, 3), 24.0),
        ("oneshot-matched", 0.1): _entry((0.935, 0.004, 3), 48.2),
        ("scored", 0.1): _entry((0.933, 0.003, 3), 48.0),
    }
    methods = ["dense", "oneshot", "oneshot-matched", "lth", "scored"]
    assert report.same_budget(table, 0.1, "scored", methods) == ["oneshot-matched", "lth"]
    summary = {"columns": (1.0, 0.1), "methods": methods, "table": table}
    (line,) = report.seed_verdict(summary)
    assert "**10.0%**, `scored`" in line
    density, budget = line.split("At equal budget (48.0 passes)")
    # equal density: below the dense net, above oneshot, within noise of lth
    assert "loses to `dense` (-0.70" in density
    assert "wins over `oneshot` (+3.30" in density
    assert "ties with `oneshot-matched` (-0.20" in density and "`lth` (+0.30" in density
    assert "oneshot`" not in budget.replace("oneshot-matched`", "")
    assert "ties with `oneshot-matched`" in budget and "`lth`" in budget


def test_passes_to_target_total_adds_the_rounds_before():
    row = {
        "val_accuracy": [0.5, 0.91, 0.95],
        "epoch_density": [0.5, 0.5, 0.5],
        "steps_per_epoch": 10,
        "epochs": 3,
        "budget_epochs": 4.5,  # 1.5 passes of earlier rounds + this round's 3 epochs
    }
    assert report.passes_to_target_total(row, 0.9, steps_per_pass=10) == pytest.approx(3.5)
    assert report.passes_to_target_total(row, 0.99, steps_per_pass=10) is None


# ---------------------------------------------------------------------- #
# The benchmark's own speed
# ---------------------------------------------------------------------- #
def test_trace_counts_sees_the_train_function_and_no_retrace():
    import keras
    import numpy as np

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile("sgd", "mse")
    x, y = np.ones((8, 3), "float32"), np.ones((8, 2), "float32")
    assert timing.trace_counts(model) == {}
    model.fit(x, y, batch_size=4, epochs=3, verbose=0)
    traced = timing.trace_counts(model)["train"]
    assert traced >= 1  # 0 or a KeyError: the look into Keras's closures broke
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)  # the same function again
    assert timing.trace_counts(model)["train"] == traced
    model.fit(x[:6], y[:6], batch_size=3, epochs=1, verbose=0)  # another batch shape
    assert timing.trace_counts(model)["train"] > traced


def test_the_recorder_counts_the_traces_of_every_function_of_the_run():
    """A pruning run replaces its training function at the first pruning
    (the masks' elision ends): the recorder counts the traces of the
    function it replaced too, so the pruned run has the dense run's traces
    and more, not only those of its last function."""
    import keras
    import numpy as np

    import keras_lth as lth
    from keras_lth.bench.recorder import Recorder

    x = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")
    y = np.arange(10) % 2  # batches of 4: a full and a partial batch

    def traces(pruned):
        model = lth.prunable(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
        model.compile(
            "sgd",
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        callbacks, round_of = [], None
        if pruned:
            scheduler = lth.PruningScheduler(lth.IterativeSchedule(1, 2), verbose=0)
            callbacks, round_of = [scheduler], scheduler.round_of
        chunks = [(x, y)]
        recorder = Recorder(
            chunks,
            chunks,
            3,
            3,
            round_of=round_of,
            density_fn=lambda m: lth.density(m, per_layer=True),
        )
        epochs = 4 if pruned else 2  # the dense run: the pruned run's round 0
        model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, callbacks=[recorder, *callbacks])
        return recorder.traces

    dense, pruned = traces(False), traces(True)
    assert dense["train"] >= 2 and dense["test"] == pruned["test"] == 1
    assert pruned["train"] > dense["train"]  # the last function alone traced fewer


def test_bare_step_ms_is_positive():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    assert timing.bare_step_ms(model, batch_size=4, learning_rate=1e-3, steps=3, repeats=1) > 0


def test_the_bare_step_is_timed_in_proportion_to_the_plan():
    quick = make_plan(settings("mnist", "quick"))  # the main job: 100 steps a repeat
    assert runner.bare_repeat_steps(quick) == 100
    assert runner.bare_repeat_steps(make_plan(tiny(), ["lth"])) == 5  # a few steps to train
    middle = make_plan(tiny(steps_per_epoch=1000), ["lth", "dense"])
    # 2 runs x (rounds + 1) x 2 epochs x 1000 steps, over 500
    expected = 2 * (middle.rounds + 1) * 2 * 1000 // 500
    assert 5 < expected < 100 and runner.bare_repeat_steps(middle) == expected


def test_the_benchmark_records_its_speed(main_run):
    _, lines, out = main_run
    with open(os.path.join(out, report.TIMING_FILE)) as f:
        got = json.load(f)
    (piece,) = got["pieces"]
    assert piece["complete"] and len(piece["bare_step_ms"]) == 2
    assert got["train_steps"] == sum(line["train_steps"] for line in lines) > 0
    assert got["runs"] == len(lines) and got["ratio"] > 0
    assert "The benchmark's own speed" in read(os.path.join(out, "summary.md"))


def test_cnn_model_trains_lenet5_with_the_conv_rate(tmp_path):
    s = tiny(model="cnn", steps_per_epoch=2, epochs_per_round=1)
    plan = make_plan(s, ["lth"])
    assert set(plan.sizes) == {"conv_1", "conv_2", "hidden_1", "hidden_2", "output"}
    (line,) = run_benchmark(plan, str(tmp_path), verbose=0)
    (rec,) = [r for r in line["records"] if r["round"] == 1]
    assert rec["layer_density"]["conv_1"] == pytest.approx(0.9, abs=0.01)  # conv_rate 0.1
    assert rec["layer_density"]["hidden_1"] == pytest.approx(0.8, abs=0.01)
    with pytest.raises(ValueError, match="`methods`.*tfmot.*cnn"):
        make_plan(s, ["tfmot"])
