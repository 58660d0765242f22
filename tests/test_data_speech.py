"""Tests for `keras_lth.data.speech_commands`, its features and WAV checks.

The data is a miniature Speech Commands tree of real spoken words, built once
per session by `espeak-ng` (see `speech_tree.py`).
"""

import os
import shutil
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_lth import data, models
from keras_lth.data import features as feats
from keras_lth.data.wav import read_wav, read_wav_header, write_wav

sys.path.insert(0, os.path.dirname(__file__))
import speech_tree

speech_module = sys.modules["keras_lth.data.speech_commands"]
WORDS = speech_tree.TARGET_WORDS
WARDEN_CLASSES = ("_silence_", "_unknown_") + WORDS


@pytest.fixture(scope="session")
def tree(tmp_path_factory):
    if not speech_tree.espeak_available():
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    root = tmp_path_factory.mktemp("speech_commands")
    split_of = speech_tree.make_speech_tree(str(root))
    return str(root), split_of


@pytest.fixture(scope="module")
def splits(tree):
    return data.speech_commands(tree[0], batch_size=16, seed=0)


def _collect(ds):
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(xs), np.concatenate(ys)


SMALL_WORDS = ("yes", "no")


def _small_tree(tree, dst, words=SMALL_WORDS + ("bed",)):
    """A copy of a few word folders of the session tree, with its lists."""
    root, _ = tree
    for folder in words + ("_background_noise_",):
        shutil.copytree(os.path.join(root, folder), os.path.join(dst, folder))
    for name in ("validation_list.txt", "testing_list.txt"):
        with open(os.path.join(root, name)) as f:
            kept = [line for line in f if line.split("/")[0] in words]
        with open(os.path.join(dst, name), "w") as f:
            f.writelines(kept)
    return str(dst)


# --- splits, labels, shares -------------------------------------------------------------


def test_info_classes_in_wardens_order(splits, tree):
    info = splits.info
    assert info.class_names == WARDEN_CLASSES and info.num_classes == 12
    assert info.input_shape == (49 * 40,)
    assert info.skipped == ()
    n_known = {
        s: sum(1 for n, sp in tree[1].items() if sp == s and n.split("/")[0] in WORDS)
        for s in ("train", "validation", "test")
    }
    for split, count in (
        ("train", info.num_train),
        ("validation", info.num_validation),
        ("test", info.num_test),
    ):
        labels = _collect(getattr(splits, split))[1]
        assert len(labels) == count
        assert np.sum(labels >= 2) == n_known[split]
        # silence and unknown are each 10% of the split, up to rounding
        for label in (0, 1):
            assert abs(np.mean(labels == label) - 0.1) <= 1 / count


def test_split_membership_and_labels_match_the_lists(tree):
    root, split_of = tree
    index = speech_module._index_directory(root, WORDS, 0.1, 0.1, 0, "raise")
    seen = set()
    for split in ("train", "validation", "test"):
        paths, offsets, labels = index.examples[split]
        for path, offset, label in zip(paths, offsets, labels):
            if label == 0:
                assert path == "" and offset >= 0
                continue
            name = os.path.relpath(path, root).replace(os.sep, "/")
            word = name.split("/")[0]
            assert split_of[name] == split, name  # the lists decide the split
            assert label == (WARDEN_CLASSES.index(word) if word in WORDS else 1)
            assert name not in seen
            seen.add(name)
    # every target-word clip is used, in its own split
    targets = {n for n in split_of if n.split("/")[0] in WORDS}
    assert targets <= seen


def test_silence_windows_come_from_their_splits_part_of_each_noise_file(tree):
    root, _ = tree
    index = speech_module._index_directory(root, WORDS, 0.1, 0.1, 0, "raise")
    noise_dir = os.path.join(root, "_background_noise_")
    lengths = [
        len(read_wav(os.path.join(noise_dir, n)))
        for n in sorted(os.listdir(noise_dir))
        if n.endswith(".wav")
    ]
    starts = np.cumsum([0] + lengths)
    for split, (low, high) in speech_module.NOISE_SPLIT.items():
        _, offsets, labels = index.examples[split]
        for offset in offsets[labels == 0]:
            f = np.searchsorted(starts, offset, side="right") - 1
            position = (offset - starts[f]) / lengths[f]
            end = (offset + 16000 - starts[f]) / lengths[f]
            assert low <= position and end <= high + 1e-9, (split, position, end)


def test_val_and_test_features_match_the_decoded_files(tree, splits):
    root, _ = tree
    index = speech_module._index_directory(root, WORDS, 0.1, 0.1, 0, "raise")
    paths, offsets, labels = index.examples["test"]
    x, y = _collect(splits.test)
    np.testing.assert_array_equal(y, labels)  # same order as the index
    noise = index.noise
    for i in range(len(paths)):
        if offsets[i] >= 0:
            wave = noise[offsets[i] : offsets[i] + 16000]
        else:
            wave = read_wav(paths[i])[:16000]
            wave = np.pad(wave, (0, 16000 - len(wave)))
        want = feats.compute_features(tf.constant(wave[None]))
        np.testing.assert_allclose(x[i], np.reshape(want, -1), rtol=1e-5, atol=1e-4)


def test_unknown_share_beyond_the_pool_warns_and_uses_all(tree):
    with pytest.warns(UserWarning, match="non-target words"):
        info = data.speech_commands(tree[0], unknown_share=0.5, batch_size=64).info
    n_other_train = sum(
        1 for n, s in tree[1].items() if s == "train" and n.split("/")[0] not in WORDS
    )
    n_known_train = sum(1 for n, s in tree[1].items() if s == "train" and n.split("/")[0] in WORDS)
    assert info.num_train == n_known_train + n_other_train + round(n_known_train * 0.1 / 0.4)


def test_custom_words_and_no_silence_or_unknown(tree):
    train, val, test, info = data.speech_commands(
        tree[0], words=("yes", "no"), silence_share=0.0, unknown_share=0.0, batch_size=64
    )
    assert info.class_names == ("_silence_", "_unknown_", "yes", "no")
    for ds in (train, val, test):
        assert set(_collect(ds)[1]) == {2, 3}


# --- shapes, determinism, cache, augmentation -----------------------------------------------


@pytest.mark.parametrize("kind, bins", [("spectrogram", 257), ("log_mel", 40), ("mfcc", 13)])
def test_feature_shapes_static_with_drop_remainder(tree, kind, bins):
    train, val, test, info = data.speech_commands(
        tree[0], features=kind, flatten=False, batch_size=8, drop_remainder=True, cache=False
    )
    assert info.input_shape == (49, bins)
    for ds in (train, val, test):
        assert ds.element_spec[0].shape.as_list() == [8, 49, bins]
        assert ds.element_spec[1].shape.as_list() == [8]
    x, y = next(iter(test))
    assert x.dtype == tf.float32 and y.dtype == tf.int32 and np.all(np.isfinite(x))


def test_frame_settings_change_the_shape(tree):
    info = data.speech_commands(tree[0], frame_length_ms=25, frame_step_ms=10, num_mel_bins=32).info
    assert info.input_shape == ((1 + (16000 - 400) // 160) * 32,)


def test_train_order_deterministic_per_seed_and_reshuffled(tree, splits):
    first = data.speech_commands(tree[0], batch_size=16, seed=0)
    again = data.speech_commands(tree[0], batch_size=16, seed=0)
    other = data.speech_commands(tree[0], batch_size=16, seed=1)
    x1, y1 = _collect(first.train)
    _, y2 = _collect(first.train)
    np.testing.assert_array_equal(x1, _collect(again.train)[0])
    assert not np.array_equal(y1, y2)
    assert sorted(y1) == sorted(y2)
    assert not np.array_equal(x1, _collect(other.train)[0])
    # validation and test keep their order
    np.testing.assert_array_equal(_collect(splits.test)[0], _collect(again.test)[0])


def test_cache_in_memory_in_files_and_none_agree(tree, splits, tmp_path):
    variants = [
        data.speech_commands(tree[0], batch_size=16, cache=False),
        data.speech_commands(tree[0], batch_size=16, cache=str(tmp_path / "sc")),
    ]
    for split in ("train", "validation", "test"):
        want = _collect(getattr(splits, split))
        for variant in variants:
            for _ in range(2):  # the second pass reads the cache
                got = _collect(getattr(variant, split))
                if split == "train":  # another epoch: same examples, new order
                    order_w, order_g = np.lexsort(want[0].T), np.lexsort(got[0].T)
                    got, want_ = (
                        (got[0][order_g], got[1][order_g]),
                        (want[0][order_w], want[1][order_w]),
                    )
                else:
                    want_ = want
                np.testing.assert_allclose(got[0], want_[0], rtol=1e-6)
                np.testing.assert_array_equal(got[1], want_[1])
    assert any(p.name.startswith("sc-test") for p in tmp_path.iterdir())


def test_augmentation_is_train_only_seeded_and_changes_each_epoch(tree, splits):
    kwargs = {
        "batch_size": 16,
        "seed": 0,
        "time_shift_ms": 100,
        "background_volume": 0.1,
        "freq_mask": 8,
        "time_mask": 10,
    }
    a = data.speech_commands(tree[0], **kwargs)
    b = data.speech_commands(tree[0], **kwargs)
    epoch_a1, epoch_a2, epoch_b1 = _collect(a.train), _collect(a.train), _collect(b.train)
    np.testing.assert_array_equal(epoch_a1[0], epoch_b1[0])
    assert not np.array_equal(epoch_a1[0], epoch_a2[0])
    plain = _collect(data.speech_commands(tree[0], batch_size=16, seed=0).train)
    np.testing.assert_array_equal(epoch_a1[1], plain[1])  # same shuffle
    assert not np.allclose(epoch_a1[0], plain[0])
    np.testing.assert_allclose(_collect(a.test)[0], _collect(splits.test)[0], rtol=1e-6)


# --- features and augmentations on hand-made signals ----------------------------------------


def test_spectrogram_of_a_tone_peaks_at_its_bin():
    t = np.arange(16000) / 16000
    tone = np.sin(2 * np.pi * 1000 * t).astype("float32")[None]
    spectrum = feats.compute_features(tone, "spectrogram").numpy()
    assert spectrum.shape == (1, 49, 257)
    assert set(np.argmax(spectrum[0], axis=-1)) == {round(1000 / (16000 / 512))}
    log_mel = feats.compute_features(tone).numpy()
    silent = feats.compute_features(np.zeros((1, 16000), "float32")).numpy()
    np.testing.assert_allclose(silent, np.log(1e-6), rtol=1e-6)
    assert log_mel.max() > silent.max() + 10
    mfcc = feats.compute_features(tone, "mfcc", num_mfcc=13).numpy()
    assert mfcc.shape == (1, 49, 13)


def test_time_shift_moves_samples_and_zero_fills():
    waves = tf.constant(np.arange(1, 11, dtype="float32")[None].repeat(3, 0))
    shifted = feats.time_shift(waves, 3, tf.constant([1, 2])).numpy()
    for row in shifted:
        nonzero = row[row != 0]
        shift = int(np.argmax(row == nonzero[0])) - int(nonzero[0] - 1)
        assert -3 <= shift <= 3
        np.testing.assert_array_equal(row, np.roll(np.pad(np.arange(1, 11.0), 10), shift)[10:20])


def test_mix_noise_frequency_and_volume():
    waves = tf.zeros((200, 16), tf.float32)
    noise = tf.ones((100,), tf.float32)
    mixed = feats.mix_noise(waves, noise, 0.5, 0.25, tf.constant([3, 4])).numpy()
    gains = mixed[:, 0]
    assert np.all(mixed == gains[:, None])  # one constant window per clip
    assert 0.15 < np.mean(gains > 0) < 0.35 and gains.max() <= 0.5


def test_spec_masks_set_a_band_and_a_span_to_the_mean():
    x = tf.reshape(tf.range(2 * 20 * 10, dtype=tf.float32), (2, 20, 10))
    masked = feats.mask_features(x, 3, 4, tf.constant([5, 6])).numpy()
    for clip, original in zip(masked, x.numpy()):
        changed = clip != original
        assert np.allclose(clip[changed], original.mean())
        rows, cols = np.where(changed.all(axis=1))[0], np.where(changed.all(axis=0))[0]
        assert len(rows) <= 4 and len(cols) <= 3
        assert changed.sum() == len(rows) * 10 + len(cols) * 20 - len(rows) * len(cols)


def test_tree_on_another_filesystem(tree, tmp_path):
    """`ram://` stands in for `gs://`: everything goes through tf.io.gfile."""
    local = _small_tree(tree, tmp_path)
    remote = "ram://speech_commands_test"
    for folder, _, names in os.walk(local):
        relative = os.path.relpath(folder, local).replace(os.sep, "/")
        target = remote if relative == "." else f"{remote}/{relative}"
        tf.io.gfile.makedirs(target)
        for name in names:
            tf.io.gfile.copy(os.path.join(folder, name), f"{target}/{name}", overwrite=True)
    a = data.speech_commands(remote, words=SMALL_WORDS, batch_size=8)
    b = data.speech_commands(local, words=SMALL_WORDS, batch_size=8)
    assert a.info == b.info
    np.testing.assert_array_equal(_collect(a.test)[0], _collect(b.test)[0])


# --- bad input ----------------------------------------------------------------------------


def test_corrupt_wav_is_named_or_skipped_and_counted(tree, tmp_path):
    root = _small_tree(tree, tmp_path)
    bad = os.path.join(root, "yes", "deadbeef_nohash_0.wav")
    with open(bad, "wb") as f:
        f.write(b"not a wav file at all")
    with pytest.raises(ValueError, match="deadbeef_nohash_0.wav.*not a RIFF/WAVE"):
        data.speech_commands(root, words=SMALL_WORDS)
    good = data.speech_commands(root, on_error="skip", words=SMALL_WORDS)
    assert good.info.skipped == (bad,)
    assert good.info.num_train == sum(1 for _ in good.train.unbatch())


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: write_wav(p, np.zeros(8000), sample_rate=8000), "8000 Hz, expected 16000 Hz"),
        (lambda p: _write_stereo(p), "2 channel"),
        (lambda p: _truncate(p), "truncated"),
    ],
)
def test_wrong_rate_stereo_and_truncated_wavs_are_named(tree, tmp_path, write, message):
    root = _small_tree(tree, tmp_path)
    path = os.path.join(root, "no", "0badc0de_nohash_1.wav")
    write(path)
    with pytest.raises(ValueError, match=f"0badc0de_nohash_1.wav.*{message}"):
        data.speech_commands(root, words=SMALL_WORDS)
    assert data.speech_commands(root, words=SMALL_WORDS, on_error="skip").info.skipped == (path,)


def _write_stereo(path):
    write_wav(path, np.zeros(32000))
    with open(path, "r+b") as f:
        f.seek(22)
        f.write(bytes([2]))  # channels


def _truncate(path):
    write_wav(path, np.zeros(16000))
    with open(path, "r+b") as f:
        f.truncate(1000)


def test_wav_header_round_trip(tmp_path):
    samples = (np.sin(np.arange(1000) / 7) * 0.5).astype("float32")
    write_wav(tmp_path / "a.wav", samples)
    header = read_wav_header(tmp_path / "a.wav")
    assert (header.sample_rate, header.channels, header.bits, header.num_samples) == (
        16000,
        1,
        16,
        1000,
    )
    np.testing.assert_allclose(read_wav(tmp_path / "a.wav"), samples, atol=1 / 32768)
    decoded, _ = tf.audio.decode_wav(tf.io.read_file(str(tmp_path / "a.wav")))
    np.testing.assert_array_equal(decoded.numpy()[:, 0], read_wav(tmp_path / "a.wav"))


def test_empty_directory_and_missing_lists(tree, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No word folders with .wav files in .*empty"):
        data.speech_commands(str(tmp_path / "empty"))
    root = _small_tree(tree, tmp_path / "tree")
    os.remove(os.path.join(root, "testing_list.txt"))
    with pytest.raises(FileNotFoundError, match="testing_list.txt"):
        data.speech_commands(root, words=SMALL_WORDS)


def test_list_naming_a_missing_file(tree, tmp_path):
    root = _small_tree(tree, tmp_path)
    with open(os.path.join(root, "validation_list.txt"), "a") as f:
        f.write("yes/cafef00d_nohash_9.wav\n")
    with pytest.raises(ValueError, match="validation_list.txt' names 'yes/cafef00d_nohash_9.wav'"):
        data.speech_commands(root, words=SMALL_WORDS)


def test_silence_without_background_noise(tree, tmp_path):
    root = _small_tree(tree, tmp_path)
    shutil.rmtree(os.path.join(root, "_background_noise_"))
    with pytest.raises(ValueError, match="silence_share=0.1 needs background noise"):
        data.speech_commands(root, words=SMALL_WORDS)
    assert data.speech_commands(root, words=SMALL_WORDS, silence_share=0.0).info.num_train > 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"source": "no/such/dir"}, "source"),
        ({"features": "mel"}, "features"),
        ({"batch_size": 0}, "batch_size"),
        ({"silence_share": 1.5}, "silence_share"),
        ({"unknown_share": -0.1}, "unknown_share"),
        ({"background_volume": 2}, "background_volume"),
        ({"time_shift_ms": -1}, "time_shift_ms"),
        ({"freq_mask": 1.5}, "freq_mask"),
        ({"num_mfcc": 50}, "num_mfcc"),
        ({"frame_length_ms": 2000}, "frame_length_ms"),
        ({"on_error": "ignore"}, "on_error"),
        ({"words": ("yes", "yes")}, "words"),
        ({"cache": 3}, "cache"),
    ],
)
def test_invalid_arguments_name_argument_and_value(tree, kwargs, name):
    kwargs = {"source": tree[0], **kwargs}
    with pytest.raises(ValueError, match=rf"`{name}`.*Received: .*{name}="):
        data.speech_commands(**kwargs)


# --- tfds and learning ---------------------------------------------------------------------


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        train, _, _, info = data.speech_commands("tfds", batch_size=4)
        x, y = next(iter(train))
    assert info.num_classes == 12 and info.num_train == 12
    assert info.class_names[-2:] == ("_silence_", "_unknown_")  # tfds' order, not Warden's
    assert set(info.class_names) == set(WARDEN_CLASSES)
    assert x.shape == (4, 1960) and y.dtype == tf.int32
    with pytest.raises(ValueError, match="directory source"):
        data.speech_commands("tfds", words=("yes",))


def test_mlp_learns_spoken_words_far_above_chance(tree):
    train, _, test, info = data.speech_commands(tree[0], batch_size=16, seed=0)
    keras.utils.set_random_seed(0)
    model = models.speech_mlp(info.input_shape[0], hidden=(128, 128), seed=0)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(train, epochs=25, verbose=0)
    _, accuracy = model.evaluate(test, verbose=0)
    # unseen voices; chance is 1/12
    assert accuracy >= 0.4, accuracy
