"""The benchmark's child process for the methods that import tfmot.

Importing `tensorflow_model_optimization` sets `TF_USE_LEGACY_KERAS=1` and so
turns `tf.keras` into legacy Keras (tf_keras) for the process and its
children. The main benchmark process therefore never imports it; it starts
`python -m keras_lth.bench.child` with `TF_USE_LEGACY_KERAS=1` already set,
sends a JSON request on stdin (settings, methods, the runs' keys) and reads
one `@@keras-lth-bench {line}` per finished run on stdout. Both methods run
here, under the same conditions:

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
import sys


def train_tfmot(plan, run, verbose):
    """The `tfmot` method's training; returns `(records, versions)`."""
    import keras
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from keras_lth.bench.recorder import RecorderLogic
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
        new.set_weights(
            [keras.ops.convert_to_numpy(old.kernel), keras.ops.convert_to_numpy(old.bias)]
        )
    schedule = tfmot.sparsity.keras.PolynomialDecay(**gradual_steps(plan, run))
    model = tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)
    model.compile(
        tf_keras.optimizers.Adam(s.learning_rate),
        tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    recorder = TfKerasRecorder(
        test_data=test,
        steps_per_epoch=plan.steps_per_epoch,
        steps_per_pass=plan.steps_per_pass,
        levels=_levels(plan, run),
        density_fn=tfmot_density,
    )
    callbacks = [tfmot.sparsity.keras.UpdatePruningStep(), recorder]
    _fit(model, plan, train, val, plan.epochs(run), callbacks, verbose)
    versions = {"tfmot": tfmot.__version__, "tf_keras": tf_keras.__version__}
    return recorder.records, versions


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
    if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise SystemExit(
            "keras_lth.bench.child must run with TF_USE_LEGACY_KERAS=1 (it imports "
            "tensorflow-model-optimization); keras_lth.bench.runner starts it so."
        )
    request = json.loads(sys.stdin.read())
    from keras_lth.bench.presets import Settings
    from keras_lth.bench.runner import CHILD_PREFIX, make_plan, run_one

    values = dict(request["settings"])
    for name in ("densities", "levels"):
        if values.get(name) is not None:
            values[name] = tuple(values[name])
    plan = make_plan(Settings(**values), request["methods"])
    runs = {tuple(r.key.values()): r for r in plan.runs()}
    for key in request["runs"]:
        line = run_one(plan, runs[tuple(key.values())], request["verbose"])
        print(CHILD_PREFIX + json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
