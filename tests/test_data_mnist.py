"""Tests for `keras_lth.data.mnist` and the IDX reader/writer."""

import gzip
import os

import numpy as np
import pytest

from keras_lth import data
from keras_lth.data import read_idx, write_idx


def _collect(ds):
    xs, ys = zip(*((x.numpy(), y.numpy()) for x, y in ds))
    return np.concatenate(xs), np.concatenate(ys)


def _rows(x):
    return {row.tobytes() for row in np.asarray(x)}


def _write_mnist_dir(directory, n_train=40, n_test=12, shape=(28, 28), gz=False, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    os.makedirs(directory, exist_ok=True)
    for name, array in arrays.items():
        write_idx(os.path.join(directory, name + (".gz" if gz else "")), array)
    return arrays


# --- embedded source ------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedded():
    return data.mnist(batch_size=100, seed=0)


def test_embedded_counts_shapes_and_types(embedded):
    train, val, test, info = embedded
    assert info == data.DatasetInfo(10, (784,), tuple("0123456789"), 3500, 500, 1000)
    x, y = next(iter(train))
    assert x.shape == (100, 784) and x.dtype.name == "float32" and y.dtype.name == "int32"
    for ds, n in ((train, 3500), (val, 500), (test, 1000)):
        xs, ys = _collect(ds)
        assert xs.shape == (n, 784) and ys.shape == (n,)
        assert xs.min() == 0.0 and xs.max() == 1.0
        assert set(np.unique(ys)) == set(range(10))


def test_embedded_splits_are_disjoint_and_cover_the_5k(embedded):
    train, val, test, _ = embedded
    rows = [_rows(_collect(ds)[0]) for ds in (train, val, test)]
    assert sum(len(r) for r in rows) == 5000
    assert len(rows[0] | rows[1] | rows[2]) == 5000


def test_embedded_test_split_fixed_validation_follows_seed(embedded):
    other = data.mnist(batch_size=100, seed=1)
    np.testing.assert_array_equal(_collect(embedded.test)[0], _collect(other.test)[0])
    assert _rows(_collect(embedded.validation)[0]) != _rows(_collect(other.validation)[0])


def test_train_order_deterministic_per_seed_and_reshuffled_each_epoch():
    first = data.mnist(batch_size=500, seed=3).train
    again = data.mnist(batch_size=500, seed=3).train
    other = data.mnist(batch_size=500, seed=4).train
    epoch_1, epoch_2 = _collect(first)[1], _collect(first)[1]
    np.testing.assert_array_equal(epoch_1, _collect(again)[1])
    assert not np.array_equal(epoch_1, epoch_2)  # reshuffled
    assert not np.array_equal(epoch_1, _collect(other)[1])
    assert sorted(epoch_1) == sorted(epoch_2)


@pytest.mark.parametrize("flatten", [True, False])
def test_train_batches_equal_the_per_batch_scaling_pipeline(flatten):
    # The training set is scaled once up front and shuffled on one thread of
    # its own (faster on small machines); the batches must stay exactly those
    # of the pipeline before that change (shuffle the uint8 digits, batch,
    # scale each batch), in order, values and dtype, epoch after epoch, so
    # that earlier results reproduce.
    import importlib

    import keras
    import tensorflow as tf

    module = importlib.import_module("keras_lth.data.mnist")  # `data.mnist` is the function
    (x, y), _ = module._embedded_splits()
    train_idx, _ = data.common.carve_validation(len(y), 500, 5)
    xs, ys = x[train_idx], y[train_idx].astype("int32")
    keras.utils.set_random_seed(5)
    reference = tf.data.Dataset.from_tensor_slices((xs, ys))
    reference = reference.shuffle(len(ys), seed=5, reshuffle_each_iteration=True).batch(64)
    reference = reference.map(lambda a, b: module._scale(a, b, flatten))
    keras.utils.set_random_seed(5)
    splits = data.mnist(batch_size=64, seed=5, flatten=flatten)
    for _ in range(2):
        got, want = list(splits.train.as_numpy_iterator()), list(reference.as_numpy_iterator())
        assert len(got) == len(want) == 55
        for (gx, gy), (wx, wy) in zip(got, want):
            assert gx.dtype == wx.dtype == np.float32 and gx.shape == wx.shape
            np.testing.assert_array_equal(gx, wx)
            np.testing.assert_array_equal(gy, wy)


def test_validation_and_test_are_not_shuffled(embedded):
    np.testing.assert_array_equal(_collect(embedded.test)[1], _collect(embedded.test)[1])


def test_unflattened_static_batches_and_no_validation():
    train, val, test, info = data.mnist(
        batch_size=64, flatten=False, drop_remainder=True, validation_size=0
    )
    assert val is None and info.num_validation == 0 and info.num_train == 4000
    assert info.input_shape == (28, 28)
    assert train.element_spec[0].shape.as_list() == [64, 28, 28]
    assert test.element_spec[1].shape.as_list() == [64]
    assert sum(1 for _ in train) == 4000 // 64


def test_cache_in_memory_and_in_files_gives_equal_batches(tmp_path):
    plain = data.mnist(batch_size=128, cache=False)
    memory = data.mnist(batch_size=128, cache=True)
    files = data.mnist(batch_size=128, cache=str(tmp_path / "mnist"))
    want = _collect(plain.test)
    for splits in (memory, files):
        for _ in range(2):  # the second pass reads the cache
            got = _collect(splits.test)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    assert any(p.name.startswith("mnist-test") for p in tmp_path.iterdir())


# --- IDX directories ------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_loads_exact_values(tmp_path, gz):
    arrays = _write_mnist_dir(tmp_path, gz=gz)
    train, val, test, info = data.mnist(str(tmp_path), batch_size=7, validation_size=10, seed=2)
    assert (info.num_train, info.num_validation, info.num_test) == (30, 10, 12)
    x_test, y_test = _collect(test)
    np.testing.assert_allclose(
        x_test, arrays["t10k-images-idx3-ubyte"].reshape(12, -1) / 255.0, atol=1e-7
    )
    np.testing.assert_array_equal(y_test, arrays["t10k-labels-idx1-ubyte"])
    x_train, _ = _collect(train)
    x_val, _ = _collect(val)
    source = arrays["train-images-idx3-ubyte"].reshape(40, -1) / np.float32(255)
    assert _rows(x_train) | _rows(x_val) == _rows(source.astype("float32"))
    assert not _rows(x_train) & _rows(x_val)


def test_idx_directory_of_another_image_size_and_more_classes(tmp_path):
    _write_mnist_dir(tmp_path, shape=(5, 6))
    labels = np.arange(40, dtype=np.uint8) % 13
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    splits = data.mnist(tmp_path, batch_size=8, validation_size=4, flatten=False)
    assert splits.info.input_shape == (5, 6) and splits.info.num_classes == 13
    assert data.mnist(tmp_path, batch_size=8, validation_size=4).info.input_shape == (30,)


def test_idx_dotted_file_names_are_accepted(tmp_path):
    arrays = _write_mnist_dir(tmp_path)
    for name in arrays:
        os.rename(tmp_path / name, tmp_path / name.replace("-idx", ".idx"))
    assert data.mnist(tmp_path, validation_size=5).info.num_test == 12


def test_idx_directory_on_another_filesystem():
    """`ram://` stands in for `gs://`: the files are read with tf.io.gfile."""
    tf = pytest.importorskip("tensorflow")
    tf.io.gfile.makedirs("ram://mnist_idx")
    arrays = {
        name: np.full(shape, i, np.uint8)
        for i, (name, shape) in enumerate(
            [
                ("train-images-idx3-ubyte.gz", (6, 28, 28)),
                ("train-labels-idx1-ubyte", (6,)),
                ("t10k-images-idx3-ubyte", (3, 28, 28)),
                ("t10k-labels-idx1-ubyte.gz", (3,)),
            ]
        )
    }
    for name, array in arrays.items():
        write_idx(f"ram://mnist_idx/{name}", array)
    splits = data.mnist("ram://mnist_idx", batch_size=2, validation_size=2)
    assert (splits.info.num_train, splits.info.num_test) == (4, 3)
    np.testing.assert_array_equal(_collect(splits.test)[1], [3, 3, 3])


def test_missing_idx_file_is_named(tmp_path):
    _write_mnist_dir(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.mnist(tmp_path)


def test_wrong_magic_number_is_named(tmp_path):
    _write_mnist_dir(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[0] = 0x12
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*magic number"):
        data.mnist(tmp_path)


def test_labels_file_holding_images_is_named(tmp_path):
    arrays = _write_mnist_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", arrays["t10k-images-idx3-ubyte"])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*expected 1-D uint8"):
        data.mnist(tmp_path)


def test_count_mismatch_names_both_files(tmp_path):
    arrays = _write_mnist_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", arrays["train-labels-idx1-ubyte"][:-1])
    with pytest.raises(ValueError, match="mismatch.*train-images.*40 images.*train-labels.*39"):
        data.mnist(tmp_path)


@pytest.mark.parametrize("keep", [3, 10, -1])
def test_truncated_file_is_named(tmp_path, keep):
    _write_mnist_dir(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:keep])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*(truncated|magic)"):
        data.mnist(tmp_path)


def test_truncated_gzip_is_named(tmp_path):
    _write_mnist_dir(tmp_path, gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz.*gzip"):
        data.mnist(tmp_path)


def test_over_long_file_is_named(tmp_path):
    _write_mnist_dir(tmp_path)
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.*longer"):
        data.mnist(tmp_path)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
def test_idx_round_trip(tmp_path, dtype):
    array = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == "uint8":
        array = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    for name in ("a", "a.gz"):
        write_idx(tmp_path / name, array)
        got = read_idx(tmp_path / name)
        assert got.dtype == array.dtype
        np.testing.assert_array_equal(got, array)
    with gzip.open(tmp_path / "a.gz") as f:
        assert f.read()[:4] == bytes(
            [
                0,
                0,
                {"uint8": 8, "int8": 9, "int16": 11, "int32": 12, "float32": 13, "float64": 14}[
                    dtype
                ],
                3,
            ]
        )


# --- arguments and tfds ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"source": "nowhere/at/all"}, "source"),
        ({"source": 3}, "source"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"validation_size": 4000}, "validation_size"),
        ({"validation_size": -1}, "validation_size"),
        ({"shuffle_buffer": 0}, "shuffle_buffer"),
        ({"cache": 1}, "cache"),
    ],
)
def test_invalid_arguments_name_argument_and_value(kwargs, name):
    ((key, value),) = kwargs.items()
    with pytest.raises(ValueError, match=rf"`{name}`.*Received: {key}={value!r}"):
        data.mnist(**kwargs)


def test_tfds_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=30):
        train, val, test, info = data.mnist("tfds", batch_size=8, validation_size=6)
    assert (info.num_train, info.num_validation, info.num_test) == (24, 6, 30)
    x, y = next(iter(train))
    assert x.shape == (8, 784) and y.dtype.name == "int32"
    assert len(_collect(val)[1]) == 6 and len(_collect(test)[1]) == 30
    assert 0.0 <= float(np.min(x)) and float(np.max(x)) <= 1.0
