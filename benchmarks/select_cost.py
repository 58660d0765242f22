"""What the masks' gradient selects cost, timed on one model instance.

During a `PruningScheduler` run a masked layer computes with its raw
variables and masks their gradients in place, one select per variable; a
variable whose mask has no 0 is traced without it
(`keras_lth.layers.elide_full_masks`). This script times that choice with
nothing else different: one masked LeNet-300-100 (as `overhead.py`'s
`masked` variant: `MaskedDense`, Adam, batch 60, an `IterativeSchedule`),
held as in a run (`overhead.StepRun`), and its training function traced
four times:

- `elided`: as the scheduler traces it (no select where a mask has no 0);
- `elided_again`: a second trace of the same, the A/A control;
- `selects`, `selects_again`: with the select on every masked variable's
  gradient (the elision switched off for the trace), twice.

The four traced functions take one training step each in turn, on the
same model (same variables, same memory), in alternating order (A B C D,
D C B A, ...), `--steps` cycles a block, `--repeats` blocks; each ratio is
a function's step time over `elided`'s (medians; per-block paired ratios).
Two states of the model:

- `dense`: a fresh model whose run has just started (every mask full: the
  elision leaves no select at all; round 0 of every iterative run);
- `pruned`: after one warm-up `fit` that pruned once (densities 0.8 / 0.8 /
  0.9, the state `overhead.py` times): the kernels keep their selects, the
  biases (full masks under weight pruning) lose theirs.

Usage:

    python benchmarks/select_cost.py --steps 200 --repeats 20 --out select_cost.json

TensorFlow backend (the held layers are TensorFlow only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import keras
import overhead
from _overhead_common import compare, interleaved, load_data, summarize

lth = overhead.lth
tf = overhead.tf

FUNCTIONS = ("elided", "elided_again", "selects", "selects_again")
STATES = ("dense", "pruned")


def trace(model, iterator, elide=True, warmup_steps=3):
    """A new training function of `model`, traced with the elision on or off.

    The model must be held as in a run (a started `StepRun`: its masked
    layers' full masks are elided, `keras_lth.layers.elide_full_masks`).
    The function is traced by its first calls (`warmup_steps`, which
    train). Afterwards the elision is on again, with the retrace the
    scheduler passes (`model.make_train_function(force=True)`).
    """
    layers = lth.masked_layers(model)
    if not elide:
        for layer in layers:
            lth.layers.elide_full_masks(layer, None)
    model.make_train_function(force=True)
    function = model.train_function
    for _ in range(warmup_steps):
        function(iterator)
    for layer in layers:
        lth.layers.elide_full_masks(layer, lambda: model.make_train_function(force=True))
    return function


def traced_functions(model, iterator):
    """`{name: training function}` for `FUNCTIONS`; the model trains with `elided` afterwards."""
    functions = {name: trace(model, iterator, name.startswith("elided")) for name in FUNCTIONS}
    model.train_function = functions["elided"]
    return functions


def measure_state(state, steps, repeats, jit_compile=False):
    """Times the four functions of one model in `state` (`"dense"` or `"pruned"`)."""
    variant = overhead.only_variants(["masked"])[-1]
    model = overhead.build_model(variant, jit_compile)
    x, y, _ = load_data(steps)
    if state == "pruned":  # one prune, as overhead.py's warm-up
        model.fit(
            x, y, batch_size=overhead.BATCH_SIZE, epochs=2, verbose=0, callbacks=variant.callbacks()
        )
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(overhead.BATCH_SIZE).repeat()
    run = overhead.StepRun(model, variant.callbacks(), dataset, steps * repeats)
    layers = lth.masked_layers(model)
    iterator = run.iterator
    functions = traced_functions(model, iterator)
    wall = {name: [[] for _ in range(repeats)] for name in functions}
    for cycle, order in interleaved(list(functions), steps * repeats):
        for name in order:
            start = time.perf_counter()
            logs = functions[name](iterator)
            wall[name][cycle // steps].append(time.perf_counter() - start)
    out = {
        "density": [round(float(l.density()), 4) for l in layers],
        "elided": {lth.layers.layer_key(l): sorted(lth.layers.elided_masks(l)) for l in layers},
        "functions": {name: summarize(wall[name], None) for name in functions},
    }
    for name in FUNCTIONS[1:]:
        out["functions"][name]["vs_elided"] = compare(
            out["functions"][name], out["functions"]["elided"]
        )
    run.logs = logs
    run.close()
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="cycles per block")
    parser.add_argument("--repeats", type=int, default=20, help="blocks")
    parser.add_argument("--jit", choices=("off", "on"), default="off", help="jit_compile")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1:
        parser.error(
            f"expected --steps >= 1 and --repeats >= 1. "
            f"Received: --steps {args.steps}, --repeats {args.repeats}"
        )
    if keras.backend.backend() != "tensorflow":
        parser.error(f"expected the TensorFlow backend. Received: {keras.backend.backend()}")
    load = [os.getloadavg()[0]]
    states = {s: measure_state(s, args.steps, args.repeats, args.jit == "on") for s in STATES}
    load.append(os.getloadavg()[0])
    result = {
        "config": {
            "steps": args.steps,
            "repeats": args.repeats,
            "jit": args.jit,
            "machine": (
                f"{overhead._cpu_name()}, {os.cpu_count()} cores, {platform.system()}, "
                f"Python {platform.python_version()}, TF {tf.__version__}, "
                f"Keras {keras.__version__}"
            ),
            "loadavg": f"{load[0]:.2f} before, {load[1]:.2f} after",
        },
        "states": states,
    }
    print(f"masked LeNet-300-100, jit {args.jit}; {args.repeats} blocks of {args.steps} cycles")
    print(f"machine: {result['config']['machine']}; load average {result['config']['loadavg']}")
    for state, entry in states.items():
        print(f"{state}: densities {entry['density']}; traced without a select: {entry['elided']}")
        for name, e in entry["functions"].items():
            line = f"  {name:14s} {e['step_ms']:.3f} ms"
            if "vs_elided" in e:
                c = e["vs_elided"]
                line += (
                    f"  {c['ratio']:.3f} vs elided (per-block {c['paired_median']:.3f}, "
                    f"IQR {c['paired_iqr'][0]:.3f}-{c['paired_iqr'][1]:.3f})"
                )
            print(line)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
