"""What the benchmark's own speed is measured against, and its retracing counter.

- `bare_step_ms`: one bare training step of the benchmark's network (plain
  Keras layers, no masks): forward, loss, backward and Adam's update in one
  `tf.function` on a batch held in memory, without `fit`, callbacks or a data
  pipeline. `keras-lth bench` measures it at its start and end, in the same
  process as the runs, and prints its own wall time per training step
  against it.
- `trace_counts` and `traced_functions`: how often the model's train and
  test functions were traced, so that a function traced again round after
  round shows up in the results. A run may replace its training function
  (a `PruningScheduler` run retraces it at its first pruning), so the
  benchmark's recorder sums the traces of every function it saw during the
  run (`count_traces`).
"""

from __future__ import annotations

import time

import numpy as np


def bare_train_step(model, learning_rate):
    """One bare training step of `model`, as a `tf.function` of `(x, y)`.

    Adam on `model.trainable_variables` and sparse categorical cross-entropy on
    logits, with no `fit` around it: the step that `bare_step_ms` times and
    whose traced graph the overhead tests inspect.

    Args:
        model: An uncompiled Keras model (its weights train; pass a copy).
        learning_rate: Adam's learning rate.
    """
    import keras
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    weights = model.trainable_variables
    optimizer.build(weights)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply(tape.gradient(loss, weights), weights)
        return loss

    return step


def bare_step_ms(model, batch_size, learning_rate, steps=200, repeats=5, seed=0) -> float:
    """Median wall time (ms) of one bare training step of `model`.

    Args:
        model: An uncompiled Keras model (its weights train; pass a copy).
        batch_size: Examples per step.
        learning_rate: Adam's learning rate.
        steps: Steps per timed repeat. Defaults to `200`.
        repeats: Timed repeats; the median is returned. Defaults to `5`.
        seed: Seed of the random batch. Defaults to `0`.
    """
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    shape = (batch_size,) + tuple(model.input_shape[1:])
    x = tf.constant(rng.random(shape, dtype=np.float32))
    classes = int(model.output_shape[-1])
    y = tf.constant(rng.integers(0, classes, batch_size).astype("int32"))
    step = bare_train_step(model, learning_rate)

    for _ in range(20):  # trace and warm up
        step(x, y)
    float(step(x, y))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps - 1):
            step(x, y)
        float(step(x, y))  # waits for the last step
        times.append((time.perf_counter() - start) / steps)
    return 1e3 * float(np.median(times))


def traced_functions(model) -> dict:
    """`{"train": [...], "test": [...]}`: the `tf.function`s inside the
    model's current train and test functions; no key for a function that
    is not built.

    Keras keeps its `tf.function`s inside the closures of `train_function`
    and `test_function` (Keras 3), or makes them the functions themselves
    (tf_keras); this is the one place that looks inside them
    (`tests/test_bench.py` checks it against a known count).
    """
    out = {}
    for name in ("train", "test"):
        fn = getattr(model, f"{name}_function", None)
        if fn is not None:
            out[name] = _tf_functions(fn)
    return out


def count_traces(functions) -> dict:
    """`{name: traces}` summed over `functions`, `{name: [tf.function]}`."""
    return {
        name: sum(f.experimental_get_tracing_count() for f in fns)
        for name, fns in functions.items()
    }


def trace_counts(model) -> dict:
    """`{"train": n, "test": m}`: traces of the model's current train and
    test functions (every `tf.function` they call, summed); `{}` for a
    function that is not built. A function the model replaced (and its
    traces) is not counted: see `RecorderLogic`, which counts them all.
    """
    return count_traces(traced_functions(model))


def _tf_functions(fn, depth=0, seen=None) -> list:
    seen = set() if seen is None else seen
    if fn is None or id(fn) in seen or depth > 4:
        return []
    seen.add(id(fn))
    if hasattr(fn, "experimental_get_tracing_count"):
        return [fn]
    found = []
    for cell in getattr(fn, "__closure__", None) or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if callable(value):
            found += _tf_functions(value, depth + 1, seen)
    return found
