"""What one in-round re-introduction event does to the training loss.

A diagnostic for the re-introduction sweep: one pruning round (rate 0.5)
after a dense round, 12 epochs each, rewinding to init, on the sweep's data
and network (`reintroduction_sweep.Task`: MNIST-5k with LeNet-300-100, or a
Speech Commands tree with the speech MLP), seed 0. Needs keras-tuner (the
sweep module imports it). It prints, after every epoch, the
training and validation loss and accuracy and the largest |effective
weight| of each layer, and the round records (events, re-introduced
weights). The re-introduction strategy is given on the command line with
its arguments:

    python benchmarks/swap_shock.py --dataset speech_commands --source DIR \\
        --strategy scored --arg value=zero

The strategy swaps inside the round (`when="round"`) unless `--arg
when=prune` says otherwise. `--strategy none` is plain iterative pruning
(the reference). The output is
meant to be kept as a log (`docs/results/reintroduction_sweep_speech/`).
"""

from __future__ import annotations

import argparse
import ast
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from reintroduction_sweep import Task  # noqa: E402  (this directory)

import keras_lth as lth  # noqa: E402

STRATEGIES = {"none": None, "scored": "ScoredPruning", "double": "DoublePruning"}


def parse_arg(text):
    """`name=value` -> (name, value); the value as a Python literal, else a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise ValueError(
            f"Received an invalid value for `--arg`, expected name=value. Received: {text!r}"
        )
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=["mnist", "speech_commands"], default="mnist")
    parser.add_argument("--source", help="the Speech Commands tree (--dataset speech_commands)")
    parser.add_argument("--strategy", choices=list(STRATEGIES), default="scored")
    parser.add_argument(
        "--arg", action="append", default=[], help="a strategy argument, name=value (repeatable)"
    )
    parser.add_argument("--epochs-per-round", type=int, default=12)
    args = parser.parse_args(argv)
    kwargs = dict(parse_arg(a) for a in args.arg)
    if args.strategy == "none" and kwargs:
        parser.error(f"--arg needs a --strategy. Received: --arg {args.arg}")
    keras.utils.set_random_seed(0)
    try:  # the sweep's data and network
        task = Task(args.dataset, args.source)
    except ValueError as e:
        parser.error(str(e))
    train, val, _, _ = task.load(0)
    model = task.build_model()
    name = STRATEGIES[args.strategy]
    # in-round events, the thing shown here, unless `--arg when=prune`: the
    # strategies' own default moved to "prune" after the log was recorded
    strategy = None if name is None else getattr(lth, name)(**{"when": "round", **kwargs})
    scheduler = lth.PruningScheduler(
        lth.IterativeSchedule(rounds=1, epochs_per_round=args.epochs_per_round, rate=0.5),
        rewind="init",
        reintroduce=strategy,
    )
    print(f"strategy: {strategy!r} {kwargs}", flush=True)

    class Print(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            largest = [
                float(np.abs(keras.ops.convert_to_numpy(layer.kernel)).max())
                for layer in self.model.layers
            ]
            print(
                f"epoch {epoch:2d} round {int(logs['round'])}: loss {logs['loss']:8.3f} "
                f"acc {logs['accuracy']:.3f} val_loss {logs['val_loss']:8.3f} "
                f"val_acc {logs['val_accuracy']:.3f} max|w| "
                + " ".join(f"{w:.3f}" for w in largest),
                flush=True,
            )

    model.fit(
        train,
        validation_data=val,
        epochs=scheduler.total_epochs,
        callbacks=[scheduler, Print()],
        verbose=0,
    )
    for record in scheduler.rounds:
        print(
            f"round {record['round']}: density {record['density']:.4f}, swaps {record.get('swaps')}"
        )


if __name__ == "__main__":
    main()
