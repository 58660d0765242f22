"""The training step of the re-introduction strategies (TensorFlow backend).

Keras's own `train_step` computes one gradient and applies it. Double- and
Scored-pruning need a little more from every step, so `PruningScheduler`
installs the step built here while it trains (and restores the model's own
afterwards):

- the dense gradient `g = dL/d(kernel * mask)` of every masked weight: the
  scheduler sets the masked layers' `gradient_mode = "dense"` (a
  straight-through forward: the layer still computes with `raw * mask`, the
  raw variable receives `g` at every position);
- `ScoredPruning`: `score += -w * g`, then the kept weights get the usual
  masked gradient `g * mask`;
- `DoublePruning(mode="feedback")`: the raw weights keep `g` itself, so the
  pruned weights train from the kept network's dense gradient;
- `DoublePruning(mode="complement")`: a second forward/backward pass on the
  same batch through the complement masks, inside a `keras.StatelessScope`
  that maps every mask to its complement (nothing the pass does to the
  model's state, BatchNormalization statistics or loss metrics included,
  is kept); its gradient, restricted to the pruned weights, joins the kept
  network's in one optimizer step.

The loss is the model's public `compute_loss`, the loss metric the
`"loss"` `Mean` of `model.metrics`, the other metrics `compute_metrics`, as
Keras's own step does. Everything is per replica and linear in the
gradient, so under a `tf.distribute` strategy the optimizer's all-reduce,
and an all-reduce of the scores' increments, give the global result. The
step is plain traced TensorFlow: it runs with `jit_compile=True` and
`steps_per_execution > 1`.
"""

from __future__ import annotations

import inspect

import keras
from keras import ops


def check_backend():
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "Re-introduction strategies (`reintroduce=`) need the TensorFlow "
            f"backend. Received: backend '{keras.backend.backend()}'"
        )


def loss_metric(model):
    """The `Mean` metric named `"loss"` that Keras's own step updates, or `None`.

    Keras keeps it first in `model.metrics` of a compiled model (its loss
    tracker); `tests/test_training.py` checks that it is the one `fit`
    reports as `loss`.
    """
    for metric in model.metrics:
        if metric.name == "loss" and isinstance(metric, keras.metrics.Mean):
            return metric
    return None


def _accepts(function, name):
    parameters = inspect.signature(function).parameters
    return name in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def make_train_step(model, strategy, weights, biases=(), scores=None, shared=()):
    """A `train_step(data)` for `model` with `strategy`'s gradient surgery.

    Args:
        model: A compiled Keras model (TensorFlow backend) whose masked
            layers already have the `gradient_mode` the strategy needs.
        strategy: A `keras_lth.reintroduce.Reintroduction`.
        weights: The model's `MaskedWeight`s (kernels).
        biases: The masked layers' bias `MaskedWeight`s.
        scores: `{weight key: float32 variable}` for `ScoredPruning`.
        shared: Keys of the weights and biases that the complement network
            shares with the kept one (under neuron pruning: the output
            layers and the weights without units keep their masks).

    Returns:
        The function to install as `model.train_step`; it returns the same
        logs as Keras's own step.
    """
    import tensorflow as tf

    check_backend()
    call_has_training = _accepts(model.call, "training")
    loss_has_training = _accepts(model.compute_loss, "training")
    tracker = loss_metric(model)
    weights = list(weights)
    complement = [w for w in list(weights) + list(biases) if w.key not in set(shared)]

    def forward(x):
        return model(x, training=True) if call_has_training else model(x)

    def compute_loss(x, y, y_pred, sample_weight):
        if loss_has_training:
            return model.compute_loss(x, y, y_pred, sample_weight, training=True)
        return model.compute_loss(x, y, y_pred, sample_weight)

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        optimizer = model.optimizer
        variables = model.trainable_variables
        position = {id(v): i for i, v in enumerate(variables)}
        replicas = tf.distribute.get_strategy().num_replicas_in_sync

        with tf.GradientTape() as tape:
            y_pred = forward(x)
            loss = compute_loss(x, y, y_pred, sample_weight)
            if tracker is not None:
                batch = tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
                # the loss is scaled by 1 / replicas for the gradient all-reduce
                tracker.update_state(loss * ops.cast(replicas, loss.dtype), sample_weight=batch)
            loss = optimizer.scale_loss(loss)
        grads = list(tape.gradient(loss, variables))

        if strategy.complement:
            grads = _add_complement(
                model, grads, position, (x, y, sample_weight), forward, compute_loss, complement
            )
        if strategy.scored:
            grads = _add_scores(optimizer, grads, position, weights, scores, replicas)
        # With feedback, the raw weights keep the dense gradient.
        optimizer.apply_gradients(zip(grads, variables))
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step


def _add_scores(optimizer, grads, position, weights, scores, replicas):
    """`score += -w * g` per weight, then the masked gradient for the kept weights."""
    import tensorflow as tf

    loss_scaled = getattr(optimizer, "loss_scale_factor", None) is not None or hasattr(
        optimizer, "dynamic_scale"
    )
    for w in weights:
        i = position.get(id(w.variable))
        if i is None or grads[i] is None:
            continue  # a layer set to trainable=False
        g = grads[i]
        # `w` is read before the optimizer updates it.
        share = ops.cast(-ops.convert_to_tensor(w.variable) * g, "float32")
        if loss_scaled:  # `g` is the gradient of the scaled loss
            share = share / ops.cast(optimizer.scale_loss(ops.ones((), g.dtype)), "float32")
        if replicas > 1:
            # Sum the replicas' shares explicitly: the scores are
            # "only_first_replica" variables, every replica adds the sum.
            share = tf.distribute.get_replica_context().all_reduce("sum", share)
        scores[w.key].assign_add(share)
        # Pruned weights do not train: they keep their raw value.
        grads[i] = g * ops.cast(w.mask, g.dtype)
    return grads


def _add_complement(model, grads, position, data, forward, compute_loss, weights):
    """Adds the complement network's gradient, on the pruned weights only."""
    import tensorflow as tf

    x, y, sample_weight = data
    weights = [w for w in weights if id(w.variable) in position]
    mapping = [(w.mask, _complement_mask(w)) for w in weights]
    # The pass keeps nothing: metric updates (per-output loss metrics) are
    # discarded, and regularizers read the weights through the scope.
    mapping += [(v, v) for v in model.metrics_variables]
    mapping += [(v, v) for v in model.trainable_variables if v.regularizer is not None]
    with tf.GradientTape() as tape:
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True):
            y_comp = forward(x)
            loss = compute_loss(x, y, y_comp, sample_weight)
        loss = model.optimizer.scale_loss(loss)
    comp = tape.gradient(loss, [w.variable for w in weights])
    grads = list(grads)
    for w, g in zip(weights, comp):
        if g is None:
            continue
        i = position[id(w.variable)]
        pruned = 1.0 - ops.cast(w.mask, g.dtype)
        grads[i] = g * pruned if grads[i] is None else grads[i] + g * pruned
    return grads


def _complement_mask(weight):
    """`not M`; a bias mask with nothing pruned stays shared (all kept)."""
    mask = ops.convert_to_tensor(weight.mask)
    if weight.name != "bias":
        return ops.logical_not(mask)
    # Under weight pruning the bias mask is all ones: both networks share it.
    return ops.logical_or(ops.logical_not(mask), ops.all(mask))
