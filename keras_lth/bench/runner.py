"""Runs the benchmark: one run per method x seed (x density), resumable.

A run trains one fresh network with one method and writes one line to the
results file when it ends: its key (method, seed, target density), the
full configuration, the library versions, and one record per density it
reached (an iterative run passes through every round's density). The file is
rewritten through a temporary file and `os.replace`, so a kill never leaves
half a line; a rerun skips every run whose line is there with the same
configuration. `keras_lth.bench.results` owns the directory (results files,
`config.json`, shards, merging); `keras_lth.bench.workers` runs the runs in
worker processes (`--jobs`).

The `process="tfmot"` methods (`gradual`, `tfmot`) run in a worker process
(`keras_lth.bench.child`) started with `TF_USE_LEGACY_KERAS=1`: this process
never imports tensorflow-model-optimization.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
import warnings

import numpy as np

from keras_lth.bench.methods import Method, get_methods
from keras_lth.bench.presets import Settings
from keras_lth.bench.results import (
    DirectoryError,
    Shard,
    WriterLock,
    atomic_write,
    check_config,
    in_plan_order,
    line_key,
    merged_lines,
    read_results,
    results_file,
    shard_runs,
    write_results,
)
from keras_lth.bench.workers import (
    LEGACY_ENV,
    resolve_jobs,
    run_in_workers,
    threads_in_use,
)
from keras_lth.rounds import RoundLayout

# Fields of a record that measure time rather than the training's outcome.
TIMING_FIELDS = ("wall_s", "run_wall_s", "latency_ms", "dense_latency_ms", "latency_ratio")
# Fields of a results line that measure time or describe the process.
LINE_TIMING_FIELDS = ("run_wall_s", "execution", "eval_s", "traces")


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run: a method, a seed and, for `kind="target"`, a density."""

    method: Method
    seed: int
    density: float | None = None

    @property
    def key(self) -> dict:
        return {"method": self.method.name, "seed": self.seed, "density": self.density}

    def label(self) -> str:
        at = "" if self.density is None else f" at {100 * self.density:.1f}%"
        return f"{self.method.name} seed {self.seed}{at}"


# ---------------------------------------------------------------------- #
# Densities: the iterative rounds and the target-density runs must agree
# ---------------------------------------------------------------------- #
def layer_rates(settings: Settings, names) -> dict:
    """Per-round pruning rate of each masked layer: `output_rate` for the
    output layer, `conv_rate` for the convolutions (`conv_*` in
    `lth.models.lenet5` and `speech_cnn`), `rate` for the others."""

    def rate(name):
        if name == "output":
            return settings.output_rate
        return settings.conv_rate if name.startswith("conv") else settings.rate

    return {n: rate(n) for n in names}


def nominal_density(sizes: dict, rates: dict, rounds: float) -> float:
    """Share of the weights kept after `rounds` rounds (ignoring rounding)."""
    kept = sum(n * (1 - rates[name]) ** rounds for name, n in sizes.items())
    return kept / sum(sizes.values())


def target_layer_rates(sizes: dict, rates: dict, density: float) -> dict:
    """One-shot per-layer rates reaching `density` with the iterative layer split.

    Finds the (fractional) number of rounds `r` whose nominal density is
    `density`; each layer then loses `1 - (1 - rate) ** r` of its weights, so
    a one-shot or random mask has the layer densities of the iterative run.
    """
    lo, hi = 0.0, 1.0
    while nominal_density(sizes, rates, hi) > density:
        hi *= 2
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if nominal_density(sizes, rates, mid) > density else (lo, mid)
    return {name: 1 - (1 - rates[name]) ** hi for name in sizes}


def matches(a: float, b: float) -> bool:
    """Whether two densities name the same column (1% relative tolerance)."""
    return abs(a - b) <= 0.01 * max(a, b)


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything the runs of one benchmark share, resolved from `Settings`."""

    settings: Settings
    methods: tuple
    densities: tuple  # target densities (summary columns), decreasing
    rounds: int  # pruning rounds of the iterative methods
    sizes: dict  # masked layer name -> kernel size
    num_train: int
    # a synthetic Speech Commands tree (its marker), recorded so that a report
    # made where the tree is not says so too
    synthetic: bool = False

    @property
    def steps_per_pass(self) -> int:
        return math.ceil(self.num_train / self.settings.batch_size)

    @property
    def steps_per_epoch(self) -> int:
        return self.settings.steps_per_epoch or self.steps_per_pass

    def steps_per_execution(self, run: Run) -> int:
        """Keras's `steps_per_execution` for `run` (a divisor of the epoch's steps).

        `tfmot` counts its steps in a batch hook, so 1; `gradual` changes its
        masks between executions, so the epoch when its schedule prunes at
        epoch boundaries (`gradual_frequency=None`), else 1.
        """
        s = self.settings
        if run.method.name == "tfmot":
            return 1
        if run.method.process != "main" and s.gradual_frequency is not None:
            return 1
        return math.gcd(s.steps_per_execution or self.steps_per_epoch, self.steps_per_epoch)

    def matched_rounds(self, density: float) -> int:
        """The iterative round that reaches `density` (the first at or below it)."""
        r = 0
        nominal = self.round_densities()
        while r < self.rounds and nominal[r] > density * 1.01:
            r += 1
        return r

    def round_densities(self) -> list:
        rates = layer_rates(self.settings, self.sizes)
        return [nominal_density(self.sizes, rates, r) for r in range(self.rounds + 1)]

    def runs(self) -> list:
        out = []
        for seed in range(self.settings.seeds):
            for m in self.methods:
                if m.kind == "target":
                    out.extend(Run(m, seed, d) for d in self.densities)
                else:
                    out.append(Run(m, seed))
        return out

    def run_config(self, run: Run) -> dict:
        """Everything that shapes one run's outcome."""
        config = {
            "settings": self.settings.config(),
            "method": run.method.config(),
            "seed": run.seed,
            "density": run.density,
            "num_train": self.num_train,
        }
        if run.method.kind == "iterative":
            config["rounds"] = self.rounds
        return config

    def config(self) -> dict:
        """The plan as JSON-able values (`config.json`, the workers' request)."""
        config = {
            "settings": dataclasses.asdict(self.settings),
            "methods": [m.name for m in self.methods],
            "densities": list(self.densities),
            "rounds": self.rounds,
            "sizes": dict(self.sizes),
            "num_train": self.num_train,
        }
        if self.synthetic:  # (absent otherwise: the configs of real data as before)
            config["synthetic"] = True
        return config

    @classmethod
    def from_config(cls, config: dict) -> Plan:
        """The inverse of `config()`, without loading data or building a model."""
        values = dict(config["settings"])
        for name in ("densities", "levels"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(
            Settings(**values),
            tuple(get_methods(config["methods"])),
            tuple(config["densities"]),
            config["rounds"],
            dict(config["sizes"]),
            config["num_train"],
            bool(config.get("synthetic", False)),
        )

    def epochs(self, run: Run) -> int:
        """Training epochs of one run (for the progress display and budgets)."""
        s = self.settings
        e = s.epochs_per_round
        if run.method.kind == "iterative":
            rewind = s.late_rewind if run.method.rewind == "late" else run.method.rewind
            return RoundLayout.for_rewind(self.rounds, e, rewind).total_epochs
        if run.method.name == "random-mask" or run.method.kind == "dense":
            return e
        if run.method.budget == "matched":
            # the iterative methods' budget at this density: r + 1 rounds
            return (self.matched_rounds(run.density) + 1) * e
        return 2 * e

    def train_steps(self, run: Run) -> int:
        """Training steps of one run."""
        return self.epochs(run) * self.steps_per_epoch


def make_plan(settings: Settings, methods="all") -> Plan:
    """Resolves densities and rounds; checks that every method can run.

    Raises:
        ValueError: for unknown methods.
    """
    import keras_lth as lth

    chosen = get_methods(methods)
    if settings.model != "mlp" and any(m.name == "tfmot" for m in chosen):
        raise ValueError(
            "Received an invalid value for `methods`, expected no 'tfmot' with "
            "`model='cnn'` (the tfmot reference copies a network of Dense layers "
            f"only). Received: methods={[m.name for m in chosen]!r}"
        )
    _, _, _, info = load_data(settings, seed=0)
    model = build_model(settings, info)
    sizes = {l.name: int(np.prod(l.kernel_mask.shape)) for l in lth.masked_layers(model)}
    rates = layer_rates(settings, sizes)
    if settings.densities is not None:
        densities = tuple(sorted({float(d) for d in settings.densities}, reverse=True))
    else:
        densities = tuple(round(nominal_density(sizes, rates, r), 4) for r in settings.levels)
    # Enough rounds for the iterative methods to reach the smallest density.
    rounds = 1
    while nominal_density(sizes, rates, rounds) > min(densities) * 1.01:
        rounds += 1
    nominal = [nominal_density(sizes, rates, r) for r in range(rounds + 1)]
    missed = [d for d in densities if not any(matches(d, n) for n in nominal)]
    if missed and any(m.kind == "iterative" for m in chosen):
        warnings.warn(
            f"No iterative round reaches the densities {missed}, so the iterative "
            "methods have no cell there (their rounds reach "
            f"{[round(n, 4) for n in nominal[1:]]}); they still appear in the plots.",
            stacklevel=2,
        )
    synthetic = settings.dataset == "speech_commands" and _is_synthetic_tree(settings.source)
    return Plan(settings, tuple(chosen), densities, rounds, sizes, info.num_train, synthetic)


def _is_synthetic_tree(source) -> bool:
    """Whether the Speech Commands tree at `source` is synthetic (its marker)."""
    from keras_lth.data import synthetic_speech

    if source in (None, "tfds"):  # (a relative `tfds/` directory is not a tree)
        return False
    try:
        return synthetic_speech.is_synthetic(source)
    except (OSError, ValueError, TypeError):  # unreadable: not known to be synthetic
        return False


# ---------------------------------------------------------------------- #
# Data and model
# ---------------------------------------------------------------------- #
def load_data(settings: Settings, seed: int):
    """`DataSplits` of the settings' dataset; evaluation in large batches."""
    import tensorflow as tf

    import keras_lth as lth

    flatten = settings.model == "mlp"  # the CNNs take (height, width) inputs
    if settings.dataset == "mnist":
        splits = lth.data.mnist(
            source=settings.source, batch_size=settings.batch_size, seed=seed, flatten=flatten
        )
    else:
        splits = lth.data.speech_commands(
            source=settings.source, batch_size=settings.batch_size, seed=seed, flatten=flatten
        )

    # Batches of 1,000 instead of many small ones: evaluating is a large
    # share of a short epoch's time. `rebatch` loses the cardinality, which
    # Keras needs to know where an evaluation ends.
    def big(ds, n):
        return ds.rebatch(1000).apply(tf.data.experimental.assert_cardinality(-(-n // 1000)))

    info = splits.info
    return splits._replace(
        validation=big(splits.validation, info.num_validation), test=big(splits.test, info.num_test)
    )


def build_model(settings: Settings, info, dense=False):
    """The benchmark's network for the dataset and `model`, uncompiled
    (masked layers, or plain Keras layers with `dense`): LeNet-300-100 or
    LeNet-5 for MNIST, `speech_mlp` or `speech_cnn` for Speech Commands."""
    import keras_lth as lth

    n = info.num_classes
    if settings.dataset == "mnist":
        if settings.model == "cnn":
            return lth.models.lenet5(num_classes=n, input_shape=info.input_shape, dense=dense)
        return lth.models.lenet_300_100(num_classes=n, input_shape=info.input_shape, dense=dense)
    if settings.model == "cnn":
        return lth.models.speech_cnn(
            input_shape=info.input_shape, num_classes=n, filters=settings.cnn_filters, dense=dense
        )
    return lth.models.speech_mlp(info.input_shape[0], num_classes=n, dense=dense)


def gradual_steps(plan: Plan, run: Run) -> dict:
    """`PolynomialDecay` arguments of a gradual / tfmot run.

    With `gradual_frequency=None` the schedule prunes once per epoch, before
    the first step of an epoch (tfmot's step `n` is the `n`-th step, so an
    epoch's first step is `k * steps_per_epoch + 1`): the masks then change
    only between executions of one epoch each, and `gradual` and `tfmot`
    prune at the same steps.
    """
    s = plan.settings
    epochs, spe = plan.epochs(run), plan.steps_per_epoch
    if s.gradual_frequency is None:
        begin, end, frequency = (
            round(s.gradual_begin * epochs) * spe + 1,
            round(s.gradual_end * epochs) * spe + 1,
            spe,
        )
    else:
        total = epochs * spe
        begin, end = round(s.gradual_begin * total), round(s.gradual_end * total)
        frequency = s.gradual_frequency
    return {
        "initial_sparsity": 0.0,
        "final_sparsity": 1.0 - run.density,
        "begin_step": begin,
        "end_step": end,
        "frequency": frequency,
    }


# ---------------------------------------------------------------------- #
# One run
# ---------------------------------------------------------------------- #
def run_one(plan: Plan, run: Run, verbose: int = 1) -> dict:
    """Trains one run and returns its results line (a JSON-able dict)."""
    import keras

    import keras_lth as lth
    from keras_lth.bench.recorder import Recorder, eval_chunks

    method, s = run.method, plan.settings
    if method.process == "tfmot" and os.environ.get(LEGACY_ENV) != "1":
        raise RuntimeError(
            f"Method '{method.name}' imports tensorflow-model-optimization and runs "
            "in a child process (keras_lth.bench.child), not in this one."
        )
    start = time.perf_counter()
    if method.name == "tfmot":
        from keras_lth.bench.child import train_tfmot

        records, versions, recorder = train_tfmot(plan, run, verbose)
    else:
        keras.utils.set_random_seed(run.seed)
        train, val, test, info = load_data(s, run.seed)
        model = build_model(s, info)
        model.compile(
            keras.optimizers.Adam(s.learning_rate),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            steps_per_execution=plan.steps_per_execution(run),
        )
        scheduler, keep = _scheduler(plan, run, model)
        recorder = Recorder(
            validation=eval_chunks(val),
            test=eval_chunks(test),
            steps_per_epoch=plan.steps_per_epoch,
            steps_per_pass=plan.steps_per_pass,
            round_of=scheduler.round_of if scheduler is not None else None,
            keep_rounds=keep,
            levels=_levels(plan, run),
            density_fn=lambda m: lth.density(m, per_layer=True),
            compact=method.structure == "neuron",
            dense_model=build_model(s, info, dense=True) if method.structure == "neuron" else None,
        )
        # The recorder first: it validates and tests the network of the
        # epoch's end, before the scheduler's epoch-end events change it.
        callbacks = [recorder, scheduler] if scheduler is not None else [recorder]
        _fit(model, plan, train, plan.epochs(run), callbacks, verbose)
        records, versions = recorder.records, {}
        if method.reintroduce:
            rounds = {rec["round"]: rec for rec in scheduler.rounds}
            for rec in records:  # how many pruned weights came back, per round
                done = rounds.get(rec["round"], {})
                rec["swaps"] = done.get("swaps")  # in-round events
                if "reselected" in done:  # re-selection at the pruning step
                    rec["reselected"] = done["reselected"]
    return {
        "key": run.key,
        "config": plan.run_config(run),
        "versions": {**library_versions(), **versions},
        "run_wall_s": round(time.perf_counter() - start, 3),
        "execution": threads_in_use(),
        "train_steps": plan.train_steps(run),
        "eval_s": round(recorder.eval_s, 3),
        "traces": recorder.traces,
        "records": records,
    }


def _fit(model, plan, train, epochs, callbacks, verbose):
    """`fit` without `validation_data`: the recorder validates (see
    `keras_lth.bench.recorder`)."""
    steps = plan.settings.steps_per_epoch
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
        # a budget-matched one-shot run fine-tunes past its schedule's end
        warnings.filterwarnings("ignore", message=r"`fit\(epochs=\d+\)` does not match")
        model.fit(
            train.repeat() if steps else train,
            steps_per_epoch=steps,
            epochs=epochs,
            callbacks=callbacks,
            verbose=2 if verbose >= 2 else 0,
        )


def _levels(plan, run):
    """Round -> the summary column (target density) it belongs to, if any."""
    if run.method.kind == "dense":
        return {0: 1.0}
    if run.method.kind == "target":
        return {0: run.density, 1: run.density}
    out = {}
    for r, nominal in enumerate(plan.round_densities()):
        if r == 0:
            continue  # the dense round: the `dense` method's column
        hit = [d for d in plan.densities if matches(d, nominal)]
        if hit:
            out[r] = hit[0]
    return out


def _scheduler(plan, run, model):
    """The `PruningScheduler` of a run (or None) and the rounds to record."""
    import keras_lth as lth

    m, s = run.method, plan.settings
    names = [l.name for l in lth.masked_layers(model)]
    rates = layer_rates(s, names)
    verbose = 0
    if m.kind == "dense":
        return None, None
    if m.name == "random-mask":
        rng = np.random.default_rng(run.seed)
        target = target_layer_rates(plan.sizes, rates, run.density)
        for layer in lth.masked_layers(model):
            ones = np.ones(layer.kernel_mask.shape, "float32")
            layer.set_masks(lth.pruning.random_mask(ones, target[layer.name], rng))
        return None, None
    if m.name == "gradual":
        import tensorflow_model_optimization as tfmot  # in the child process only

        schedule = tfmot.sparsity.keras.PolynomialDecay(**gradual_steps(plan, run))
        return lth.PruningScheduler(schedule, rewind=None, verbose=verbose), None
    if m.kind == "target":  # oneshot
        target = target_layer_rates(plan.sizes, rates, run.density)
        schedule = lth.OneShotSchedule(
            s.epochs_per_round,
            rate=target[names[0]],
            layer_rates={n: target[n] for n in names[1:]},
        )
        return lth.PruningScheduler(schedule, rewind=m.rewind, seed=run.seed, verbose=verbose), {1}
    schedule = lth.IterativeSchedule(
        rounds=plan.rounds,
        epochs_per_round=s.epochs_per_round,
        rate=s.rate,
        layer_rates={n: r for n, r in rates.items() if r != s.rate},
    )
    kwargs = {}
    # Every argument spelled out: a method's results must not move with the
    # library's defaults.
    if m.reintroduce in ("complement", "feedback"):
        kwargs["reintroduce"] = lth.DoublePruning(mode=m.reintroduce, fraction=0.2, when="round")
    elif m.reintroduce == "scored":
        kwargs["reintroduce"] = lth.ScoredPruning(fraction=0.2, prune_by="score", when="round")
    elif m.reintroduce == "feedback-prune":
        kwargs["reintroduce"] = lth.DoublePruning(mode="feedback", fraction=0.2, when="prune")
    elif m.reintroduce == "scored-prune":
        kwargs["reintroduce"] = lth.ScoredPruning(fraction=0.2, prune_by="score", when="prune")
    scheduler = lth.PruningScheduler(
        schedule,
        rewind=s.late_rewind if m.rewind == "late" else m.rewind,
        structure=m.structure,
        norm=m.norm,
        seed=run.seed,
        verbose=verbose,
        **kwargs,
    )
    return scheduler, None


def library_versions() -> dict:
    import keras
    import tensorflow as tf

    import keras_lth

    return {
        "python": platform.python_version(),
        "keras_lth": keras_lth.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


# ---------------------------------------------------------------------- #
# The whole benchmark
# ---------------------------------------------------------------------- #
def without_timing(line) -> dict:
    """A copy of a results line without the fields that measure time or
    describe the process it ran in (what `--jobs` may change)."""
    line = json.loads(json.dumps(line))
    for name in LINE_TIMING_FIELDS:
        line.pop(name, None)
    for rec in line["records"]:
        for name in TIMING_FIELDS:
            rec.pop(name, None)
    return line


def run_benchmark(
    plan: Plan,
    out,
    verbose: int = 1,
    report: bool = True,
    command=None,
    target=None,
    jobs: int = 1,
    shard=None,
) -> list:
    """Runs every pending run of `plan` (or of its `shard`) into `out`.

    Finished runs (a line with the same key and configuration in any results
    file of `out`) are skipped; a line with the same key but another
    configuration, or an `out/config.json` of other settings, is an error,
    so two protocols never mix in one directory (see
    `keras_lth.bench.results`). Each finished run is saved at once, into
    `results.jsonl`, or `results-K-of-N.jsonl` for a shard. With `report`,
    writes `summary.md` (headed by `command`, the line that produced it) and
    the plots from every results file of `out` at the end, once the
    directory holds every run of the plan (see `keras_lth.bench.report`;
    `target` overrides the target validation accuracy, by default the dense
    net's mean - 0.5 points).

    Args:
        jobs: Worker processes (`keras_lth.bench.workers`), or `"auto"`
            (`workers.auto_jobs`, the command line's default); with 1, the
            main-process methods train in this process. On a machine with
            GPUs, call `workers.hide_gpus()` before `make_plan` when
            `jobs > 1`. Defaults to `1`.
        shard: `None`, a `results.Shard` or `"K/N"` (0-based): only this
            shard's share of the runs (`results.shard_runs`). Defaults to
            `None`.

    Returns:
        The lines of every results file of `out`, in plan order.
    """
    jobs = resolve_jobs(jobs)
    if isinstance(shard, str):
        shard = Shard.parse(shard)
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, results_file(shard))
    with WriterLock(path):
        check_config(out, plan, shard)
        own = read_results(path)
        done = {line_key(line): line for line in merged_lines(out)}
        runs = plan.runs() if shard is None else shard_runs(plan, shard)
        pending = []
        for run in runs:
            line = done.get(line_key(run))
            if line is None:
                pending.append(run)
            elif line["config"] != plan.run_config(run):
                raise DirectoryError(
                    f"'{out}' already holds {run.label()} with another configuration "
                    f"(received {plan.run_config(run)}, found {line['config']}): use "
                    "another `--out` directory for another protocol."
                )
        what = "" if shard is None else f"shard {shard}: "
        progress = Progress(plan, pending, len(runs) - len(pending), verbose, jobs, what)

        def save(line):
            own.append(line)
            own[:] = in_plan_order(plan, own)
            write_results(path, own)
            progress.finished(line)
            clock.finished(line)

        clock = StepClock(plan, out, len(runs) - len(pending), jobs, shard) if pending else None
        if jobs == 1:
            for run in [r for r in pending if r.method.process == "main"]:
                progress.started(run)
                save(run_one(plan, run, verbose))
            child_runs = [r for r in pending if r.method.process != "main"]
            if child_runs:
                run_in_workers(plan, child_runs, 1, verbose, save, progress, split_resources=False)
        else:
            run_in_workers(plan, pending, jobs, verbose, save, progress)
        if clock is not None:
            progress.say(timing_line(clock.stop()))
    lines = in_plan_order(plan, merged_lines(out))
    missing = len({line_key(r) for r in plan.runs()} - {line_key(line) for line in lines})
    if report and not missing:
        from keras_lth.bench.report import write_report

        write_report(plan, lines, out, command=command, target=target)
    elif report and verbose:
        progress.say(
            f"{missing} of {len(plan.runs())} runs of the plan are not in '{out}' yet "
            "(other shards); `keras-lth bench report DIR` writes the summary from what is there."
        )
    return lines


def bare_repeat_steps(plan: Plan) -> int:
    """Steps in each timed repeat of the bare step: 100, fewer for a small plan.

    The clock times the bare step twice (20 warm-up steps and 5 repeats
    each). A plan of few training steps (a smoke run, a test) would spend
    more time there than in its runs, so a repeat takes about 1/500 of the
    steps the plan trains (every round of every run, at most), at least 5.
    """
    s = plan.settings
    planned = len(plan.runs()) * (plan.rounds + 1) * s.epochs_per_round * plan.steps_per_epoch
    return int(min(100, max(5, planned // 500)))


def bare_model_step_ms(plan: Plan) -> float:
    """`timing.bare_step_ms` of the plan's network (plain Keras layers)."""
    from keras_lth.bench.timing import bare_step_ms

    s = plan.settings
    _, _, _, info = load_data(s, seed=0)
    model = build_model(s, info, dense=True)
    return bare_step_ms(model, s.batch_size, s.learning_rate, steps=bare_repeat_steps(plan))


class StepClock:
    """The benchmark's own wall time per training step against a bare step.

    `bare_step_ms` is measured when the clock starts and when it stops, in
    this process; the benchmark's figure is its wall time (runs, evaluations,
    process starts, everything) up to its last finished run, over the
    training steps of the runs it trained (issue 11, item 4: within 2x of
    the bare step). `OUT/timing.json` is rewritten after every finished run,
    so a killed benchmark keeps its figures; a resumed one adds a piece
    (`pieces`) to those of the calls before it, and the totals cover them
    all.
    """

    def __init__(self, plan, out, skipped, jobs, shard):
        from keras_lth.bench.report import TIMING_FILE

        self.plan, self.jobs, self.shard = plan, jobs, shard
        self.path = None if shard is not None else os.path.join(out, TIMING_FILE)
        self.pieces = []
        if skipped and self.path and os.path.exists(self.path):
            with open(self.path) as f:
                before = json.load(f)
            if before.get("runs", skipped + 1) <= skipped:  # earlier calls into `out`
                self.pieces = before.get("pieces", [])
        self.piece = {
            "runs": 0,
            "train_steps": 0,
            "wall_s": 0.0,
            "bare_step_ms": [round(bare_model_step_ms(plan), 3)],
            "jobs": jobs,
            "load_before": [round(x, 2) for x in os.getloadavg()],
            "load_after": None,
            "complete": False,
        }
        self.start = time.perf_counter()

    def finished(self, line):
        self.piece["runs"] += 1
        self.piece["train_steps"] += line["train_steps"]
        self.piece["wall_s"] = round(time.perf_counter() - self.start, 1)
        self.piece["load_after"] = [round(x, 2) for x in os.getloadavg()]
        self._write()

    def stop(self) -> dict:
        self.piece["bare_step_ms"].append(round(bare_model_step_ms(self.plan), 3))
        self.piece["load_after"] = [round(x, 2) for x in os.getloadavg()]
        self.piece["complete"] = True
        return self._write()

    def totals(self) -> dict:
        pieces = [*self.pieces, self.piece]
        steps = sum(p["train_steps"] for p in pieces)
        wall = sum(p["wall_s"] for p in pieces)
        bare = [b for p in pieces for b in p["bare_step_ms"]]
        per_step = 1e3 * wall / steps if steps else None
        return {
            "runs": sum(p["runs"] for p in pieces),
            "train_steps": steps,
            "wall_s": round(wall, 1),
            "ms_per_step": None if per_step is None else round(per_step, 3),
            "bare_step_ms": round(float(np.mean(bare)), 3),
            "ratio": None if per_step is None else round(per_step / np.mean(bare), 2),
            "load_before": pieces[0]["load_before"],
            "load_after": pieces[-1]["load_after"],
            "cpus": os.cpu_count(),
            "pieces": pieces,
        }

    def _write(self) -> dict:
        t = self.totals()
        if self.path:
            atomic_write(self.path, json.dumps(t, indent=1) + "\n")
        return t


def timing_line(t) -> str:
    """One line on the benchmark's speed (a `StepClock.totals` dict)."""
    if not t.get("train_steps"):
        return "no run finished"
    pieces = t["pieces"]
    calls = f" over {len(pieces)} calls (resumed)" if len(pieces) > 1 else ""
    bare = ", ".join(f"{b:.2f}" for p in pieces for b in p["bare_step_ms"])
    return (
        f"{t['runs']} runs, {t['train_steps']:,} training steps in {t['wall_s']:.0f} s"
        f"{calls}: {t['ms_per_step']:.2f} ms per step, {t['ratio']:.2f}x the bare "
        f"tf.function step (mean of {bare} ms, measured at each call's start and end); "
        f"load average {t['load_before'][0]:.2f} -> {t['load_after'][0]:.2f}"
    )


class Progress:
    """One line per run start and end, with an ETA, on stderr.

    A run's `[i/n]` is the order it started in; with several workers the
    ends come in any order and say how many runs are done. The ETA is the
    epochs left times the seconds per epoch of the runs finished so far,
    divided among the workers.
    """

    def __init__(self, plan, pending, skipped, verbose, jobs=1, what=""):
        self.plan = plan
        self.total = skipped + len(pending)
        self.started_n = self.done_n = skipped
        self.runs = {line_key(r): r for r in pending}
        self.left = sum(plan.epochs(r) for r in pending)
        self.epochs_done = 0
        self.seconds = 0.0
        self.number = {}
        self.start = time.perf_counter()
        self.verbose = verbose
        self.jobs = jobs
        self.what = what
        if skipped:
            self.say(f"{skipped} of {self.total} runs already in the results: skipped")

    def started(self, run, worker=None):
        self.started_n += 1
        self.number[line_key(run)] = self.started_n
        on = "" if worker is None else f" (worker {worker})"
        self.say(f"[{self.started_n}/{self.total}] {run.label()}{on} ...")

    def finished(self, line):
        run = self.runs[line_key(line)]
        epochs = self.plan.epochs(run)
        self.done_n += 1
        self.left -= epochs
        self.epochs_done += epochs
        self.seconds += line["run_wall_s"]
        elapsed = time.perf_counter() - self.start
        workers = max(1, min(self.jobs, self.total - self.done_n))
        eta = self.seconds / self.epochs_done * self.left / workers
        last = line["records"][-1] if line["records"] else {}
        acc = last.get("test_accuracy")
        at = f", test acc {100 * acc:.2f}% at {100 * last['density']:.1f}%" if acc else ""
        done = f"done {self.done_n}/{self.total}, " if self.jobs > 1 else ""
        self.say(
            f"[{self.number[line_key(line)]}/{self.total}] {run.label()}: "
            f"{line['run_wall_s']:.0f} s{at} | {done}elapsed {_clock(elapsed)}, ETA {_clock(eta)}"
        )

    def say(self, text):
        if self.verbose:
            print(f"[keras-lth bench] {self.what}{text}", file=sys.stderr, flush=True)


def _clock(seconds):
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"
