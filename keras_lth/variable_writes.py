"""Writing a variable at some of its positions.

A pruning changes a few positions of large variables: a gradual pruning
step prunes a fraction of a percent of a kernel, and the optimizer's slots
are reset only where weights were just pruned. Reading the whole variable
to the host and assigning it back costs two full copies and a conversion
each time; on the TensorFlow backend a scatter writes the changed positions
alone. `assign_at` picks one or the other by how many positions change; the
result is the same either way.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

SCATTER_SHARE = 8
"""A scatter is used when at most one position in `SCATTER_SHARE` changes.

A scatter's cost grows with the positions it writes, a round trip's does
not: a gradual pruning step (a fraction of a percent of a kernel) is
scattered, an iterative round's 20% takes the round trip.
"""


def assign_at(variable, positions, values):
    """Writes `values` into `variable` where `positions` is True; the other positions keep theirs.

    Args:
        variable: A `keras.Variable`.
        positions: Boolean array of the variable's shape.
        values: Array or scalar broadcastable to the variable's shape; its
            entries at `positions` are written.
    """
    positions = np.asarray(positions, dtype=bool)
    shape = tuple(variable.shape)
    if positions.shape != shape:
        raise ValueError(
            f"Received `positions` of shape {positions.shape} for variable "
            f"'{variable.path}', expected its shape {shape}"
        )
    count = int(np.count_nonzero(positions))
    if count == 0:
        return
    updates = np.broadcast_to(np.asarray(values), shape)[positions]
    target = _scatter_target(variable)
    if target is not None and positions.ndim > 0 and count * SCATTER_SHARE <= positions.size:
        import tensorflow as tf

        indices = np.stack(np.unravel_index(np.flatnonzero(positions), shape), axis=-1)
        target.scatter_nd_update(indices, tf.cast(updates, target.dtype))
        return
    current = np.array(ops.convert_to_numpy(variable))
    current[positions] = updates
    variable.assign(current)


def _scatter_target(variable):
    """The `tf.Variable` under `variable` when a scatter can write it in place, else `None`.

    TensorFlow backend only, and not a distributed variable (a mirrored
    variable is written through `assign`, which keeps its replicas equal).
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    value = variable.value
    if not isinstance(value, tf.Variable) or isinstance(value, tf.distribute.DistributedValues):
        return None
    return value
