"""`--jobs N`: the benchmark's runs in N worker processes on one machine.

A worker is a fresh `python -m keras_lth.bench.child` process, spawned
(never forked: TensorFlow is not fork-safe). It receives the plan once on
stdin, then one run at a time, and answers each with that run's results line
on stdout; the main process alone writes the results file, so a killed
worker loses at most the run it was training. Runs go out longest first
(training epochs), each to the next free worker. A worker runs either the
main-process methods or, started with `TF_USE_LEGACY_KERAS=1`, the tfmot
ones (`gradual`, `tfmot`: see `keras_lth.bench.child`), so each run trains in
the same kind of process as with `--jobs 1`; a worker that runs out of its
kind of work is replaced by one of the other kind.

Resources, per worker (`worker_env`):

- CPU threads: `TF_NUM_INTRAOP_THREADS`, `TF_NUM_INTEROP_THREADS` and
  `OMP_NUM_THREADS` are `max(1, cores // N)`, with `cores` the CPUs this
  process may run on (`os.sched_getaffinity`, which follows SLURM's and
  taskset's CPU sets, capped by a cgroup CPU quota such as a Kubernetes CPU
  limit). The worker applies them
  with `tf.config.threading` before TensorFlow's runtime starts. A value
  already in the environment is kept.
- GPUs: with G GPUs visible to the main process, worker `i` sees only GPU
  `i mod G` (`CUDA_VISIBLE_DEVICES`); when workers share a GPU (N > G) they
  get `TF_FORCE_GPU_ALLOW_GROWTH=true`, so that none takes all its memory.
  The main process itself must leave the GPUs alone: `hide_gpus()` before
  it builds anything (the command line does).

With `--jobs 1` the main-process methods train in the main process itself
(TensorFlow's default threads) and only the tfmot methods in one worker.
"""

from __future__ import annotations

import json
import math
import os
import queue
import re
import subprocess
import sys
import threading

CHILD_PREFIX = "@@keras-lth-bench "
# TensorFlow's start-up info lines (absl logging, which TF 2.21 prints
# whatever TF_CPP_MIN_LOG_LEVEL says), N times over with N workers: dropped
# from the workers' stderr below `-v 2`. Warnings, errors and tracebacks pass.
_TF_INFO = re.compile(
    r"^(I\d{4} [\d:.]+ +\d+ \S+:\d+\] |WARNING: All log messages before absl::InitializeLog"
    r"|To enable the following instructions: )"
)
LEGACY_ENV = "TF_USE_LEGACY_KERAS"
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")


AUTO = "auto"
# Resident memory a worker may take: 1.2-1.5 GB measured for LeNet-300-100
# (TensorFlow, the data and one model), with room to spare.
WORKER_MEMORY = 2 * 1024**3


def check_jobs(jobs) -> int | str:
    """`jobs` as a positive int, or `"auto"` (see `auto_jobs`).

    Raises:
        ValueError: naming `--jobs`, what it expects and what it received.
    """
    if jobs == AUTO:
        return jobs
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(
            "Received an invalid value for `--jobs`, expected a positive integer "
            f"(worker processes) or 'auto'. Received: --jobs={jobs!r}"
        )
    return jobs


def auto_jobs(n_cores, n_gpus, memory_bytes) -> int:
    """`--jobs auto` (a pure function): one worker per GPU when there are
    GPUs; otherwise one single-threaded worker per core, as many as
    `memory_bytes` of memory hold (`WORKER_MEMORY` each), at least 1.

    Small networks use cores better as independent single-threaded runs than
    as one process's TensorFlow threads (on 2 cores the main job runs about
    1.4x as fast with 2 workers, `docs/results/bench-quick.md`).
    """
    if n_gpus:
        return n_gpus
    by_memory = memory_bytes // WORKER_MEMORY if memory_bytes else n_cores
    return max(1, min(n_cores, by_memory))


def memory() -> int | None:
    """This machine's physical memory in bytes, or `None` where unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def resolve_jobs(jobs) -> int:
    """`jobs`, with `"auto"` resolved for this machine (`auto_jobs`)."""
    if jobs != AUTO:
        return check_jobs(jobs)
    return auto_jobs(cores(), len(gpu_ids()), memory())


def cores() -> int:
    """CPUs this process may use: its CPU set (SLURM, taskset), capped by a
    cgroup CPU quota (a Kubernetes CPU limit, `docker --cpus`)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        n = os.cpu_count() or 1
    for v2, v1 in (("/sys/fs/cgroup/cpu.max", None), ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", 1)):
        try:
            with open(v2) as f:
                text = f.read()
            if v1:  # cgroup v1: quota and period in two files
                with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
                    text = f"{text.strip()} {f.read().strip()}"
        except OSError:
            continue
        quota = quota_cores(text)
        return min(n, quota) if quota else n
    return n


def quota_cores(text) -> int | None:
    """CPUs allowed by a cgroup quota `"QUOTA PERIOD"` (cgroup v2's cpu.max),
    rounded up; `None` for no quota (`max`, or -1 in cgroup v1)."""
    parts = text.split()
    if len(parts) != 2 or parts[0] == "max" or int(parts[0]) <= 0:
        return None
    return max(1, math.ceil(int(parts[0]) / int(parts[1])))


def worker_env(slot, jobs, n_cores, gpus, environ) -> dict:
    """The environment variables that worker `slot` of `jobs` adds (a pure
    function: `n_cores` CPUs, `gpus` the main process's GPU ids, `environ`
    the main process's environment)."""
    threads = str(max(1, n_cores // jobs))
    env = {name: threads for name in THREAD_VARIABLES if name not in environ}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(gpus[slot % len(gpus)])
        if jobs > len(gpus):
            env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    return env


def gpu_ids() -> list:
    """The GPUs of the main process, as `CUDA_VISIBLE_DEVICES` entries."""
    import tensorflow as tf

    n = len(tf.config.list_physical_devices("GPU"))  # all of them, hidden or not
    return visible_gpu_ids(n, os.environ.get("CUDA_VISIBLE_DEVICES"))


def visible_gpu_ids(n_gpus, cuda_visible_devices) -> list:
    """The `CUDA_VISIBLE_DEVICES` entry of each of the `n_gpus` GPUs that a
    process with that `CUDA_VISIBLE_DEVICES` (or `None`) sees."""
    if cuda_visible_devices is not None and cuda_visible_devices.strip():
        return [v.strip() for v in cuda_visible_devices.split(",") if v.strip()][:n_gpus]
    return [str(i) for i in range(n_gpus)]


def hide_gpus() -> None:
    """Keeps this (main) process off the GPUs, leaving them to the workers.

    Call it before TensorFlow's runtime starts (before `make_plan`), or the
    main process holds most of a GPU's memory.
    """
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        tf.config.set_visible_devices([], "GPU")


def apply_threads() -> dict:
    """In a worker, before any TensorFlow op: the thread counts of its
    environment; returns what TensorFlow then reports."""
    import tensorflow as tf

    intra = os.environ.get("TF_NUM_INTRAOP_THREADS")
    inter = os.environ.get("TF_NUM_INTEROP_THREADS")
    if intra:
        tf.config.threading.set_intra_op_parallelism_threads(int(intra))
    if inter:
        tf.config.threading.set_inter_op_parallelism_threads(int(inter))
    return threads_in_use()


def threads_in_use() -> dict:
    """This process's TensorFlow thread counts (0: TensorFlow's default,
    one per core) and visible GPUs, for the results lines."""
    import tensorflow as tf

    return {
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def base_env(kind) -> dict:
    """The environment of every worker of `kind` ("main" or "tfmot")."""
    import keras_lth

    env = dict(os.environ)
    # The workers import the keras_lth this process runs, wherever they start.
    root = os.path.dirname(os.path.dirname(os.path.abspath(keras_lth.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if kind == "tfmot":
        env[LEGACY_ENV] = "1"  # legacy Keras for tfmot's sake
    else:
        env.pop(LEGACY_ENV, None)
    env["KERAS_LTH_BENCH_PARENT"] = str(os.getpid())
    return env


class Worker:
    """One worker process; `run` is the run it trains, or `None` when idle.

    A reader thread forwards the worker's stdout: results lines go to
    `events` as `(worker, line)`, anything else (Keras's output at `-v 2`)
    to this process's stdout; the worker's end is `(worker, None)`.
    """

    def __init__(self, plan, kind, env, verbose, events, slot):
        self.kind = kind
        self.slot = slot
        self.run = None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "keras_lth.bench.child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            bufsize=1,
        )
        self._send({"plan": plan.config(), "verbose": verbose})
        for target, arg in ((self._read, events), (self._forward_stderr, verbose)):
            threading.Thread(target=target, args=(arg,), daemon=True).start()

    def submit(self, run) -> None:
        self.run = run
        self._send({"run": run.key})

    def _send(self, message):
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died: its reader thread reports the end

    def _read(self, events):
        for text in self.proc.stdout:
            if text.startswith(CHILD_PREFIX):
                events.put((self, json.loads(text[len(CHILD_PREFIX) :])))
            else:
                sys.stdout.write(text)
                sys.stdout.flush()
        self.proc.wait()
        events.put((self, None))

    def _forward_stderr(self, verbose):
        for text in self.proc.stderr:
            if verbose >= 2 or not _TF_INFO.match(text):
                sys.stderr.write(text)
                sys.stderr.flush()

    def close(self) -> None:
        """Lets the worker end after its current run (end of its input)."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def stop(self, timeout=10) -> None:
        """Ends the worker now (its current run is lost)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.close()


def run_in_workers(plan, runs, jobs, verbose, save, progress, split_resources=True) -> None:
    """Trains `runs` in up to `jobs` workers, calling `save(line)` for each.

    A worker that dies mid-run stops the handing out of runs (like `make`);
    the other workers finish theirs, then a `RuntimeError` names the lost run.
    An exception here (Ctrl-C) ends every worker at once. With
    `split_resources`, each worker gets its share of the CPU threads and GPUs
    (`worker_env`); otherwise it inherits this process's.
    """
    events = queue.Queue()
    todo = sorted(runs, key=lambda r: -plan.epochs(r))  # stable: plan order on ties
    slots = [None] * jobs
    workers = []
    failed = []
    extra = [{} for _ in range(jobs)]
    if split_resources:
        gpus = gpu_ids()
        extra = [worker_env(i, jobs, cores(), gpus, os.environ) for i in range(jobs)]
    try:
        while True:
            for i in range(jobs):
                worker = slots[i]
                if not todo or failed or (worker is not None and worker.run is not None):
                    continue
                run = _pick(todo, worker.kind if worker else None)
                if worker is None or worker.kind != run.method.process:
                    if worker is not None:
                        worker.close()
                    env = {**base_env(run.method.process), **extra[i]}
                    worker = Worker(plan, run.method.process, env, verbose, events, i)
                    slots[i] = worker
                    workers.append(worker)
                worker.submit(run)
                progress.started(run, worker=i + 1 if jobs > 1 else None)
            if not any(w is not None and w.run is not None for w in slots):
                break
            worker, line = _next(events)
            if line is not None:
                worker.run = None
                save(line)
            else:
                if worker.run is not None:
                    failed.append((worker.run, worker.proc.returncode))
                    worker.run = None
                if slots[worker.slot] is worker:
                    slots[worker.slot] = None
    except BaseException:
        for worker in workers:
            worker.stop()
        raise
    for worker in workers:
        worker.close()
    for worker in workers:
        worker.proc.wait()
    if failed:
        lost = ", ".join(f"{run.label()} (exit status {code})" for run, code in failed)
        raise RuntimeError(
            f"A benchmark worker (keras_lth.bench.child) ended before finishing {lost}; "
            f"{len(todo)} more runs were not started. The finished runs are saved: "
            "rerun the same command to resume."
        )


def _pick(todo, kind):
    """The next run, of the worker's kind where there is one left."""
    for i, run in enumerate(todo):
        if run.method.process == kind:
            return todo.pop(i)
    return todo.pop(0)


def _next(events):
    # A timeout keeps the wait interruptible (Ctrl-C) on every platform.
    while True:
        try:
            return events.get(timeout=0.5)
        except queue.Empty:
            continue
