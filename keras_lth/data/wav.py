"""Checking, reading and writing 16-bit PCM WAV files.

The speech pipeline decodes audio with `tf.audio.decode_wav`; this module
checks each file's header first, so that a corrupt, truncated, stereo or
wrong-rate file gets an error naming it (or is skipped) before training
starts, instead of a bare TensorFlow error in the middle of an epoch.
Files are opened with `tf.io.gfile`, so paths may be on any filesystem
TensorFlow reads (e.g. `gs://`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf


class WavHeader(NamedTuple):
    sample_rate: int
    channels: int
    bits: int
    num_samples: int  # per channel
    data_offset: int  # byte offset of the samples in the file


def read_wav_header(path) -> WavHeader:
    """Parses a WAV file's RIFF chunks.

    Raises:
        ValueError: naming the file, if it is not a RIFF/WAVE file, has no
            `fmt ` or `data` chunk, or is shorter than its `data` chunk says.
    """
    path = os.fspath(path)
    with tf.io.gfile.GFile(path, "rb") as f:
        size = f.size()
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            raise ValueError(f"WAV file '{path}' is not a RIFF/WAVE file.")
        fmt, pos = None, 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            chunk_id, length = chunk[:4], int.from_bytes(chunk[4:], "little")
            if chunk_id == b"fmt ":
                raw = f.read(16)
                if len(raw) < 16:
                    break
                fmt = (
                    int.from_bytes(raw[0:2], "little"),  # format: 1 = PCM
                    int.from_bytes(raw[2:4], "little"),  # channels
                    int.from_bytes(raw[4:8], "little"),  # sample rate
                    int.from_bytes(raw[14:16], "little"),  # bits per sample
                )
            elif chunk_id == b"data":
                if fmt is None:
                    raise ValueError(f"WAV file '{path}' has no 'fmt ' chunk before its data.")
                if pos + 8 + length > size:
                    raise ValueError(
                        f"WAV file '{path}' is truncated: its data chunk says "
                        f"{length} bytes, the file holds {size - pos - 8}."
                    )
                _, channels, rate, bits = fmt
                frame_bytes = max(1, channels * bits // 8)
                return WavHeader(rate, channels, bits, length // frame_bytes, pos + 8)
            pos += 8 + length + (length & 1)
    raise ValueError(f"WAV file '{path}' is truncated or has no 'data' chunk.")


def check_wav(path, sample_rate=16000) -> WavHeader:
    """`read_wav_header`, plus: 16-bit PCM, mono, at `sample_rate` Hz."""
    header = read_wav_header(path)
    if header.sample_rate != sample_rate:
        raise ValueError(
            f"WAV file '{path}' has a sample rate of {header.sample_rate} Hz, "
            f"expected {sample_rate} Hz. Resample it first (e.g. "
            f"`sox in.wav -r {sample_rate} out.wav`)."
        )
    if header.channels != 1 or header.bits != 16:
        raise ValueError(
            f"WAV file '{path}' has {header.channels} channel(s) of "
            f"{header.bits}-bit samples, expected mono 16-bit PCM."
        )
    return header


def read_wav(path, sample_rate=16000) -> np.ndarray:
    """The samples of a mono 16-bit WAV file as float32 in [-1, 1)."""
    header = check_wav(path, sample_rate)
    with tf.io.gfile.GFile(path, "rb") as f:
        f.seek(header.data_offset)
        raw = f.read(2 * header.num_samples)
    return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0


def write_wav(path, samples, sample_rate=16000) -> None:
    """Writes mono 16-bit PCM; float `samples` in [-1, 1] are scaled."""
    samples = np.asarray(samples)
    if samples.dtype.kind == "f":
        samples = np.round(np.clip(samples, -1.0, 32767 / 32768) * 32768)
    data = samples.astype("<i2").tobytes()
    header = (
        b"RIFF"
        + (36 + len(data)).to_bytes(4, "little")
        + b"WAVEfmt "
        + (16).to_bytes(4, "little")
        + (1).to_bytes(2, "little")  # PCM
        + (1).to_bytes(2, "little")  # mono
        + sample_rate.to_bytes(4, "little")
        + (2 * sample_rate).to_bytes(4, "little")  # byte rate
        + (2).to_bytes(2, "little")  # block align
        + (16).to_bytes(2, "little")  # bits
        + b"data"
        + len(data).to_bytes(4, "little")
    )
    with tf.io.gfile.GFile(os.fspath(path), "wb") as f:
        f.write(header + data)
