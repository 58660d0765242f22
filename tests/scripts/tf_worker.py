"""One worker of `tests/test_multiprocess.py`: `PruningScheduler` on TensorFlow workers.

Started with `KERAS_BACKEND=tensorflow`, once per process of a run:

    python tests/scripts/tf_worker.py PROCESS_ID PROCESSES PORTS OUT_DIR

With `PROCESSES = 2` the process is worker `PROCESS_ID` of a
`tf.distribute.MultiWorkerMirroredStrategy` whose workers listen on
127.0.0.1 at the comma-separated `PORTS` (`TF_CONFIG`), after
`keras_lth.distributed.patch_multi_worker_fit()`; the dataset of global
batches of `BATCH` examples is sharded by `tf.data` (each worker feeds
half of every global batch). With `PROCESSES = 1` the process trains
alone on the same global batches. The runs are those of `jax_worker.py`:
`iterative` (with `backup_dir` and a spy of its files), `reinit` (no
seed), `gradual` (`PolynomialDecay`) and `reintroduce` (must fail with a
ValueError on two workers); the masks and raw weights go to
`OUT_DIR/worker{PROCESS_ID}.npz`, the other findings to
`OUT_DIR/worker{PROCESS_ID}.json`.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH = 16
N = 64  # 4 global batches per epoch


def main():
    pid, processes, ports, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if processes > 1:
        workers = [f"127.0.0.1:{port}" for port in ports.split(",")]
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": pid}}
        )
    import keras
    import numpy as np
    import tensorflow as tf

    import keras_lth as lth
    from keras_lth.layers import masked_weights

    if processes > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        lth.distributed.patch_multi_worker_fit()
        lth.distributed.patch_multi_worker_fit()  # a second call does nothing
    else:
        strategy = tf.distribute.get_strategy()
    import tensorflow_model_optimization as tfmot  # after Keras 3: its schedules only

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 12)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(12, 3)), axis=1).astype("int32")
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH)

    def model():
        with strategy.scope():
            m = keras.Sequential(
                [
                    keras.Input((12,)),
                    lth.MaskedDense(24, activation="relu", name="h1"),
                    lth.MaskedDense(16, activation="relu", name="h2"),
                    lth.MaskedDense(3, name="out"),
                ]
            )
            init = np.random.default_rng(1)  # the same weights in every run and process
            for v in m.trainable_variables:
                v.assign(init.normal(scale=0.3, size=v.shape).astype("float32"))
            m.compile(
                keras.optimizers.Adam(1e-2),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
        return m

    arrays = {}
    found = {}

    def keep(name, m, scheduler):
        for w in masked_weights(m):
            arrays[f"{name}/{w.key}/mask"] = np.asarray(w.mask.numpy())
            arrays[f"{name}/{w.key}/raw"] = np.asarray(w.variable.numpy())
        found[name] = scheduler.rounds if not scheduler.gradual else lth.density(m)

    def fit(m, scheduler, epochs, *extra):
        m.fit(data, epochs=epochs, verbose=0, callbacks=[scheduler, *extra])

    backup = os.path.join(out, f"backup{pid}")
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(len(os.listdir(backup)) if os.path.isdir(backup) else 0)

    m = model()
    found["process_count"] = lth.distributed.process_count(m)
    found["process_index"] = lth.distributed.process_index(m)
    schedule = lth.IterativeSchedule(rounds=3, epochs_per_round=2, rate=0.4)
    s = lth.PruningScheduler(schedule, scope="global", seed=3, backup_dir=backup, verbose=0)
    fit(m, s, s.total_epochs, Spy())
    keep("iterative", m, s)
    found["backup_files"] = seen

    m = model()
    s = lth.PruningScheduler(
        lth.IterativeSchedule(rounds=2, epochs_per_round=1, rate=0.5), rewind="reinit", verbose=0
    )
    fit(m, s, s.total_epochs)
    keep("reinit", m, s)
    found["reinit_seed"] = s._rewinding.run_seed

    m = model()
    schedule = tfmot.sparsity.keras.PolynomialDecay(
        0.0, 0.75, begin_step=2, end_step=10, frequency=2
    )
    s = lth.PruningScheduler(schedule, verbose=0)
    fit(m, s, 3)
    keep("gradual", m, s)

    m = model()
    s = lth.PruningScheduler(
        lth.IterativeSchedule(rounds=2, epochs_per_round=1, rate=0.5),
        reintroduce=lth.DoublePruning(),
        verbose=0,
    )
    try:
        fit(m, s, s.total_epochs)
        found["reintroduce"] = None
    except ValueError as e:
        found["reintroduce"] = str(e)

    np.savez(os.path.join(out, f"worker{pid}.npz"), **arrays)
    with open(os.path.join(out, f"worker{pid}.json"), "w") as f:
        json.dump(found, f)


if __name__ == "__main__":
    main()
