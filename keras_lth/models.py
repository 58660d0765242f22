"""Model builders: the networks of the examples and benchmarks.

Every builder returns an uncompiled `keras.Sequential` of `MaskedDense` layers
(or plain `keras.layers.Dense` with `dense=True`, the same network without
masks) named `hidden_1`, `hidden_2`, ..., `output`, so per-layer pruning rates
can name them: `layer_rates={"output": 0.1}`. Kernels use Glorot-normal
initialisation, as Frankle & Carbin (2019) did, and biases start at zero. The
output layer is linear: compile with `from_logits=True`.
"""

from __future__ import annotations

import keras

from keras_lth.layers import MaskedDense


def _mlp(input_shape, hidden, num_classes, dense, name, seed):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            "Received an invalid value for `num_classes`, expected an integer "
            f">= 2. Received: num_classes={num_classes!r}"
        )
    hidden = tuple(hidden)
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(
            "Received an invalid value for `hidden`, expected a sequence of "
            f"positive integers. Received: hidden={hidden!r}"
        )
    layer = keras.layers.Dense if dense else MaskedDense

    def init(i):
        # A fresh initializer per layer: one reused Keras 3 initializer object
        # returns the same draw on every call.
        return keras.initializers.GlorotNormal(seed=None if seed is None else seed + i)

    layers = [keras.Input(tuple(input_shape))]
    if len(input_shape) > 1:
        layers.append(keras.layers.Flatten(name="flatten"))
    for i, units in enumerate(hidden, start=1):
        layers.append(
            layer(units, activation="relu", kernel_initializer=init(i), name=f"hidden_{i}")
        )
    layers.append(layer(num_classes, kernel_initializer=init(0), name="output"))
    return keras.Sequential(layers, name=name)


def lenet_300_100(num_classes=10, input_shape=(784,), dense=False, seed=None) -> keras.Sequential:
    """LeNet-300-100: the fully connected MNIST network of Frankle & Carbin.

    `input_shape -> 300 (ReLU) -> 100 (ReLU) -> num_classes (logits)`, with
    layers named `hidden_1`, `hidden_2` and `output`; a `Flatten` layer is
    added when `input_shape` has more than one axis.

    Args:
        num_classes: Number of output logits. Defaults to `10`.
        input_shape: Shape of one input example. Defaults to `(784,)`.
        dense: Build plain `keras.layers.Dense` layers instead of
            `MaskedDense`. Defaults to `False`.
        seed: Integer seed for the initial weights; `None` draws from the
            global seed (`keras.utils.set_random_seed`). Defaults to `None`.

    Returns:
        An uncompiled `keras.Sequential` model.

    Example:

    >>> model = lenet_300_100()
    >>> [layer.name for layer in model.layers]
    ['hidden_1', 'hidden_2', 'output']
    >>> model.count_params()  # kernels + biases + masks of the same size
    533220
    """
    return _mlp(input_shape, (300, 100), num_classes, dense, "lenet_300_100", seed)


def speech_mlp(
    input_dim, hidden=(256, 256), num_classes=12, dense=False, seed=None
) -> keras.Sequential:
    """An MLP for flattened speech features (e.g. `speech_commands` log-mels).

    `input_dim -> hidden[0] (ReLU) -> ... -> num_classes (logits)`, with
    layers named `hidden_1`, `hidden_2`, ..., `output`. The default, two
    hidden layers of 256 units, is LeNet-300-100 sized: on the default 40 x
    49 log-mel features it has about 0.57 M weights to prune.

    Args:
        input_dim: Length of the flat feature vector
            (`info.input_shape[0]` of `keras_lth.data.speech_commands`).
        hidden: Units of each hidden layer. Defaults to `(256, 256)`.
        num_classes: Number of output logits. Defaults to `12` (the
            standard Speech Commands task).
        dense: Build plain `keras.layers.Dense` layers instead of
            `MaskedDense`. Defaults to `False`.
        seed: Integer seed for the initial weights; `None` draws from the
            global seed. Defaults to `None`.

    Returns:
        An uncompiled `keras.Sequential` model.

    Example:

    >>> model = speech_mlp(40 * 49)
    >>> [layer.name for layer in model.layers]
    ['hidden_1', 'hidden_2', 'output']
    """
    if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
        raise ValueError(
            "Received an invalid value for `input_dim`, expected a positive "
            f"integer. Received: input_dim={input_dim!r}"
        )
    return _mlp((input_dim,), hidden, num_classes, dense, "speech_mlp", seed)
