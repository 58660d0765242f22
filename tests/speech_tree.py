"""A miniature Google Speech Commands tree of real spoken words.

`make_speech_tree(root)` speaks every word with `espeak-ng` in several
"speakers" (voice, speed and pitch), resamples the 22,050 Hz output to
16 kHz mono 16-bit WAVs (band-limited FFT resampling in NumPy), and writes
the original layout: one folder per word, `_background_noise_/`,
`validation_list.txt` and `testing_list.txt`. As in the real dataset, the
splits go by speaker, so validation and test voices are never heard in
training. It takes a few seconds.

Also a script: `python tests/speech_tree.py DIR` writes the tree to `DIR`.
"""

import os
import shutil
import subprocess

import numpy as np

from keras_lth.data.wav import write_wav

TARGET_WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
OTHER_WORDS = ("bed", "cat", "dog", "house", "tree")
# (voice, words per minute, pitch 0-99); the last four are held out.
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
VALIDATION_SPEAKERS = (12, 13)
TEST_SPEAKERS = (14, 15)
NOISE_SECONDS = 12


def espeak_available():
    return shutil.which("espeak-ng") is not None


def speak(word, voice, speed, pitch, rate=16000):
    """`word` spoken by espeak-ng, as float32 samples at `rate` Hz."""
    raw = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", word],
        check=True,
        capture_output=True,
    ).stdout
    data = raw[raw.index(b"data") + 8 :]  # streamed header: the size field is bogus
    wave = np.frombuffer(data[: len(data) // 2 * 2], "<i2").astype(np.float64) / 32768
    return resample(wave, 22050, rate)


def resample(wave, rate_in, rate_out):
    """Band-limited resampling: keep the spectrum below the new Nyquist."""
    n_out = round(len(wave) * rate_out / rate_in)
    spectrum = np.fft.rfft(wave)[: n_out // 2 + 1]
    return (np.fft.irfft(spectrum, n_out) * n_out / len(wave)).astype(np.float32)


def speaker_id(i):
    return f"{(i * 2654435761) % 2**32:08x}"


def make_speech_tree(root, words=TARGET_WORDS + OTHER_WORDS, speakers=SPEAKERS, seed=0):
    """Writes the tree under `root`; returns `{"word/file.wav": split}`."""
    rng = np.random.default_rng(seed)
    split_of = {}
    for i, (voice, speed, pitch) in enumerate(speakers):
        split = (
            "validation" if i in VALIDATION_SPEAKERS else "test" if i in TEST_SPEAKERS else "train"
        )
        for word in words:
            wave = speak(word, voice, speed, pitch)
            # Place the word at a random point of the 1 s clip, over faint
            # noise, as in a recording; some clips stay short (padded later).
            length = 16000 if rng.random() < 0.8 else int(rng.integers(len(wave), 16000 + 1))
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
    for split, list_name in (("validation", "validation_list.txt"), ("test", "testing_list.txt")):
        with open(os.path.join(root, list_name), "w") as f:
            f.writelines(f"{name}\n" for name, s in sorted(split_of.items()) if s == split)
    return split_of


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python tests/speech_tree.py DIR")
    split_of = make_speech_tree(sys.argv[1])
    print(f"Wrote {len(split_of)} clips to {sys.argv[1]}")
