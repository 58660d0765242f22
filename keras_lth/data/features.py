"""Audio features and augmentations with `tf.signal`, on batches of clips.

Every function takes a batch (`waves` of shape `(batch, samples)` or
`features` of shape `(batch, frames, bins)`), so a pipeline maps it once per
batch rather than once per clip. The augmentations are stateless: they take a
`seed` tensor of shape `(2,)`, which makes a pipeline's draws depend only on
its seed, not on thread timing.
"""

from __future__ import annotations

import functools

import tensorflow as tf

FEATURES = ("spectrogram", "log_mel", "mfcc")
_LOG_OFFSET = 1e-6


def num_frames(num_samples, frame_length, frame_step) -> int:
    """Frames that `tf.signal.stft` (without padding) cuts from a clip."""
    return 1 + (num_samples - frame_length) // frame_step


def num_bins(kind, fft_length, num_mel_bins, num_mfcc) -> int:
    """Feature values per frame for feature `kind`."""
    return {"spectrogram": fft_length // 2 + 1, "log_mel": num_mel_bins, "mfcc": num_mfcc}[kind]


def compute_features(
    waves,
    kind="log_mel",
    sample_rate=16000,
    frame_length=480,
    frame_step=320,
    fft_length=512,
    num_mel_bins=40,
    num_mfcc=13,
    lower_hz=20.0,
    upper_hz=7600.0,
):
    """Spectral features of a batch of waveforms.

    Args:
        waves: float32 tensor `(batch, samples)`.
        kind: `"spectrogram"` (STFT magnitude), `"log_mel"`
            (`log(mel + 1e-6)` of the magnitude) or `"mfcc"` (the first
            `num_mfcc` MFCCs of the log-mel spectrogram).
        sample_rate, frame_length, frame_step, fft_length: STFT settings
            (lengths in samples; Hann window).
        num_mel_bins, lower_hz, upper_hz: the mel filterbank.
        num_mfcc: MFCCs kept for `"mfcc"`.

    Returns:
        float32 tensor `(batch, frames, bins)`.

    Example:

    >>> x = compute_features(tf.zeros((2, 16000)))
    >>> x.shape
    TensorShape([2, 49, 40])
    """
    stft = tf.signal.stft(waves, frame_length, frame_step, fft_length)
    magnitude = tf.abs(stft)
    if kind == "spectrogram":
        return magnitude
    weights = _mel_matrix(num_mel_bins, fft_length // 2 + 1, sample_rate, lower_hz, upper_hz)
    log_mel = tf.math.log(tf.tensordot(magnitude, weights, 1) + _LOG_OFFSET)
    log_mel.set_shape(magnitude.shape[:-1].concatenate([num_mel_bins]))
    if kind == "log_mel":
        return log_mel
    return tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :num_mfcc]


@functools.lru_cache(maxsize=8)
def _mel_matrix(*args):
    # Computed once, eagerly: building it inside every traced pipeline
    # function costs more than the rest of the tracing.
    with tf.init_scope():
        return tf.signal.linear_to_mel_weight_matrix(*args).numpy()


def time_shift(waves, max_shift, seed):
    """Shifts each clip by a uniform `[-max_shift, max_shift]` samples, zero-filled."""
    batch, length = tf.shape(waves)[0], waves.shape[1]
    shift = tf.random.stateless_uniform([batch, 1], seed, -max_shift, max_shift + 1, tf.int32)
    source = tf.range(length)[tf.newaxis, :] - shift
    inside = (source >= 0) & (source < length)
    shifted = tf.gather(waves, tf.clip_by_value(source, 0, length - 1), batch_dims=1)
    return tf.where(inside, shifted, tf.zeros_like(shifted))


def mix_noise(waves, noise, volume, probability, seed):
    """Adds a random window of `noise` (1-D) to a `probability` share of clips.

    Each chosen clip gets its own window, scaled by a uniform `[0, volume]`.
    """
    batch, length = tf.shape(waves)[0], waves.shape[1]
    seeds = tf.random.experimental.stateless_split(seed, 3)
    start = tf.random.stateless_uniform(
        [batch, 1], seeds[0], 0, tf.shape(noise)[0] - length + 1, tf.int32
    )
    windows = tf.gather(noise, start + tf.range(length)[tf.newaxis, :])
    gain = tf.random.stateless_uniform([batch, 1], seeds[1], 0.0, volume)
    gain *= tf.cast(tf.random.stateless_uniform([batch, 1], seeds[2]) < probability, tf.float32)
    return tf.clip_by_value(waves + gain * windows, -1.0, 1.0)


def mask_features(features, max_bins, max_frames, seed):
    """SpecAugment-style masks: one band of up to `max_bins` bins and one span
    of up to `max_frames` frames per clip, set to the clip's mean value."""
    batch = tf.shape(features)[0]
    frames, bins = features.shape[1], features.shape[2]
    seeds = tf.random.experimental.stateless_split(seed, 4)

    def band(size, max_width, width_seed, start_seed):
        width = tf.random.stateless_uniform([batch, 1], width_seed, 0, max_width + 1, tf.int32)
        u = tf.random.stateless_uniform([batch, 1], start_seed)
        start = tf.cast(u * tf.cast(size - width + 1, tf.float32), tf.int32)
        position = tf.range(size)[tf.newaxis, :]
        return (position >= start) & (position < start + width)

    in_band = band(bins, max_bins, seeds[0], seeds[1])[:, tf.newaxis, :]
    in_span = band(frames, max_frames, seeds[2], seeds[3])[:, :, tf.newaxis]
    masked = in_band | in_span
    mean = tf.reduce_mean(features, axis=[1, 2], keepdims=True)
    return tf.where(masked, mean, features)
