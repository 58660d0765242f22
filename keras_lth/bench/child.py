"""The benchmark's worker process, and the tfmot methods' training.

`python -m keras_lth.bench.child` is a worker (`keras_lth.bench.workers`):
it reads the plan, then one run key per line on stdin, and prints one
`@@keras-lth-bench {line}` per finished run on stdout.

Importing `tensorflow_model_optimization` sets `TF_USE_LEGACY_KERAS=1` and so
turns `tf.keras` into legacy Keras (tf_keras) for the process and its
children. The main benchmark process therefore never imports it; the tfmot
methods train in workers started with `TF_USE_LEGACY_KERAS=1` already set
(with `--jobs 1` too), under the same conditions:

- `gradual`: Keras 3 `MaskedDense` + `PruningScheduler` with a tfmot
  `PolynomialDecay` (see `runner._scheduler`);
- `tfmot`: `tfmot.sparsity.keras.prune_low_magnitude` on the same network
  built in tf_keras with the very same initial weights (copied from the
  Keras 3 model that `gradual` builds for that seed), the same data order,
  optimizer and schedule: the reference implementation.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def train_tfmot(plan, run, verbose):
    """The `tfmot` method's training; returns `(records, versions, recorder)`."""
    import keras
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from keras_lth.bench.recorder import RecorderLogic, eval_chunks
    from keras_lth.bench.runner import _fit, _levels, build_model, gradual_steps, load_data

    class TfKerasRecorder(RecorderLogic, tf_keras.callbacks.Callback):
        pass

    s = plan.settings
    keras.utils.set_random_seed(run.seed)  # the same draws as the gradual run
    train, val, test, info = load_data(s, run.seed)
    source = build_model(s, info)
    layers = [
        tf_keras.layers.Dense(
            l.units, activation=keras.activations.serialize(l.activation), name=l.name
        )
        for l in source.layers
    ]
    model = tf_keras.Sequential([tf_keras.Input(info.input_shape)] + layers)
    for new, old in zip(layers, source.layers):
        new.set_weights(old.effective_weights())
    schedule = tfmot.sparsity.keras.PolynomialDecay(**gradual_steps(plan, run))
    model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    model.compile(
        tf_keras.optimizers.Adam(s.learning_rate),
        tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    recorder = TfKerasRecorder(
        validation=eval_chunks(val),
        test=eval_chunks(test),
        steps_per_epoch=plan.steps_per_epoch,
        steps_per_pass=plan.steps_per_pass,
        levels=_levels(plan, run),
        density_fn=tfmot_density,
    )
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), recorder]
    _fit(model, plan, train, plan.epochs(run), callbacks, verbose)
    versions = {"tfmot": tfmot.__version__, "tf_keras": tf_keras.__version__}
    return recorder.records, versions, recorder


def tfmot_density(model):
    """Overall and per-layer share of kernel weights kept by tfmot's masks."""
    import numpy as np

    kept, sizes = {}, {}
    for layer in model.layers:
        for weight, mask, _ in getattr(layer, "pruning_vars", ()):
            if "kernel" not in weight.name:
                continue
            name = layer.layer.name
            kept[name] = float(np.sum(mask.numpy()))
            sizes[name] = int(np.prod(mask.shape))
    overall = sum(kept.values()) / sum(sizes.values())
    return overall, {n: kept[n] / sizes[n] for n in kept}


def main():
    """The worker loop: the plan on the first line of stdin, then one run per
    line; one `CHILD_PREFIX` line per finished run on stdout; ends with its
    input."""
    # Ctrl-C reaches the whole process group: the main process handles it
    # (it ends the workers), so a worker prints no traceback of its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _end_with_parent()
    from keras_lth.bench import workers

    workers.apply_threads()  # before TensorFlow runs anything
    request = json.loads(sys.stdin.readline())
    from keras_lth.bench.runner import Plan, run_one

    plan = Plan.from_config(request["plan"])
    runs = {tuple(r.key.values()): r for r in plan.runs()}
    for text in sys.stdin:
        key = json.loads(text)["run"]
        line = run_one(plan, runs[tuple(key.values())], request["verbose"])
        print(workers.CHILD_PREFIX + json.dumps(line), flush=True)


def _end_with_parent():
    """Asks Linux to end this worker when the main process dies (a SIGKILL
    leaves it no time to stop its workers)."""
    parent = os.environ.get("KERAS_LTH_BENCH_PARENT")
    if not sys.platform.startswith("linux") or parent is None:
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # it died before the request took effect
        os._exit(1)


if __name__ == "__main__":
    main()
