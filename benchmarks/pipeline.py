"""Throughput of the Speech Commands feature pipeline, in clips per second.

Times one full pass over the training split of `keras_lth.data.speech_commands`:
the first pass (read from the page cache, `tf.audio.decode_wav`, pad/trim,
features with `tf.signal`, cache) and a cached pass (shuffle and batch the
cached features). Each repeat builds a fresh pipeline; the best and the
median are printed. Setting-up time (checking every WAV header and tracing
the pipeline) is printed apart.

Without `--data-dir`, a synthetic tree in the Speech Commands layout is
written to a temporary directory first: `--clips` one-second 16 kHz mono
clips (tone bursts over noise; the content does not change the cost), a
minute of background noise, and validation/testing lists holding 10% each.

Usage:

    python benchmarks/pipeline.py                      # synthetic, 8,000 clips
    python benchmarks/pipeline.py --data-dir ~/speech_commands_v0.02
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import tensorflow as tf

from keras_lth.data import speech_commands, write_wav

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "bed", "cat")


def write_synthetic_tree(root, clips, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    lists = {"validation_list.txt": [], "testing_list.txt": []}
    for word in WORDS:
        os.makedirs(os.path.join(root, word))
    for i in range(clips):
        word = WORDS[i % len(WORDS)]
        envelope = np.exp(-(((t - rng.uniform(0.3, 0.7)) / 0.1) ** 2))
        wave = 0.3 * envelope * np.sin(2 * np.pi * rng.uniform(200, 3000) * t)
        wave += rng.normal(0, 0.01, 16000)
        name = f"{word}/{i:08x}_nohash_0.wav"
        write_wav(os.path.join(root, name), wave)
        if i % 10 == 1:
            lists["validation_list.txt"].append(name)
        elif i % 10 == 2:
            lists["testing_list.txt"].append(name)
    for list_name, names in lists.items():
        with open(os.path.join(root, list_name), "w") as f:
            f.writelines(n + "\n" for n in names)
    os.makedirs(os.path.join(root, "_background_noise_"))
    write_wav(
        os.path.join(root, "_background_noise_", "white_noise.wav"), rng.normal(0, 0.1, 60 * 16000)
    )


def warm_page_cache(root):
    for folder, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                f.read()


def time_pass(ds):
    start = time.perf_counter()
    clips = 0
    for _, y in ds:
        clips += int(y.shape[0])
    return clips, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="a Speech Commands tree (default: a synthetic one)")
    parser.add_argument("--clips", type=int, default=8000, help="clips in the synthetic tree")
    parser.add_argument("--features", default="log_mel", choices=["spectrogram", "log_mel", "mfcc"])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--silence-share",
        type=float,
        default=0.1,
        help="share of silence clips (noise windows, nothing to decode)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data_dir
        if root is None:
            root = os.path.join(tmp, "speech_commands")
            write_synthetic_tree(root, args.clips)
        warm_page_cache(root)
        setup, first, cached = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            splits = speech_commands(
                root,
                features=args.features,
                batch_size=args.batch_size,
                silence_share=args.silence_share,
            )
            setup.append(time.perf_counter() - start)
            n, seconds = time_pass(splits.train)
            first.append(n / seconds)
            n, seconds = time_pass(splits.train)
            cached.append(n / seconds)

    print(
        f"Speech Commands pipeline: {args.features}, batch {args.batch_size}, "
        f"{splits.info.num_train} training clips ({args.silence_share:.0%} silence), "
        f"{args.repeats} repeats, TensorFlow {tf.__version__}, {os.cpu_count()} CPU cores"
    )
    print(f"{'pass':<34}{'best':>12}{'median':>12}")
    print(
        f"{'first (decode + features), clips/s':<34}{max(first):>12,.0f}{statistics.median(first):>12,.0f}"
    )
    print(f"{'cached, clips/s':<34}{max(cached):>12,.0f}{statistics.median(cached):>12,.0f}")
    print(
        f"{'set-up (headers + tracing), s':<34}{min(setup):>12.2f}{statistics.median(setup):>12.2f}"
    )


if __name__ == "__main__":
    main()
