"""`PruningScheduler` on two processes: JAX (`jax.distributed`) and TensorFlow workers, on loopback.

Three processes start at once from `tests/scripts/jax_worker.py` (which
describes the runs): two workers joined by `keras.distribution.initialize`
on 127.0.0.1, each feeding half of every global batch under
`keras.distribution.DataParallel`, and one process alone on the same global
batches. The workers must end with bit-identical masks and weights, the
same masks as the single process and weights equal to its own up to float
rounding (the all-reduce sums the two halves' gradients); only process 0
writes the scheduler's backup; without a `seed` the workers draw
`"reinit"` values with one run seed; re-introduction fails with a clear
ValueError. All three processes together are bounded by `TIMEOUT`.

The same runs go through two `tf.distribute.MultiWorkerMirroredStrategy`
workers and one process alone (`tests/scripts/tf_worker.py`), after
`keras_lth.distributed.patch_multi_worker_fit()`; there re-introduction
must fail with a clear ValueError on two workers and train on one.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.multiprocess

WORKER = Path(__file__).parent / "scripts" / "jax_worker.py"
TF_WORKER = Path(__file__).parent / "scripts" / "tf_worker.py"
ROOT = Path(__file__).parent.parent
# seconds, for the three processes together (about 25 s of CPU time); a
# machine loaded by other work can ask for more
TIMEOUT = float(os.environ.get("KERAS_LTH_MULTIPROCESS_TIMEOUT", 120))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, worker=WORKER, backend="jax"):
    """Starts the three processes; returns `(arrays, findings)` of worker 0, worker 1, alone."""
    if backend == "jax":
        pytest.importorskip("jax")
    two, one = tmp_path / "two", tmp_path / "one"
    two.mkdir()
    one.mkdir()
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    env.pop("TF_USE_LEGACY_KERAS", None)
    # JAX: the coordinator's port; TensorFlow: one port per worker
    port = str(_free_port()) if backend == "jax" else f"{_free_port()},{_free_port()}"
    commands = [
        [sys.executable, str(worker), "0", "2", port, str(two)],
        [sys.executable, str(worker), "1", "2", port, str(two)],
        [sys.executable, str(worker), "0", "1", "0", str(one)],
    ]
    procs = [
        subprocess.Popen(c, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for c in commands
    ]
    deadline = time.monotonic() + TIMEOUT
    outputs = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(out)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker processes did not finish within {TIMEOUT} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]

    def load(directory, pid):
        with np.load(directory / f"worker{pid}.npz") as data:
            arrays = {k: data[k] for k in data.files}
        return arrays, json.loads((directory / f"worker{pid}.json").read_text())

    return load(two, 0), load(two, 1), load(one, 0)


def test_two_processes_train_as_one(tmp_path):
    # One test, so that pytest-xdist starts the processes once.
    runs = _launch(tmp_path)
    _check_the_workers_join_one_computation(runs)
    _check_every_worker_has_the_same_masks_and_weights(runs)
    for run in ("iterative", "gradual"):
        _check_the_workers_train_as_one_process_on_the_global_batch(runs, run)
    _check_reinit_without_seed_draws_with_the_chiefs_seed(runs)
    _check_only_the_chief_writes_the_backup(runs)
    _check_reintroduction_raises_a_clear_error(runs)


def test_two_multi_worker_mirrored_workers_train_as_one(tmp_path):
    # The same runs on two `MultiWorkerMirroredStrategy` workers, once
    # `patch_multi_worker_fit` has mended Keras's TensorFlow trainer.
    runs = _launch(tmp_path, TF_WORKER, "tensorflow")
    _check_the_workers_join_one_computation(runs)
    (_, w0), (_, w1), _ = runs
    assert (w0["process_index"], w1["process_index"]) == (0, 1)
    _check_every_worker_has_the_same_masks_and_weights(runs)
    for run in ("iterative", "gradual"):
        _check_the_workers_train_as_one_process_on_the_global_batch(runs, run)
    _check_reinit_without_seed_draws_with_the_chiefs_seed(runs)
    _check_only_the_chief_writes_the_backup(runs)
    for _, found in runs[:2]:
        assert (
            "does not run on several `MultiWorkerMirroredStrategy` workers"
            in (found["reintroduce"])
        )
        assert "Received: 2 workers" in found["reintroduce"]
    assert runs[2][1]["reintroduce"] is None  # one process: it trains


def _check_the_workers_join_one_computation(runs):
    (_, w0), (_, w1), (_, single) = runs
    assert (w0["process_count"], w1["process_count"], single["process_count"]) == (2, 2, 1)


def _check_every_worker_has_the_same_masks_and_weights(runs):
    (a0, _), (a1, _), _ = runs
    assert sorted(a0) == sorted(a1)
    for key in a0:
        np.testing.assert_array_equal(a0[key], a1[key], err_msg=key)


def _check_the_workers_train_as_one_process_on_the_global_batch(runs, run):
    (a0, w0), _, (a, single) = runs
    keys = [k for k in a if k.startswith(run + "/")]
    assert keys
    for key in keys:
        if key.endswith("/mask"):
            np.testing.assert_array_equal(a0[key], a[key], err_msg=key)
        else:
            np.testing.assert_allclose(a0[key], a[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # the pruning really happened
    masks = [a[k] for k in keys if k.endswith("/mask")]
    assert 0 < np.mean(np.concatenate([m.ravel() for m in masks])) < 0.5
    if run == "iterative":  # the round records: densities equal, losses up to rounding
        for r0, r in zip(w0["iterative"], single["iterative"], strict=True):
            assert (r0["round"], r0["density"], r0["layer_density"]) == (
                r["round"],
                r["density"],
                r["layer_density"],
            )
            assert r0["final"]["loss"] == pytest.approx(r["final"]["loss"], rel=1e-5)


def _check_reinit_without_seed_draws_with_the_chiefs_seed(runs):
    (a0, w0), (a1, w1), _ = runs
    assert w0["reinit_seed"] == w1["reinit_seed"]
    for key in a0:
        if key.startswith("reinit/"):
            np.testing.assert_array_equal(a0[key], a1[key], err_msg=key)


def _check_only_the_chief_writes_the_backup(runs):
    (_, w0), (_, w1), (_, single) = runs
    assert len(w0["backup_files"]) == 8  # one entry per epoch
    assert all(n > 0 for n in w0["backup_files"])
    assert w1["backup_files"] == [0] * 8
    assert single["backup_files"] == w0["backup_files"]


def _check_reintroduction_raises_a_clear_error(runs):
    for _, found in runs:
        assert "need the TensorFlow backend. Received: backend 'jax'" in found["reintroduce"]


# The parts, in this process (one process: the chief)


def test_one_process_is_the_chief_and_keeps_its_seed():
    from keras_lth import distributed

    assert distributed.process_count() == 1
    assert distributed.process_index() == 0 and distributed.is_chief()
    assert distributed.same_seed(2**32 - 1) == 2**32 - 1


def test_a_backup_that_does_not_write_leaves_the_files_alone(tmp_path):
    from keras_lth.resume import STATE_FILE, ResumeState

    class Part:
        def get_state(self):
            return {"x": 1}, {"values": np.ones(3)}

    ResumeState(tmp_path).save(0, {"part": Part()})
    before = sorted(p.name for p in tmp_path.iterdir())
    assert STATE_FILE in before
    other = ResumeState(tmp_path, writer=False)
    other.save(1, {"part": Part()})
    other.clear()
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert other.load(0)["part"][0] == {"x": 1}  # it reads what the chief wrote


def test_patch_multi_worker_fit_leaves_one_worker_alone(monkeypatch):
    # On one worker (and for every other strategy) Keras's own functions run,
    # so patching changes nothing that already worked.
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip("mends Keras's TensorFlow trainer")
    from keras.src.backend.tensorflow import trainer

    from keras_lth import distributed

    # restored after the test, so other tests see Keras as it was
    monkeypatch.setattr(trainer, "reduce_per_replica", trainer.reduce_per_replica)
    monkeypatch.setattr(
        trainer.TensorFlowTrainer,
        "_maybe_symbolic_build",
        trainer.TensorFlowTrainer._maybe_symbolic_build,
    )
    distributed.patch_multi_worker_fit()
    patched = trainer.reduce_per_replica
    distributed.patch_multi_worker_fit()  # a second call does nothing
    assert trainer.reduce_per_replica is patched

    def fit():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        model.compile("sgd", "mse")
        x = np.arange(24, dtype="float32").reshape(8, 3) / 24
        model.fit(x, np.ones((8, 2), "float32"), batch_size=4, epochs=1, verbose=0)
        return model.get_weights()

    after = fit()
    monkeypatch.undo()
    for a, b in zip(after, fit(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.jax
def test_patch_multi_worker_fit_refuses_a_trainer_it_does_not_know(monkeypatch):
    import keras

    from keras_lth import distributed

    if keras.backend.backend() != "tensorflow":
        with pytest.raises(ValueError, match="needs the TensorFlow backend. Received: backend"):
            distributed.patch_multi_worker_fit()
        return
    from keras.src.backend.tensorflow import trainer

    monkeypatch.delattr(trainer, "_collective_all_reduce_multi_worker")
    with pytest.raises(ValueError, match="missing \\['_collective_all_reduce_multi_worker'\\]"):
        distributed.patch_multi_worker_fit()


@pytest.mark.parametrize(
    "cluster, task, index",
    [
        ({"worker": ["a:1", "b:1"]}, ("worker", 0), 0),
        ({"worker": ["a:1", "b:1"]}, ("worker", 1), 1),
        ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, ("chief", 0), 0),
        ({"chief": ["c:1"], "worker": ["a:1", "b:1"]}, ("worker", 0), 1),
    ],
)
def test_a_chief_task_of_tf_config_is_process_0(monkeypatch, cluster, task, index):
    # TensorFlow's chief: the "chief" task when TF_CONFIG names one, else worker 0.
    from types import SimpleNamespace

    from keras_lth import distributed

    resolver = SimpleNamespace(
        task_type=task[0],
        task_id=task[1],
        cluster_spec=lambda: SimpleNamespace(as_dict=lambda: cluster),
    )
    strategy = SimpleNamespace(cluster_resolver=resolver)
    monkeypatch.setattr(distributed, "_multi_worker", lambda model: strategy)
    model = object()
    assert distributed.process_count(model) == sum(len(v) for v in cluster.values())
    assert distributed.process_index(model) == index
    assert distributed.is_chief(model) == (index == 0)
