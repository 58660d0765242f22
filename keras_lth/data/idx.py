"""Reading and writing IDX files, the format MNIST is distributed in.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number
of dimensions), one big-endian int32 per dimension, then the values in C
order. MNIST's images are `(n, 28, 28)` uint8 (magic 2051) and its labels
`(n,)` uint8 (magic 2049). Files may be gzipped, and on any filesystem
TensorFlow reads (`tf.io.gfile`, e.g. `gs://`).
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np
import tensorflow as tf

# IDX type code -> big-endian NumPy dtype.
_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in _DTYPES.items()}


def _read_bytes(path):
    with tf.io.gfile.GFile(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":  # gzip, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"IDX file '{path}' is not a valid gzip file: {e}") from None
    return raw


def read_idx(path) -> np.ndarray:
    """Reads one IDX file (raw or gzipped) into a NumPy array.

    Args:
        path: Path to the file.

    Returns:
        The array, with the file's shape and dtype (native byte order).

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: naming the file, on a wrong magic number or a truncated
            (or over-long) file.

    Example:

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> write_idx(path, np.array([3, 1, 4], "uint8"))
    >>> read_idx(path)
    array([3, 1, 4], dtype=uint8)
    """
    path = os.fspath(path)
    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise FileNotFoundError(f"IDX file not found: '{path}'")
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES or raw[3] < 1:
        raise ValueError(
            f"IDX file '{path}' has an invalid magic number "
            f"0x{raw[:4].hex() or 'empty'}, expected 0x0000 then a type code "
            "(0x08 for uint8) and the number of dimensions."
        )
    dtype, ndim = _DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"IDX file '{path}' is truncated: its header needs {header} bytes, "
            f"the file has {len(raw)}."
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "longer than its header says"
        raise ValueError(
            f"IDX file '{path}' is {problem}: shape {shape} needs {expected} "
            f"bytes, the file has {len(raw)}."
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path, array) -> None:
    """Writes `array` as an IDX file, gzipped when `path` ends in `.gz`.

    Args:
        path: Destination path.
        array: A NumPy array of uint8, int8, int16, int32, float32 or float64.
    """
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim < 1:
        raise ValueError(
            "Received an invalid value for `array`, expected an array with at "
            "least one dimension of an IDX dtype (uint8, int8, int16, int32, "
            f"float32, float64). Received: dtype={array.dtype}, ndim={array.ndim}"
        )
    raw = (
        bytes([0, 0, code, array.ndim])
        + np.asarray(array.shape, ">i4").tobytes()
        + array.astype(_DTYPES[code]).tobytes()
    )
    path = os.fspath(path)
    if path.endswith(".gz"):
        raw = gzip.compress(raw)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(raw)
