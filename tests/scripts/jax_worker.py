"""One worker of `tests/test_multiprocess.py`: `PruningScheduler` on JAX processes.

Started with `KERAS_BACKEND=jax`, once per process of a run:

    python tests/scripts/jax_worker.py PROCESS_ID PROCESSES PORT OUT_DIR

With `PROCESSES > 1` the process joins the others through
`keras.distribution.initialize` (coordinator on 127.0.0.1:PORT, gloo CPU
collectives); every run trains under `keras.distribution.DataParallel`
on global batches of `BATCH` examples, of which each process feeds its
share (`BATCH / PROCESSES` consecutive examples of every global batch), so
that one process and two see the same global batches. The runs and what
they write: `worker_runs.py`.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import worker_runs


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

    x, y = worker_runs.data()
    batch, n = worker_runs.BATCH, worker_runs.N
    share = batch // processes
    mine = np.concatenate(
        [np.arange(b + pid * share, b + (pid + 1) * share) for b in range(0, n, batch)]
    )
    x, y = x[mine], y[mine]

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

    worker_runs.train(worker_runs.build, fit, out, pid)


if __name__ == "__main__":
    main()
