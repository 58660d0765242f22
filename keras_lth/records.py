"""Round records: one summary per training round of a `PruningScheduler` run.

A record has the round's `density` and `layer_density` (keyed by
`keras_lth.layers.layer_key`), its number of `epochs`, the `final` epoch's
metrics, the `best` epoch's (lowest `val_loss`, or `loss` without
validation data) and that epoch's 1-based index in the round
(`early_stop_epoch`); `test` (metrics on the scheduler's `test_data`) and
`swaps` (re-introduction) when those are in use.
"""

from __future__ import annotations

import numpy as np
from keras import ops

# Keys the scheduler adds to every epoch's logs; not metrics of the round.
LOG_KEYS = ("density", "round")


class RoundRecords:
    """The epoch logs of one run and the records of its finished rounds.

    Args:
        test_data: Optional dataset or `(x, y)` tuple evaluated at every
            round's end.
        verbose: `1` prints one line per finished round.
    """

    def __init__(self, test_data=None, verbose=1):
        self.test_data = test_data
        self.verbose = verbose
        self.epoch_logs = []
        self.rounds = []

    def start(self):
        self.epoch_logs = []
        self.rounds = []

    def log_epoch(self, epoch, logs):
        """Keeps epoch `epoch`'s logs (as floats), dropping anything logged after it."""
        del self.epoch_logs[epoch:]
        self.epoch_logs.extend([None] * (epoch - len(self.epoch_logs)))
        self.epoch_logs.append({k: to_float(v) for k, v in logs.items()})

    def has(self, r) -> bool:
        return any(rec["round"] == r for rec in self.rounds)

    def finish_round(self, model, r, first, last, density, extra=None):
        """Appends the record of round `r` (epochs `first` to `last`)."""
        logs = [l for l in self.epoch_logs[first : last + 1] if l is not None]
        if not logs:
            return None
        key = "val_loss" if "val_loss" in logs[0] else "loss"
        best = int(np.argmin([l.get(key, np.inf) for l in logs]))
        overall, per_layer = density
        record = {
            "round": r,
            "density": overall,
            "layer_density": per_layer,
            "epochs": len(logs),
            "final": _metrics(logs[-1]),
            "best": _metrics(logs[best]),
            "early_stop_epoch": best + 1,
            **(extra or {}),
        }
        if self.test_data is not None:
            record["test"] = self._evaluate(model)
        self.rounds.append(record)
        if self.verbose:
            parts = [f"density={record['density']:.4f}", f"epochs={record['epochs']}"]
            parts += [f"{k}={v:.4f}" for k, v in record["final"].items() if k.startswith("val_")]
            parts += [f"test_{k}={v:.4f}" for k, v in record.get("test", {}).items()]
            print(f"[keras-lth] round {r}: " + " ".join(parts))
        return record

    def _evaluate(self, model):
        data = self.test_data
        if isinstance(data, tuple):
            out = model.evaluate(*data, verbose=0, return_dict=True)
        else:
            out = model.evaluate(data, verbose=0, return_dict=True)
        return {k: to_float(v) for k, v in out.items()}

    # -- resume ------------------------------------------------------------ #
    def get_state(self):
        return {"epoch_logs": self.epoch_logs, "rounds": self.rounds}, {}

    def set_state(self, state, arrays, epoch, round_end):
        """Adopts a backup for a run resumed at `epoch`; `round_end(r)` is the layout's."""
        self.epoch_logs = list(state["epoch_logs"][:epoch])
        self.epoch_logs += [None] * (epoch - len(self.epoch_logs))
        self.rounds = [
            rec
            for rec in state["rounds"]
            if round_end(rec["round"]) is not None and round_end(rec["round"]) < epoch
        ]


def to_float(value):
    try:
        return float(ops.convert_to_numpy(value))
    except (TypeError, ValueError):
        return value


def _metrics(logs):
    return {k: v for k, v in logs.items() if k not in LOG_KEYS}
