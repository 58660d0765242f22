"""Trains a tiny MLP with `PruningScheduler` + `BackupAndRestore`, maybe dying.

Helper of `tests/test_resume.py`. Each job trains (or resumes) one run in its
own work directory; a job with a kill epoch SIGKILLs the whole process at the
end of that epoch, after the backups of that epoch are written (for the
"between" config: after the scheduler's, before `BackupAndRestore`'s), the
way a pre-empted machine would die. A job that finishes writes its final state
(every model weight and the scheduler's round records) to `result.npz` and
`result.json` in its work directory.

    python tests/scripts/resume_fit.py ROOT JOB [JOB ...]

where a JOB is `NAME:KILL_EPOCH` or `NAME:-` (run to the end) and NAME is a
key of `CONFIGS`. Jobs run one after the other in this process; the first
kill ends it. The test imports `train` to run the uninterrupted reference.
"""

from __future__ import annotations

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_lth as lth  # noqa: E402

# rewind: the scheduler's `rewind`; order: where the scheduler sits relative
# to BackupAndRestore in `callbacks` (both orders must resume exactly;
# "scheduler_kill_backup" dies between the two callbacks' epoch-end saves);
# reintroduce: a re-introduction strategy (scores and swap counts to resume).
CONFIGS = {
    "init": dict(rewind="init", epochs_per_round=3, order="backup_first"),
    "late": dict(rewind=2, epochs_per_round=4, order="scheduler_first"),
    "scored_backup": dict(
        rewind="init", epochs_per_round=3, order="backup_first", reintroduce="scored"
    ),
    "scored_scheduler": dict(
        rewind="init", epochs_per_round=3, order="scheduler_first", reintroduce="scored"
    ),
    "between": dict(
        rewind="init", epochs_per_round=3, order="scheduler_kill_backup", reintroduce="scored"
    ),
}
ROUNDS = 2
SEED = 7


def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(288, 10)).astype("float32")
    w = rng.normal(size=(10, 3))
    y = np.argmax(x @ w + 0.5 * rng.normal(size=(288, 3)), axis=1)
    return (x[:192], y[:192]), (x[192:240], y[192:240]), (x[240:], y[240:])


class _Kill(keras.callbacks.Callback):
    """SIGKILLs this process at the end of epoch `epoch` (after the backups)."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def train(name, workdir, kill_epoch=None):
    """Trains config `name` in `workdir`; returns (weights, rounds, history)."""
    config = CONFIGS[name]
    keras.utils.set_random_seed(SEED)
    (x, y), val, test = data()
    model = keras.Sequential(
        [
            keras.Input((10,)),
            lth.MaskedDense(16, activation="relu", name="h1"),
            lth.MaskedDense(8, activation="relu", name="h2"),
            lth.MaskedDense(3, name="out"),
        ]
    )
    model.compile(
        keras.optimizers.Adam(5e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    reintroduce = None
    if config.get("reintroduce") == "scored":
        reintroduce = lth.ScoredPruning(
            when="round", fraction=0.3, every=1, start=1, score_decay=0.5
        )
    scheduler = lth.PruningScheduler(
        lth.IterativeSchedule(
            rounds=ROUNDS,
            epochs_per_round=config["epochs_per_round"],
            rate=0.3,
            layer_rates={"out": 0.1},
        ),
        rewind=config["rewind"],
        test_data=test,
        seed=SEED,
        backup_dir=os.path.join(workdir, "scheduler"),
        verbose=0,
        reintroduce=reintroduce,
    )
    backup = keras.callbacks.BackupAndRestore(os.path.join(workdir, "backup"))
    kill = [] if kill_epoch is None else [_Kill(kill_epoch)]
    if config["order"] == "backup_first":
        callbacks = [backup, scheduler] + kill
    elif config["order"] == "scheduler_first":
        callbacks = [scheduler, backup] + kill
    else:  # dies after the scheduler saved its epoch, before BackupAndRestore did
        callbacks = [scheduler] + kill + [backup]
    history = model.fit(
        x,
        y,
        validation_data=val,
        batch_size=32,
        epochs=scheduler.total_epochs,
        shuffle=False,
        callbacks=callbacks,
        verbose=0,
    )
    # keyed by position and name: the model's own name differs between
    # processes (`sequential`, `sequential_12`, ...)
    weights = {
        f"{i:02d}_{v.name}": keras.ops.convert_to_numpy(v) for i, v in enumerate(model.weights)
    }
    return weights, scheduler.rounds, history.history


def main(root, jobs):
    for job in jobs:
        name, kill = job.split(":")
        workdir = os.path.join(root, name)
        os.makedirs(workdir, exist_ok=True)
        weights, rounds, history = train(name, workdir, None if kill == "-" else int(kill))
        np.savez(os.path.join(workdir, "result.npz"), **weights)
        with open(os.path.join(workdir, "result.json"), "w") as f:
            json.dump({"rounds": rounds, "history": history}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
