"""Training on several processes: which one is the chief, one seed for all.

Under the JAX backend, `jax.distributed.initialize` (or
`keras.distribution.initialize`) joins several processes, on one machine or
many, into one computation; with `keras.distribution.DataParallel` every
variable is a global array replicated on every process's devices. Each
process runs the same callbacks on the same (replicated) weights, so the
NumPy mask maths of `keras_lth.pruning` gives every process the same masks
and the same rewinds, and assigning them is assigning the same value
everywhere. Two things need the processes to agree explicitly:

- a random choice: the run seed of `rewind="reinit"` when no `seed` is
  given is the chief's (`same_seed`);
- files: only the chief (process 0) writes the scheduler's backup
  (`is_chief`).

With one process (any backend, `tf.distribute.MirroredStrategy` included)
these are no-ops. The JAX calls are isolated here.
"""

from __future__ import annotations

import keras
import numpy as np


def _jax():
    if keras.backend.backend() != "jax":
        return None
    import jax

    return jax


def process_count() -> int:
    """The number of processes training together (1 without JAX multi-process)."""
    jax = _jax()
    return 1 if jax is None else int(jax.process_count())


def process_index() -> int:
    """This process's index, `0` being the chief."""
    jax = _jax()
    return 0 if jax is None else int(jax.process_index())


def is_chief() -> bool:
    """Whether this process writes files (process 0)."""
    return process_index() == 0


def same_seed(seed: int) -> int:
    """The chief's `seed` (an unsigned 32-bit integer) on every process."""
    if process_count() == 1:
        return int(seed)
    from jax.experimental import multihost_utils

    value = multihost_utils.broadcast_one_to_all(np.asarray(seed, dtype=np.uint32))
    return int(np.asarray(value))
