"""Training-step overhead of keras-lth's masked layers and `PruningScheduler`.

Times LeNet-300-100 (784-300-100-10, relu; Adam 1.2e-3, batch 60,
`SparseCategoricalCrossentropy(from_logits=True)`) and a small CNN inside
`model.fit`, the path users run, for every variant in `VARIANTS`:

- `plain`: `keras.layers.Dense`, no callback (the baseline);
- `masked`: `keras_lth.MaskedDense` with a `PruningScheduler` running an
  `IterativeSchedule` (plain iterative pruning: the callback has no batch
  hooks; budget 1.05). The warm-up `fit` already prunes once, every timed
  `fit` starts from those weights and masks (density 0.8 / 0.8 / 0.9) and
  prunes, rewinds and resets the optimizer once more at its second epoch;
- `plain_again`: a second plain model, the A/A control: its distance from 1
  is the noise of the run;
- `plain_cnn` / `masked_cnn`: the CNN of `build_cnn` in plain Keras, and
  converted by `keras_lth.prunable` under the same `PruningScheduler`
  (budget 1.10 against `plain_cnn`); `plain_cnn_again`, a second plain
  CNN, is the CNN rows' own A/A control;
- `masked_zeroed` / `masked_cnn_zeroed`: `masked` and `masked_cnn` with
  `pruned_values="zeroed"` (pruned weights held at exact zeros; the layers
  compute with their raw kernels and mask their gradients in place, see
  `keras_lth.zeroing`), with the same budgets;
- `plain_gradmask` (opt-in diagnostic): plain `Dense` layers whose kernel
  gradients pass through that same select with an all-true mask, no
  callback: the least an exact mask adds to a dense step;
- `masked_selects` (opt-in diagnostic): `masked` with a select on the
  gradient of every masked variable, full masks (the biases) included, as
  before `keras_lth.layers.elide_full_masks`.

The run also measures the machine's float32 matmul peak (`matmul_peak`) and
prints the FLOP/s that the LeNet-300-100 steps achieve against it
(`lenet_step_flops`), so the distance from the physical limit is visible.

Method: one warm-up `fit` per variant (tracing and compilation excluded),
then `--repeats` rounds in which every variant runs one `fit` of 2 epochs x
`--steps` steps, in alternating order (A B, B A, ...) so background load
hits all variants alike. A step is the interval between two consecutive
`on_train_batch_end` calls: the compiled step, fetching its logs and every
callback's batch hooks. The reported step time is the median over all timed
steps; a ratio is variant/baseline of those medians (acceptance: at most
the variant's `budget`), with the spread of the per-repeat paired ratios.
If a model instance kept a speed offset of its own for a whole run, a ratio
of two single models would carry two such offsets that no number of
repeats averages out. `--instances K` builds K models per variant, each
warmed up on its own, and times each in two consecutive repeats (both run
orders) in turn, so the ratio averages K models per side; the summary then
lists each instance's median step (`instance_medians_ms`), and
`overhead_runs.py --instance-effect` tests whether the instances differ by
more than the repeats do (on the AMD machine they did not:
`docs/results/overhead-issue11.md#four-model-instances-per-variant`).
`--protocol steps` times the same steps with the fits cut into single
steps: each model is warmed up by one `fit` as above, its callbacks then
see the hooks of a `fit` that starts (a `PruningScheduler` holds its layers
as during a run), and a cycle gives every model one training step (the
call `fit`'s loop makes per batch, `model.train_function` on an iterator,
with the batch hooks around it) on the same batch; `--repeats` blocks of
`--steps` cycles. A cycle's order is a fresh seeded shuffle, never starting
with the model that ended the cycle before (`--step-order shuffled`): in
the alternating order A B C, C B A (`--step-order alternating`, the only
one before) the first and the last model take two steps in a row at each
turn, the second with warm caches, which the JSON's `after_itself` entries
show for them. Two variants'
paired steps are then milliseconds apart instead of a `fit` apart, so load
that changes over seconds hits both alike; a block's median plays a
repeat's role in the summaries. It leaves out what `fit` adds around a
step (the same for every variant with no batch hooks) and each fit's
epoch-level work. The tfmot child then runs the same protocol on its Keras 3
variants only (gradual pruning against plain Keras 3, with its A/A control;
no tf_keras or tfmot model).
The median leaves out rare slow steps; for gradual pruning, whose pruning
steps are such steps, the summary also gives the ratio of mean step times. The same
statistics are computed for the CPU time the whole process spends per step
(`time.process_time`, all threads): on a machine that other jobs load, the
wall-clock ratio mostly measures how the load changed between fits, while
the CPU-time ratio measures the work each variant does. The A/A control
`plain_again` shows how far two identical variants' ratios drift under the
current load. Every variant's step includes the timing callback's
`on_train_batch_end`, which turns off Keras's asynchronous batch-end
dispatch for all of them alike.

tfmot: a child process started with `TF_USE_LEGACY_KERAS=1` times tfmot's
`prune_low_magnitude` on the same network in tf_keras, interleaved with plain
tf_keras, and keras-lth's gradual pruning on tfmot's schedules interleaved
with plain Keras 3 (`keras3`; budget `GRADUAL_BUDGET` for
`masked_gradual_poly`, tfmot's `PolynomialDecay`, and for
`masked_gradual_poly_zeroed`, the same with `pruned_values="zeroed"`; see
`_tfmot_reference.py`),
with a second plain Keras 3 model, `keras3_again`, as the child's own A/A
control. Importing tfmot switches `tf.keras` to
legacy Keras for the whole process, so it never happens in this one; the
masked/tfmot ratio therefore compares two processes run one after the other.

The re-introduction strategies are opt-in variants (`--variants
scored,double_feedback,double_complement`): `masked` plus
`PruningScheduler(reintroduce=...)`, whose training step runs at every timed
step. Their step time is also compared with `masked` (budgets: scored 1.20,
double_feedback 1.15, double_complement 2.20).

Adding a variant is one `Variant` entry in `VARIANTS`; `default=False` makes
it opt-in via `--variants NAME`.

Usage:

```
python benchmarks/overhead.py --out overhead.json      # about 10 minutes
python benchmarks/overhead.py --steps 5 --repeats 1    # smoke run
python benchmarks/overhead.py --variants scored,double_feedback,double_complement
python benchmarks/overhead.py --variants masked_nobias,plain_hook --no-tfmot
python benchmarks/overhead.py --variants masked_010,masked_layer --no-tfmot --steps 300
python benchmarks/overhead.py --only masked,plain_again,masked_zeroed --no-tfmot
python benchmarks/overhead.py --instances 4 --repeats 16 --steps 150   # 4 models per variant
python benchmarks/overhead.py --protocol steps --steps 200 --repeats 16 --no-tfmot
```
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _tfmot_reference  # variant names only; it imports tfmot in its main()
import keras
import tensorflow as tf
from _masked_dense_010 import MaskedDense010
from _overhead_common import (
    BATCH_SIZE,
    EPOCHS_PER_FIT,
    ITERATIVE_SCHEDULE,
    LAYER_NAMES,
    LEARNING_RATE,
    STEP_ORDERS,
    UNITS,
    StepClock,
    StepRun,
    after_itself_entry,
    check_instances,
    compare,
    load_data,
    summarize,
    time_interleaved,
    time_steps,
    warm_instances,
)

import keras_lth as lth

GRADUAL_BUDGET = 1.10  # keras-lth gradual / plain Keras 3, in the tfmot child process
BASELINE = "plain"
# the A/A control of each baseline: a second model of the same variant
CONTROLS = {BASELINE: "plain_again", "plain_cnn": "plain_cnn_again"}
MAX_RATIO = 1.10  # the largest acceptance bound of a ratio to a baseline (see `Variant.budget`)


def _iterative_scheduler():
    schedule = lth.IterativeSchedule(**ITERATIVE_SCHEDULE)
    return [lth.PruningScheduler(schedule, rewind="init", verbose=0)]


def _reintroducing_scheduler(strategy):
    # As `_iterative_scheduler`, with a re-introduction strategy: its training
    # step (scores, dense gradient, complement pass) runs at every step of
    # both epochs. Events fall at epoch ends, outside the timed steps.
    def make():
        schedule = lth.IterativeSchedule(**ITERATIVE_SCHEDULE)
        return [lth.PruningScheduler(schedule, rewind="init", verbose=0, reintroduce=strategy())]

    return make


class _BatchHook(keras.callbacks.Callback):
    """Overrides `on_train_batch_end` with a no-op, as `PruningScheduler` does."""

    def on_train_batch_end(self, batch, logs=None):
        pass


class _NoBiasMaskDense(lth.MaskedDense):
    """Prototype: `MaskedDense` without the bias-mask multiply (weight pruning only)."""

    def call(self, inputs, training=None):
        x = keras.ops.matmul(inputs, keras.ops.multiply(self._kernel, self.kernel_mask))
        if self.bias is not None:
            x = keras.ops.add(x, self.bias)
        return self.activation(x)


class _EverySelect(keras.callbacks.Callback):
    """After the scheduler's start: every masked variable traced with its gradient select."""

    def on_epoch_begin(self, epoch, logs=None):
        layers = [l for l in lth.layers.masked_layers(self.model) if lth.layers.elided_masks(l)]
        for layer in layers:
            lth.layers.elide_full_masks(layer, None)
        if layers:
            self.model.make_train_function(force=True)


def _every_select_scheduler():
    return [*_iterative_scheduler(), _EverySelect()]


class _GradientSelectDense(keras.layers.Dense):
    """Diagnostic: `Dense` whose kernel gradient passes through one select (an all-true mask).

    No mask has a zero, there is no scheduler: the least work any exact
    mask adds to a dense step (one pass over each kernel-sized array), here
    the in-place select that zeroed layers apply to their gradients.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.keep = self.add_weight(
            name="keep", shape=self.kernel.shape, initializer="ones", trainable=False, dtype="bool"
        )

    def call(self, inputs, training=None):
        kernel = lth.layers._gradient_masked(self.kernel, self.keep)
        x = keras.ops.add(keras.ops.matmul(inputs, kernel), self.bias)
        return self.activation(x)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One configuration to time.

    Args:
        name: Short name used in the table, the JSON and for ratios.
        description: What the variant runs, in words.
        layer: The Dense-like class used for the three layers.
        callbacks: Returns fresh callbacks for one `fit` call of
            `EPOCHS_PER_FIT` epochs.
        default: Run without `--variants`. Diagnostics are opt-in.
        vs_masked: Budget of the step-time ratio to `masked` (the
            re-introduction strategies), or `None`.
        network: `"lenet"` (LeNet-300-100 of `layer`) or `"cnn"` (the small
            CNN of `build_cnn`; `layer` is then `keras.layers.Dense` and a
            masked variant converts it with `keras_lth.prunable`).
        baseline: The variant whose step time this one is divided by.
        budget: Acceptance bound of that ratio, or `None` (a diagnostic).
        pruned_values: The masked layers' `pruned_values` (`"kept"`, the
            default, or `"zeroed"`).
    """

    name: str
    description: str
    layer: type
    callbacks: Callable[[], list] = list
    default: bool = True
    vs_masked: float | None = None
    network: str = "lenet"
    baseline: str = BASELINE
    budget: float | None = None
    pruned_values: str = "kept"


VARIANTS = [
    Variant(BASELINE, "keras.layers.Dense, no callback", keras.layers.Dense),
    Variant(
        "masked",
        "keras_lth.MaskedDense + PruningScheduler(IterativeSchedule, rewind='init')",
        lth.MaskedDense,
        _iterative_scheduler,
        budget=1.05,
    ),
    Variant(
        "plain_again",
        "keras.layers.Dense, no callback, a second model (A/A control of the noise)",
        keras.layers.Dense,
    ),
    Variant(
        "masked_zeroed",
        "masked with MaskedDense(pruned_values='zeroed')",
        lth.MaskedDense,
        _iterative_scheduler,
        budget=1.05,
        pruned_values="zeroed",
    ),
    Variant(
        "plain_cnn",
        "the small CNN of plain Keras layers, no callback",
        keras.layers.Dense,
        network="cnn",
        baseline="plain_cnn",
    ),
    Variant(
        "plain_cnn_again",
        "the small CNN of plain Keras layers, a second model (A/A control of the CNN rows)",
        keras.layers.Dense,
        network="cnn",
        baseline="plain_cnn",
    ),
    Variant(
        "masked_cnn",
        "keras_lth.prunable(the small CNN) + PruningScheduler(IterativeSchedule, rewind='init')",
        keras.layers.Dense,
        _iterative_scheduler,
        network="cnn",
        baseline="plain_cnn",
        budget=1.10,
    ),
    Variant(
        "masked_cnn_zeroed",
        "masked_cnn converted with keras_lth.prunable(..., pruned_values='zeroed')",
        keras.layers.Dense,
        _iterative_scheduler,
        network="cnn",
        baseline="plain_cnn",
        budget=1.10,
        pruned_values="zeroed",
    ),
    # Diagnostics (--variants NAME): where the masked overhead comes from.
    Variant(
        "plain_hook",
        "keras.layers.Dense + a callback overriding on_train_batch_end (no-op)",
        keras.layers.Dense,
        lambda: [_BatchHook()],
        default=False,
    ),
    Variant(
        "masked_nobias",
        "MaskedDense without the bias-mask multiply + PruningScheduler (prototype)",
        _NoBiasMaskDense,
        _iterative_scheduler,
        default=False,
    ),
    Variant(
        "plain_gradmask",
        "keras.layers.Dense whose kernel gradients pass one select (all-true mask), no callback",
        _GradientSelectDense,
        default=False,
    ),
    Variant(
        "masked_selects",
        "masked with a select on every masked gradient, the biases' included (no elision)",
        lth.MaskedDense,
        _every_select_scheduler,
        default=False,
    ),
    # Masked Dense against keras-lth 0.1.0's layer, both without a callback
    # (`--variants masked_010,masked_layer`): 0.1.0's scheduler is gone, and
    # plain iterative pruning adds no batch hook (its work is at epoch starts).
    Variant(
        "masked_010",
        "keras-lth 0.1.0's MaskedDense (benchmarks/_masked_dense_010.py), no callback",
        MaskedDense010,
        default=False,
    ),
    Variant(
        "masked_layer",
        "keras_lth.MaskedDense, no callback (against masked_010: no slower than 0.1.0)",
        lth.MaskedDense,
        default=False,
        baseline="masked_010",
    ),
    # Re-introduction strategies (`--variants scored,double_feedback,double_complement`),
    # budgeted against `masked`.
    Variant(
        "scored",
        "masked + PruningScheduler(reintroduce=ScoredPruning())",
        lth.MaskedDense,
        _reintroducing_scheduler(lambda: lth.ScoredPruning(when="round")),
        default=False,
        vs_masked=1.20,
    ),
    Variant(
        "double_feedback",
        "masked + PruningScheduler(reintroduce=DoublePruning('feedback'))",
        lth.MaskedDense,
        _reintroducing_scheduler(lambda: lth.DoublePruning("feedback", when="round")),
        default=False,
        vs_masked=1.15,
    ),
    Variant(
        "double_complement",
        "masked + PruningScheduler(reintroduce=DoublePruning('complement'))",
        lth.MaskedDense,
        _reintroducing_scheduler(lambda: lth.DoublePruning("complement", when="round")),
        default=False,
        vs_masked=2.20,
    ),
]


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_cnn():
    """A small MNIST CNN: two 3x3 convolutions (16, 32 filters) with pooling, a Dense head."""
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv_1"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, activation="relu", name="conv_2"),
            keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="output"),
        ]
    )


def build_model(variant, jit_compile, seed=0):
    keras.utils.set_random_seed(seed)
    if variant.network == "cnn":
        model = build_cnn()
        if variant.callbacks is not list:  # the masked CNN
            model = lth.prunable(model, pruned_values=variant.pruned_values)
    else:
        kwargs = {} if variant.pruned_values == "kept" else {"pruned_values": variant.pruned_values}
        model = keras.Sequential(
            [keras.Input((784,))]
            + [
                variant.layer(
                    units, activation=None if name == "output" else "relu", name=name, **kwargs
                )
                for units, name in zip(UNITS, LAYER_NAMES)
            ]
        )
    model.compile(
        keras.optimizers.Adam(LEARNING_RATE),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


class _Clock(StepClock, keras.callbacks.Callback):
    pass


def measure(variants, jit_modes, steps, repeats, instances=1):
    """Times every (jit mode, variant) pair, interleaved; returns summaries.

    Each variant builds `instances` models (the same seed, each traced and
    warmed up on its own) and repeat `r` times instance `instance_of(r,
    instances)`, so that a speed offset a single model might keep for a
    whole run is averaged over `instances` models.
    """
    x, y, source = load_data(steps)
    clock = _Clock()
    by_name = {v.name: v for v in variants}
    runs = {
        (jit, v.name): warm_instances(
            lambda v=v, jit=jit: build_model(v, jit), v.callbacks, clock, x, y, instances
        )
        for jit in jit_modes
        for v in variants
    }
    steps_s, cpu_s, fits_s = time_interleaved(
        runs, x, y, repeats, instances, lambda key: by_name[key[1]].callbacks(), lambda key: clock
    )
    out = {}
    for (jit, name), models in runs.items():
        key = (jit, name)
        entry = summarize(steps_s[key], fits_s[key], cpu_s[key], instances)
        model, weights = models[0]
        if lth.masked_layers(model):
            model.set_weights(weights)
            entry["density_when_timed"] = round(lth.density(model), 4)
        out.setdefault("on" if jit else "off", {})[name] = entry
    _compare_all(out, by_name)
    return out, source


def _compare_all(out, by_name):
    """Adds each variant's ratios to its baseline (`vs_plain`) and to `masked` where budgeted."""
    for mode in out.values():
        for name, entry in mode.items():
            base = by_name[name].baseline
            if name != base and base in mode:
                entry["vs_plain"] = compare(entry, mode[base])
            if by_name[name].vs_masked is not None and "masked" in mode:
                entry["vs_masked"] = compare(entry, mode["masked"])


def measure_steps(variants, jit_modes, steps, repeats, warmup_steps=5, order="shuffled"):
    """The `steps` protocol: every (jit mode, variant) model takes one step in turn.

    Each model is warmed up by one `fit` as in `measure` (tracing, the first
    pruning), then trained step by step (`StepRun`): a cycle gives every
    model one training step, on the same batch, in the `step_cycles` order
    `order`, so two variants' steps are at most a few milliseconds apart
    and background load that changes over seconds hits both alike. `repeats`
    blocks of `steps` cycles; a block plays the role of a repeat in the
    summaries (per-block medians and paired ratios).
    """
    x, y, source = load_data(steps)
    # every model draws the same batch in the same cycle
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH_SIZE).repeat()
    clock = _Clock()
    by_name = {v.name: v for v in variants}
    runs = {}
    for jit in jit_modes:
        for v in variants:
            [(model, _)] = warm_instances(
                lambda v=v, jit=jit: build_model(v, jit), v.callbacks, clock, x, y, 1
            )
            runs[(jit, v.name)] = StepRun(model, v.callbacks(), dataset, steps * repeats)
    wall, cpu, after_itself = time_steps(runs, steps, repeats, warmup_steps, order)
    out = {}
    for key, run in runs.items():
        jit, name = key
        entry = summarize(wall[key], None, cpu[key])
        entry.update(after_itself_entry(wall[key], after_itself[key]))
        entry.update(run.masks_when_timed())
        run.close()
        out.setdefault("on" if jit else "off", {})[name] = entry
    _compare_all(out, by_name)
    return out, source


def matmul_peak(n=1024, repeats=20):
    """The machine's measured float32 matmul rate in FLOP/s (best of `repeats`).

    An `n x n` by `n x n` product in a `tf.function` (2 n^3 floating-point
    operations), timed after a warm-up, on every core TensorFlow uses.
    """

    a = tf.random.normal((n, n), seed=0)
    b = tf.random.normal((n, n), seed=1)
    product = tf.function(lambda a, b: tf.linalg.matmul(a, b))
    product(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def lenet_step_flops(batch=BATCH_SIZE, inputs=784, units=UNITS):
    """Floating-point operations of one LeNet-300-100 training step's matmuls.

    Forward `2 * batch * fan_in * units` per layer; backward twice that (the
    gradients of the kernel and of the layer's input). Elementwise work
    (bias, relu, masks, Adam) is left out: it is small next to the matmuls.
    """
    sizes = [inputs, *units]
    forward = sum(2 * batch * a * b for a, b in zip(sizes, sizes[1:]))
    return 3 * forward


def flops_lines(result):
    """Achieved FLOP/s of the LeNet-300-100 steps against the measured matmul peak."""
    peak, flops = result["matmul_peak_flops"], result["lenet_step_flops"]
    lines = [
        f"matmul peak (1024x1024 float32, tf.function): {peak / 1e9:.1f} GFLOP/s; "
        f"a LeNet-300-100 step at batch {BATCH_SIZE}: {flops / 1e6:.1f} MFLOP "
        f"({1e3 * flops / peak:.3f} ms at the peak)"
    ]
    for mode, variants in result["keras3"].items():
        for name in ("plain", "masked", "masked_zeroed"):
            e = variants.get(name)
            if e is None:
                continue
            rate = flops / (e["step_ms"] / 1e3)
            lines.append(
                f"jit={mode}: {name} step {e['step_ms']:.3f} ms = {rate / 1e9:.2f} GFLOP/s, "
                f"{100 * rate / peak:.1f}% of the matmul peak"
            )
    return lines


def run_tfmot_child(
    steps, repeats, jit_modes, variants, instances=1, protocol="fits", step_order="shuffled"
):
    """Runs `_tfmot_reference.py` in a fresh process with TF_USE_LEGACY_KERAS=1.

    With `protocol="steps"` pass Keras 3 variants only (the child steps
    Keras 3 models; see `_tfmot_reference.TF_KERAS_VARIANTS`).
    """
    child = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_tfmot_reference.py")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tfmot.json")
        cmd = [sys.executable, child, "--steps", str(steps), "--repeats", str(repeats)]
        cmd += ["--jit", ",".join("on" if j else "off" for j in jit_modes), "--out", path]
        cmd += ["--variants", ",".join(variants), "--instances", str(instances)]
        cmd += ["--protocol", protocol, "--step-order", step_order]
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(path):
            return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-20:]}
        with open(path) as f:
            return json.load(f)


def _row(mode, name, e, note=""):
    iqr = f"[{e['step_iqr_ms'][0]:.2f}-{e['step_iqr_ms'][1]:.2f}]"
    cpu = f"{e['cpu_step_ms']:>7.3f}" if "cpu_step_ms" in e else f"{'-':>7}"
    outside = e.get("outside_steps_ms_per_fit")  # (none in the steps protocol)
    outside = f"{outside:>9.1f}" if outside is not None else f"{'-':>9}"
    return f"{mode:<4} {name:<20} {e['step_ms']:>7.3f} {iqr:<14} {cpu} {outside}   {note}".rstrip()


def _ratio_note(c, what):
    lo, hi = c["paired_iqr"]
    note = f"{c['ratio']:.3f} {what} (per-repeat {c['paired_median']:.3f}, IQR {lo:.3f}-{hi:.3f})"
    if "cpu_ratio" in c:
        note += f"; CPU {c['cpu_ratio']:.3f}"
    return note


def print_table(result):
    cfg = result["config"]
    if cfg.get("protocol", "fits") == "steps":
        how = (
            f"{cfg['repeats']} blocks of {cfg['steps']} cycles, one training step per "
            f"variant and cycle in {cfg.get('step_order', 'alternating')} order "
            "(--protocol steps)"
        )
    else:
        how = (
            f"{cfg['repeats']} interleaved repeats of fit({EPOCHS_PER_FIT} epochs x "
            f"{cfg['steps']} steps) over {cfg['instances']} model instance(s) per variant"
        )
    print(f"LeNet-300-100, batch {BATCH_SIZE}, Adam {LEARNING_RATE}, data={cfg['data']}; {how}")
    print(f"machine: {cfg['machine']}; load average {cfg['loadavg']}")
    head = f"{'jit':<4} {'variant':<20} {'step ms':>7} {'(IQR)':<14} {'CPU ms':>7} "
    head += f"{'outside ms/fit':>14}"
    head += "  step ratio"
    print(head)
    print("-" * 120)
    for mode, variants in result["keras3"].items():
        for name, e in variants.items():
            note = _ratio_note(e["vs_plain"], "vs plain") if "vs_plain" in e else ""
            print(_row(mode, name, e, note))
    if cfg["instances"] > 1:
        print("median step of each model instance (ms):")
        for mode, variants in result["keras3"].items():
            for name, e in variants.items():
                print(
                    f"{mode:<4} {name:<20} "
                    + " ".join(f"{v:.3f}" for v in e["instance_medians_ms"])
                )
    child = result.get("tfmot")
    if child is None:
        return
    print()
    if "error" in child:
        print("tfmot child process failed:\n  " + "\n  ".join(child["error"]))
        return
    print(
        f"child process, TF_USE_LEGACY_KERAS=1: tfmot {child['versions']['tfmot']}, "
        f"tf_keras {child['versions']['tf_keras']}, {child['schedule']}; "
        f"{child['poly_schedule']}; --protocol {child.get('protocol', 'fits')}"
    )
    for mode, variants in child["results"].items():
        for name, e in variants.items():
            if "error" in e:
                print(f"{mode:<4} {name:<20} failed: {e['error']}")
                continue
            note = ""
            if "vs_keras3" in e:
                note = _ratio_note(e["vs_keras3"], "vs keras3")
            elif "vs_tf_keras" in e:
                note = _ratio_note(e["vs_tf_keras"], "vs tf_keras")
            print(_row(mode, name, e, note))


def summary_lines(result):
    budgets = {v.name: v.budget for v in VARIANTS if v.budget is not None}
    budgeted = set(budgets)
    bases = {v.name: v.baseline for v in VARIANTS}
    lines = []
    child = result.get("tfmot", {}).get("results", {})
    for mode, variants in result["keras3"].items():
        for name, e in variants.items():
            if "vs_plain" not in e:
                continue
            r, base = e["vs_plain"]["ratio"], bases.get(name, BASELINE)
            verdict = "A/A control" if name in CONTROLS.values() else "diagnostic"
            if name in budgeted:
                b = budgets[name]
                verdict = f"{'within' if r <= b else 'ABOVE'} the {b:.2f} budget"
            lines.append(f"jit={mode}: {name}/{base} = {r:.3f} ({verdict}; same process)")
            budget = next((v.vs_masked for v in VARIANTS if v.name == name), None)
            if "vs_masked" in e and budget is not None:
                q, c = e["vs_masked"]["ratio"], e["vs_masked"].get("cpu_ratio")
                verdict = f"{'within' if q <= budget else 'ABOVE'} the {budget:.2f} budget"
                cpu = f", CPU time {c:.3f}" if c is not None else ""
                lines.append(f"jit={mode}: {name}/masked = {q:.3f}{cpu} ({verdict}; same process)")
            if "cpu_ratio" in e["vs_plain"]:
                c = e["vs_plain"]["cpu_ratio"]
                lines.append(f"jit={mode}: {name}/{base} CPU time = {c:.3f} (same process)")
            tfmot = child.get(mode, {}).get("tfmot", {})
            if "step_ms" in tfmot and name == "masked":
                q = e["step_ms"] / tfmot["step_ms"]
                lines.append(f"jit={mode}: {name}/tfmot = {q:.3f} (across processes)")
                if "cpu_step_ms" in e and "cpu_step_ms" in tfmot:
                    c = e["cpu_step_ms"] / tfmot["cpu_step_ms"]
                    lines.append(f"jit={mode}: {name}/tfmot CPU time = {c:.3f} (across processes)")
    for mode, variants in child.items():
        for name, e in variants.items():
            if "vs_keras3" in e:
                q, c = e["vs_keras3"]["ratio"], e["vs_keras3"].get("cpu_ratio")
                b = GRADUAL_BUDGET
                verdict = f"{'within' if q <= b else 'ABOVE'} the {b:.2f} budget"
                if name == _tfmot_reference.AA_CONTROL:
                    verdict = "A/A control"
                elif name in _tfmot_reference.DIAGNOSTICS:
                    verdict = "diagnostic"
                cpu = f", CPU time {c:.3f}" if c is not None else ""
                lines.append(
                    f"jit={mode}: {name}/keras3 = {q:.3f}{cpu} ({verdict}; same child process)"
                )
                if name.startswith("masked_gradual"):
                    m = e["vs_keras3"]["mean_ratio"]
                    spread = ""
                    if "mean_paired_range" in e["vs_keras3"]:
                        lo, hi = e["vs_keras3"]["mean_paired_range"]
                        spread = f", per repeat {lo:.3f} to {hi:.3f}"
                    lines.append(
                        f"jit={mode}: {name}/keras3 mean step = {m:.3f} "
                        f"(pruning steps included{spread}; same child process)"
                    )
            if "vs_tf_keras" in e:
                q = e["vs_tf_keras"]["ratio"]
                lines.append(f"jit={mode}: {name}/tf_keras = {q:.3f} (same child process)")
                if "cpu_ratio" in e["vs_tf_keras"]:
                    c = e["vs_tf_keras"]["cpu_ratio"]
                    lines.append(
                        f"jit={mode}: {name}/tf_keras CPU time = {c:.3f} (same child process)"
                    )
    return lines


def only_variants(names):
    """The variants `names` and those their ratios divide by, in table order."""
    by_name = {v.name: v for v in VARIANTS}
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        raise ValueError(f"unknown variants in --only: {unknown}")
    wanted = {BASELINE, *names}
    for name in names:
        wanted.add(by_name[name].baseline)
        if by_name[name].vs_masked is not None:
            wanted.add("masked")
    return [v for v in VARIANTS if v.name in wanted]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="steps per epoch (2 epochs per fit)")
    parser.add_argument("--repeats", type=int, default=20, help="timed fits per variant")
    parser.add_argument(
        "--instances",
        type=int,
        default=1,
        help="model instances per variant, each timed in 2 consecutive repeats in turn "
        "(--repeats must be a multiple of 2 x --instances); more average out a speed "
        "offset a single model might keep for a whole run",
    )
    parser.add_argument(
        "--protocol",
        choices=("fits", "steps"),
        default="fits",
        help="fits (default): interleaved fit calls, the path users run; steps: every "
        "model takes one training step in turn, as fit's loop runs it, so paired "
        "steps are milliseconds apart (the child process then steps its Keras 3 "
        "variants, gradual pruning against plain Keras 3, and runs no tf_keras or tfmot)",
    )
    parser.add_argument(
        "--step-order",
        choices=STEP_ORDERS,
        default="shuffled",
        help="--protocol steps: each cycle's order, a fresh shuffle that never starts "
        "with the model that ended the cycle before (default), or alternating (A B C, "
        "C B A: the first and last model take two steps in a row at each turn)",
    )
    parser.add_argument("--jit", default="off,on", help="jit_compile modes: off, on or off,on")
    parser.add_argument(
        "--variants",
        default=None,
        help="comma list of opt-in diagnostic variants to add; known: "
        + ", ".join([v.name for v in VARIANTS] + list(_tfmot_reference.VARIANT_NAMES)),
    )
    parser.add_argument(
        "--only",
        default=None,
        help="comma list: time only these variants (and their baselines) instead of the "
        "default set; combine with --no-tfmot to skip the child process",
    )
    parser.add_argument("--no-tfmot", dest="tfmot", action="store_false", help="skip tfmot")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a ratio exceeds its variant's budget"
    )
    args = parser.parse_args(argv)
    if args.steps < 3 or args.repeats < 1:
        parser.error("expected --steps >= 3 and --repeats >= 1")
    try:
        check_instances(args.repeats, args.instances)
    except ValueError as error:
        parser.error(str(error))
    if args.protocol == "steps" and args.instances != 1:
        parser.error(
            "expected --instances 1 with --protocol steps (it times one model per "
            f"variant, step by step). Received: --instances {args.instances}"
        )
    try:
        jit_modes = [{"off": False, "on": True}[m.strip()] for m in args.jit.split(",")]
    except KeyError:
        parser.error(f"expected --jit off, on or off,on. Received: {args.jit}")
    child_variants = list(_tfmot_reference.DEFAULT_VARIANTS)
    if args.only and args.variants:
        parser.error("expected --only or --variants, not both")
    if args.only:
        try:
            variants = only_variants(args.only.split(","))
        except ValueError as error:
            parser.error(str(error))
    elif args.variants:
        wanted = {BASELINE, *args.variants.split(",")}
        unknown = wanted - {v.name for v in VARIANTS} - set(_tfmot_reference.VARIANT_NAMES)
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}")
        variants = [v for v in VARIANTS if v.name in wanted or v.default]
        child_variants += [n for n in _tfmot_reference.VARIANT_NAMES if n in wanted]
    else:
        variants = [v for v in VARIANTS if v.default]

    load = [os.getloadavg()[0]]
    if args.protocol == "steps":
        keras3, source = measure_steps(
            variants, jit_modes, args.steps, args.repeats, order=args.step_order
        )
    else:
        keras3, source = measure(variants, jit_modes, args.steps, args.repeats, args.instances)
    result = {
        "config": {
            "protocol": args.protocol,
            **({"step_order": args.step_order} if args.protocol == "steps" else {}),
            "steps": args.steps,
            "repeats": args.repeats,
            "instances": args.instances,
            "epochs_per_fit": EPOCHS_PER_FIT,
            "batch_size": BATCH_SIZE,
            "data": source,
            "machine": (
                f"{_cpu_name()}, {os.cpu_count()} cores, {platform.system()}, "
                f"Python {platform.python_version()}, TF {tf.__version__}, "
                f"Keras {keras.__version__}"
            ),
            "variants": {v.name: v.description for v in variants},
        },
        "keras3": keras3,
    }
    if args.tfmot:
        if args.protocol == "steps":  # gradual pruning against plain Keras 3, step by step
            child_variants = [
                n for n in child_variants if n not in _tfmot_reference.TF_KERAS_VARIANTS
            ]
        result["tfmot"] = run_tfmot_child(
            args.steps,
            args.repeats,
            jit_modes,
            child_variants,
            args.instances,
            args.protocol,
            args.step_order,
        )
    result["matmul_peak_flops"] = matmul_peak()
    result["lenet_step_flops"] = lenet_step_flops()
    load.append(os.getloadavg()[0])
    result["config"]["loadavg"] = f"{load[0]:.2f} before, {load[1]:.2f} after"
    result["summary"] = summary_lines(result) + flops_lines(result)
    result["tfmot_imported_in_main_process"] = "tensorflow_model_optimization" in sys.modules
    print_table(result)
    print()
    for line in result["summary"]:
        print(line)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    if args.check:
        budgets = {v.name: v.budget for v in VARIANTS if v.budget is not None}
        over = [
            name
            for m in keras3.values()
            for name, e in m.items()
            if "vs_plain" in e and name in budgets and e["vs_plain"]["ratio"] > budgets[name]
        ]
        return 1 if over else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
