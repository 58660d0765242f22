"""The scheduler's backup: every part's state, saved and restored at one moment.

`keras.callbacks.BackupAndRestore` saves the model (masks included) and the
optimizer at every epoch end and, after a crash, restores them and resumes
`fit` at the next epoch. What the scheduler knows besides the model (the
rewind point, the run's seed, the epoch logs and round records, the
re-introduction scores and swap counts) is saved here, at every epoch end,
after the scheduler has done everything it does in that epoch.

One save is one *generation*: a small JSON state of every part plus NumPy
arrays in `.npz` files, all for the same epoch. The arrays are written
first, each part's to a new file (a part whose arrays did not change since
the last save, such as the rewind point, reuses its file), then the JSON
file `keras_lth_scheduler.json`, which names them, replaces the previous
one atomically: a crash at any moment leaves one complete generation. The
two newest generations are kept, so a run resumes exactly whether the
scheduler comes before or after `BackupAndRestore` in `callbacks` (a crash
between the two callbacks' saves leaves the scheduler one epoch ahead of the
model; it then resumes from the generation of the model's epoch).

When several processes train together (`keras_lth.distributed`), every
process has the same state but only the chief writes (`writer=False` on the
others); every process reads, so `directory` must be on a filesystem that
all of them see for a resumed run.
"""

from __future__ import annotations

import json
import os

import numpy as np

STATE_FILE = "keras_lth_scheduler.json"
_KEEP = 2
_LIST = "|"


class ResumeState:
    """Saves and loads generations of part states in `directory`.

    Args:
        directory: Where the files live (created when first needed).
        writer: Whether this process writes and deletes the files (the
            chief of a multi-process run). Defaults to `True`.
    """

    def __init__(self, directory, writer=True):
        self.directory = os.fspath(directory)
        self.writer = writer
        self._written = {}  # part -> (version, file name) of its last arrays file

    # -- saving ------------------------------------------------------------ #
    def save(self, epoch, parts):
        """Saves generation `epoch` of `parts` (`{name: part}`).

        Each part's `get_state()` returns `(json_state, arrays)`: a
        JSON-serialisable dict and `{name: array or list of arrays}`. A part
        whose arrays seldom change has a `state_version` that stays equal
        while they do not (without one they are written at every save).
        Nothing is written unless `writer`.
        """
        if not self.writer:
            return
        os.makedirs(self.directory, exist_ok=True)
        generations = [g for g in self._generations() if g["epoch"] < epoch][-(_KEEP - 1) :]
        states, files = {}, {}
        for name, part in parts.items():
            state, arrays = part.get_state()
            version = getattr(part, "state_version", None)
            states[name] = state
            if not arrays:
                continue
            last = self._written.get(name)
            if version is not None and last is not None and last[0] == version:
                if os.path.exists(os.path.join(self.directory, last[1])):
                    files[name] = last[1]
                    continue
            files[name] = self._write_arrays(name, epoch, arrays)
            self._written[name] = (version, files[name])
        generations.append({"epoch": int(epoch), "parts": states, "arrays": files})
        path = os.path.join(self.directory, STATE_FILE)
        with open(path + ".tmp", "w") as f:
            json.dump({"generations": generations}, f)
        os.replace(path + ".tmp", path)
        self._collect(generations)

    def _write_arrays(self, name, epoch, arrays):
        flat = {}
        for key, value in arrays.items():
            if isinstance(value, (list, tuple)):
                for i, v in enumerate(value):
                    flat[f"{key}{_LIST}{i}"] = v
                flat[f"{key}{_LIST}len"] = np.asarray(len(value))
            else:
                flat[key] = value
        n = 0
        while True:
            file = f"keras_lth_{name}.{epoch}.{n}.npz"
            if not os.path.exists(os.path.join(self.directory, file)):
                break
            n += 1
        tmp = os.path.join(self.directory, file + ".tmp.npz")
        np.savez(tmp, **flat)
        os.replace(tmp, os.path.join(self.directory, file))
        return file

    def _collect(self, generations):
        used = {f for g in generations for f in g["arrays"].values()}
        for file in os.listdir(self.directory):
            if file.startswith("keras_lth_") and file.endswith(".npz") and file not in used:
                os.remove(os.path.join(self.directory, file))

    # -- loading ----------------------------------------------------------- #
    def _generations(self):
        path = os.path.join(self.directory, STATE_FILE)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return json.load(f)["generations"]

    def epochs(self):
        """The epochs of the saved generations, oldest first."""
        return [g["epoch"] for g in self._generations()]

    def load(self, epoch):
        """`{part: (json_state, arrays)}` of generation `epoch`, or `None`."""
        for g in self._generations():
            if g["epoch"] == epoch:
                out = {}
                for name, state in g["parts"].items():
                    arrays = {}
                    if name in g["arrays"]:
                        arrays = _read(os.path.join(self.directory, g["arrays"][name]))
                    out[name] = (state, arrays)
                return out
        return None

    def clear(self):
        """Deletes the backup (training ended), as `BackupAndRestore` does."""
        if not self.writer or not os.path.isdir(self.directory):
            return
        for file in os.listdir(self.directory):
            if file.startswith("keras_lth_") or file == STATE_FILE + ".tmp":
                os.remove(os.path.join(self.directory, file))
        self._written = {}


def _read(path):
    with np.load(path) as data:
        flat = {k: data[k] for k in data.files}
    arrays = {}
    for key, value in flat.items():
        if _LIST not in key:
            arrays[key] = value
    lists = {k.split(_LIST)[0] for k in flat if _LIST in k}
    for key in lists:
        n = int(flat[f"{key}{_LIST}len"])
        arrays[key] = [flat[f"{key}{_LIST}{i}"] for i in range(n)]
    return arrays
