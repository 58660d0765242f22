"""One worker of `tests/test_multiprocess.py`: `PruningScheduler` on JAX processes.

Started with `KERAS_BACKEND=jax`, once per process of a run:

    python tests/scripts/jax_worker.py PROCESS_ID PROCESSES PORT OUT_DIR

With `PROCESSES > 1` the process joins the others through
`keras.distribution.initialize` (coordinator on 127.0.0.1:PORT, gloo CPU
collectives); every run trains under `keras.distribution.DataParallel`
on global batches of `BATCH` examples, of which each process feeds its
share (`BATCH / PROCESSES` consecutive examples of every global batch), so
that one process and two see the same global batches. It trains

- `iterative`: 3 rounds of global magnitude pruning, rewinding to init,
  with `backup_dir` (a spy records, at every epoch end, whether this
  process's backup directory holds files);
- `reinit`: 2 rounds with `rewind="reinit"` and no seed (the processes must
  agree on the run seed);
- `gradual`: tfmot's `PolynomialDecay`, pruning every 2 steps;
- `reintroduce`: a `DoublePruning` run, which must fail with a ValueError
  (its training step is TensorFlow's);

and writes the masks and raw weights of each run to
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
    pid, processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    import jax

    if processes > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    import keras

    if processes > 1:
        keras.distribution.initialize(f"127.0.0.1:{port}", processes, pid)
    keras.distribution.set_distribution(keras.distribution.DataParallel(auto_shard_dataset=False))
    import numpy as np
    import tensorflow_model_optimization as tfmot

    import keras_lth as lth
    from keras_lth.layers import masked_weights

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 12)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(12, 3)), axis=1).astype("int32")
    share = BATCH // processes
    mine = np.concatenate(
        [np.arange(b + pid * share, b + (pid + 1) * share) for b in range(0, N, BATCH)]
    )
    x, y = x[mine], y[mine]

    def model():
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

    arrays, found = {}, {"process_count": lth.distributed.process_count()}

    def keep(name, m, scheduler):
        for w in masked_weights(m):
            arrays[f"{name}/{w.key}/mask"] = np.asarray(w.mask.value)
            arrays[f"{name}/{w.key}/raw"] = np.asarray(w.variable.value)
        found[name] = scheduler.rounds if not scheduler.gradual else lth.density(m)

    def fit(m, scheduler, epochs, *extra):
        m.fit(
            x,
            y,
            batch_size=share,
            epochs=epochs,
            shuffle=False,
            verbose=0,
            callbacks=[scheduler, *extra],
        )

    backup = os.path.join(out, f"backup{pid}")
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(len(os.listdir(backup)) if os.path.isdir(backup) else 0)

    m = model()
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
