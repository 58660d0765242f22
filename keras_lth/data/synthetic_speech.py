"""Synthetic Speech Commands trees: words spoken by espeak-ng, offline.

`make_speech_tree(root)` speaks every word with `espeak-ng` in several
"speakers" (voice, variant, speed and pitch), resamples the 22,050 Hz output
to 16 kHz mono 16-bit WAVs (band-limited FFT resampling in NumPy), and writes
the original Speech Commands layout that `keras_lth.data.speech_commands`
reads: one folder per word, `_background_noise_/`, `validation_list.txt` and
`testing_list.txt`. As in the real dataset, the splits go by speaker, so
validation and test voices are never heard in training.

The default tree (16 speakers, 15 words, 240 clips) takes a few seconds and
is what the tests use; `make_speech_tree(root, speakers=espeak_speakers(96))`
builds a larger one for the CNN example. This is synthetic speech: results
on it say how a method behaves on formant-synthesised words, not how it does
on the recorded dataset.

Needs the `espeak-ng` program (`apt-get install espeak-ng`).

The tree's root gets a `SYNTHETIC.txt` saying so (`is_synthetic(root)`), which
the loader ignores and `keras-lth bench` reads to label its summary as
synthetic speech.

Also a script: `python -m keras_lth.data.synthetic_speech DIR [SPEAKERS]`.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np

from keras_lth.data.wav import write_wav

TARGET_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
OTHER_WORDS = ("bed", "cat", "dog", "house", "tree")
MARKER = "SYNTHETIC.txt"  # at the root of every tree written here
# (voice, words per minute, pitch 0-99); with these 16, the last four are
# held out (see `held_out_speakers`).
SPEAKERS = (
    ("en-us", 150, 50),
    ("en-gb", 170, 40),
    ("en-gb-scotland", 140, 55),
    ("en-029", 180, 45),
    ("en-gb-x-rp", 160, 60),
    ("en-us+f3", 150, 70),
    ("en-gb+f2", 170, 65),
    ("en-us+m3", 130, 35),
    ("en-gb-x-gbclan", 190, 50),
    ("en-us+f4", 165, 75),
    ("en-gb+m2", 145, 30),
    ("en-gb-scotland+f1", 175, 60),
    ("en-us+m5", 155, 45),
    ("en-gb-x-rp+f5", 150, 55),
    ("en-029+m1", 165, 40),
    ("en-us+f2", 140, 65),
)
# What `espeak_speakers` draws extra speakers from: espeak-ng's English
# voices and its human-sounding variants (no robots, whispers or croaks).
VOICES = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-029",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-us-nyc",
)
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8",
    "f1", "f2", "f3", "f4", "f5",
    "Andy", "Annie", "aunty", "boris", "david", "ed", "edward", "john", "linda",
    "max", "Mike", "paul", "rob", "robert", "steph", "travis", "victor",
    "grandma", "grandpa", "norbert", "shelby", "quincy", "belinda", "benjamin",
    "caleb", "klatt", "klatt2", "klatt3",
)  # fmt: skip
NOISE_SECONDS = 12


def espeak_available() -> bool:
    """Whether the `espeak-ng` program is on the `PATH`."""
    return shutil.which("espeak-ng") is not None


def is_synthetic(root) -> bool:
    """Whether `root` is a tree written by `make_speech_tree` (its `MARKER`)."""
    import tensorflow as tf

    return bool(root) and tf.io.gfile.exists(os.path.join(os.fspath(root), MARKER))


def speak(word, voice, speed, pitch, rate=16000) -> np.ndarray:
    """`word` spoken by espeak-ng, as float32 samples at `rate` Hz."""
    if not espeak_available():
        raise RuntimeError(
            "Synthetic speech needs the `espeak-ng` program: apt-get install espeak-ng"
        )
    raw = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
        check=True,
        capture_output=True,
    ).stdout
    data = raw[raw.index(b"data") + 8 :]  # streamed header: the size field is bogus
    wave = np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.float64) / 32768
    return resample(wave, 22050, rate)


def resample(wave, rate_in, rate_out) -> np.ndarray:
    """Band-limited resampling: keep the spectrum below the new Nyquist."""
    n_out = round(len(wave) * rate_out / rate_in)
    spectrum = np.fft.rfft(wave)[: n_out // 2 + 1]
    return (np.fft.irfft(spectrum, n_out) * n_out / len(wave)).astype(np.float32)


def speaker_id(i) -> str:
    """The 8-hex-digit speaker hash of speaker `i`, as in `<id>_nohash_0.wav`."""
    return f"{(i * 2654435761) % 2**32:08x}"


def espeak_speakers(n, seed=0) -> tuple:
    """`n` speakers: `SPEAKERS` first, then seeded random ones.

    A random speaker is a voice of `VOICES` with a variant of `VARIANTS`,
    140-200 words per minute and pitch 25-80; the same `(n, seed)` always
    gives the same speakers.

    Args:
        n: Number of speakers, at least 3 (one per split).
        seed: Seed of the extra speakers' draws. Defaults to `0`.

    Returns:
        A tuple of `(voice, words per minute, pitch)`.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 3:
        raise ValueError(
            "Received an invalid value for `n`, expected an integer >= 3 (a "
            f"speaker for each split). Received: n={n!r}"
        )
    rng = np.random.default_rng(seed)
    extra = []
    for _ in range(max(0, n - len(SPEAKERS))):
        voice = VOICES[rng.integers(len(VOICES))]
        variant = VARIANTS[rng.integers(len(VARIANTS))]
        extra.append((f"{voice}+{variant}", int(rng.integers(140, 201)), int(rng.integers(25, 81))))
    return (SPEAKERS + tuple(extra))[:n]


def held_out_speakers(n) -> tuple:
    """`(validation, test)` speaker indices of an `n`-speaker tree.

    The last eighth of the speakers (at least one) is the test split and the
    eighth before it the validation split: speakers 12, 13 and 14, 15 of 16.
    """
    h = max(1, round(n / 8))
    return tuple(range(n - 2 * h, n - h)), tuple(range(n - h, n))


def make_speech_tree(root, words=TARGET_WORDS + OTHER_WORDS, speakers=SPEAKERS, seed=0) -> dict:
    """Writes a Speech Commands tree of spoken words under `root`.

    Every speaker says every word once (`<word>/<speaker id>_nohash_0.wav`),
    placed at a random point of a 1 s clip over faint noise (a fifth of the
    clips are shorter than 1 s, as some recordings are). Validation and test
    speakers are `held_out_speakers(len(speakers))`. `_background_noise_/`
    gets 12 s of white noise and 12 s of hum (with a README, which the loader
    must ignore).

    Args:
        root: Directory to write: missing, empty, or a tree written here
            before (its files are rewritten). Anything else is refused, so
            that no file of the user's is overwritten.
        words: Words to speak. Defaults to the ten target words and five
            others (`_unknown_` candidates).
        speakers: `(voice, words per minute, pitch)` per speaker, e.g.
            `espeak_speakers(96)`. Defaults to `SPEAKERS` (16).
        seed: Seed of the placement and noise. Defaults to `0`.

    Returns:
        `{"word/file.wav": split}` for every clip.

    Raises:
        ValueError: for fewer than 3 speakers, or a `root` that is a file or
            a non-empty directory without this module's `SYNTHETIC.txt`.
    """
    root = os.fspath(root)
    if os.path.exists(root) and not os.path.isdir(root):
        raise ValueError(
            f"Received an invalid value for `root`, expected a directory to write "
            f"the tree to. Received: root={root!r}, a file"
        )
    if os.path.isdir(root) and os.listdir(root) and not is_synthetic(root):
        raise ValueError(
            "Received an invalid value for `root`, expected a missing or empty "
            f"directory, or a synthetic tree written before (with {MARKER}). "
            f"Received: root={root!r}, which holds other files: nothing was written"
        )
    speakers = tuple(speakers)
    if len(speakers) < 3:
        raise ValueError(
            "Received an invalid value for `speakers`, expected at least 3 "
            f"(one per split). Received: {len(speakers)} speakers"
        )
    validation, test = held_out_speakers(len(speakers))
    rng = np.random.default_rng(seed)
    split_of = {}
    for i, (voice, speed, pitch) in enumerate(speakers):
        split = "validation" if i in validation else "test" if i in test else "train"
        for word in words:
            wave = speak(word, voice, speed, pitch)
            # Place the word at a random point of the 1 s clip, over faint
            # noise, as in a recording; some clips stay short (padded later).
            # A word longer than 1 s (a slow speaker) makes a longer clip,
            # which the loader trims to 1 s.
            shortest = min(len(wave), 16000)
            length = 16000 if rng.random() < 0.8 else int(rng.integers(shortest, 16000 + 1))
            clip = np.zeros(max(length, len(wave)), np.float32)
            start = int(rng.integers(0, len(clip) - len(wave) + 1))
            clip[start : start + len(wave)] += wave
            clip += rng.normal(0, 3e-3, len(clip)).astype(np.float32)
            os.makedirs(os.path.join(root, word), exist_ok=True)
            name = f"{word}/{speaker_id(i)}_nohash_0.wav"
            write_wav(os.path.join(root, name), clip)
            split_of[name] = split
    noise_dir = os.path.join(root, "_background_noise_")
    os.makedirs(noise_dir, exist_ok=True)
    white = rng.normal(0, 0.1, 16000 * NOISE_SECONDS)
    t = np.arange(len(white)) / 16000
    hum = 0.05 * np.sin(2 * np.pi * 60 * t) + np.convolve(white, np.ones(8) / 8, "same")
    write_wav(os.path.join(noise_dir, "white_noise.wav"), white)
    write_wav(os.path.join(noise_dir, "hum.wav"), hum)
    with open(os.path.join(noise_dir, "README.md"), "w") as f:
        f.write("Not audio: the loader must ignore it.\n")
    with open(os.path.join(root, MARKER), "w") as f:
        f.write(
            "Synthetic speech: written by keras_lth.data.synthetic_speech.make_speech_tree "
            f"({len(speakers)} espeak-ng speakers, {len(words)} words, seed {seed}), "
            "not the Google Speech Commands recordings.\n"
        )
    for split, list_name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        with open(os.path.join(root, list_name), "w") as f:
            f.writelines(f"{name}\n" for name, s in sorted(split_of.items()) if s == split)
    return split_of


def main(argv=None):
    """`python -m keras_lth.data.synthetic_speech DIR [SPEAKERS]`."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m keras_lth.data.synthetic_speech",
        description="Writes a synthetic Speech Commands tree (espeak-ng) to DIR.",
    )
    parser.add_argument("dir", help="a missing or empty directory (or a tree written before)")
    parser.add_argument(
        "speakers",
        nargs="?",
        type=int,
        default=len(SPEAKERS),
        help=f"number of speakers, at least 3 (default {len(SPEAKERS)}: the tests' tree)",
    )
    args = parser.parse_args(argv)
    try:
        split_of = make_speech_tree(args.dir, speakers=espeak_speakers(args.speakers))
    except ValueError as e:
        parser.error(str(e))
    print(f"Wrote {len(split_of)} clips of {args.speakers} speakers to {args.dir}")


if __name__ == "__main__":
    main()
