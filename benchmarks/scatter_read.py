"""What a scatter into a TensorFlow variable does to the training steps after it.

A sparse write (`tf.Variable.scatter_nd_update`) switches a resource
variable to copy-on-read mode: from then on every dense read of it copies
its buffer. This script times a jit-off training step of LeNet-300-100
(Adam, batch 60) on fresh variables, then again after one scatter of a few
positions into each kernel and each of Adam's slots (what 2d6f33a's pruning
step did), and after the same positions were written by assigning the
variables whole (what the pruning step does), three models timed in turn.

Usage: `python benchmarks/scatter_read.py` (TensorFlow backend).
"""

from __future__ import annotations

import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
import tensorflow as tf

import keras_lth as lth

STEPS, REPEATS = 100, 7


def _model():
    model = lth.models.lenet_300_100(seed=0)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=False,
    )
    return model


def _write(model, how):
    """Writes a few positions of every kernel and Adam slot: by a scatter, or whole."""
    kernels = [w for w in model.trainable_variables if len(w.shape) == 2]
    slots = [v for v in model.optimizer.variables if len(v.shape) == 2]
    positions = np.stack([np.arange(5), np.arange(5)], axis=-1)
    for variable in kernels + slots:
        if how == "scatter":
            variable.value.scatter_nd_update(positions, tf.zeros(5, variable.dtype))
        else:
            current = np.array(keras.ops.convert_to_numpy(variable))
            current[positions[:, 0], positions[:, 1]] = 0
            variable.assign(current)


def main():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60 * STEPS, 784)).astype("float32")
    y = rng.integers(0, 10, size=60 * STEPS).astype("int32")
    models = {}
    for how in ("none", "scatter", "whole"):
        model = _model()
        model.fit(x[:60], y[:60], batch_size=60, epochs=1, verbose=0)  # builds Adam's slots
        if how != "none":
            _write(model, how)
        model.fit(x, y, batch_size=60, epochs=1, verbose=0)  # warm-up
        models[how] = model
    times = {how: [] for how in models}
    for _ in range(REPEATS):  # the three models in turn
        for how, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, batch_size=60, epochs=1, verbose=0)
            times[how].append(1e3 * (time.perf_counter() - start) / STEPS)
    fresh = statistics.median(times["none"])
    for how, ms in times.items():
        median = statistics.median(ms)
        print(
            f"{how:8s} {median:.3f} ms per step (median of {REPEATS} fits of {STEPS} steps), "
            f"{median / fresh:.3f} of fresh variables"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
