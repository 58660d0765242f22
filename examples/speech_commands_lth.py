"""
Title: Lottery tickets on Google Speech Commands with keras-lth
Description: Iterative magnitude pruning with rewinding to init on a keyword
spotting MLP, against the random re-initialisation control.

The MNIST experiment of `examples/mnist_lth.py`, on the standard 12-class
Speech Commands task (ten words, `_silence_`, `_unknown_`): 40 log-mel
energies every 20 ms of each 1 s clip (1,960 values), an MLP with two hidden
layers of 256 units (`keras_lth.models.speech_mlp`), Adam 1e-3, batch 100,
pruning 20% of each hidden layer and 10% of the output layer per round. Each
seed runs `rewind="init"` (winning tickets) and `rewind="reinit"`. The script
prints a per-round table (mean ± sample std over seeds), writes it to
`OUT_DIR/results.md` with the raw records in `OUT_DIR/results.json`, and
saves a plot of test accuracy vs. % weights remaining (log x axis) to
`OUT_DIR/accuracy_vs_density.png`.

Data, either:

- `--data-dir DIR`: the original layout, e.g. unpacked from
  http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz
  (2.3 GB; `mkdir DIR && tar xzf speech_commands_v0.02.tar.gz -C DIR`);
- `--tfds`: `tfds.load("speech_commands")` (downloads on first use into
  `--tfds-data-dir`; needs `pip install keras-lth[tfds]`).

A quick offline look on the miniature spoken-word tree that the tests use:

    python tests/speech_tree.py /tmp/mini_speech_commands
    python examples/speech_commands_lth.py --data-dir /tmp/mini_speech_commands \
        --seeds 1 --rounds 3 --epochs-per-round 10 --batch-size 16
"""

import argparse
import json
import os
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras 3 warns that fit's default shuffle=True is ignored for a tf.data
# dataset; the pipeline shuffles itself.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import keras_lth as lth
from keras_lth.bench.report import stats  # mean and sample std (ddof=1), as keras-lth bench

"""
## Settings
"""

SEEDS = 3
ROUNDS = 10  # 0.8 ** 10 = 10.7% of the hidden weights remain after round 10
EPOCHS_PER_ROUND = 10
BATCH_SIZE = 100
LEARNING_RATE = 1e-3
HIDDEN = (256, 256)
RATE = 0.2  # hidden layers, per round
OUTPUT_RATE = 0.1  # output layer, per round
REWINDS = ("init", "reinit")
OUT_DIR = "runs/speech_commands_lth"

"""
## One run: a fresh MLP pruned for `rounds` rounds inside one `fit`
"""


def run(splits, rewind, seed, rounds, epochs_per_round, verbose):
    train_ds, val_ds, test_ds, info = splits
    keras.utils.set_random_seed(seed)  # the same initial weights for both rewinds
    model = lth.models.speech_mlp(info.input_shape[0], hidden=HIDDEN, num_classes=info.num_classes)
    model.compile(
        keras.optimizers.Adam(LEARNING_RATE),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    scheduler = lth.PruningScheduler(
        schedule=lth.IterativeSchedule(
            rounds=rounds,
            epochs_per_round=epochs_per_round,
            rate=RATE,
            layer_rates={"output": OUTPUT_RATE},
        ),
        rewind=rewind,
        test_data=test_ds,
        seed=seed,
        verbose=verbose,
    )
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=scheduler.total_epochs,
        callbacks=[scheduler],
        verbose=0,
    )
    return scheduler.rounds


"""
## Tables and plot
"""


def summarize(records):
    """{rewind: [(density %, mean test acc %, std)]} from the raw records."""
    out = {}
    for rewind, runs in records.items():
        rows = []
        for r in range(len(runs[0])):
            acc = [100 * rounds[r]["test"]["accuracy"] for rounds in runs]
            mean, std, _ = stats(acc)
            rows.append((100 * runs[0][r]["density"], mean, std))
        out[rewind] = rows
    return out


def table(summary, n_seeds):
    head = "| round | weights remaining | " + " | ".join(f"test acc, rewind={r!r}" for r in summary)
    lines = [head + " |", "|---:|---:|" + "---:|" * len(summary)]
    first = next(iter(summary.values()))
    for i, (dens, _, _) in enumerate(first):
        cells = " | ".join(f"{summary[r][i][1]:.2f} ± {summary[r][i][2]:.2f}" for r in summary)
        lines.append(f"| {i} | {dens:.1f}% | {cells} |")
    lines.append("")
    lines.append(
        f"Mean ± std (n − 1) over {n_seeds} seed(s), test accuracy (%) at the end of each round."
    )
    return "\n".join(lines)


def plot(summary, path, title):
    fig, ax = plt.subplots(figsize=(6, 4))
    for rewind, rows in summary.items():
        d, m, s = (np.array(v) for v in zip(*rows))
        ax.plot(d, m, marker="o", label=f"rewind={rewind!r}")
        ax.fill_between(d, m - s, m + s, alpha=0.2)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("% of weights remaining (log scale)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


"""
## Main
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="Speech Commands in its original layout")
    source.add_argument("--tfds", action="store_true", help='use tfds.load("speech_commands")')
    parser.add_argument("--tfds-data-dir", default=None, help="tfds' data_dir")
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--epochs-per-round", type=int, default=EPOCHS_PER_ROUND)
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    parser.add_argument("--features", default="log_mel", choices=["log_mel", "mfcc", "spectrogram"])
    parser.add_argument("--out", default=OUT_DIR)
    parser.add_argument("-v", "--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    records = {rewind: [] for rewind in REWINDS}
    for seed in range(args.seeds):
        for rewind in REWINDS:
            # A fresh pipeline per run, so that both runs of a seed see the
            # same unknown/silence sample and the same shuffles (which also
            # depend on TensorFlow's global seed when the pipeline is built).
            start = time.time()
            keras.utils.set_random_seed(seed)
            splits = lth.data.speech_commands(
                "tfds" if args.tfds else args.data_dir,
                features=args.features,
                batch_size=args.batch_size,
                seed=seed,
                data_dir=args.tfds_data_dir,
            )
            if seed == 0 and rewind == REWINDS[0]:
                info = splits.info
                print(
                    f"{info.num_train} / {info.num_validation} / {info.num_test} clips; "
                    f"classes {', '.join(info.class_names)}"
                )
            rounds = run(splits, rewind, seed, args.rounds, args.epochs_per_round, args.verbose)
            records[rewind].append(rounds)
            last = rounds[-1]
            print(
                f"seed {seed} rewind={rewind!r}: {time.time() - start:.0f}s, "
                f"test acc {100 * rounds[0]['test']['accuracy']:.2f}% dense -> "
                f"{100 * last['test']['accuracy']:.2f}% at {100 * last['density']:.1f}%",
                flush=True,
            )

    summary = summarize(records)
    text = table(summary, args.seeds)
    print("\n" + text)
    command = "python examples/speech_commands_lth.py " + " ".join(argv or sys.argv[1:])
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"`{command.strip()}`\n\n{text}\n")
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(records, f, indent=1)
    plot(
        summary,
        os.path.join(args.out, "accuracy_vs_density.png"),
        f"MLP {'-'.join(map(str, HIDDEN))} on Speech Commands: tickets vs. reinit",
    )
    print(f"\nWrote {args.out}/results.md, results.json and accuracy_vs_density.png")
    return summary


if __name__ == "__main__":
    main()
