"""One worker of `tests/test_multiprocess.py`: `PruningScheduler` on TensorFlow workers.

Started with `KERAS_BACKEND=tensorflow`, once per process of a run:

    python tests/scripts/tf_worker.py PROCESS_ID PROCESSES PORTS OUT_DIR

With `PROCESSES = 2` the process is worker `PROCESS_ID` of a
`tf.distribute.MultiWorkerMirroredStrategy` whose workers listen on
127.0.0.1 at the comma-separated `PORTS` (`TF_CONFIG`), after
`keras_lth.distributed.patch_multi_worker_fit()`; `tf.data` shards the
dataset of global batches of `BATCH` examples (each worker feeds half of
every global batch). With `PROCESSES = 1` the process trains alone on the
same global batches. The runs and what they write: `worker_runs.py`.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import worker_runs


def main():
    pid, processes, ports, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if processes > 1:
        workers = [f"127.0.0.1:{port}" for port in ports.split(",")]
        os.environ["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": pid}}
        )
    import tensorflow as tf

    import keras_lth as lth

    if processes > 1:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        lth.distributed.patch_multi_worker_fit()
        lth.distributed.patch_multi_worker_fit()  # a second call does nothing
    else:
        strategy = tf.distribute.get_strategy()
    dataset = tf.data.Dataset.from_tensor_slices(worker_runs.data()).batch(worker_runs.BATCH)

    def model():
        with strategy.scope():
            return worker_runs.build()

    def fit(m, scheduler, epochs, *extra):
        m.fit(dataset, epochs=epochs, verbose=0, callbacks=[scheduler, *extra])

    worker_runs.train(model, fit, out, pid)


if __name__ == "__main__":
    main()
