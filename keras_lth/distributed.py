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

Under the TensorFlow backend, `tf.distribute.MultiWorkerMirroredStrategy`
joins several workers the same way (every variable mirrored, gradients
all-reduced), once `patch_multi_worker_fit` has mended two functions of
Keras 3's TensorFlow trainer that fail on several workers (keras-team/keras
#20585); the functions below then take the model, whose
`distribute_strategy` says which worker this is.

With one process (any backend, `tf.distribute.MirroredStrategy` included)
these are no-ops. The JAX and `tf.distribute` calls are isolated here.
"""

from __future__ import annotations

import keras
import numpy as np


def _jax():
    if keras.backend.backend() != "jax":
        return None
    import jax

    return jax


def _multi_worker(model):
    """The model's `MultiWorkerMirroredStrategy` if it spans several workers, else None."""
    if model is None or keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    strategy = getattr(model, "distribute_strategy", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None
    return strategy if sum(_tasks(strategy)) > 1 else None


def _tasks(strategy):
    """`(chiefs, workers)` of the cluster (`TF_CONFIG` may name a chief apart)."""
    spec = strategy.cluster_resolver.cluster_spec().as_dict()
    return len(spec.get("chief", [])), len(spec.get("worker", []))


def process_count(model=None) -> int:
    """The number of processes training together (1 on a single process).

    Args:
        model: The model being trained; needed to see the workers of a
            `tf.distribute.MultiWorkerMirroredStrategy`.
    """
    strategy = _multi_worker(model)
    if strategy is not None:
        return sum(_tasks(strategy))
    jax = _jax()
    return 1 if jax is None else int(jax.process_count())


def process_index(model=None) -> int:
    """This process's index, `0` being the chief (see `process_count`).

    Under `MultiWorkerMirroredStrategy` the chief is the `"chief"` task
    when `TF_CONFIG` names one, worker 0 otherwise (as TensorFlow's).
    """
    strategy = _multi_worker(model)
    if strategy is not None:
        resolver = strategy.cluster_resolver
        if resolver.task_type == "chief":
            return 0
        return _tasks(strategy)[0] + int(resolver.task_id)
    jax = _jax()
    return 0 if jax is None else int(jax.process_index())


def is_chief(model=None) -> bool:
    """Whether this process writes files (process 0; see `process_count`)."""
    return process_index(model) == 0


def same_seed(seed: int, model=None) -> int:
    """The chief's `seed` (an unsigned 32-bit integer) on every process."""
    strategy = _multi_worker(model)
    if strategy is not None:
        return _tf_broadcast_from_chief(strategy, int(seed))
    if process_count() == 1:
        return int(seed)
    from jax.experimental import multihost_utils

    value = multihost_utils.broadcast_one_to_all(np.asarray(seed, dtype=np.uint32))
    return int(np.asarray(value))


def _tf_broadcast_from_chief(strategy, value):
    # An all-reduce in which only replica 0 (on the chief) counts, inside
    # `strategy.run`: an eager `strategy.reduce` is what fails on several
    # workers.
    import tensorflow as tf

    mine = tf.constant(value, tf.int64)

    @tf.function
    def step():
        ctx = tf.distribute.get_replica_context()
        first = tf.equal(ctx.replica_id_in_sync_group, 0)
        return ctx.all_reduce("SUM", tf.where(first, mine, tf.zeros_like(mine)))

    return int(strategy.experimental_local_results(strategy.run(step))[0].numpy())


def patch_multi_worker_fit():
    """Lets Keras 3's `fit` train under `MultiWorkerMirroredStrategy` on several workers.

    Keras 3's TensorFlow trainer fails there even for a plain model
    (keras-team/keras#20585, since TF 2.16): `fit` reduces its first batch
    eagerly across the workers only to build the model (TensorFlow cannot
    do that eager reduction), and it averages each replica's scalar loss
    and metrics with `axis=0`, which a scalar has not. This replaces the two
    functions of `keras.src.backend.tensorflow.trainer` with versions that,
    on several workers only, build from this worker's first batch and
    average scalars over the replicas; on one worker, and for every other
    strategy, the originals run. The gradients and the variables are what
    `MultiWorkerMirroredStrategy` makes them (all-reduced, mirrored).

    Call it once per process, before `fit`; calling it again does nothing.
    It touches Keras internals, so it checks that they are what it expects
    (Keras 3.15 was tested) and raises otherwise.

    Raises:
        ValueError: under another backend than TensorFlow, or when this
            Keras's trainer does not have the functions it mends.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "`patch_multi_worker_fit` mends Keras's TensorFlow trainer and needs the "
            f"TensorFlow backend. Received: backend '{keras.backend.backend()}'"
        )
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    wanted = ("reduce_per_replica", "_collective_all_reduce_multi_worker", "TensorFlowTrainer")
    missing = [name for name in wanted if not hasattr(trainer, name)]
    if missing or not hasattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build"):
        raise ValueError(
            "`patch_multi_worker_fit` expected Keras 3's TensorFlow trainer to define "
            f"{', '.join(wanted)} and TensorFlowTrainer._maybe_symbolic_build (Keras 3.15 "
            f"does). Received: keras {keras.__version__}, missing "
            f"{missing or ['TensorFlowTrainer._maybe_symbolic_build']}"
        )
    if getattr(trainer.reduce_per_replica, "_keras_lth_patch", False):
        return
    several = trainer._collective_all_reduce_multi_worker
    build, reduce = trainer.TensorFlowTrainer._maybe_symbolic_build, trainer.reduce_per_replica

    def first_local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return value.values[0]
        return value

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if iterator is None or not several(self.distribute_strategy):
            return build(self, iterator=iterator, data_batch=data_batch)
        for _, _, it in iterator:  # as Keras does, without the eager reduction
            data_batch = keras.tree.map_structure(first_local, next(it))
            break
        return build(self, iterator=None, data_batch=data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if not (several(strategy) and reduction in ("auto", "mean")):
            return reduce(values, strategy, reduction)

        def mean(v):
            shape = getattr(first_local(v), "shape", None)
            if shape is not None and shape.rank == 0:
                return strategy.reduce("MEAN", v, axis=None)
            return reduce(v, strategy, reduction)

        return keras.tree.map_structure(mean, values)

    reduce_per_replica._keras_lth_patch = True
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
