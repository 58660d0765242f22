"""Parameters and inference latency of a filter-pruned CNN: masked vs stripped vs compacted.

The network is a small VGG-style CNN on 32x32x3 inputs (Conv-4 of Frankle &
Carbin with BatchNormalization): two blocks of two 3x3 convolutions (padding
"same", 32 then 64 filters, each followed by BatchNormalization and ReLU)
with 2x2 max pooling, then Flatten, Dense(256, relu), Dense(10). Its weights
are random (seeded) and its BatchNormalization statistics too, so that a
pruned filter's constant output is not zero; nothing is trained, since
parameter counts and latency do not depend on the values.

For each filter pruning rate (50% and 75% by default), `keras_lth.prunable`
masks the network and every convolution loses that share of its filters,
the ones with the smallest l1 norm (Li et al. 2017), set by hand through
the layers API (`set_masks` with `bias_mask_for`). Three models are then
timed:

- `masked`: the `prunable` model with its masks (what training runs);
- `stripped`: `keras_lth.strip(masked)`, plain layers, pruned weights zero;
- `compacted`: `keras_lth.compact(masked)`, the pruned filters removed.

Latency is `model.predict_on_batch(x)` for a batch of 1 and of 128, after
two warm-up calls; the three models alternate within every repeat so that
machine load hits them alike; the figure is the median over the repeats,
with the interquartile range. The JSON also records the largest prediction
difference from the masked model, the CPU threads TensorFlow may use and
the load average before and after. Run it under `nice` on a shared machine.

Usage:

```
nice -n 10 python benchmarks/compact.py --out docs/results/compact.json
python benchmarks/compact.py --repeats 3 --rates 0.5   # smoke run
```
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import numpy as np

import keras_lth as lth

INPUT_SHAPE = (32, 32, 3)
BATCHES = (1, 128)


def build_cnn(seed=0):
    """The plain Keras CNN, with random weights and BatchNormalization statistics."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input(INPUT_SHAPE)]
    for block, filters in enumerate((32, 64)):
        for i in range(2):
            layers += [
                keras.layers.Conv2D(filters, 3, padding="same", name=f"conv{block}{i}"),
                keras.layers.BatchNormalization(name=f"bn{block}{i}"),
                keras.layers.ReLU(),
            ]
        layers.append(keras.layers.MaxPooling2D())
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dense(256, activation="relu", name="fc"),
        keras.layers.Dense(10, name="logits"),
    ]
    model = keras.Sequential(layers, name="conv4_bn")
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            bias = layer.bias
            bias.assign(rng.normal(0, 0.1, bias.shape).astype("float32"))
    return model


def prune_filters(model, rate):
    """Masks the `rate` share of each convolution's filters with the smallest l1 norm."""
    pruned = {}
    for layer in lth.masked_layers(model):
        if not isinstance(layer, keras.layers.Conv2D):
            continue
        kernel = keras.ops.convert_to_numpy(layer.raw_variable("kernel"))
        norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(0)
        n_pruned = int(round(rate * len(norms)))
        alive = np.ones(len(norms), bool)
        alive[np.argsort(norms, kind="stable")[:n_pruned]] = False
        mask = np.broadcast_to(alive, kernel.shape).astype("float32")
        layer.set_masks(mask, layer.bias_mask_for(alive))
        pruned[layer.name] = int((~alive).sum())
    return pruned


def params(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {"total": int(model.count_params()), "trainable": trainable}


def conv_filters(model):
    return {l.name: int(l.filters) for l in model.layers if isinstance(l, keras.layers.Conv2D)}


def time_models(models, batch, repeats, seed=0):
    """Median and quartiles of `predict_on_batch` per model, models alternating."""
    x = np.random.default_rng(seed).normal(size=(batch,) + INPUT_SHAPE).astype("float32")
    for model in models.values():
        for _ in range(2):
            model.predict_on_batch(x)  # trace and warm up
    times = {name: [] for name in models}
    names = list(models)
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            start = time.perf_counter()
            models[name].predict_on_batch(x)
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, values in times.items():
        q1, median, q3 = np.percentile(1e3 * np.asarray(values), [25, 50, 75])
        out[name] = {"median_ms": round(median, 4), "iqr_ms": [round(q1, 4), round(q3, 4)]}
    return out


def threads():
    import tensorflow as tf

    return {
        "os_cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
        "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "note": "0 = TensorFlow's default, one thread per available core",
    }


def run(rates, repeats, seed=0):
    load_before = os.getloadavg()
    start = time.time()
    base = build_cnn(seed)
    x_check = np.random.default_rng(seed + 1).normal(size=(16,) + INPUT_SHAPE).astype("float32")
    results = {}
    for rate in rates:
        masked = lth.prunable(base)
        pruned = prune_filters(masked, rate)
        stripped = lth.strip(masked)
        compacted = lth.compact(masked)
        models = {"masked": masked, "stripped": stripped, "compacted": compacted}
        reference = masked.predict_on_batch(x_check)
        entry = {
            "pruned_filters": pruned,
            "compacted_filters": conv_filters(compacted),
            "density": round(lth.density(masked), 6),
            "params": {name: params(m) for name, m in models.items()},
            "max_abs_diff_vs_masked": {
                name: float(np.abs(m.predict_on_batch(x_check) - reference).max())
                for name, m in models.items()
                if name != "masked"
            },
            "latency": {},
        }
        for batch in BATCHES:
            entry["latency"][f"batch_{batch}"] = time_models(
                models, batch, repeats if batch == 1 else max(3, repeats // 4), seed
            )
        results[f"rate_{rate:g}"] = entry
    load_after = os.getloadavg()
    return {
        "config": {
            "network": "conv4_bn: 2 x (Conv2D 32, Conv2D 64) 3x3 'same' + BN + ReLU, "
            "MaxPool after each pair, Flatten, Dense 256, Dense 10; input 32x32x3",
            "pruning": "per Conv2D, the given share of filters with the smallest l1 "
            "norm (kernel and bias masks); Dense layers dense",
            "rates": list(rates),
            "repeats": {"batch_1": repeats, "batch_128": max(3, repeats // 4)},
            "latency": "model.predict_on_batch, median over repeats, models alternating",
            "machine": f"{platform.processor() or platform.machine()}, "
            f"{platform.system()}, Python {platform.python_version()}, "
            f"Keras {keras.__version__}, backend {keras.backend.backend()}",
            "threads": threads(),
            "nice": os.nice(0),
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in load_after],
            "wall_s": round(time.time() - start, 1),
        },
        "results": results,
    }


def summary_lines(report):
    lines = []
    for key, entry in report["results"].items():
        p = entry["params"]
        lat = entry["latency"]
        lines.append(
            f"{key}: params masked {p['masked']['total']} (trainable "
            f"{p['masked']['trainable']}), stripped {p['stripped']['total']}, "
            f"compacted {p['compacted']['total']}; filters {entry['compacted_filters']}"
        )
        for batch, times in lat.items():
            lines.append(
                f"  {batch}: masked {times['masked']['median_ms']:.3f} ms, stripped "
                f"{times['stripped']['median_ms']:.3f} ms, compacted "
                f"{times['compacted']['median_ms']:.3f} ms"
            )
        lines.append(f"  max |diff| vs masked: {entry['max_abs_diff_vs_masked']}")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="0.5,0.75", help="filter pruning rates, comma-separated")
    parser.add_argument(
        "--repeats",
        type=int,
        default=100,
        help="timed calls per model at batch 1 (a quarter at 128)",
    )
    parser.add_argument("--out", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # predict_on_batch's retracing notices
    rates = [float(r) for r in args.rates.split(",")]
    report = run(rates, args.repeats)
    report["summary"] = summary_lines(report)
    print("\n".join(report["summary"]))
    print(
        f"load average before {report['config']['loadavg_before']}, after {report['config']['loadavg_after']}"
    )
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return report


if __name__ == "__main__":
    main()
