"""`keras-lth bench --jobs N`, `--shard K/N` and `keras-lth bench report DIR`.

Tiny settings (4 steps per epoch, 1 seed, one density) as in test_bench.py.
The tests that start worker processes pay a TensorFlow import per worker.
"""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from test_bench import read, tiny

from keras_lth.bench import Plan, cli, make_plan, results, run_benchmark, runner, workers
from keras_lth.bench.report import TIMING_BEGIN, TIMING_END, comparable
from keras_lth.bench.results import DirectoryError, Shard, shard_runs

# Both kinds of worker; with 2 workers, no worker has to change kind.
METHODS = ["dense", "lth", "gradual", "tfmot"]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """The reference: every run of the plan in one process (`--jobs 1`)."""
    out = str(tmp_path_factory.mktemp("single"))
    plan = make_plan(tiny(), METHODS)
    lines = run_benchmark(plan, out, verbose=0)
    return plan, lines, out


def outcomes(lines):
    return [runner.without_timing(line) for line in lines]


# ---------------------------------------------------------------------- #
# Arguments
# ---------------------------------------------------------------------- #
@pytest.mark.parametrize("text", ["0/1", "3/4", " 1 / 2 "])
def test_shard_parses_k_of_n(text):
    shard = Shard.parse(text)
    assert 0 <= shard.index < shard.count
    assert shard.file == f"results-{shard.index}-of-{shard.count}.jsonl"


@pytest.mark.parametrize("text", ["2/2", "0/0", "-1/2", "a/b", "1", "1/2/3", ""])
def test_bad_shard_names_argument_expected_and_received(text):
    with pytest.raises(ValueError) as info:
        Shard.parse(text)
    message = str(info.value)
    assert "`--shard`" in message and "0 <= K < N" in message
    assert f"Received: --shard={text!r}" in message


def test_shard_checks_its_values():
    with pytest.raises(ValueError, match=r"`shard`.*Received: shard=1/1"):
        Shard(1, 1)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--jobs", "0"], ["`--jobs`", "positive integer", "Received: --jobs=0"]),
        (["--jobs", "-2"], ["`--jobs`", "positive integer", "Received: --jobs=-2"]),
        (["--jobs", "two"], ["`--jobs`", "positive integer", "'auto'", "Received: --jobs='two'"]),
        (["--shard", "2/2"], ["`--shard`", "0 <= K < N", "Received: --shard='2/2'"]),
        (["--shard", "1"], ["`--shard`", "0 <= K < N", "Received: --shard='1'"]),
    ],
)
def test_cli_rejects_bad_jobs_and_shards(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["bench", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err


def test_run_benchmark_rejects_zero_jobs(tmp_path):
    plan = Plan.from_config(_plan_config())
    with pytest.raises(ValueError, match=r"`--jobs`.*Received: --jobs=0"):
        run_benchmark(plan, str(tmp_path), verbose=0, jobs=0)


def test_report_of_a_directory_without_config_is_an_error(tmp_path, capsys):
    assert cli.main(["bench", "report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "`DIR`" in err and "config.json" in err and "nowhere" in err


# ---------------------------------------------------------------------- #
# Pure parts: the plan as JSON, the partition, the workers' resources
# ---------------------------------------------------------------------- #
_PLANS = {}


def _plan_config(**settings):
    """A plan's config for tiny settings (built once), with `settings` changed."""
    if "base" not in _PLANS:
        _PLANS["base"] = make_plan(tiny(seeds=3, densities=(0.8, 0.64)), "all").config()
    config = json.loads(json.dumps(_PLANS["base"]))
    config["settings"].update(settings)
    return config


def test_plan_round_trips_through_its_config():
    plan = make_plan(tiny(), METHODS)
    assert Plan.from_config(json.loads(json.dumps(plan.config()))) == plan


@pytest.mark.parametrize("count", [1, 2, 3, 7, 200])
def test_shards_partition_the_runs(count):
    plan = Plan.from_config(_plan_config())
    runs = plan.runs()
    parts = [shard_runs(plan, Shard(k, count)) for k in range(count)]
    assert sorted(map(results.line_key, sum(parts, []))) == sorted(map(results.line_key, runs))
    assert [shard_runs(plan, Shard(k, count)) for k in range(count)] == parts  # deterministic
    for part in parts:  # each in plan order
        assert part == [r for r in runs if r in part]
    loads = [sum(plan.epochs(r) for r in part) for part in parts]
    if count <= len(runs):  # balanced within one run
        assert max(loads) - min(loads) <= max(plan.epochs(r) for r in runs)


def test_auto_jobs_one_per_gpu_else_one_per_core_that_memory_holds():
    gib = 1024**3
    assert workers.auto_jobs(16, 2, 64 * gib) == 2  # a worker per GPU
    assert workers.auto_jobs(2, 0, 24 * gib) == 2  # this project's CI machine
    assert workers.auto_jobs(64, 0, 32 * gib) == 16  # 2 GiB per worker
    assert workers.auto_jobs(8, 0, 3 * gib) == 1
    assert workers.auto_jobs(1, 0, 64 * gib) == 1  # the runs in the main process
    assert workers.auto_jobs(4, 0, None) == 4  # memory unknown
    assert workers.check_jobs("auto") == "auto"
    jobs = workers.resolve_jobs("auto")
    assert 1 <= jobs <= workers.cores()
    assert workers.resolve_jobs(3) == 3


def test_cli_jobs_default_is_auto():
    args = cli.parser().parse_args(["bench"])
    assert args.jobs == "auto"
    assert cli.parser().parse_args(["bench", "--jobs", "AUTO"]).jobs == "auto"


def test_worker_env_splits_threads_and_gpus():
    env = workers.worker_env(0, 4, 8, [], {})
    assert env == {name: "2" for name in workers.THREAD_VARIABLES}
    assert workers.worker_env(3, 16, 8, [], {})["TF_NUM_INTRAOP_THREADS"] == "1"
    mine = workers.worker_env(0, 2, 8, [], {"TF_NUM_INTRAOP_THREADS": "3"})
    assert "TF_NUM_INTRAOP_THREADS" not in mine  # the user's own setting stays
    one_each = [workers.worker_env(i, 2, 8, ["0", "1"], {}) for i in range(2)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in one_each] == ["0", "1"]
    assert all("TF_FORCE_GPU_ALLOW_GROWTH" not in e for e in one_each)
    shared = [workers.worker_env(i, 3, 8, ["0", "1"], {}) for i in range(3)]
    assert [e["CUDA_VISIBLE_DEVICES"] for e in shared] == ["0", "1", "0"]
    assert all(e["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for e in shared)
    assert workers.visible_gpu_ids(2, "2, 3") == ["2", "3"]
    assert workers.visible_gpu_ids(2, None) == ["0", "1"]
    assert workers.visible_gpu_ids(0, "") == []


@pytest.mark.parametrize(
    "text, expected",
    [("max 100000", None), ("-1 100000", None), ("200000 100000", 2), ("150000 100000", 2)],
)
def test_cgroup_quota_caps_the_cores(text, expected):
    assert workers.quota_cores(text) == expected
    assert 1 <= workers.cores() <= (os.cpu_count() or 1)


# ---------------------------------------------------------------------- #
# The directory: config.json, locks, merging
# ---------------------------------------------------------------------- #
def test_shards_with_other_settings_are_refused(tmp_path):
    out = str(tmp_path)
    plan = Plan.from_config(_plan_config())
    results.check_config(out, plan, Shard(0, 2))
    results.check_config(out, plan, Shard(1, 2))  # the same settings: fine
    other = Plan.from_config(_plan_config(epochs_per_round=3))
    with pytest.raises(DirectoryError, match=r"epochs_per_round: recorded 2, received 3"):
        results.check_config(out, other, Shard(1, 2))
    with pytest.raises(DirectoryError, match=r"`--shard`, expected K/2.*Received: --shard=0/3"):
        results.check_config(out, plan, Shard(0, 3))
    fewer = Plan.from_config({**_plan_config(seeds=2)})
    with pytest.raises(
        DirectoryError, match=r"seeds: recorded 3, received 2.*same methods, seeds and densities"
    ):
        results.check_config(out, fewer, Shard(1, 2))
    with pytest.raises(DirectoryError, match=r"seeds: recorded 3, received 2"):
        results.check_config(out, fewer)  # unsharded, in a sharded directory
    results.check_config(out, plan)  # unsharded, the same plan: finishing leftovers


def test_an_unsharded_directory_may_grow(tmp_path):
    out = str(tmp_path)
    results.check_config(out, Plan.from_config(_plan_config(seeds=1)))
    results.check_config(out, Plan.from_config(_plan_config(seeds=3)))
    assert results.read_config(out)["plan"]["settings"]["seeds"] == 3
    with pytest.raises(DirectoryError, match="another configuration"):
        results.check_config(out, Plan.from_config(_plan_config(learning_rate=0.1)))


def test_one_writer_per_results_file(tmp_path):
    path = str(tmp_path / "results-0-of-2.jsonl")
    with results.WriterLock(path):
        with pytest.raises(DirectoryError, match="Another process is writing"):
            with results.WriterLock(path):
                pass
        with results.WriterLock(str(tmp_path / "results-1-of-2.jsonl")):
            pass  # another shard's file
    assert not os.path.exists(path + ".lock")  # its holder removed it
    with results.WriterLock(path):
        pass  # released with its holder
    open(path + ".lock", "w").close()  # left by a killed holder: not locked
    with results.WriterLock(path):
        pass
    assert os.listdir(tmp_path) == []


def test_merged_lines_take_every_file_and_each_run_once(tmp_path):
    out = str(tmp_path)

    def line(method, config=1):
        return {"key": {"method": method, "seed": 0, "density": None}, "config": config}

    results.write_results(os.path.join(out, "results-1-of-2.jsonl"), [line("b"), line("a")])
    results.write_results(os.path.join(out, "results.jsonl"), [line("a")])
    results.write_results(os.path.join(out, "results-0-of-2.jsonl"), [line("c")])
    names = [os.path.basename(p) for p in results.results_files(out)]
    assert names == ["results.jsonl", "results-0-of-2.jsonl", "results-1-of-2.jsonl"]
    assert [x["key"]["method"] for x in results.merged_lines(out)] == ["a", "c", "b"]
    results.write_results(os.path.join(out, "results-0-of-2.jsonl"), [line("a", config=2)])
    with pytest.raises(DirectoryError, match="different configurations"):
        results.merged_lines(out)


def test_comparable_drops_the_command_and_the_timing_blocks_only():
    body = "text\n\n{t}\n## Wall time\n\n| a | {w} |\n\n{e}\n\n## Verdict\n\n- best `{b}`.\n"

    def summary(command, wall, best):
        return f"# keras-lth bench: summary\n\n`{command}`\n\n" + body.format(
            t=TIMING_BEGIN, e=TIMING_END, w=wall, b=best
        )

    a = summary("keras-lth bench --jobs 2", 10, "lth")
    assert comparable(a) == comparable(summary("keras-lth bench report d", 99, "lth"))
    assert comparable(a) != comparable(summary("keras-lth bench --jobs 2", 10, "dense"))
    assert "Wall time" not in comparable(a) and "## Verdict" in comparable(a)


# ---------------------------------------------------------------------- #
# Runs in worker processes
# ---------------------------------------------------------------------- #
def test_jobs_2_gives_the_records_of_jobs_1(single, tmp_path):
    plan, reference, ref_out = single
    had_tfmot = "tensorflow_model_optimization" in sys.modules
    out = str(tmp_path)
    lines = run_benchmark(plan, out, verbose=0, jobs=2)
    if not had_tfmot:
        assert "tensorflow_model_optimization" not in sys.modules
    assert outcomes(lines) == outcomes(reference)
    on_disk = results.read_results(os.path.join(out, results.RESULTS_FILE))
    assert outcomes(on_disk) == outcomes(reference)  # the same file, in plan order
    threads = int(os.environ.get("TF_NUM_INTRAOP_THREADS", max(1, workers.cores() // 2)))
    assert {line["execution"]["intra_op_threads"] for line in lines} == {threads}
    assert {line["execution"]["intra_op_threads"] for line in reference} == {0}  # default
    summary = read(os.path.join(out, "summary.md"))
    assert comparable(summary) == comparable(read(os.path.join(ref_out, "summary.md")))


def kill_at_submit(monkeypatch, method):
    """Workers are SIGKILLed as soon as they receive a run of `method`."""
    real_submit = workers.Worker.submit

    def submit_then_kill(self, run):
        real_submit(self, run)
        if run.method.name == method:
            self.proc.kill()

    monkeypatch.setattr(workers.Worker, "submit", submit_then_kill)
    return real_submit


def test_a_killed_worker_loses_only_its_run_and_a_rerun_resumes(single, tmp_path, monkeypatch):
    _, reference, _ = single
    methods = ["dense", "lth"]
    plan = make_plan(tiny(), methods)
    out = str(tmp_path)
    real_submit = kill_at_submit(monkeypatch, "lth")  # the longest run goes out first
    with pytest.raises(RuntimeError, match=r"ended before finishing lth seed 0"):
        run_benchmark(plan, out, verbose=0, jobs=2)
    saved = results.read_results(os.path.join(out, results.RESULTS_FILE))
    assert [line["key"]["method"] for line in saved] == ["dense"]  # the other worker's

    monkeypatch.setattr(workers.Worker, "submit", real_submit)
    calls = []
    real = runner.run_one
    monkeypatch.setattr(runner, "run_one", lambda p, r, v=1: calls.append(r.key) or real(p, r, v))
    lines = run_benchmark(plan, out, verbose=0)
    assert [c["method"] for c in calls] == ["lth"]
    expected = [line for line in reference if line["key"]["method"] in methods]
    assert outcomes(lines) == outcomes(expected)


def test_ctrl_c_stops_every_worker_and_keeps_the_finished_runs(tmp_path, monkeypatch):
    plan = make_plan(tiny(), ["dense", "random-mask"])
    out = str(tmp_path)
    started = []
    real_init = workers.Worker.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        started.append(self)

    def interrupted(self, line):
        raise KeyboardInterrupt  # Ctrl-C, after the first run was saved

    monkeypatch.setattr(workers.Worker, "__init__", recording_init)
    monkeypatch.setattr(runner.Progress, "finished", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(plan, out, verbose=0, jobs=2)
    assert len(started) == 2 and all(w.proc.poll() is not None for w in started)
    (line,) = results.read_results(os.path.join(out, results.RESULTS_FILE))
    assert line["records"]
    with results.WriterLock(os.path.join(out, results.RESULTS_FILE)):
        pass  # the lock went with the interrupted benchmark


# ---------------------------------------------------------------------- #
# Shards sharing one directory
# ---------------------------------------------------------------------- #
def test_two_shards_one_killed_and_restarted_merge_to_the_single_run(single, tmp_path, monkeypatch):
    plan, reference, ref_out = single
    out = str(tmp_path)
    assert [r.method.name for r in shard_runs(plan, Shard(0, 2))] == ["lth", "tfmot"]
    assert [r.method.name for r in shard_runs(plan, Shard(1, 2))] == ["dense", "gradual"]
    real_submit = kill_at_submit(monkeypatch, "tfmot")  # shard 0 dies mid-way
    with pytest.raises(RuntimeError, match="tfmot seed 0"):
        run_benchmark(plan, out, verbose=0, shard="0/2")
    path = os.path.join(out, "results-0-of-2.jsonl")
    first = results.read_results(path)
    assert [line["key"]["method"] for line in first] == ["lth"]

    monkeypatch.setattr(workers.Worker, "submit", real_submit)
    lines = run_benchmark(plan, out, verbose=0, shard="1/2")
    assert len(lines) == 3 and not os.path.exists(os.path.join(out, "summary.md"))

    calls = []
    real = runner.run_one
    monkeypatch.setattr(runner, "run_one", lambda p, r, v=1: calls.append(r.key) or real(p, r, v))
    lines = run_benchmark(plan, out, verbose=0, shard="0/2")  # the restart
    assert calls == []  # lth is not trained again (tfmot trains in a worker) ...
    assert results.read_results(path)[0] == first[0]  # ... its line, timing included, kept
    assert outcomes(lines) == outcomes(reference)
    single_summary = comparable(read(os.path.join(ref_out, "summary.md")))
    # the shard that completed the directory wrote the summary ...
    assert comparable(read(os.path.join(out, "summary.md"))) == single_summary
    # ... and the report step rewrites it from the merged files
    os.remove(os.path.join(out, "summary.md"))
    assert cli.main(["bench", "report", out, "-v", "0"]) == 0
    merged = read(os.path.join(out, "summary.md"))
    assert merged.startswith(f"# keras-lth bench: summary\n\n`keras-lth bench report {out}")
    assert comparable(merged) == single_summary
    for name in ("accuracy_vs_density.png", "epochs_to_target.png", "accuracy_vs_budget.png"):
        assert os.path.getsize(os.path.join(out, name)) > 1000


def test_report_of_an_incomplete_directory_lists_the_missing_runs(single, tmp_path):
    plan, reference, _ = single
    out = str(tmp_path)
    results.check_config(out, plan, Shard(0, 2))
    results.write_results(os.path.join(out, "results-0-of-2.jsonl"), reference[:1])
    assert cli.main(["bench", "report", out, "-v", "0"]) == 0
    text = read(os.path.join(out, "summary.md"))
    assert "**Incomplete**: 3 of 4 runs" in text and "tfmot seed 0 at 80.0%" in text
