"""How many passes a round needs: validation accuracy against passes.

The study that chose the round length of `keras-lth bench`'s quick preset
(`docs/results/convergence.md`). On the embedded MNIST-5k (3,500 / 500 /
1,000 digits), with the benchmark's optimizer (Adam 1.2e-3, batch 60), for
each seed:

- `dense`: LeNet-300-100 trained `--passes` passes, validated after each;
- `lth`: the same network pruned for `--rounds` rounds of `--mask-passes`
  passes each (rates 0.2 / 0.2 / 0.1, rewinding to init, the quick preset's
  lottery-ticket protocol), down to 3.6% of the weights after 15 rounds;
  its last round, the ticket at that density trained from init, runs
  `--passes` passes and is validated after each.

For each curve the JSON records the validation accuracy and loss after
every pass, the early-stop pass (least validation loss), the first pass
within `--tolerance` of the curve's best validation accuracy, and the test
accuracy after `--passes` passes. The Markdown table gives the seeds' mean
accuracy at a few candidate round lengths.

Usage:

```
flock -x /work/wt/cpu.lock nice -n 5 python benchmarks/convergence.py \\
    --out docs/results/convergence/convergence.json
python benchmarks/convergence.py --seeds 1 --rounds 1 --mask-passes 1 --passes 2  # smoke
```
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

BATCH, LEARNING_RATE, RATE, OUTPUT_RATE = 60, 1.2e-3, 0.2, 0.1


def train(seed, rounds, mask_passes, passes):
    """`(history, test_accuracy, density)` of one network's last round."""
    import keras

    import keras_lth as lth

    keras.utils.set_random_seed(seed)
    train_ds, val_ds, test_ds, info = lth.data.mnist(batch_size=BATCH, seed=seed)
    model = lth.models.lenet_300_100(num_classes=info.num_classes)
    model.compile(
        keras.optimizers.Adam(LEARNING_RATE),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=info.num_train // BATCH + (info.num_train % BATCH > 0),
    )
    callbacks, first = [], 0
    if rounds:
        schedule = lth.IterativeSchedule(
            rounds=rounds,
            epochs_per_round=mask_passes,
            rate=RATE,
            layer_rates={"output": OUTPUT_RATE},
        )
        callbacks = [lth.PruningScheduler(schedule, rewind="init", seed=seed, verbose=0)]
        first = rounds * mask_passes  # the last round's first epoch
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=first + passes,  # the last round trains `passes` epochs
        callbacks=callbacks,
        verbose=0,
    ).history
    test = model.evaluate(test_ds, verbose=0, return_dict=True)["accuracy"]
    curve = {k: [float(v) for v in history[k][first:]] for k in ("val_accuracy", "val_loss")}
    return curve, float(test), float(lth.density(model))


def describe(curve, tolerance):
    """The early-stop pass and the first pass within `tolerance` of the best accuracy."""
    acc, loss = np.array(curve["val_accuracy"]), np.array(curve["val_loss"])
    return {
        "early_stop_pass": int(np.argmin(loss)) + 1,
        "best_val_accuracy": float(acc.max()),
        "pass_within_tolerance": int(np.argmax(acc >= acc.max() - tolerance)) + 1,
    }


def table(runs, lengths) -> str:
    """Mean ± std (n - 1) validation accuracy (%) after each candidate length."""
    head = "| network | " + " | ".join(f"{n} passes" for n in lengths)
    lines = [
        head + " | early-stop pass | within tolerance |",
        "|---" + "|---:" * (len(lengths) + 2) + "|",
    ]
    for name in ("dense", "lth"):
        sel = [r for r in runs if r["network"] == name]
        cells = []
        for n in lengths:
            vals = [100 * r["val_accuracy"][n - 1] for r in sel if len(r["val_accuracy"]) >= n]
            cells.append(_cell(vals))
        stop = _cell([r["early_stop_pass"] for r in sel], 1)
        within = _cell([r["pass_within_tolerance"] for r in sel], 1)
        label = f"{name} ({100 * np.mean([r['density'] for r in sel]):.1f}%)"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {stop} | {within} |")
    return "\n".join(lines)


def _cell(vals, digits=2):
    if not vals:
        return "—"
    std = np.std(vals, ddof=1) if len(vals) > 1 else 0.0
    return f"{np.mean(vals):.{digits}f} ± {std:.{digits}f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=15, help="pruning rounds before the last")
    p.add_argument("--mask-passes", type=int, default=12, help="passes of each earlier round")
    p.add_argument("--passes", type=int, default=40, help="passes of the curve")
    p.add_argument("--tolerance", type=float, default=0.002)
    p.add_argument("--lengths", default="4,8,12,16,20,30,40", help="table columns")
    p.add_argument("--out", default="convergence.json")
    args = p.parse_args(argv)
    lengths = [n for n in map(int, args.lengths.split(",")) if n <= args.passes]
    load_before = os.getloadavg()
    start = time.perf_counter()
    runs = []
    for seed in range(args.seeds):
        for name, rounds in (("dense", 0), ("lth", args.rounds)):
            t = time.perf_counter()
            curve, test, density = train(seed, rounds, args.mask_passes, args.passes)
            runs.append(
                {
                    "network": name,
                    "seed": seed,
                    "density": density,
                    **curve,
                    **describe(curve, args.tolerance),
                    "test_accuracy": test,
                    "wall_s": round(time.perf_counter() - t, 2),
                }
            )
            r = runs[-1]
            print(
                f"{name} seed {seed} ({100 * density:.1f}%): early stop at pass "
                f"{r['early_stop_pass']}, best val {100 * r['best_val_accuracy']:.2f}%, "
                f"test {100 * test:.2f}% ({r['wall_s']:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
    result = {
        "command": "python benchmarks/convergence.py " + " ".join(argv or sys.argv[1:]),
        "settings": {**vars(args), "batch_size": BATCH, "learning_rate": LEARNING_RATE},
        "runs": runs,
        "table": table(runs, lengths),
        "wall_s": round(time.perf_counter() - start, 1),
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(result["table"])


if __name__ == "__main__":
    main()
