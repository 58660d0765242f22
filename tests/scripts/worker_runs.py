"""The runs of `jax_worker.py` and `tf_worker.py`, shared by both.

`train(model, fit, out, pid)` trains, with a fresh `model()` each:

- `iterative`: 3 rounds of global magnitude pruning, rewinding to init,
  with `backup_dir` (a spy records, at every epoch end, whether this
  process's backup directory holds files);
- `reinit`: 2 rounds with `rewind="reinit"` and no seed (the processes must
  agree on the run seed);
- `gradual`: tfmot's `PolynomialDecay`, pruning every 2 steps;
- `reintroduce`: a `DoublePruning` run, which must train on one process and
  fail with a ValueError on several;

and writes the masks and raw weights of each run to
`out/worker{pid}.npz`, the other findings to `out/worker{pid}.json`.
`fit(m, scheduler, epochs, *callbacks)` feeds this process's data.
"""

from __future__ import annotations

import json
import os

BATCH = 16
N = 64  # 4 global batches per epoch


def data():
    """The examples `(x, y)`, the same in every process."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, 12)).astype("float32")
    y = np.argmax(x @ rng.normal(size=(12, 3)), axis=1).astype("int32")
    return x, y


def build():
    """The compiled model, with the same weights in every run and process."""
    import keras
    import numpy as np

    import keras_lth as lth

    m = keras.Sequential(
        [
            keras.Input((12,)),
            lth.MaskedDense(24, activation="relu", name="h1"),
            lth.MaskedDense(16, activation="relu", name="h2"),
            lth.MaskedDense(3, name="out"),
        ]
    )
    init = np.random.default_rng(1)
    for v in m.trainable_variables:
        v.assign(init.normal(scale=0.3, size=v.shape).astype("float32"))
    m.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return m


def train(model, fit, out, pid):
    import keras
    import numpy as np
    import tensorflow_model_optimization as tfmot  # after Keras 3: its schedules only
    from keras import ops

    import keras_lth as lth
    from keras_lth.layers import masked_weights

    arrays, found = {}, {}

    def keep(name, m, scheduler):
        for w in masked_weights(m):
            arrays[f"{name}/{w.key}/mask"] = ops.convert_to_numpy(w.mask)
            arrays[f"{name}/{w.key}/raw"] = ops.convert_to_numpy(w.variable)
        found[name] = scheduler.rounds if not scheduler.gradual else lth.density(m)

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
