"""tfmot reference timings for `overhead.py`, run in its own process.

`overhead.py` starts this script with `TF_USE_LEGACY_KERAS=1`: importing
`tensorflow_model_optimization` switches `tf.keras` to legacy Keras (tf_keras)
for the whole process, so it must never happen in the main benchmark.
Importing this module is harmless; only `main()` imports TensorFlow and tfmot.

Variants, timed interleaved on the same LeNet-300-100 set-up as `overhead.py`:

- `tf_keras`: plain `tf_keras.layers.Dense` (this process's own baseline);
- `tfmot`: `tfmot.sparsity.keras.prune_low_magnitude` on that network with
  `ConstantSparsity(0.5, begin_step=0, frequency=100)` and `UpdatePruningStep`;
- `masked_gradual`: Keras 3 `keras_lth.MaskedDense` + `PruningScheduler`
  with the same tfmot schedule (gradual pruning through the batch hook);
- `keras3`: plain Keras 3 `keras.layers.Dense`, no callback: the baseline of
  the Keras 3 variants in this process (`vs_keras3`);
- `keras3_again`: a second plain Keras 3 model, the A/A control of this
  process: its `vs_keras3` distance from 1 is the noise of the child's run;
- `masked_gradual_poly`: `masked_gradual` with tfmot's `PolynomialDecay`
  (0 to 0.8 over `POLY_END` steps, every `FREQUENCY` steps; the timed fits
  run before its end, so the masks keep changing);
- `masked_gradual_poly_zeroed`: `masked_gradual_poly` with
  `MaskedDense(pruned_values="zeroed")`;
- `masked_gradual_fast` (opt-in): the same with a prototype of a cheaper
  batch hook (see `_fast_gradual_scheduler`);
- `masked_gradual_idle` (opt-in): `masked_gradual_poly` whose schedule
  begins after the timed fits (`IDLE_BEGIN`): the batch hook and the run's
  set-up without a pruning step;
- `masked_iterative` (opt-in): `overhead.py`'s `masked` (iterative pruning,
  no batch hook) in this process, to tell this process's cost from gradual
  pruning's.

`--protocol steps` times the Keras 3 variants only (every model one
training step in turn, as `overhead.py --protocol steps` does in the main
process; `keras3` is then the baseline): a gradual pruning step then runs
between the same plain steps as the step it is paired with, so its cost is
seen per block of steps, the slow pruning steps in the mean.

Usage (normally through `overhead.py`):
`TF_USE_LEGACY_KERAS=1 python benchmarks/_tfmot_reference.py --out t.json`
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _overhead_common import (
    BATCH_SIZE,
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

SPARSITY = 0.5
FREQUENCY = 100
POLY_END = 100_000
IDLE_BEGIN = 10**9  # a step no benchmark reaches
BASELINE = "tf_keras"
KERAS3_BASELINE = "keras3"
DEFAULT_VARIANTS = (
    "tf_keras",
    "tfmot",
    "masked_gradual",
    "keras3",
    "keras3_again",
    "masked_gradual_poly",
    "masked_gradual_poly_zeroed",
)
AA_CONTROL = "keras3_again"
TF_KERAS_VARIANTS = ("tf_keras", "tfmot")  # not in the steps protocol
# Opt-in diagnostics, without a budget: where gradual pruning's cost comes from.
DIAGNOSTICS = ("masked_gradual_fast", "masked_gradual_idle", "masked_iterative")
VARIANT_NAMES = DEFAULT_VARIANTS + DIAGNOSTICS


def _fast_gradual_scheduler(lth, schedule):
    """Prototype of a cheaper gradual-pruning batch hook for `PruningScheduler`.

    The current hook reads `optimizer.iterations` (a device sync) and calls the
    tfmot schedule eagerly (about ten small TF ops) at every batch end. For
    schedules with tfmot's step semantics (`begin_step`, `end_step`,
    `frequency`, as `ConstantSparsity` and `PolynomialDecay`), whether a step
    prunes is plain integer arithmetic; the schedule itself is then called only
    on pruning steps, and the step is counted in Python from the epoch's first
    iteration.
    """
    from keras import ops

    class FastGradualScheduler(lth.PruningScheduler):
        def on_epoch_begin(self, epoch, logs=None):
            super().on_epoch_begin(epoch, logs)
            self._first_iteration = int(ops.convert_to_numpy(self.model.optimizer.iterations))

        def on_train_batch_end(self, batch, logs=None):
            self._fast_update(self._first_iteration + batch + 1)

        def _fast_update(self, upto):
            s, gradual = self.schedule, self._gradual
            due = [
                step
                for step in range(gradual.next_step, upto + 1)
                if step >= s.begin_step
                and (s.end_step < 0 or step <= s.end_step)
                and (step - s.begin_step) % s.frequency == 0
            ]
            if due:  # evaluate the schedule at the last due step only
                gradual.next_step = due[-1]
                gradual.update(due[-1])
            gradual.next_step = upto + 1

    return FastGradualScheduler(schedule, verbose=0)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--jit", default="off,on")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--protocol", choices=("fits", "steps"), default="fits")
    parser.add_argument("--step-order", choices=STEP_ORDERS, default="shuffled")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    try:
        check_instances(args.repeats, args.instances)
    except ValueError as error:
        parser.error(str(error))
    steps_protocol = args.protocol == "steps"
    wanted = set(args.variants.split(","))
    unknown = sorted(wanted - set(VARIANT_NAMES))
    if unknown:
        parser.error(f"expected --variants among {', '.join(VARIANT_NAMES)}. Received: {unknown}")
    if steps_protocol:
        tf_keras_asked = sorted(wanted & set(TF_KERAS_VARIANTS))
        if tf_keras_asked:
            parser.error(
                "expected Keras 3 variants only with --protocol steps (it steps Keras 3 "
                f"models). Received: {', '.join(tf_keras_asked)}"
            )
        if args.instances != 1:
            parser.error(
                f"expected --instances 1 with --protocol steps. Received: {args.instances}"
            )

    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is first imported
    import keras  # Keras 3, for the keras_lth variants only
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    import keras_lth as lth

    class TfKerasClock(StepClock, tf_keras.callbacks.Callback):
        pass

    class KerasClock(StepClock, keras.callbacks.Callback):
        pass

    def schedule():
        return tfmot.sparsity.keras.ConstantSparsity(SPARSITY, begin_step=0, frequency=FREQUENCY)

    def tf_keras_model(jit, prune):
        tf_keras.utils.set_random_seed(0)
        model = tf_keras.Sequential(
            [tf_keras.Input((784,))]
            + [
                tf_keras.layers.Dense(u, activation=None if i == 2 else "relu")
                for i, u in enumerate(UNITS)
            ]
        )
        if prune:
            model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule())
        model.compile(
            tf_keras.optimizers.Adam(LEARNING_RATE),
            tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit,
        )
        return model

    def poly_schedule():
        return tfmot.sparsity.keras.PolynomialDecay(
            0.0, 0.8, begin_step=0, end_step=POLY_END, frequency=FREQUENCY
        )

    def idle_schedule():
        return tfmot.sparsity.keras.PolynomialDecay(
            0.0, 0.8, begin_step=IDLE_BEGIN, end_step=IDLE_BEGIN + POLY_END, frequency=FREQUENCY
        )

    def iterative_scheduler():  # overhead.py's `_iterative_scheduler`
        schedule = lth.IterativeSchedule(**ITERATIVE_SCHEDULE)
        return [lth.PruningScheduler(schedule, rewind="init", verbose=0)]

    def keras3_model(jit, layer=lth.MaskedDense):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((784,))]
            + [
                layer(u, activation=None if i == 2 else "relu", name=name)
                for i, (u, name) in enumerate(zip(UNITS, LAYER_NAMES))
            ]
        )
        model.compile(
            keras.optimizers.Adam(LEARNING_RATE),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit,
        )
        return model

    # name -> (model factory, callbacks factory, clock)
    table = {
        "tf_keras": (lambda jit: tf_keras_model(jit, False), list, TfKerasClock()),
        "tfmot": (
            lambda jit: tf_keras_model(jit, True),
            lambda: [tfmot.sparsity.keras.UpdatePruningStep()],
            TfKerasClock(),
        ),
        "masked_gradual": (
            keras3_model,
            lambda: [lth.PruningScheduler(schedule(), verbose=0)],
            KerasClock(),
        ),
        "keras3": (lambda jit: keras3_model(jit, keras.layers.Dense), list, KerasClock()),
        AA_CONTROL: (lambda jit: keras3_model(jit, keras.layers.Dense), list, KerasClock()),
        "masked_gradual_poly": (
            keras3_model,
            lambda: [lth.PruningScheduler(poly_schedule(), verbose=0)],
            KerasClock(),
        ),
        "masked_gradual_poly_zeroed": (
            lambda jit: keras3_model(
                jit, functools.partial(lth.MaskedDense, pruned_values="zeroed")
            ),
            lambda: [lth.PruningScheduler(poly_schedule(), verbose=0)],
            KerasClock(),
        ),
        "masked_gradual_idle": (
            keras3_model,
            lambda: [lth.PruningScheduler(idle_schedule(), verbose=0)],
            KerasClock(),
        ),
        "masked_iterative": (keras3_model, iterative_scheduler, KerasClock()),
        "masked_gradual_fast": (
            keras3_model,
            lambda: [_fast_gradual_scheduler(lth, schedule())],
            KerasClock(),
        ),
    }
    wanted.add(KERAS3_BASELINE if steps_protocol else BASELINE)
    variants = {name: spec for name, spec in table.items() if name in wanted}

    x, y, source = load_data(args.steps)
    jit_modes = [{"off": False, "on": True}[m.strip()] for m in args.jit.split(",")]
    runs, errors = {}, {}
    for jit in jit_modes:
        for name, (make, callbacks, clock) in variants.items():
            try:
                runs[(jit, name)] = warm_instances(
                    functools.partial(make, jit), callbacks, clock, x, y, args.instances
                )
            except Exception as e:  # noqa: BLE001 (e.g. an op XLA cannot compile)
                errors[(jit, name)] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    timed_models = {}
    if steps_protocol:
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH_SIZE).repeat()
        step_runs = {
            key: StepRun(model, variants[key[1]][1](), dataset, args.steps * args.repeats)
            for key, [(model, _)] in runs.items()
        }
        steps_s, cpu_s, after_itself = time_steps(
            step_runs, args.steps, args.repeats, warmup_steps=5, order=args.step_order
        )
        fits_s = {key: None for key in step_runs}
        for key, run in step_runs.items():
            timed_models[key] = {
                **after_itself_entry(steps_s[key], after_itself[key]),
                **run.masks_when_timed(),
            }
            run.close()
    else:
        steps_s, cpu_s, fits_s = time_interleaved(
            runs,
            x,
            y,
            args.repeats,
            args.instances,
            lambda key: variants[key[1]][1](),
            lambda key: variants[key[1]][2],
        )

    results = {}
    for jit in jit_modes:
        mode = results.setdefault("on" if jit else "off", {})
        for name in variants:
            key = (jit, name)
            if key in errors:
                mode[name] = {"error": errors[key]}
            elif key in runs:
                mode[name] = summarize(steps_s[key], fits_s[key], cpu_s[key], args.instances)
                mode[name].update(timed_models.get(key, {}))
        if "step_ms" in mode.get(BASELINE, {}):
            for name, entry in mode.items():
                if name != BASELINE and "step_ms" in entry:
                    entry["vs_tf_keras"] = compare(entry, mode[BASELINE])
        if "step_ms" in mode.get(KERAS3_BASELINE, {}):
            for name, entry in mode.items():
                if (name.startswith("masked") or name == AA_CONTROL) and "step_ms" in entry:
                    entry["vs_keras3"] = compare(entry, mode[KERAS3_BASELINE])
    out = {
        "protocol": args.protocol,
        **({"step_order": args.step_order} if steps_protocol else {}),
        "data": source,
        "batch_size": BATCH_SIZE,
        "instances": args.instances,
        "schedule": f"ConstantSparsity({SPARSITY}, begin_step=0, frequency={FREQUENCY})",
        "poly_schedule": (
            f"PolynomialDecay(0.0, 0.8, begin_step=0, end_step={POLY_END}, frequency={FREQUENCY})"
        ),
        "versions": {
            "tfmot": tfmot.__version__,
            "tf_keras": tf_keras.__version__,
            "tensorflow": tf.__version__,
        },
        "results": results,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
