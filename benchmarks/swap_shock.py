"""What one in-round re-introduction event does to the training loss.

A diagnostic for the re-introduction sweep: one pruning round (rate 0.5)
after a dense round, 12 epochs each, rewinding to init, on MNIST-5k
(LeNet-300-100, batch 60, Adam 1.2e-3) or a Speech Commands tree (the speech
MLP, batch 100, Adam 1e-3), seed 0. It prints, after every epoch, the
training and validation loss and accuracy and the largest |effective
weight| of each layer, and the round records (events, re-introduced
weights). The re-introduction strategy is given on the command line with
its arguments:

    python benchmarks/swap_shock.py --dataset speech_commands --source DIR \\
        --strategy scored --arg value=zero

`--strategy none` is plain iterative pruning (the reference). The output is
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
    if args.dataset == "mnist":
        train, val, _, _ = lth.data.mnist(batch_size=60, seed=0)
        model, rate = lth.models.lenet_300_100(), 1.2e-3
    else:
        if not args.source or not os.path.isdir(args.source):
            parser.error(f"--source: expected a Speech Commands tree. Received: {args.source!r}")
        train, val, _, info = lth.data.speech_commands(args.source, batch_size=100, seed=0)
        model, rate = lth.models.speech_mlp(info.input_shape[0]), 1e-3
    model.compile(
        keras.optimizers.Adam(rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    name = STRATEGIES[args.strategy]
    strategy = None if name is None else getattr(lth, name)(**kwargs)
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
