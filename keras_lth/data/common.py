"""What every loader returns, and the argument checks and split they share."""

from __future__ import annotations

import dataclasses
import os
from typing import NamedTuple

import numpy as np
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Facts about a loaded dataset.

    Attributes:
        num_classes: Number of classes (labels are `0 .. num_classes - 1`).
        input_shape: Shape of one example's `x`, without the batch axis.
        class_names: Name of each label, in label order.
        num_train: Training examples per epoch.
        num_validation: Validation examples (0 when there is no validation set).
        num_test: Test examples.
        skipped: Paths of the files a loader skipped as unreadable (only
            with `on_error="skip"`).
    """

    num_classes: int
    input_shape: tuple
    class_names: tuple
    num_train: int
    num_validation: int
    num_test: int
    skipped: tuple = ()


class DataSplits(NamedTuple):
    """Batched `(x, y)` datasets and their `DatasetInfo`.

    A named tuple, so it unpacks: `train, val, test, info = lth.data.mnist()`.
    `validation` is `None` when the loader was asked for no validation set.
    """

    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset
    info: DatasetInfo


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a positive "
            f"integer. Received: {name}={value!r}"
        )
    return int(value)


def check_cache(cache):
    """`cache` is a bool or a file path prefix for `Dataset.cache`."""
    if isinstance(cache, (bool, str, os.PathLike)):
        return cache
    raise ValueError(
        "Received an invalid value for `cache`, expected True, False or a file "
        f"path. Received: cache={cache!r}"
    )


def apply_cache(ds, cache, suffix):
    """`ds.cache()` in memory (`cache=True`) or in files `<cache>-<suffix>`."""
    if cache is True:
        return ds.cache()
    if cache:
        return ds.cache(f"{os.fspath(cache)}-{suffix}")
    return ds


def carve_validation(n, validation_size, seed):
    """Seeded split of `range(n)` into (train indices, validation indices).

    Both index arrays are sorted, so the examples keep their source order and
    only the training set's shuffle depends on the epoch.
    """
    if (
        isinstance(validation_size, bool)
        or not isinstance(validation_size, (int, np.integer))
        or not 0 <= validation_size < n
    ):
        raise ValueError(
            "Received an invalid value for `validation_size`, expected an "
            f"integer in [0, {n}) (the training examples available). "
            f"Received: validation_size={validation_size!r}"
        )
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[validation_size:]), np.sort(order[:validation_size])
