"""Smoke tests of `benchmarks/overhead.py` and `benchmarks/compact.py` (timings not tested).

The overhead benchmark runs in a subprocess, as users run it, with a handful of steps;
its tfmot reference runs in a grandchild process with `TF_USE_LEGACY_KERAS=1`.
"""

import collections
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
sys.path.insert(0, BENCH)

import _overhead_common as _common
import _tfmot_reference
import overhead
import overhead_runs
import select_cost

HAS_TFMOT = importlib.util.find_spec("tensorflow_model_optimization") is not None


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "overhead.json"
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    # the benchmark imports the keras_lth under test, not an installed one
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, os.path.join(BENCH, "overhead.py")]
    # jit off only: the modes run the same code (a `jit_compile` flag), and
    # jit on would double the smoke run's tracing and compiling
    cmd += ["--steps", "5", "--repeats", "1", "--jit", "off", "--out", str(out)]
    if not HAS_TFMOT:
        cmd.append("--no-tfmot")
    proc = subprocess.run(
        cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        return proc.stdout, json.load(f)


def test_overhead_reports_masked_vs_plain(smoke):
    stdout, result = smoke
    assert set(result["keras3"]) == {"off"}  # the jit_compile mode asked for
    for mode, variants in result["keras3"].items():
        for name in ("masked", "masked_zeroed"):  # pruned values kept, and zeroed
            plain, masked = variants["plain"], variants[name]
            # 1 repeat x 2 epochs x (5 steps - the first of each epoch)
            assert plain["n_steps"] == masked["n_steps"] == 8
            assert plain["step_ms"] > 0 and masked["step_ms"] > 0
            assert masked["density_when_timed"] < 1.0  # timed with pruned masks
            ratio = masked["vs_plain"]["ratio"]
            assert ratio == pytest.approx(masked["step_ms"] / plain["step_ms"])
            line = f"jit={mode}: {name}/plain = {ratio:.3f}"
            assert line in stdout
            assert any(s.startswith(line) and "1.05 budget" in s for s in result["summary"])
            cpu_ratio = masked["vs_plain"]["cpu_ratio"]
            assert plain["cpu_step_ms"] > 0 and masked["cpu_step_ms"] > 0
            assert cpu_ratio == pytest.approx(masked["cpu_step_ms"] / plain["cpu_step_ms"])
            assert f"jit={mode}: {name}/plain CPU time = {cpu_ratio:.3f}" in stdout
        assert f"jit={mode}: masked_zeroed step " in stdout  # its FLOP/s line


@pytest.mark.skipif(not HAS_TFMOT, reason="tensorflow-model-optimization not installed")
def test_overhead_reports_tfmot_from_a_child_process(smoke):
    stdout, result = smoke
    assert result["tfmot_imported_in_main_process"] is False
    child = result["tfmot"]
    assert "error" not in child, child.get("error")
    assert set(child["results"]) == {"off"}  # the main process's modes
    for mode in ("off",):
        tfmot = child["results"][mode]["tfmot"]
        assert tfmot["step_ms"] > 0 and tfmot["n_steps"] == 8
        masked = result["keras3"][mode]["masked"]["step_ms"]
        assert f"jit={mode}: masked/tfmot = {masked / tfmot['step_ms']:.3f}" in stdout
        assert "vs_tf_keras" in tfmot
        assert "cpu_ratio" in tfmot["vs_tf_keras"]
        # gradual pruning against plain Keras 3, in the same child process
        for name in ("masked_gradual_poly", "masked_gradual_poly_zeroed"):
            poly = child["results"][mode][name]
            q = poly["vs_keras3"]["ratio"]
            keras3 = child["results"][mode]["keras3"]
            assert q == pytest.approx(poly["step_ms"] / keras3["step_ms"])
            assert f"jit={mode}: {name}/keras3 = {q:.3f}" in stdout
            m = poly["vs_keras3"]["mean_ratio"]
            assert m == pytest.approx(poly["mean_step_ms"] / keras3["mean_step_ms"])
            assert f"jit={mode}: {name}/keras3 mean step = {m:.3f}" in stdout
        # the child's own A/A control: a second plain Keras 3 model
        aa = child["results"][mode]["keras3_again"]["vs_keras3"]["ratio"]
        assert f"jit={mode}: keras3_again/keras3 = {aa:.3f}" in stdout
        assert f"keras3_again/keras3 = {aa:.3f}" in " ".join(result["summary"])
        assert any(
            s.startswith(f"jit={mode}: keras3_again/keras3") and "A/A control" in s
            for s in result["summary"]
        )


def test_overhead_reports_the_cnn_and_the_flop_rate(smoke):
    stdout, result = smoke
    for mode, variants in result["keras3"].items():
        for name in ("masked_cnn", "masked_cnn_zeroed"):
            cnn = variants[name]
            assert cnn["density_when_timed"] < 1.0
            assert cnn["vs_plain"]["ratio"] == pytest.approx(
                cnn["step_ms"] / variants["plain_cnn"]["step_ms"]
            )
            assert f"jit={mode}: {name}/plain_cnn = {cnn['vs_plain']['ratio']:.3f}" in stdout
        assert f"jit={mode}: plain_again/plain = " in stdout
    assert result["matmul_peak_flops"] > 1e8
    assert result["lenet_step_flops"] == 3 * 2 * 60 * (784 * 300 + 300 * 100 + 100 * 10)
    assert "% of the matmul peak" in stdout


def test_unknown_variant_is_rejected(capsys):
    with pytest.raises(SystemExit) as exc:
        overhead.main(["--variants", "no_such_variant"])
    assert exc.value.code == 2
    assert "no_such_variant" in capsys.readouterr().err


def test_only_selects_variants_with_their_baselines(capsys):
    names = lambda only: [v.name for v in overhead.only_variants(only)]  # noqa: E731
    assert names(["masked_zeroed"]) == ["plain", "masked_zeroed"]
    assert names(["masked_cnn_zeroed"]) == ["plain", "plain_cnn", "masked_cnn_zeroed"]
    assert names(["scored"]) == ["plain", "masked", "scored"]  # its budget is against masked
    for argv, message in (
        (["--only", "nope"], "unknown variants in --only: ['nope']"),
        (["--only", "masked", "--variants", "scored"], "expected --only or --variants"),
    ):
        with pytest.raises(SystemExit) as exc:
            overhead.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_variant_table():
    names = [v.name for v in overhead.VARIANTS]
    assert len(set(names)) == len(names)
    default = {v.name for v in overhead.VARIANTS if v.default}
    budgeted = {"masked", "masked_zeroed", "masked_cnn", "masked_cnn_zeroed"}
    assert default == {"plain", "plain_again", "plain_cnn", "plain_cnn_again"} | budgeted
    assert set(overhead.CONTROLS.values()) <= default  # the A/A controls
    for base, control in overhead.CONTROLS.items():
        by_name = {v.name: v for v in overhead.VARIANTS}
        assert (
            by_name[control].baseline == base and by_name[control].network == by_name[base].network
        )
    for v in overhead.VARIANTS:
        assert v.baseline in names
        assert (v.budget is None) == (v.name not in budgeted)
        assert v.pruned_values == ("zeroed" if v.name.endswith("_zeroed") else "kept")
    assert not set(names) & set(overhead._tfmot_reference.VARIANT_NAMES)


def test_step_clock_skips_the_first_batch_of_each_epoch(monkeypatch):
    times = iter([1.0, 1.5, 2.5, 10.0, 10.25])
    cpu = iter([0.0, 1.0, 3.0, 4.0, 4.5])
    monkeypatch.setattr(_common.time, "perf_counter", lambda: next(times))
    monkeypatch.setattr(_common.time, "process_time", lambda: next(cpu))
    clock = _common.StepClock()
    clock.reset()
    clock.on_epoch_begin(0)
    for b in range(3):
        clock.on_train_batch_end(b)
    clock.on_epoch_begin(1)
    for b in range(2):
        clock.on_train_batch_end(b)
    assert clock.intervals() == [0.5, 1.0, 0.25]
    assert clock.cpu_intervals() == [1.0, 2.0, 0.5]


def test_summarize_and_compare_by_hand():
    a = _common.summarize([[0.001, 0.003], [0.002, 0.002]], walls=[0.010, 0.012])
    b = _common.summarize([[0.001, 0.001], [0.002, 0.002]], walls=[0.005, 0.005])
    assert a["step_ms"] == pytest.approx(2.0)  # median of 1, 3, 2, 2 ms
    assert a["repeat_medians_ms"] == [2.0, 2.0]
    assert a["n_steps"] == 4
    assert a["outside_steps_ms_per_fit"] == pytest.approx(7.0)  # median of 6 and 8 ms
    assert b["step_ms"] == pytest.approx(1.5)
    # the mean keeps a rare slow step the median leaves out
    slow = _common.summarize([[0.001, 0.001, 0.001, 0.009]], walls=[0.02])
    assert slow["step_ms"] == pytest.approx(1.0)
    assert slow["mean_step_ms"] == pytest.approx(3.0)
    c = _common.compare(a, b)
    assert c["ratio"] == pytest.approx(2.0 / 1.5)
    assert c["mean_ratio"] == pytest.approx(2.0 / 1.5)  # means 2 and 1.5 ms
    assert c["paired_range"] == pytest.approx([1.0, 2.0])  # 2/2 and 2/1
    assert c["paired_median"] == pytest.approx(1.5)
    assert "cpu_ratio" not in c  # no CPU times given


def test_summarize_and_compare_cpu_times_by_hand():
    a = _common.summarize([[1.0, 1.0]], walls=[3.0], cpu=[[0.004, 0.002], [0.003]])
    b = _common.summarize([[1.0, 1.0]], walls=[3.0], cpu=[[0.002, 0.002], [0.001]])
    assert a["cpu_step_ms"] == pytest.approx(3.0)  # median of 4, 2, 3 ms
    assert a["cpu_repeat_medians_ms"] == [3.0, 3.0]
    assert b["cpu_step_ms"] == pytest.approx(2.0)
    c = _common.compare(a, b)
    assert c["ratio"] == pytest.approx(1.0)  # the wall-clock steps are equal
    assert c["cpu_ratio"] == pytest.approx(1.5)
    assert c["cpu_paired_median"] == pytest.approx((1.5 + 3.0) / 2)  # 3/2 and 3/1


def test_interleaved_alternates_the_order():
    orders = [order for _, order in _common.interleaved(["a", "b", "c"], 3)]
    assert orders == [["a", "b", "c"], ["c", "b", "a"], ["a", "b", "c"]]


def test_instances_take_turns_in_both_orders():
    picks = [_common.instance_of(r, 3) for r in range(12)]
    assert picks == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1, 2, 2]
    orders = [order for _, order in _common.interleaved(["a", "b"], 12)]
    for i in range(3):  # every instance is timed as often first as last
        firsts = [orders[r][0] for r in range(12) if picks[r] == i]
        assert firsts.count("a") == firsts.count("b") == 2
    _common.check_instances(12, 3)
    _common.check_instances(5, 1)
    with pytest.raises(ValueError, match=r"multiple of 2 x --instances \(6\).*--repeats 8"):
        _common.check_instances(8, 3)
    with pytest.raises(ValueError, match="expected --instances >= 1. Received: 0"):
        _common.check_instances(4, 0)
    with pytest.raises(SystemExit):
        overhead.main(["--instances", "2", "--repeats", "3"])


def test_summarize_reports_each_instance_median():
    steps = [[0.001, 0.001], [0.001, 0.003], [0.002, 0.002], [0.004, 0.004]]
    out = _common.summarize(steps, walls=[0.01] * 4, instances=2)
    assert out["instance_medians_ms"] == [1.0, 3.0]  # repeats 0, 1 and 2, 3
    assert "instance_medians_ms" not in _common.summarize(steps, walls=[0.01] * 4)


def test_measure_spreads_the_repeats_over_the_instances(monkeypatch):
    """Each variant builds and warms up `instances` models and times them in turn."""

    class FakeModel:
        def __init__(self, name):
            self.name, self.fits, self.restored = name, 0, 0

        def get_weights(self):
            return [self.name]

        def set_weights(self, weights):
            assert weights == [self.name]  # its own start, not another instance's
            self.restored += 1

    built = []

    def build(variant, jit):
        built.append(FakeModel(f"{variant.name}{len(built)}"))
        return built[-1]

    def fit(model, x, y, callbacks, clock):
        model.fits += 1
        ms = 1.0 + 0.1 * built.index(model)
        return [ms / 1e3] * 2, [ms / 1e3] * 2, 0.01

    monkeypatch.setattr(overhead, "load_data", lambda steps: (None, None, "none"))
    monkeypatch.setattr(overhead, "build_model", build)
    monkeypatch.setattr(_common, "timed_fit", fit)  # warm_instances, time_interleaved
    monkeypatch.setattr(overhead.lth, "masked_layers", lambda model: [])
    variants = overhead.only_variants(["plain_again"])
    out, _ = overhead.measure(variants, [False], steps=3, repeats=8, instances=2)
    assert len(built) == 4  # plain 0, 1; plain_again 2, 3
    assert [m.fits for m in built] == [5, 5, 5, 5]  # a warm-up and 4 timed fits each
    assert [m.restored for m in built] == [4, 4, 4, 4]
    assert out["off"]["plain"]["instance_medians_ms"] == [1.0, 1.1]
    assert out["off"]["plain_again"]["instance_medians_ms"] == [1.2, 1.3]
    assert out["off"]["plain_again"]["vs_plain"]["ratio"] == pytest.approx(1.25 / 1.05)


def test_steps_protocol_holds_the_layers_as_a_run_and_ends_the_run():
    """`StepRun`: the scheduler's run starts before the first step and ends at `close`."""
    masked = overhead.only_variants(["masked"])[1]
    model = overhead.build_model(masked, jit_compile=False)
    x, y, _ = _common.load_data(3)
    model.fit(x, y, batch_size=60, epochs=2, verbose=0, callbacks=masked.callbacks())
    layers = overhead.lth.masked_layers(model)
    aside = overhead.lth.layers.pruned_values_aside
    assert not any(map(aside, layers))
    before = [w.copy() for w in model.get_weights()]

    dataset = overhead.tf.data.Dataset.from_tensor_slices((x, y)).batch(60).repeat()
    run = overhead.StepRun(model, masked.callbacks(), dataset, steps=4)
    assert all(map(aside, layers))  # computing as during a scheduler run
    elided = overhead.lth.layers.elided_masks
    assert [elided(l) for l in layers] == [{"bias"}] * 3  # pruned kernels, full biases
    start = int(model.optimizer.iterations)
    for _ in range(4):
        run.step()
    assert run.step_count == 4
    assert int(model.optimizer.iterations) == start + 4
    assert set(run.logs) >= {"loss", "accuracy"}
    run.close()
    assert not any(map(aside, layers))  # the pruned values are back
    after = model.get_weights()
    for b, a, w in zip(before, after, model.weights):
        if w.path.endswith("_mask"):
            np.testing.assert_array_equal(a, b)  # round 0 of the run: no pruning
    moved = [not np.allclose(a, b) for a, b, w in zip(before, after, model.weights) if w.trainable]
    assert all(moved)  # the steps trained every layer


def test_masked_selects_diagnostic_traces_every_gradient_select():
    variant = overhead.only_variants(["masked_selects"])[-1]
    model = overhead.build_model(variant, jit_compile=False)
    x, y, _ = _common.load_data(3)
    dataset = overhead.tf.data.Dataset.from_tensor_slices((x, y)).batch(60).repeat()
    run = overhead.StepRun(model, variant.callbacks(), dataset, steps=1)
    layers = overhead.lth.masked_layers(model)
    assert variant.name == "masked_selects" and len(layers) == 3
    assert all(map(overhead.lth.layers.pruned_values_aside, layers))
    assert not any(map(overhead.lth.layers.elided_masks, layers))
    run.step()
    run.close()


@pytest.mark.parametrize("state, kernels_elided", [("dense", True), ("pruned", False)])
def test_select_cost_traces_with_and_without_the_selects(monkeypatch, state, kernels_elided):
    """`select_cost.trace`: the selects traced are the elision's, or every masked variable's."""
    variant = overhead.only_variants(["masked"])[-1]
    model = overhead.build_model(variant, jit_compile=False)
    x, y, _ = _common.load_data(3)
    if state == "pruned":
        model.fit(x, y, batch_size=60, epochs=2, verbose=0, callbacks=variant.callbacks())
    dataset = overhead.tf.data.Dataset.from_tensor_slices((x, y)).batch(60).repeat()
    run = overhead.StepRun(model, variant.callbacks(), dataset, steps=20)
    layers = overhead.lth.masked_layers(model)
    elided = [overhead.lth.layers.elided_masks(l) for l in layers]
    assert elided == [{"kernel", "bias"} if kernels_elided else {"bias"}] * 3
    traced = []
    original = overhead.lth.layers._gradient_masked
    monkeypatch.setattr(
        overhead.lth.layers,
        "_gradient_masked",
        lambda raw, mask: traced.append(tuple(mask.shape)) or original(raw, mask),
    )
    kernels = [(784, 300), (300, 100), (100, 10)]
    select_cost.trace(model, run.iterator, elide=True, warmup_steps=1)
    assert traced == ([] if kernels_elided else kernels)
    traced.clear()
    select_cost.trace(model, run.iterator, elide=False, warmup_steps=1)
    assert sorted(traced) == sorted(kernels + [(300,), (100,), (10,)])
    # The elision is back as it was, and retraces as the scheduler's does.
    assert [overhead.lth.layers.elided_masks(l) for l in layers] == elided
    before = model.train_function
    bias_mask = np.ones(layers[0].bias.shape, bool)
    bias_mask[0] = False
    layers[0].set_masks(bias_mask=bias_mask)
    assert overhead.lth.layers.elided_masks(layers[0]) == elided[0] - {"bias"}
    assert model.train_function is not before  # traced again, the bias with its select
    run.step()
    run.close()


def test_select_cost_main_writes_both_states(tmp_path, capsys):
    out = tmp_path / "select_cost.json"
    result = select_cost.main(["--steps", "2", "--repeats", "2", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert set(result["states"]) == {"dense", "pruned"}
    assert result["states"]["dense"]["density"] == [1.0, 1.0, 1.0]
    assert result["states"]["pruned"]["elided"] == {
        name: ["bias"] for name in ("hidden_1", "hidden_2", "output")
    }
    for entry in result["states"].values():
        functions = entry["functions"]
        assert list(functions) == list(select_cost.FUNCTIONS)
        assert all(f["n_steps"] == 4 for f in functions.values())
        assert all("vs_elided" in functions[n] for n in select_cost.FUNCTIONS[1:])
    printed = capsys.readouterr().out
    assert "pruned: densities [0.8, 0.8, 0.9]" in printed
    with pytest.raises(SystemExit) as exc:
        select_cost.main(["--repeats", "0"])
    assert exc.value.code == 2
    assert "Received: --steps 200, --repeats 0" in capsys.readouterr().err


def _fake_step_runs(monkeypatch):
    """`measure_steps` with fake models: returns the names stepped and the names closed."""
    calls, closed = [], []

    class FakeModel:
        pass

    class FakeRun:
        def __init__(self, model, callbacks, dataset, steps):
            self.model, self.name, self.steps = model, model.name, steps

        def step(self):
            calls.append(self.name)

        def masks_when_timed(self):
            return {}  # plain models

        def close(self):
            closed.append(self.name)

    def warm(make, callbacks, clock, x, y, instances):
        model = FakeModel()
        model.name = make()
        return [(model, None)]

    monkeypatch.setattr(overhead, "build_model", lambda v, jit: f"{v.name}{int(jit)}")
    monkeypatch.setattr(overhead, "warm_instances", warm)
    monkeypatch.setattr(overhead, "StepRun", FakeRun)
    return calls, closed


def test_steps_protocol_gives_every_model_one_step_a_cycle_in_alternating_order(monkeypatch):
    calls, closed = _fake_step_runs(monkeypatch)
    variants = overhead.only_variants(["plain_again"])
    out, _ = overhead.measure_steps(
        variants, [False, True], steps=3, repeats=2, warmup_steps=1, order="alternating"
    )
    names = ["plain0", "plain_again0", "plain1", "plain_again1"]
    assert calls[:4] == names  # one untimed warm-up step each
    cycles = [calls[4 + 4 * c : 8 + 4 * c] for c in range(6)]
    assert cycles == [names, names[::-1]] * 3
    assert sorted(closed) == sorted(names)
    for mode in ("off", "on"):
        for e in out[mode].values():
            assert e["n_steps"] == 6 and len(e["repeat_medians_ms"]) == 2  # 2 blocks of 3
        assert "vs_plain" in out[mode]["plain_again"]
    # the first and the last model took a step right after their own at each turn
    after = {m: n for m in ("off", "on") for n, e in out[m].items() if "after_itself" in e}
    assert after == {"off": "plain", "on": "plain_again"}
    assert out["off"]["plain"]["after_itself"]["steps"] == 2  # at cycles 2 and 4
    assert out["on"]["plain_again"]["after_itself"]["steps"] == 3  # at cycles 1, 3 and 5


def test_steps_protocol_shuffles_each_cycle_by_default(monkeypatch):
    calls, _ = _fake_step_runs(monkeypatch)
    variants = overhead.only_variants(["plain_again"])
    out, _ = overhead.measure_steps(variants, [False, True], steps=25, repeats=4, warmup_steps=1)
    names = ["plain0", "plain_again0", "plain1", "plain_again1"]
    timed = calls[4:]
    cycles = [timed[4 * c : 4 * c + 4] for c in range(100)]
    assert all(sorted(c) == sorted(names) for c in cycles)
    assert all(a != b for a, b in zip(timed, timed[1:]))  # never two steps in a row
    assert len({tuple(c) for c in cycles}) > 10
    for mode in ("off", "on"):
        assert not any("after_itself" in e for e in out[mode].values())
    # the same shuffles in every run (seeded)
    calls[:] = []
    overhead.measure_steps(variants, [False, True], steps=25, repeats=4, warmup_steps=1)
    assert calls[4:] == timed


def test_step_cycles_shuffle_evenly_and_never_repeat_a_model():
    names = list("abcde")
    cycles = list(_common.step_cycles(names, 2000))
    assert [c for c, _ in cycles] == list(range(2000))
    flat = [n for _, order in cycles for n in order]
    assert all(sorted(order) == names for _, order in cycles)
    assert all(a != b for a, b in zip(flat, flat[1:]))
    # every name at every position about 1/5 of the cycles (400 of 2000)
    for position in range(5):
        counts = [sum(order[position] == n for _, order in cycles) for n in names]
        assert min(counts) > 320 and max(counts) < 480, (position, counts)
    # and after every other name about equally often
    follows = collections.Counter(zip(flat, flat[1:]))
    assert min(follows.values()) > 0.7 * max(follows.values())
    alternating = [order for _, order in _common.step_cycles(names, 3, "alternating")]
    assert alternating == [order for _, order in _common.interleaved(names, 3)]
    assert [o for _, o in _common.step_cycles(["a"], 3)] == [["a"]] * 3
    with pytest.raises(ValueError, match=r"expected order in .*Received: 'random'"):
        list(_common.step_cycles(names, 1, "random"))


def test_after_itself_entry_splits_the_steps_after_the_model_itself():
    wall = [[0.001, 0.002, 0.003], [0.004, 0.005]]
    flags = [[False, True, False], [True, False]]
    entry = _common.after_itself_entry(wall, flags)["after_itself"]
    assert entry == {"steps": 2, "median_ms": 3.0, "others_median_ms": 3.0}
    assert _common.after_itself_entry(wall, [[False] * 3, [False] * 2]) == {}


def test_steps_protocol_run(tmp_path, capsys):
    out = tmp_path / "steps.json"
    argv = ["--protocol", "steps", "--only", "masked", "--jit", "off", "--no-tfmot"]
    assert overhead.main([*argv, "--steps", "3", "--repeats", "2", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    with open(out) as f:
        result = json.load(f)
    assert result["config"]["protocol"] == "steps"
    assert result["config"]["step_order"] == "shuffled"
    assert "tfmot" not in result  # --no-tfmot: no child process
    assert "2 blocks of 3 cycles, one training step per variant and cycle in shuffled" in stdout
    variants = result["keras3"]["off"]
    assert set(variants) == {"plain", "masked"}
    for e in variants.values():
        assert e["n_steps"] == 6 and len(e["repeat_medians_ms"]) == 2
        assert "outside_steps_ms_per_fit" not in e  # no fit calls to time around
    masked = variants["masked"]
    assert masked["density_when_timed"] < 1.0
    assert masked["layers_aside_when_timed"] == 3
    ratio = masked["vs_plain"]["ratio"]
    assert ratio == pytest.approx(masked["step_ms"] / variants["plain"]["step_ms"])
    assert f"jit=off: masked/plain = {ratio:.3f}" in stdout
    assert overhead_runs.protocol_of(result) == "steps, shuffled order"


@pytest.mark.skipif(not HAS_TFMOT, reason="tensorflow-model-optimization not installed")
def test_steps_protocol_steps_gradual_pruning_in_the_child_process(tmp_path, capsys, monkeypatch):
    """`--protocol steps` runs the child's Keras 3 variants step by step:
    gradual pruning against plain Keras 3 and the child's A/A control, no
    tf_keras or tfmot model; the gradual model prunes during the timed steps."""
    calls = []
    script = f"""
import sys
sys.path.insert(0, {BENCH!r})
import _tfmot_reference
_tfmot_reference.FREQUENCY = 4  # gradual pruning prunes within a smoke run
sys.exit(_tfmot_reference.main(sys.argv[1:]))
"""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", PYTHONPATH=ROOT)

    def child_process(
        steps, repeats, jit_modes, variants, instances=1, protocol="fits", step_order="shuffled"
    ):
        calls.append((list(variants), protocol, step_order))
        out = tmp_path / "child.json"
        cmd = [sys.executable, "-c", script, "--steps", str(steps), "--repeats", str(repeats)]
        cmd += ["--jit", "off", "--variants", ",".join(variants), "--protocol", protocol]
        cmd += ["--step-order", step_order]
        cmd += ["--out", str(out)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(out) as f:
            return json.load(f)

    monkeypatch.setattr(overhead, "run_tfmot_child", child_process)
    # the child's defaults, fewer (each model is warmed up by a fit of its own)
    default = ("tf_keras", "tfmot", "keras3", "keras3_again", "masked_gradual_poly")
    monkeypatch.setattr(_tfmot_reference, "DEFAULT_VARIANTS", default)
    out = tmp_path / "steps.json"
    argv = ["--protocol", "steps", "--only", "plain_again", "--jit", "off"]
    argv += ["--step-order", "alternating"]
    assert overhead.main([*argv, "--steps", "6", "--repeats", "2", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    [(variants, protocol, step_order)] = calls
    assert protocol == "steps" and step_order == "alternating"
    assert not set(variants) & set(_tfmot_reference.TF_KERAS_VARIANTS)
    assert "masked_gradual_poly" in variants and "keras3_again" in variants
    with open(out) as f:
        child = json.load(f)["tfmot"]
    assert child["protocol"] == "steps" and child["step_order"] == "alternating"
    results = child["results"]["off"]
    # alternating: the first model (keras3) stepped twice in a row at each turn
    assert results["keras3"]["after_itself"]["steps"] == 5  # cycles 2, 4, ..., 10 of 12
    assert set(results) == {"keras3", *variants}
    for name, e in results.items():
        assert e["n_steps"] == 12 and len(e["repeat_medians_ms"]) == 2, name  # 2 blocks of 6
        assert len(e["repeat_means_ms"]) == 2 and "outside_steps_ms_per_fit" not in e
    poly = results["masked_gradual_poly"]
    # the warm-up fit (12 steps) and the timed steps pruned every 4th step
    assert poly["density_when_timed"] < 1.0
    assert poly["layers_aside_when_timed"] == 3  # held as in a run
    assert "density_when_timed" not in results["keras3"]
    q = poly["vs_keras3"]["ratio"]
    assert q == pytest.approx(poly["step_ms"] / results["keras3"]["step_ms"])
    lo, hi = poly["vs_keras3"]["mean_paired_range"]
    assert lo <= hi
    assert f"jit=off: masked_gradual_poly/keras3 = {q:.3f}" in stdout
    assert "--protocol steps" in stdout


def test_the_child_refuses_tf_keras_variants_in_the_steps_protocol(capsys):
    for argv, message in (
        (["--protocol", "steps", "--variants", "keras3_again,tfmot"], "Received: tfmot"),
        (["--variants", "keras4"], "Received: ['keras4']"),
    ):
        with pytest.raises(SystemExit) as exc:
            _tfmot_reference.main([*argv, "--out", "unused.json"])
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_steps_protocol_argument_errors(capsys):
    for argv, message in (
        (["--protocol", "steps", "--instances", "2", "--repeats", "4"], "--instances 1 with"),
        (["--protocol", "fit"], "invalid choice: 'fit'"),
        (["--protocol", "steps", "--step-order", "random"], "invalid choice: 'random'"),
    ):
        with pytest.raises(SystemExit) as exc:
            overhead.main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def _ratio(r, mean=None):
    return {"ratio": r, "mean_ratio": r if mean is None else mean}


def _main_run(aa, masked, zeroed=None):
    off = {
        "plain": {},
        "plain_again": {"vs_plain": _ratio(aa)},
        "masked": {"vs_plain": _ratio(masked)},
    }
    if zeroed is not None:
        off["masked_zeroed"] = {"vs_plain": _ratio(zeroed)}
    return {"keras3": {"off": off}}


def _child_run(aa, gradual, mean):
    return {
        "results": {
            "off": {
                "keras3": {},
                "keras3_again": {"vs_keras3": _ratio(aa)},
                "masked_gradual_poly": {"vs_keras3": _ratio(gradual, mean)},
                "masked_gradual_idle": {"vs_keras3": _ratio(1.5)},  # a diagnostic
            }
        }
    }


def test_pooled_runs_count_only_valid_controls(tmp_path):
    runs = [
        _main_run(1.00, 1.04, 1.02),
        _main_run(0.94, 1.30),  # control not valid: left out of the pool
        _main_run(1.03, 1.06, 1.01),
        _child_run(0.99, 1.08, 1.2),
        _child_run(1.01, 1.12, 1.3),
    ]
    paths = []
    for i, run in enumerate(runs):
        paths.append(str(tmp_path / f"{i}.json"))
        with open(paths[-1], "w") as f:
            json.dump(run, f)
    out = tmp_path / "pooled.json"
    assert overhead_runs.main([*paths, "--out", str(out)]) == 0
    with open(out) as f:
        pooled = json.load(f)["pooled"]
    assert set(pooled) == {
        "masked, jit off",
        "masked_zeroed, jit off",
        "masked_gradual_poly, jit off",
    }  # the controls and diagnostics are not budgeted rows
    masked = pooled["masked, jit off"]
    assert [r["valid"] for r in masked["runs"]] == [True, False, True]
    assert masked["valid_runs"] == 2 and masked["within_budget"] == 1
    assert masked["mean"] == pytest.approx(1.05)
    assert masked["std"] == pytest.approx(np.std([1.04, 1.06], ddof=1))
    assert masked["verdict"] == "within on average, within noise of it"
    assert pooled["masked_zeroed, jit off"]["verdict"] == "within"
    gradual = pooled["masked_gradual_poly, jit off"]
    assert gradual["budget"] == overhead.GRADUAL_BUDGET
    assert gradual["mean"] == pytest.approx(1.10)
    assert gradual["mean_step_ratio"] == pytest.approx(1.25)
    table = overhead_runs.markdown(pooled)
    assert table[2] == (
        "| `masked` / `plain` | 1.05 | off | 1.040 (1.000), 1.300 (0.940, not valid), "
        "1.060 (1.030) | 1.050 ± 0.014 (2) | 1/2 | within on average, within noise of it |"
    )
    assert table[3].startswith("| `masked_gradual_poly` / `keras3` | 1.10 | off |")


def test_cnn_rows_are_judged_by_the_cnn_control_where_the_run_has_it(tmp_path):
    old, new = _main_run(1.00, 1.04), _main_run(1.00, 1.04)
    for run, cnn_aa in ((old, None), (new, 1.08)):
        off = run["keras3"]["off"]
        off["plain_cnn"], off["masked_cnn"] = {}, {"vs_plain": _ratio(1.02)}
        if cnn_aa is not None:
            off["plain_cnn_again"] = {"vs_plain": _ratio(cnn_aa)}
    paths = [str(tmp_path / "old.json"), str(tmp_path / "new.json")]
    for path, run in zip(paths, (old, new)):
        with open(path, "w") as f:
            json.dump(run, f)
    cnn = overhead_runs.pooled(paths)["masked_cnn, jit off"]
    assert [(r["control"], r["valid"]) for r in cnn["runs"]] == [(1.00, True), (1.08, False)]
    assert "control_variant" not in cnn["runs"][0]
    assert cnn["runs"][1]["control_variant"] == "plain_cnn_again"
    row = overhead_runs.markdown({"masked_cnn, jit off": cnn})[2]
    assert "| 1.020 (1.000), 1.020 (plain_cnn_again 1.080, not valid) |" in row
    masked = overhead_runs.pooled(paths)["masked, jit off"]  # LeNet rows: plain_again
    assert [r["valid"] for r in masked["runs"]] == [True, True]


def test_runs_of_different_protocols_are_not_pooled(tmp_path):
    one, four = _main_run(1.00, 1.04), _main_run(1.01, 1.03)
    four["config"] = {"instances": 4}
    child = _child_run(1.0, 1.05, 1.1)
    child["instances"] = 4
    paths = []
    for i, run in enumerate([one, four, child]):
        paths.append(str(tmp_path / f"{i}.json"))
        with open(paths[-1], "w") as f:
            json.dump(run, f)
    with pytest.raises(ValueError, match=r"same protocol .* instances .* masked, jit off"):
        overhead_runs.pooled(paths[:2])
    pooled = overhead_runs.pooled(paths[1:])
    assert pooled["masked, jit off"]["runs"][0]["instances"] == 4
    assert pooled["masked_gradual_poly, jit off"]["runs"][0]["instances"] == 4
    steps = _main_run(1.00, 1.02)
    steps["config"] = {"protocol": "steps", "instances": 1}
    with open(tmp_path / "steps.json", "w") as f:
        json.dump(steps, f)
    assert overhead_runs.protocol_of(steps) == "steps, alternating order"  # before --step-order
    assert overhead_runs.protocol_of(one) == "fits, 1 instance(s)"
    assert overhead_runs.protocol_of(child) == "fits, 4 instance(s)"
    with pytest.raises(ValueError, match=r"same protocol .*'steps, alternating order'"):
        overhead_runs.pooled([paths[0], str(tmp_path / "steps.json")])
    shuffled = _main_run(1.00, 1.01)
    shuffled["config"] = {"protocol": "steps", "step_order": "shuffled", "instances": 1}
    with open(tmp_path / "shuffled.json", "w") as f:
        json.dump(shuffled, f)
    assert overhead_runs.protocol_of(shuffled) == "steps, shuffled order"
    with pytest.raises(ValueError, match=r"same protocol .*'steps, shuffled order'"):
        overhead_runs.pooled([str(tmp_path / "steps.json"), str(tmp_path / "shuffled.json")])
    assert overhead_runs.pooled([str(tmp_path / "steps.json")])["masked, jit off"]["mean"] == 1.02
    # a child run of the steps protocol, alone or embedded in its overhead.py run
    child_steps = _child_run(1.0, 1.04, 1.08)
    child_steps["protocol"] = "steps"
    assert overhead_runs.protocol_of(child_steps) == "steps, alternating order"
    steps["tfmot"] = child_steps
    with open(tmp_path / "steps.json", "w") as f:
        json.dump(steps, f)
    with open(tmp_path / "child_steps.json", "w") as f:
        json.dump(child_steps, f)
    both = overhead_runs.pooled([str(tmp_path / "steps.json"), str(tmp_path / "child_steps.json")])
    assert both["masked_gradual_poly, jit off"]["mean"] == 1.04
    with pytest.raises(ValueError, match=r"same protocol .* masked_gradual_poly, jit off"):
        overhead_runs.pooled([paths[2], str(tmp_path / "child_steps.json")])


def test_instance_effect_by_hand(tmp_path):
    # repeats 0, 1, 4, 5 timed instance 0; repeats 2, 3, 6, 7 instance 1
    apart = overhead_runs.instance_effect([1.0, 1.2, 2.0, 2.2, 1.1, 1.3, 2.1, 2.3], 2)
    # F = 4 x var(1.15, 2.15) / var(1.0, 1.2, 1.1, 1.3) = 4 x 0.5 / (0.05 / 3)
    assert apart["F"] == pytest.approx(120.0) and apart["p"] < 1e-4
    assert apart["df"] == [1, 6]
    alike = overhead_runs.instance_effect([1.0, 2.0, 1.0, 2.0, 2.0, 1.0, 2.0, 1.0], 2)
    assert alike["F"] == pytest.approx(0.0) and alike["p"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2 instances with 2 repeats each"):
        overhead_runs.instance_effect([1.0, 2.0], 1)
    run = _main_run(1.0, 1.04)
    run["config"] = {"instances": 2}
    for e in run["keras3"]["off"].values():
        e["repeat_medians_ms"] = [1.0, 1.2, 2.0, 2.2, 1.1, 1.3, 2.1, 2.3]
        e["instance_medians_ms"] = [1.15, 2.15]
    path = tmp_path / "docs" / "results" / "x" / "run.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(run))
    rows = overhead_runs.instance_effects([str(path)])
    assert rows[2] == "| `x/run.json` | off | `plain` | 1.15, 2.15 | 120.00 | 0.000 |"
    assert rows[-1] == "\n3 of 3 variants differ between instances at p < 0.05."
    one = tmp_path / "one.json"  # a run of one instance per variant
    one.write_text(json.dumps(_main_run(1.0, 1.04)))
    with pytest.raises(ValueError, match="expected runs timed with --instances 2 or more"):
        overhead_runs.instance_effects([str(one)])


def test_pooled_verdicts_and_bad_files(tmp_path):
    assert overhead_runs.verdict(1.00, 0.02, 1.05) == "within"
    assert overhead_runs.verdict(1.05, 0.02, 1.05) == "within on average, within noise of it"
    assert overhead_runs.verdict(1.06, 0.02, 1.05) == "above on average, within noise of it"
    assert overhead_runs.verdict(1.10, 0.02, 1.05) == "ABOVE"
    none = overhead_runs.pool([{"ratio": 1.0, "mean_ratio": 1.0, "valid": False}], 1.05)
    assert none["verdict"] == "no valid run" and none["valid_runs"] == 0
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"rounds": []}))
    with pytest.raises(ValueError, match=r"other.json: expected .*Received keys: \['rounds'\]"):
        overhead_runs.main([str(bad)])


def test_documented_overhead_figures_come_from_the_recorded_run():
    """Every ratio in the docs' overhead table is the recorded run's, to 3 places."""
    with open(os.path.join(ROOT, "docs", "results", "overhead.json")) as f:
        result = json.load(f)
    with open(os.path.join(ROOT, "docs", "results", "overhead.md")) as f:
        page = f.read()
    section = page.split("## Masked layers", 1)[1].split("\n## ", 1)[0]
    assert "python benchmarks/overhead.py --variants plain_again" in section
    assert set(result["keras3"]["off"]) == {"plain", "masked", "plain_again"}
    load = result["config"]["loadavg"].split()
    assert f"load average {load[0]} before, {load[2]} after" in section

    def cell(wall, cpu):
        return f"{wall:.3f} ({cpu:.3f})"

    k3, child = result["keras3"], result["tfmot"]["results"]
    rows = {
        "| masked / plain": lambda m: k3[m]["masked"]["vs_plain"],
        "| plain_again / plain": lambda m: k3[m]["plain_again"]["vs_plain"],
        "| tfmot / plain tf_keras": lambda m: child[m]["tfmot"]["vs_tf_keras"],
        "| keras-lth gradual": lambda m: child[m]["masked_gradual"]["vs_tf_keras"],
    }
    lines = section.splitlines()
    for start, get in rows.items():
        (line,) = [l for l in lines if l.startswith(start)]
        cells = [cell(get(m)["ratio"], get(m)["cpu_ratio"]) for m in ("off", "on")]
        assert line.rstrip(" |").split(" | ")[-2:] == cells, line
    (line,) = [l for l in lines if l.startswith("| masked / tfmot")]
    cells = [
        cell(
            k3[m]["masked"]["step_ms"] / child[m]["tfmot"]["step_ms"],
            k3[m]["masked"]["cpu_step_ms"] / child[m]["tfmot"]["cpu_step_ms"],
        )
        for m in ("off", "on")
    ]
    assert line.rstrip(" |").split(" | ")[-2:] == cells, line


def _overhead_rows(result):
    k3, child = result["keras3"], result["tfmot"]["results"]
    return {
        "| `masked` (iterative": lambda m: k3[m]["masked"]["vs_plain"],
        "| `plain_again`": lambda m: k3[m]["plain_again"]["vs_plain"],
        "| `masked_cnn`": lambda m: k3[m]["masked_cnn"]["vs_plain"],
        "| `masked_gradual_poly`": lambda m: child[m]["masked_gradual_poly"]["vs_keras3"],
        "| `masked_gradual` (": lambda m: child[m]["masked_gradual"]["vs_keras3"],
        "| `tfmot`": lambda m: child[m]["tfmot"]["vs_tf_keras"],
        "| `scored`": lambda m: k3[m]["scored"]["vs_masked"],
        "| `double_feedback`": lambda m: k3[m]["double_feedback"]["vs_masked"],
        "| `double_complement`": lambda m: k3[m]["double_complement"]["vs_masked"],
    }


def _assert_ratio_table(section, result):
    lines = section.splitlines()
    for start, get in _overhead_rows(result).items():
        (line,) = [l for l in lines if l.startswith(start)]
        cells = [f"{get(m)['ratio']:.3f} ({get(m)['cpu_ratio']:.3f})" for m in ("off", "on")]
        assert line.rstrip(" |").split(" | ")[-2:] == cells, line


def _load(*parts):
    with open(os.path.join(ROOT, "docs", "results", *parts)) as f:
        return json.load(f) if parts[-1].endswith(".json") else f.read()


QUIET = "## A second run on the quiet machine"
LONG = "## A longer run, on another machine"


def test_later_overhead_figures_come_from_the_recorded_run():
    """The later overhead page's ratios and FLOP/s are its recorded run's, to 3 places."""
    result = _load("overhead_issue11", "overhead.json")
    page = _load("overhead-issue11.md").split(QUIET)[0]
    load = result["config"]["loadavg"].split()
    assert f"load average {load[0]} before, {load[2]} after" in page
    _assert_ratio_table(page, result)
    k3 = result["keras3"]
    peak, flops = result["matmul_peak_flops"], result["lenet_step_flops"]
    assert f"{peak / 1e9:.1f} GFLOP/s" in page
    lines = page.splitlines()
    for name in ("plain", "masked"):
        (line,) = [l for l in lines if l.startswith(f"| `{name}` |")]
        for m in ("off", "on"):
            ms = k3[m][name]["step_ms"]
            rate = flops / (ms / 1e3)
            assert f"{ms:.2f} ms, {rate / 1e9:.2f} GFLOP/s ({100 * rate / peak:.1f}%)" in line


def test_quiet_overhead_figures_come_from_the_quiet_run():
    """The quiet run's section is its JSON's, to 3 places (the README's figures
    are the boolean masks' runs now: `test_docs.py`)."""
    result = _load("overhead_quiet", "overhead.json")
    section = _load("overhead-issue11.md").split(QUIET)[1].split(LONG)[0]
    load = result["config"]["loadavg"].split()
    assert f"recorded {load[0]} before and {load[2]} after" in section
    _assert_ratio_table(section, result)
    k3, child = result["keras3"], result["tfmot"]["results"]
    peak, flops = result["matmul_peak_flops"], result["lenet_step_flops"]
    assert f"{peak / 1e9:.1f} GFLOP/s" in section
    for m in ("off", "on"):
        for name in ("plain", "masked"):
            rate = flops / (k3[m][name]["step_ms"] / 1e3)
            assert f"{rate / 1e9:.2f} GFLOP/s" in section
    gradual = [
        f"{child[m]['masked_gradual_poly']['vs_keras3']['ratio']:.3f}" for m in ("off", "on")
    ]
    assert f"| {gradual[0]} (" in section and f"| {gradual[1]} (" in section


def test_long_overhead_run_section_comes_from_its_json():
    """The longer run's section is its JSON's, to 3 places (the README's cost
    table, now the boolean masks' runs: `test_docs.py`)."""
    result = _load("overhead_long", "overhead.json")
    section = _load("overhead-issue11.md").split(LONG)[1].split("\n## ")[0]
    assert result["config"]["steps"] == 300 and result["config"]["repeats"] == 8
    load = result["config"]["loadavg"].split()
    assert f"load average of {load[0]} before\nand {load[2]} after" in section
    k3 = result["keras3"]

    def cells(name, key="vs_plain"):
        return [
            f"{k3[m][name][key]['ratio']:.3f} ({k3[m][name][key]['cpu_ratio']:.3f})"
            for m in ("off", "on")
        ]

    rows = {
        "| `plain_again`": cells("plain_again"),
        "| `masked` (iterative": cells("masked"),
        "| `masked_cnn`": cells("masked_cnn"),
        "| `scored`": cells("scored", "vs_masked"),
        "| `masked_010`": cells("masked_010"),
        "| `masked_layer`": cells("masked_layer"),
    }
    lines = section.splitlines()
    for start, want in rows.items():
        (line,) = [l for l in lines if l.startswith(start)]
        assert line.rstrip(" |").split(" | ")[-2:] == want, line
    peak, flops = result["matmul_peak_flops"], result["lenet_step_flops"]
    assert f"{peak / 1e9:.1f} GFLOP/s" in section
    for m in ("off", "on"):
        for name in ("plain", "masked"):
            rate = flops / (k3[m][name]["step_ms"] / 1e3)
            assert f"{rate / 1e9:.2f}" in section
    assert "masked_010" in result["config"]["variants"]


def test_convergence_describe_and_table_by_hand():
    import convergence

    curve = {"val_accuracy": [0.90, 0.93, 0.949, 0.95], "val_loss": [0.5, 0.3, 0.35, 0.4]}
    assert convergence.describe(curve, tolerance=0.002) == {
        "early_stop_pass": 2,
        "best_val_accuracy": 0.95,
        "pass_within_tolerance": 3,
    }
    runs = [
        {"network": n, "density": d, "val_accuracy": acc, **convergence.describe(curve, 0.002)}
        for n, d, acc in (("dense", 1.0, [0.9, 0.94]), ("dense", 1.0, [0.9, 0.96]))
    ]
    runs.append({**runs[0], "network": "lth", "density": 0.036})
    text = convergence.table(runs, [2])
    assert "| dense (100.0%) | 95.00 ± 1.41 | 2.0 ± 0.0 | 3.0 ± 0.0 |" in text
    assert "| lth (3.6%) | 94.00 ± 0.00 |" in text


def _train_step_graph(layer_class):
    """The traced graph of one LeNet-300-100 training step with `layer_class`.

    The step is `keras_lth.bench.timing.bare_train_step`, the one that
    `bare_step_ms` times.
    """
    import keras
    import tensorflow as tf

    from keras_lth.bench import timing

    model = keras.Sequential(
        [keras.Input((784,))]
        + [
            layer_class(units, activation=None if name == "output" else "relu", name=name)
            for units, name in zip(_common.UNITS, _common.LAYER_NAMES)
        ]
    )
    step = timing.bare_train_step(model, _common.LEARNING_RATE)
    return step.get_concrete_function(
        tf.TensorSpec((_common.BATCH_SIZE, 784), "float32"),
        tf.TensorSpec((_common.BATCH_SIZE,), "int32"),
    ).graph


def _live_op_counts(graph):
    """Op types of what the step runs: every op that a variable update or an
    output of the step depends on (what is left once the dead code is pruned)."""
    outputs = {t.op for t in graph.outputs}
    stack = [
        op
        for op in graph.get_operations()
        if op in outputs or op.type.startswith("Assign") or not op.outputs
    ]
    live = set()
    while stack:
        op = stack.pop()
        if op not in live:
            live.add(op)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    return collections.Counter(op.type for op in live)


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow", reason="a TF graph"
)
def test_masked_dense_step_runs_the_products_of_0_1_0_on_boolean_masks():
    # The cost of the masks, as a structure that cannot drift: the traced
    # training step of today's MaskedDense runs the ops of 0.1.0's layer
    # (benchmarks/_masked_dense_010.py): per mask (kernel and bias of each
    # layer) its read and two products, `value * mask` forward and
    # `g * mask` backward, and one cast more, as the mask is boolean (a byte
    # per weight; 0.1.0's were float32) and cast where it is used. Under XLA
    # the cast fuses into both products. Keras's `Dense.call` reads
    # `self.bias` twice (`if self.bias is not None:` and the add); the
    # masked layer computes the masked bias once per call, so no product is
    # left that feeds nothing.
    import keras
    from _masked_dense_010 import MaskedDense010

    import keras_lth as lth

    graphs = {
        c: _train_step_graph(c) for c in (lth.MaskedDense, MaskedDense010, keras.layers.Dense)
    }
    today, old, plain = (_live_op_counts(graphs[c]) for c in graphs)
    masks = 2 * len(_common.UNITS)
    assert not plain - today and not plain - old
    assert old - plain == collections.Counter(
        {"Mul": 2 * masks, "ReadVariableOp": masks, "Placeholder": masks}
    )
    assert today - old == collections.Counter({"Cast": masks})
    casts = [op for op in graphs[lth.MaskedDense].get_operations() if op.type == "Cast"]
    assert sum(op.inputs[0].dtype == "bool" for op in casts) == masks
    dead = [
        op
        for op in graphs[lth.MaskedDense].get_operations()
        if op.type == "Mul"
        and not op.outputs[0].consumers()
        and not op.name.startswith("gradient_tape/")
    ]
    assert not dead


def test_prune_step_times_changing_masks(capsys):
    import prune_step

    assert prune_step.main(["--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 pruning steps of LeNet-300-100 (sparsity 0.0124 to 0.0148")
    # tfmot's kept count at sparsity 0.0148 of each kernel, over all weights
    kept = sum(max(1, round(n * (1 - 0.0148))) for n in (784 * 300, 300 * 100, 100 * 10))
    assert f"final density {kept / (784 * 300 + 300 * 100 + 100 * 10):.4f}" in out
    with pytest.raises(SystemExit) as exc:
        prune_step.main(["--steps", "0"])
    assert exc.value.code == 2
    assert "--steps must be at least 1, received 0" in capsys.readouterr().err


@pytest.mark.skipif(not HAS_TFMOT, reason="tensorflow-model-optimization not installed")
def test_prune_step_in_a_run_prunes_at_the_schedules_steps():
    """`--in-run` (in a process of its own: it imports tfmot): each timed
    hook call is one of `PolynomialDecay`'s pruning steps, so 2 timed steps
    after the untimed first end at step 300's sparsity, tfmot's kept count."""
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, os.path.join(BENCH, "prune_step.py"), "--in-run", "--steps", "2"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("2 pruning steps inside a PruningScheduler run")
    # PolynomialDecay(0, 0.8, end_step=100000, power=3) at step 300, in float32
    sparsity = float(np.float32(0.8) * (1 - (1 - np.float32(300) / np.float32(1e5)) ** 3))
    sizes = (784 * 300, 300 * 100, 100 * 10)
    kept = sum(max(1, round(n * (1 - sparsity))) for n in sizes)
    assert f"final density {kept / sum(sizes):.4f})" in proc.stdout
    assert re.search(r"median [0-9.]+ ms, mean [0-9.]+ ms per step", proc.stdout)


# --------------------------------------------------------------------------- #
# benchmarks/compact.py (smoke run: its timings are not tested). TensorFlow
# backend only, as the other benchmark scripts: `lth.compact` itself is
# tested under both backends in test_compact.py.
# --------------------------------------------------------------------------- #
def test_compact_benchmark_smoke():
    spec = importlib.util.spec_from_file_location(
        "compact_benchmark", os.path.join(BENCH, "compact.py")
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.run([0.75], repeats=1)
    entry = report["results"]["rate_0.75"]
    assert entry["pruned_filters"] == {"conv00": 24, "conv01": 24, "conv10": 48, "conv11": 48}
    p = entry["params"]
    assert p["compacted"]["total"] < p["stripped"]["total"] < p["masked"]["total"]
    assert max(entry["max_abs_diff_vs_masked"].values()) < 1e-4
    assert set(entry["latency"]) == {"batch_1", "batch_128"}
    assert len(report["config"]["loadavg_before"]) == 3
