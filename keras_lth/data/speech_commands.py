"""Google Speech Commands (Warden, 2018) as `tf.data` pipelines of features."""

from __future__ import annotations

import os
import warnings

import numpy as np
import tensorflow as tf

from keras_lth.data import common
from keras_lth.data import features as feats
from keras_lth.data.wav import check_wav, read_wav

WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
NOISE_DIR = "_background_noise_"
SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # every example is 1 s
SPLITS = ("train", "validation", "test")
# Each background-noise file is cut in time into train / validation / test
# parts, so no split's silence clips overlap another's.
NOISE_SPLIT = {"train": (0.0, 0.8), "validation": (0.8, 0.9), "test": (0.9, 1.0)}
_FEATURE_BATCH = 256  # clips per tf.signal call on the first pass


def speech_commands(
    source="tfds",
    features="log_mel",
    batch_size=100,
    seed=0,
    flatten=True,
    words=WORDS,
    silence_share=0.1,
    unknown_share=0.1,
    frame_length_ms=30,
    frame_step_ms=20,
    num_mel_bins=40,
    num_mfcc=13,
    time_shift_ms=0,
    background_volume=0.0,
    background_frequency=0.8,
    freq_mask=0,
    time_mask=0,
    cache=True,
    drop_remainder=False,
    shuffle_buffer=None,
    on_error="raise",
    data_dir=None,
) -> common.DataSplits:
    """Speech Commands keyword spotting as batched `(features, label)` pipelines.

    The standard 12-class task: the ten words `yes no up down left right on
    off stop go`, `_silence_` and `_unknown_` (any other word). Every clip is
    decoded with `tf.audio.decode_wav`, zero-padded or trimmed to 1 s, and
    turned into features with `tf.signal` in batches; the features are
    cached after the first pass. `x` is float32, flat (`frames * bins`) or
    `(frames, bins)`; `y` is the int32 label. The training set is reshuffled
    every epoch in an order fixed by `seed` (and TensorFlow's global seed);
    validation and test keep a fixed order.

    Sources:

    - a directory in the original layout (`speech_commands_v0.02.tar.gz`
      unpacked): one folder of 16 kHz mono 16-bit WAVs per word,
      `_background_noise_/`, `validation_list.txt` and `testing_list.txt`.
      A clip is in the split whose list names it, training if in neither.
      Labels follow Warden's order: `_silence_`, `_unknown_`, then `words`.
      `_unknown_` clips are a seeded sample of each split's clips of other
      words, and `_silence_` clips are seeded 1 s windows of the background
      noise files (each file's first 80% for train, next 10% validation,
      last 10% test): each makes up `silence_share` / `unknown_share` of
      its split (10% each by default, the standard recipe), i.e.
      `share / (1 - silence_share - unknown_share)` times the split's
      target-word clips. Every WAV header is checked up front.
    - `"tfds"`: `tfds.load("speech_commands")` (needs `pip install
      tensorflow-datasets` and a download of a few GB into `data_dir` on first
      use). Its classes and their silence/unknown recipe are fixed by tfds,
      and its label order differs from Warden's: read `info.class_names`.

    Features (`features=`): `"spectrogram"` (STFT magnitude, 257 bins),
    `"log_mel"` (`num_mel_bins` log-mel energies, 20-7600 Hz) or `"mfcc"`
    (the first `num_mfcc` MFCCs of the log-mel spectrogram), over Hann
    windows of `frame_length_ms` every `frame_step_ms`: by default 49 frames
    x 40 log-mels = 1,960 values per clip.

    Training-only augmentation, all off by default: a random time shift,
    background-noise mixing (directory source) and SpecAugment-style masks.
    Time shift and noise act on the waveform, so with either one the
    training set caches decoded audio and computes features every epoch.

    Args:
        source: A directory path or `"tfds"`. Defaults to `"tfds"`.
        features: `"spectrogram"`, `"log_mel"` or `"mfcc"`.
            Defaults to `"log_mel"`.
        batch_size: Examples per batch (the global batch under
            `tf.distribute`). Defaults to `100`.
        seed: Seeds the unknown/silence sampling, the training shuffle and
            the augmentations. Defaults to `0`.
        flatten: Whether `x` is flat (for MLPs) or `(frames, bins)`.
            Defaults to `True`.
        words: The target words (directory source). Defaults to the ten
            standard ones.
        silence_share: Share of each split that is `_silence_`.
            Defaults to `0.1`.
        unknown_share: Share of each split that is `_unknown_`.
            Defaults to `0.1`.
        frame_length_ms: STFT window. Defaults to `30`.
        frame_step_ms: STFT hop. Defaults to `20`.
        num_mel_bins: Mel bins of `"log_mel"` and `"mfcc"`. Defaults to `40`.
        num_mfcc: MFCCs kept for `"mfcc"`. Defaults to `13`.
        time_shift_ms: Maximum random shift of a training clip, in ms
            (Warden uses 100). Defaults to `0` (off).
        background_volume: Maximum volume of the background noise mixed
            into training clips (Warden uses 0.1). Defaults to `0.0` (off).
        background_frequency: Share of training clips that get noise.
            Defaults to `0.8`.
        freq_mask: Maximum width, in bins, of one masked frequency band per
            training clip. Defaults to `0` (off).
        time_mask: Maximum width, in frames, of one masked time span per
            training clip. Defaults to `0` (off).
        cache: `True` caches the features (or decoded training audio) in
            memory, a path prefix caches them in files `<prefix>-<split>*`,
            `False` recomputes them every epoch. The full dataset's log-mel
            features (about 48,000 clips x 1,960 floats) take about 0.4 GB;
            its spectrograms about 2.5 GB, so prefer a file prefix for those. Defaults to `True`.
        drop_remainder: Drop the last partial batch, for the static shapes a
            TPU needs. Defaults to `False`.
        shuffle_buffer: Training shuffle buffer. Defaults to the whole
            training set.
        on_error: What to do with a WAV file that is corrupt, truncated, not
            16 kHz or not mono 16-bit: `"raise"` a `ValueError` naming it, or
            `"skip"` it and list it in `info.skipped`. Defaults to `"raise"`.
        data_dir: Passed to `tfds.load` for `source="tfds"`.

    Returns:
        A `DataSplits(train, validation, test, info)` named tuple.

    Example:

    ```python
    train, val, test, info = speech_commands("/data/speech_commands_v0.02")
    model = keras_lth.models.speech_mlp(info.input_shape[0], num_classes=info.num_classes)
    ```
    """
    batch_size = common.check_positive_int(batch_size, "batch_size")
    cache = common.check_cache(cache)
    if features not in feats.FEATURES:
        raise ValueError(
            "Received an invalid value for `features`, expected one of "
            f"{feats.FEATURES}. Received: features={features!r}"
        )
    for name, value in (
        ("frame_length_ms", frame_length_ms),
        ("frame_step_ms", frame_step_ms),
        ("num_mel_bins", num_mel_bins),
        ("num_mfcc", num_mfcc),
    ):
        common.check_positive_int(value, name)
    if num_mfcc > num_mel_bins:
        raise ValueError(
            "Received an invalid value for `num_mfcc`, expected at most "
            f"num_mel_bins={num_mel_bins}. Received: num_mfcc={num_mfcc!r}"
        )
    for name, value in (
        ("time_shift_ms", time_shift_ms),
        ("freq_mask", freq_mask),
        ("time_mask", time_mask),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(
                f"Received an invalid value for `{name}`, expected a "
                f"non-negative integer. Received: {name}={value!r}"
            )
    for name, value, low, high in (
        ("silence_share", silence_share, 0.0, 1.0),
        ("unknown_share", unknown_share, 0.0, 1.0),
        ("background_volume", background_volume, 0.0, 1.0),
        ("background_frequency", background_frequency, 0.0, 1.0),
    ):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not low <= value <= high
        ):
            raise ValueError(
                f"Received an invalid value for `{name}`, expected a number in "
                f"[{low}, {high}]. Received: {name}={value!r}"
            )
    if silence_share + unknown_share >= 1:
        raise ValueError(
            "Received invalid values for `silence_share` and `unknown_share`, "
            "expected their sum to be below 1. Received: "
            f"silence_share={silence_share!r}, unknown_share={unknown_share!r}"
        )
    words = tuple(words) if not isinstance(words, str) else (words,)
    if (
        not words
        or len(set(words)) != len(words)
        or not all(isinstance(w, str) and w and not w.startswith("_") for w in words)
    ):
        raise ValueError(
            "Received an invalid value for `words`, expected distinct folder "
            f"names not starting with '_'. Received: words={words!r}"
        )
    if on_error not in ("raise", "skip"):
        raise ValueError(
            'Received an invalid value for `on_error`, expected "raise" or '
            f'"skip". Received: on_error={on_error!r}'
        )
    if shuffle_buffer is not None:
        shuffle_buffer = common.check_positive_int(shuffle_buffer, "shuffle_buffer")

    frame_length = SAMPLE_RATE * frame_length_ms // 1000
    frame_step = SAMPLE_RATE * frame_step_ms // 1000
    if frame_length > CLIP_SAMPLES:
        raise ValueError(
            "Received an invalid value for `frame_length_ms`, expected at most "
            f"1000 (one clip). Received: frame_length_ms={frame_length_ms!r}"
        )
    fft_length = 1 << (frame_length - 1).bit_length()
    frames = feats.num_frames(CLIP_SAMPLES, frame_length, frame_step)
    bins = feats.num_bins(features, fft_length, num_mel_bins, num_mfcc)

    def featurize(waves):
        return feats.compute_features(
            waves,
            features,
            SAMPLE_RATE,
            frame_length,
            frame_step,
            fft_length,
            num_mel_bins,
            num_mfcc,
        )

    if isinstance(source, str) and source == "tfds":
        if words != WORDS or silence_share != 0.1 or unknown_share != 0.1:
            raise ValueError(
                "`words`, `silence_share` and `unknown_share` apply to a "
                "directory source; tfds' speech_commands has fixed classes. "
                f"Received: words={words!r}, silence_share={silence_share!r}, "
                f"unknown_share={unknown_share!r}"
            )
        if background_volume > 0:
            raise ValueError(
                "Received an invalid value for `background_volume`: background "
                "noise mixing needs a directory source with "
                f"`{NOISE_DIR}/`. Received: background_volume={background_volume!r}"
            )
        waves, class_names, counts = _tfds_waves(data_dir)
        noise, skipped = None, ()
    elif isinstance(source, (str, os.PathLike)) and tf.io.gfile.isdir(os.fspath(source)):
        index = _index_directory(
            os.fspath(source), words, silence_share, unknown_share, seed, on_error
        )
        class_names = (SILENCE, UNKNOWN) + words
        counts = {split: len(index.examples[split][0]) for split in SPLITS}
        waves = {split: _directory_waves(index.examples[split], index.noise) for split in SPLITS}
        noise, skipped = index.train_noise, index.skipped
        if background_volume > 0 and noise.size < CLIP_SAMPLES:
            raise ValueError(
                "Received an invalid value for `background_volume`: mixing needs "
                f"at least 1 s of training noise in '{os.path.join(source, NOISE_DIR)}'. "
                f"Received: background_volume={background_volume!r}"
            )
    else:
        raise ValueError(
            'Received an invalid value for `source`, expected "tfds" or an '
            f"existing directory in the Speech Commands layout. Received: source={source!r}"
        )

    augment_wave = time_shift_ms > 0 or background_volume > 0
    augment_features = freq_mask > 0 or time_mask > 0
    max_shift = SAMPLE_RATE * time_shift_ms // 1000
    shape = (frames * bins,) if flatten else (frames, bins)

    def finish(x, y):
        return tf.reshape(x, (-1, *shape)), y

    def augment(batch, seed_pair):
        (x, y), seeds = batch, tf.random.experimental.stateless_split(seed_pair, 3)
        if augment_wave:
            if max_shift:
                x = feats.time_shift(x, max_shift, seeds[0])
            if background_volume > 0:
                x = feats.mix_noise(x, noise, background_volume, background_frequency, seeds[1])
            x = featurize(x)
        if augment_features:
            x = feats.mask_features(x, freq_mask, time_mask, seeds[2])
        return finish(x, y)

    def pipeline(split):
        ds = waves[split]
        train = split == "train"
        if not (train and augment_wave):
            # First pass: features in batches, then cached one clip at a time.
            ds = ds.batch(_FEATURE_BATCH)
            ds = ds.map(lambda x, y: (featurize(x), y), num_parallel_calls=tf.data.AUTOTUNE)
            # Keep the count known through unbatch (for Keras' progress bar
            # and epoch ends).
            ds = ds.unbatch().apply(tf.data.experimental.assert_cardinality(counts[split]))
        ds = common.apply_cache(ds, cache, split)
        if train:
            ds = ds.shuffle(
                shuffle_buffer or max(1, counts[split]), seed=seed, reshuffle_each_iteration=True
            )
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if train and (augment_wave or augment_features):
            randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
            ds = tf.data.Dataset.zip(ds, randoms.batch(2))
            ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
        else:
            ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    info = common.DatasetInfo(
        num_classes=len(class_names),
        input_shape=shape,
        class_names=tuple(class_names),
        num_train=counts["train"],
        num_validation=counts["validation"],
        num_test=counts["test"],
        skipped=tuple(skipped),
    )
    return common.DataSplits(pipeline("train"), pipeline("validation"), pipeline("test"), info)


class _Index:
    """The examples of each split: (paths, noise offsets, labels)."""

    def __init__(self, examples, noise, train_noise, skipped):
        self.examples, self.noise, self.train_noise, self.skipped = (
            examples,
            noise,
            train_noise,
            skipped,
        )


def _read_list(root, name):
    path = os.path.join(root, name)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"Speech Commands list file not found: '{path}'. The directory "
            "source needs validation_list.txt and testing_list.txt."
        )
    with tf.io.gfile.GFile(path) as f:
        entries = [line.strip().replace("\\", "/") for line in f if line.strip()]
    return path, entries


def _listdir(directory):
    # tf.io.gfile, not os: the tree may be on GCS (as TPU Nodes need).
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(directory))


def _index_directory(root, words, silence_share, unknown_share, seed, on_error):
    clips = {}  # "word/file.wav" -> word
    for folder in _listdir(root):
        directory = os.path.join(root, folder)
        if folder.startswith(("_", ".")) or not tf.io.gfile.isdir(directory):
            continue
        for name in _listdir(directory):
            if name.lower().endswith(".wav"):
                clips[f"{folder}/{name}"] = folder
    if not clips:
        raise ValueError(
            f"No word folders with .wav files in '{root}': expected the Speech "
            "Commands layout (one folder of WAVs per word)."
        )
    missing = [w for w in words if w not in set(clips.values())]
    if missing:
        warnings.warn(f"No clips of the target word(s) {missing} in '{root}'.", stacklevel=3)
    split_of = dict.fromkeys(clips, "train")
    for split, name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        path, entries = _read_list(root, name)
        for entry in entries:
            if entry not in clips:
                raise ValueError(
                    f"'{path}' names '{entry}', which is not a WAV file under '{root}'."
                )
            if split_of[entry] != "train":
                raise ValueError(f"'{entry}' is in both validation_list.txt and testing_list.txt.")
            split_of[entry] = split

    skipped = []

    def usable(path):
        try:
            check_wav(path, SAMPLE_RATE)
            return True
        except (ValueError, OSError, tf.errors.OpError):
            if on_error == "raise":
                raise
            skipped.append(path)
            return False

    known = {split: [] for split in SPLITS}
    other = {split: [] for split in SPLITS}
    label_of = {word: i + 2 for i, word in enumerate(words)}
    for clip, word in clips.items():
        path = os.path.join(root, *clip.split("/"))
        if not usable(path):
            continue
        if word in label_of:
            known[split_of[clip]].append((path, label_of[word]))
        else:
            other[split_of[clip]].append(path)

    # Background noise: all files in one array; silence clips are windows of
    # it, drawn from each file's part for the split.
    noise_dir = os.path.join(root, NOISE_DIR)
    noise_files = []
    if tf.io.gfile.isdir(noise_dir):
        for name in _listdir(noise_dir):
            path = os.path.join(noise_dir, name)
            if name.lower().endswith(".wav") and usable(path):
                noise_files.append(read_wav(path, SAMPLE_RATE))
    starts = np.cumsum([0] + [len(n) for n in noise_files])
    noise = np.concatenate(noise_files) if noise_files else np.zeros(0, np.float32)

    def segments(split):
        low, high = NOISE_SPLIT[split]
        out = []
        for start, wave in zip(starts, noise_files):
            a, b = start + int(low * len(wave)), start + int(high * len(wave))
            if b - a >= CLIP_SAMPLES:
                out.append((a, b))
        return out

    examples = {}
    others = 1.0 - silence_share - unknown_share
    for k, split in enumerate(SPLITS):
        rng = np.random.default_rng([seed, k])
        n_known = len(known[split])
        n_silence = round(n_known * silence_share / others)
        n_unknown = round(n_known * unknown_share / others)
        if n_unknown > len(other[split]):
            warnings.warn(
                f"Only {len(other[split])} clips of non-target words for the "
                f"{split} split, fewer than the {n_unknown} that "
                f"unknown_share={unknown_share} asks for; using all of them.",
                stacklevel=3,
            )
            n_unknown = len(other[split])
        unknown = sorted(rng.choice(len(other[split]), n_unknown, replace=False))
        paths = [p for p, _ in known[split]] + [other[split][i] for i in unknown]
        labels = [label for _, label in known[split]] + [1] * n_unknown
        offsets = [-1] * len(paths)
        if n_silence:
            parts = segments(split)
            if not parts:
                raise ValueError(
                    f"silence_share={silence_share} needs background noise: "
                    f"at least one WAV in '{noise_dir}' whose {split} part "
                    f"({NOISE_SPLIT[split][0]:.0%}-{NOISE_SPLIT[split][1]:.0%} of "
                    "its length) lasts 1 s or more."
                )
            part = rng.integers(len(parts), size=n_silence)
            for a, b in (parts[i] for i in part):
                offsets.append(int(rng.integers(a, b - CLIP_SAMPLES + 1)))
            paths += [""] * n_silence
            labels += [0] * n_silence
        examples[split] = (paths, np.asarray(offsets, np.int64), np.asarray(labels, np.int32))

    train_noise = [noise[a:b] for a, b in segments("train")]
    train_noise = np.concatenate(train_noise) if train_noise else np.zeros(0, np.float32)
    return _Index(examples, noise, train_noise, skipped)


def _directory_waves(examples, noise):
    """`(wave, label)` pairs: decoded clips, or windows of the noise array."""
    paths, offsets, labels = examples
    noise = tf.constant(noise) if noise.size else tf.zeros([CLIP_SAMPLES])

    def load(path, offset, label):
        def decode():
            audio, _ = tf.audio.decode_wav(tf.io.read_file(path), desired_channels=1)
            return _fix_length(audio[:, 0])

        def window():
            return noise[offset : offset + CLIP_SAMPLES]

        wave = tf.cond(offset >= 0, window, decode)
        return tf.ensure_shape(wave, [CLIP_SAMPLES]), label

    ds = tf.data.Dataset.from_tensor_slices((tf.constant(paths, tf.string), offsets, labels))
    return ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)


def _fix_length(wave):
    wave = wave[:CLIP_SAMPLES]
    return tf.pad(wave, [[0, CLIP_SAMPLES - tf.shape(wave)[0]]])


def _tfds_waves(data_dir):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError(
            'source="tfds" needs TensorFlow Datasets: pip install tensorflow-datasets '
            "(or keras-lth[tfds])"
        ) from None
    splits, info = tfds.load(
        "speech_commands", split=list(SPLITS), as_supervised=True, with_info=True, data_dir=data_dir
    )

    def to_wave(audio, label):
        wave = _fix_length(tf.cast(audio, tf.float32) / 32768.0)
        return tf.ensure_shape(wave, [CLIP_SAMPLES]), tf.cast(label, tf.int32)

    waves, counts = {}, {}
    for split, ds in zip(SPLITS, splits):
        cardinality = int(ds.cardinality())
        counts[split] = cardinality if cardinality >= 0 else info.splits[split].num_examples
        waves[split] = ds.map(to_wave, num_parallel_calls=tf.data.AUTOTUNE)
    return waves, tuple(info.features["label"].names), counts
