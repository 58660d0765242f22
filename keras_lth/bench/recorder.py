"""`Recorder`: the benchmark's metrics of one run, one record per round.

The logic lives in `RecorderLogic`, a mixin, so the tfmot child process can
put it on a `tf_keras` callback too (`keras_lth.bench.child`).

Evaluation is what the metrics need and no more: the validation set at every
epoch of a recorded round (epochs-to-target needs the curve, early stopping
its minimum), the test set twice per recorded round (at its end, and on the
weights of its early-stop epoch, kept as a copy when the validation loss
improves). Both go through `test_on_batch` on tensors held in memory, in
chunks, so no `evaluate` call (and its data iterator) is built per epoch.
"""

from __future__ import annotations

import math
import time

import keras
import numpy as np

from keras_lth.bench.timing import count_traces, traced_functions


def eval_chunks(dataset, size=1000) -> list:
    """`[(x, y), ...]`: a batched `(x, y)` dataset as eager tensors of at most
    `size` examples each (what `evaluate_chunks` takes)."""
    out = []
    for x, y in dataset.rebatch(size):
        out.append((x, y))
    return out


def evaluate_chunks(model, chunks) -> dict:
    """The compiled loss and metrics of `model` on `chunks`, as floats.

    Each chunk is one `test_on_batch` call (which resets the metrics first);
    the results are averaged with the chunks' sizes as weights, which is what
    `evaluate` computes for a mean loss and a mean metric such as accuracy.
    """
    totals, count = {}, 0
    for x, y in chunks:
        n = int(x.shape[0])
        out = model.test_on_batch(x, y, return_dict=True)
        for k, v in out.items():
            totals[k] = totals.get(k, 0.0) + n * float(v)
        count += n
    return {k: v / count for k, v in totals.items()}


class RecorderLogic:
    """Records each round's metrics at the round's last epoch.

    Put it before the `PruningScheduler` in `callbacks`: the scheduler
    prunes at the next round's first epoch, after the recorder has seen the
    round's last one. Fit without `validation_data`: the recorder validates
    at each epoch end (only in recorded rounds) and adds `val_loss` and
    `val_accuracy` to the epoch's logs, which the callbacks after it see. The
    early-stop epoch is the epoch of least `val_loss` among the round's
    epochs at the round's final density (gradual pruning reaches it only
    after `end_step`).

    Args:
        validation: `eval_chunks` of the validation set.
        test: `eval_chunks` of the test set.
        steps_per_epoch: Training steps per epoch (for the budget).
        steps_per_pass: Steps of one pass over the training set.
        round_of: `epoch -> round` (the scheduler's), or `None` for one round.
        keep_rounds: Rounds to record, or `None` for all of them.
        levels: `round -> summary column (target density)`, where there is one.
        density_fn: `model -> (density, {layer: density})`.
        compact: Also record the compacted model's parameters and latency
            (neuron pruning). Defaults to `False`.
        dense_model: The dense network, for the latency comparison.
    """

    def __init__(
        self,
        validation,
        test,
        steps_per_epoch,
        steps_per_pass,
        round_of=None,
        keep_rounds=None,
        levels=None,
        density_fn=None,
        compact=False,
        dense_model=None,
    ):
        super().__init__()
        self.validation = validation
        self.test = test
        self.steps_per_epoch = steps_per_epoch
        self.steps_per_pass = steps_per_pass
        self.round_of = round_of
        self.keep_rounds = keep_rounds
        self.levels = levels or {}
        self.density_fn = density_fn
        self.compact = compact
        self.dense_model = dense_model
        self.records = []
        self.traces = {}
        self.eval_s = 0.0
        self._functions = {}

    def on_train_begin(self, logs=None):
        self.records = []
        self.traces = {}
        self.eval_s = 0.0
        self._functions = {}
        self._start = time.perf_counter()
        self._round = None
        self._steps = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._see_functions()

    def on_epoch_end(self, epoch, logs=None):
        self._record_epoch(epoch, logs if logs is not None else {})
        # after the evaluations, which build the test function (and never
        # replace the training function)
        self._see_functions()

    def _record_epoch(self, epoch, logs):
        r = self.round_of(epoch) if self.round_of else 0
        if r != self._round:
            self._round = r
            self._curve = {"val_accuracy": [], "val_loss": [], "density": []}
            self._best = (math.inf, None)
            self._best_weights = None
        self._steps += self.steps_per_epoch
        if self.keep_rounds is not None and r not in self.keep_rounds:
            return
        last = epoch == self.params["epochs"] - 1 or (
            self.round_of is not None and self.round_of(epoch + 1) != r
        )
        density, per_layer = self.density_fn(self.model)
        curve = self._curve
        if curve["density"] and density != curve["density"][-1]:
            self._best = (math.inf, None)  # only epochs at the final density count
            self._best_weights = None
        val = self._evaluate(self.validation)
        logs.update({f"val_{k}": v for k, v in val.items()})
        loss = val["loss"]
        curve["val_loss"].append(loss)
        curve["val_accuracy"].append(val.get("accuracy", math.nan))
        curve["density"].append(density)
        if loss < self._best[0]:
            self._best = (loss, len(curve["val_loss"]) - 1)
            # the early-stop network, unless this epoch is the round's last
            self._best_weights = None if last else self.model.get_weights()
        if last:
            self.records.append(self._record(r, density, per_layer))

    def on_train_end(self, logs=None):
        # before the scheduler's `on_train_end`, which may uninstall a
        # re-introduction step (and with it the traced function)
        self._see_functions()
        self.traces = count_traces(
            {name: list(fns.values()) for name, fns in self._functions.items()}
        )
        self._functions = {}  # let the replaced functions go

    def _see_functions(self):
        """Keeps every train and test function seen at an epoch's start and
        end: a run may replace them (the scheduler retraces at its first
        pruning), and `traces` counts the traces of all of them."""
        for name, fns in traced_functions(self.model).items():
            seen = self._functions.setdefault(name, {})
            for f in fns:
                seen.setdefault(id(f), f)

    def _record(self, r, density, per_layer):
        curve = self._curve
        best = self._best[1]
        test = self._evaluate(self.test)
        early = test
        if self._best_weights is not None:
            current = self.model.get_weights()
            self.model.set_weights(self._best_weights)
            early = self._evaluate(self.test)
            self.model.set_weights(current)
            self._best_weights = None
        record = {
            "round": r,
            "level": self.levels.get(r),
            "density": density,
            "layer_density": per_layer,
            "epochs": len(curve["val_loss"]),
            "test_accuracy": test["accuracy"],
            "test_loss": test["loss"],
            "early_stop_epoch": best + 1,
            "test_accuracy_early_stop": early["accuracy"],
            "val_accuracy": _rounded(curve["val_accuracy"]),
            "val_loss": _rounded(curve["val_loss"]),
            "epoch_density": _rounded(curve["density"]),
            "steps_per_epoch": self.steps_per_epoch,
            "budget_steps": self._steps,
            "budget_epochs": round(self._steps / self.steps_per_pass, 4),
            "wall_s": round(time.perf_counter() - self._start, 3),
        }
        if self.compact:
            record.update(compact_stats(self.model, self.dense_model, self.test[0][0]))
        return record

    def _evaluate(self, chunks):
        start = time.perf_counter()
        out = evaluate_chunks(self.model, chunks)
        self.eval_s += time.perf_counter() - start
        return out


class Recorder(RecorderLogic, keras.callbacks.Callback):
    """`RecorderLogic` on a Keras 3 callback."""


def compact_stats(model, dense_model, x, repeats=10) -> dict:
    """Parameters and inference latency of `lth.compact(model)` vs the dense net.

    Latency is the median of `repeats` `predict_on_batch(x)` calls, the two
    models alternating so that both see the same machine load.
    """
    import keras_lth as lth

    small = lth.compact(model)
    times = {"small": [], "dense": []}
    for m in (small, dense_model):
        for _ in range(2):
            m.predict_on_batch(x)  # trace and warm up
    for _ in range(repeats):
        for name, m in (("small", small), ("dense", dense_model)):
            start = time.perf_counter()
            m.predict_on_batch(x)
            times[name].append(time.perf_counter() - start)
    small_ms = 1e3 * float(np.median(times["small"]))
    dense_ms = 1e3 * float(np.median(times["dense"]))
    return {
        "compact_params": int(small.count_params()),
        "dense_params": int(dense_model.count_params()),
        "compact_units": [int(l.units) for l in small.layers if isinstance(l, keras.layers.Dense)],
        "latency_ms": round(small_ms, 4),
        "dense_latency_ms": round(dense_ms, 4),
        "latency_ratio": round(small_ms / dense_ms, 4),
        "latency_batch": int(x.shape[0]),
    }


def _rounded(values):
    return [round(float(v), 6) for v in values]
