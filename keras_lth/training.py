"""The training step of the re-introduction strategies.

Keras's own `train_step` computes one gradient and applies it. Double- and
Scored-pruning need a little more from every step, so `PruningScheduler`
swaps in the step built here while it trains (and restores the model's own
afterwards):

- the dense gradient `g = dL/d(kernel * mask)` of every masked kernel (a
  straight-through forward, see `keras_lth.layers.dense_gradient`);
- `ScoredPruning`: `kernel_score += -w * g`, then the kept weights get the
  usual masked gradient `g * mask`;
- `DoublePruning(mode="feedback")`: the raw kernel gets `g` itself, so the
  pruned weights train from the kept network's dense gradient;
- `DoublePruning(mode="complement")`: a second forward/backward pass on the
  same batch through the complement masks, whose gradient, restricted to
  the pruned weights, joins the kept network's in one optimizer step.

Everything is per replica and linear in the gradient, so under a
`tf.distribute` strategy the optimizer's all-reduce, and an all-reduce of the
scores' increments, give the global result. The step is plain traced TensorFlow: it
runs with `jit_compile=True` and `steps_per_execution > 1`. It needs the
TensorFlow backend (the layers and the plain scheduler do not).
"""

from __future__ import annotations

import keras
from keras import ops

# The re-introduction step is being rebuilt on `MaskedLayer.gradient_mode` and
# `keras.StatelessScope` (issue 9); until then it imports the old channel lazily.
dense_gradient = masks_overridden = None


def check_backend():
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "Re-introduction strategies (`reintroduce=`) need the TensorFlow "
            f"backend. Received: backend '{keras.backend.backend()}'"
        )


def complement_masks(layer, neuron_frozen):
    """Masks of the pruned ("complement") network for one layer, as tensors.

    Kernel: `1 - M` (for a layer whose neurons are never pruned under neuron
    pruning, the whole kernel: the output layer is shared). Bias: the pruned
    neurons' biases under neuron pruning (`1 - bias_mask`); otherwise the
    layer's biases are shared by both networks.
    """
    kernel_mask = ops.cast(layer.kernel_mask, "float32")
    if neuron_frozen:
        return ops.ones_like(kernel_mask), layer.bias_mask
    if layer.bias_mask is None:
        return 1.0 - kernel_mask, None
    bias_mask = ops.cast(layer.bias_mask, "float32")
    # Under weight pruning the bias mask is all ones: keep it shared then.
    neuron_pruned = ops.any(ops.equal(bias_mask, 0.0))
    return 1.0 - kernel_mask, ops.where(neuron_pruned, 1.0 - bias_mask, ops.ones_like(bias_mask))


def make_train_step(model, layers, strategy, frozen=()):
    """A `train_step(data)` for `model` with `strategy`'s gradient surgery.

    Args:
        model: a compiled Keras model (TensorFlow backend).
        layers: its `MaskedDense` layers.
        strategy: a `keras_lth.reintroduce.Reintroduction`.
        frozen: names of layers whose neurons are never pruned (used for the
            complement network under neuron pruning).

    Returns:
        The function to install as `model.train_step`; it returns the same
        logs as Keras's own step.
    """
    import tensorflow as tf
    from keras.src.losses.loss import unscale_loss_for_distribution

    check_backend()
    call_has_training = getattr(model, "_call_has_training_arg", True)
    straight = list(layers) if strategy.dense_gradient else []

    def forward(x):
        return model(x, training=True) if call_has_training else model(x)

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        optimizer = model.optimizer
        variables = model.trainable_variables
        position = {id(v): i for i, v in enumerate(variables)}

        replica = tf.distribute.get_replica_context()
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        loss_scaled = getattr(optimizer, "loss_scale_factor", None) is not None or hasattr(
            optimizer, "dynamic_scale"
        )
        with tf.GradientTape() as tape:
            with dense_gradient(straight):
                y_pred = forward(x)
            loss = model._compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            batch = tf.shape(next(t for t in tf.nest.flatten(x) if t is not None))[0]
            model._loss_tracker.update_state(
                unscale_loss_for_distribution(loss), sample_weight=batch
            )
            loss = optimizer.scale_loss(loss)
        grads = list(tape.gradient(loss, variables))

        if strategy.complement:
            grads = _add_complement(
                model, grads, position, (x, y, sample_weight), forward, layers, frozen
            )

        for layer in layers:
            i = position.get(id(layer._kernel))
            if i is None or grads[i] is None:
                continue  # a layer set to trainable=False
            if strategy.scored:
                g = grads[i]
                # `w` is read before the optimizer updates it.
                share = ops.cast(-ops.convert_to_tensor(layer._kernel) * g, "float32")
                if loss_scaled:  # `g` is the gradient of the scaled loss
                    share = share / ops.cast(optimizer.scale_loss(ops.ones((), g.dtype)), "float32")
                if replicas > 1:
                    # Sum the replicas' shares explicitly: Keras's
                    # `assign_add` on a sum-aggregated mirrored variable
                    # would sum `score + share` instead.
                    share = replica.all_reduce("sum", share)
                layer.kernel_score.assign_add(share)
                # Pruned weights do not train: they keep their raw value.
                grads[i] = g * ops.cast(layer.kernel_mask, g.dtype)
            # With feedback, the raw kernel keeps the dense gradient `g`.

        optimizer.apply_gradients(zip(grads, variables))
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step


def _add_complement(model, grads, position, data, forward, layers, frozen):
    """Adds the complement network's gradient, on the pruned weights only."""
    import tensorflow as tf

    x, y, sample_weight = data
    masks = {l: complement_masks(l, l.name in frozen) for l in layers}
    targets = []  # (variable, mask of the positions the complement may update)
    for layer in layers:
        targets.append((layer._kernel, layer.kernel_mask))
        if layer.bias is not None:
            targets.append((layer.bias, layer.bias_mask))
    targets = [(v, m) for v, m in targets if id(v) in position]
    with tf.GradientTape() as tape:
        with masks_overridden(masks):
            y_comp = forward(x)
        loss = model._compute_loss(
            x=x, y=y, y_pred=y_comp, sample_weight=sample_weight, training=True
        )
        loss = model.optimizer.scale_loss(loss)
    comp = tape.gradient(loss, [v for v, _ in targets])
    grads = list(grads)
    for (var, mask), g in zip(targets, comp):
        if g is None:
            continue
        i = position[id(var)]
        pruned = 1.0 - ops.cast(mask, g.dtype)
        grads[i] = g * pruned if grads[i] is None else grads[i] + g * pruned
    return grads
