"""What the MNIST input pipeline costs a training step, inside `fit`.

Times LeNet-300-100 (batch 60, Adam 1.2e-3, `steps_per_execution` = one
epoch, as `keras-lth bench` trains it) on the embedded MNIST-5k training
split (3,500 digits) fed by three pipelines that give the same batches:

- `per_batch`: the pipeline of keras-lth up to 0.2 (shuffle the uint8
  digits, batch, scale each batch in a parallel `map`, `AUTOTUNE` prefetch);
- `library`: `keras_lth.data.mnist(...).train` (scaled once up front,
  shuffled and batched on one private thread);
- `in_memory`: one epoch of `per_batch` cached in memory, replayed in the
  same order every epoch: no input work at all (the floor; not a usable
  training pipeline, it never reshuffles).

Each repeat runs `--epochs` epochs per pipeline in alternating order (A B C,
C B A, ...) on three identical models; a step is an epoch's wall time /
its steps (the first epoch of each `fit` is left out). The JSON has every
per-epoch time, the medians and the ratios to `in_memory`.

Usage:

```
python benchmarks/mnist_input.py --out docs/results/pipeline/mnist_input.json
python benchmarks/mnist_input.py --repeats 1 --epochs 2   # smoke run
```
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import tensorflow as tf

import keras_lth as lth

BATCH_SIZE = 60
SEED = 0
PIPELINES = ("per_batch", "library", "in_memory")


def pipelines(seed=SEED):
    """The three training pipelines, and the steps of one epoch."""
    mnist = importlib.import_module("keras_lth.data.mnist")  # `lth.data.mnist` is the function
    splits = lth.data.mnist(batch_size=BATCH_SIZE, seed=seed)
    (x, y), _ = mnist._embedded_splits()
    train_idx, _ = lth.data.common.carve_validation(len(y), 500, seed)
    xs, ys = x[train_idx], y[train_idx].astype("int32")
    per_batch = tf.data.Dataset.from_tensor_slices((xs, ys))
    per_batch = per_batch.shuffle(len(ys), seed=seed, reshuffle_each_iteration=True)
    per_batch = per_batch.batch(BATCH_SIZE).map(
        lambda a, b: mnist._scale(a, b, True),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    per_batch = per_batch.prefetch(tf.data.AUTOTUNE)
    steps = -(-len(ys) // BATCH_SIZE)
    return {"per_batch": per_batch, "library": splits.train, "in_memory": per_batch.cache()}, steps


def build_model(steps):
    keras.utils.set_random_seed(SEED)
    model = lth.models.lenet_300_100(dense=True)
    model.compile(
        keras.optimizers.Adam(1.2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps,
    )
    return model


class _EpochClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def measure(repeats, epochs):
    data, steps = pipelines()
    models = {name: build_model(steps) for name in PIPELINES}
    for name in PIPELINES:  # warm-up: tracing, the cache's first pass
        models[name].fit(data[name], epochs=2, verbose=0)
    per_step = {name: [] for name in PIPELINES}
    for r in range(repeats):
        for name in PIPELINES if r % 2 == 0 else PIPELINES[::-1]:
            clock = _EpochClock()
            models[name].fit(data[name], epochs=epochs + 1, verbose=0, callbacks=[clock])
            per_step[name] += [1e3 * t / steps for t in clock.times[1:]]
    medians = {name: statistics.median(v) for name, v in per_step.items()}
    return {
        "steps_per_epoch": steps,
        "step_ms": medians,
        "vs_in_memory": {name: medians[name] / medians["in_memory"] for name in PIPELINES},
        "library_vs_per_batch": medians["library"] / medians["per_batch"],
        "epoch_step_ms": {name: [round(v, 4) for v in vals] for name, vals in per_step.items()},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=8, help="rounds over the pipelines")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs per fit")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.epochs < 1:
        parser.error("expected --repeats >= 1 and --epochs >= 1")
    load = os.getloadavg()[0]
    result = measure(args.repeats, args.epochs)
    result["config"] = {
        "repeats": args.repeats,
        "epochs": args.epochs,
        "batch_size": BATCH_SIZE,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"TF {tf.__version__}, Keras {keras.__version__}",
        "loadavg": f"{load:.2f} before, {os.getloadavg()[0]:.2f} after",
    }
    for name in PIPELINES:
        print(
            f"{name:<10} {result['step_ms'][name]:7.3f} ms/step "
            f"({result['vs_in_memory'][name]:.3f}x in_memory)"
        )
    print(f"library / per_batch = {result['library_vs_per_batch']:.3f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
