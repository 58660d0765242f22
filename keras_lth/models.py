"""Model builders: the networks of the lottery-ticket literature.

Every builder returns an uncompiled `keras.Sequential` of masked layers
(`MaskedDense`, `MaskedConv2D`), or of the plain Keras layers with
`dense=True` (the same network without masks). Prunable layers have names that
per-layer pruning rates can use: `conv_1`, `conv_2`, ... for convolutions,
`hidden_1`, `hidden_2`, ... for fully connected layers and `output` for the
last one, e.g. `layer_rates={"output": 0.1}`. Kernels use Glorot-normal
initialisation, as Frankle & Carbin (2019) did, with a fresh seeded
initializer per layer, and biases start at zero. The output layer is linear:
compile with `from_logits=True`.

- MLPs: `lenet_300_100`, `speech_mlp`.
- CNNs: `conv2`, `conv4`, `conv6` (Frankle & Carbin, 2019), `lenet5`
  (LeCun et al., 1998), `speech_cnn` (Sainath & Parada, 2015).

`frankle_carbin_rates(model)` gives the per-layer pruning rates of Frankle &
Carbin for a model built here: pass it as `layer_rates`.
"""

from __future__ import annotations

import numbers

import keras

from keras_lth.layers import MaskedConv2D, MaskedDense


def _check_num_classes(num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(
            "Received an invalid value for `num_classes`, expected an integer "
            f">= 2. Received: num_classes={num_classes!r}"
        )


def _check_seed(seed):
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(
            "Received an invalid value for `seed`, expected an integer or None. "
            f"Received: seed={seed!r}"
        )


def _initializer(seed, i):
    # A fresh initializer per layer: one reused Keras 3 initializer object
    # returns the same draw on every call.
    return keras.initializers.GlorotNormal(seed=None if seed is None else seed + i)


def _mlp(input_shape, hidden, num_classes, dense, name, seed):
    _check_num_classes(num_classes)
    _check_seed(seed)
    hidden = tuple(hidden)
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
        raise ValueError(
            "Received an invalid value for `hidden`, expected a sequence of "
            f"positive integers. Received: hidden={hidden!r}"
        )
    layer = keras.layers.Dense if dense else MaskedDense

    def init(i):
        return _initializer(seed, i)

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


# ---------------------------------------------------------------------- #
# Convolutional networks
# ---------------------------------------------------------------------- #
def _image_input(input_shape, min_size, builder):
    """`[Input, (Reshape)]` for `(height, width[, channels])`; checks the size."""
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (
        shape is None
        or len(shape) not in (2, 3)
        or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1 for d in shape)
    ):
        raise ValueError(
            "Received an invalid value for `input_shape`, expected (height, "
            "width) or (height, width, channels) of positive integers. "
            f"Received: input_shape={input_shape!r}"
        )
    shape = tuple(int(d) for d in shape)
    if shape[0] < min_size[0] or shape[1] < min_size[1]:
        raise ValueError(
            f"Received an invalid value for `input_shape`, expected inputs of "
            f"at least {min_size[0]} x {min_size[1]} for `{builder}` (its "
            "convolutions and poolings would leave nothing). "
            f"Received: input_shape={input_shape!r}"
        )
    layers = [keras.Input(shape)]
    if len(shape) == 2:
        # `mnist(flatten=False)` and `speech_commands(flatten=False)` give
        # (height, width): add the channel axis the convolutions need.
        layers.append(keras.layers.Reshape(shape + (1,), name="add_channel"))
    return layers


def _layer_classes(dense):
    if dense:
        return keras.layers.Conv2D, keras.layers.Dense
    return MaskedConv2D, MaskedDense


def _head(layers, fc, units, num_classes, seed, first_index):
    """Appends `flatten`, `hidden_1..n` (ReLU) and the linear `output`."""
    layers.append(keras.layers.Flatten(name="flatten"))
    for j, n in enumerate(units, start=1):
        layers.append(
            fc(
                n,
                activation="relu",
                kernel_initializer=_initializer(seed, first_index + j),
                name=f"hidden_{j}",
            )
        )
    layers.append(fc(num_classes, kernel_initializer=_initializer(seed, 0), name="output"))


def _vgg_like(name, filters, num_classes, input_shape, dense, seed):
    _check_num_classes(num_classes)
    _check_seed(seed)
    side = 2 ** (len(filters) // 2)  # one 2 x 2 max-pool per pair of convolutions
    layers = _image_input(input_shape, (side, side), name)
    conv, fc = _layer_classes(dense)
    for i, f in enumerate(filters, start=1):
        layers.append(
            conv(
                f,
                3,
                padding="same",
                activation="relu",
                kernel_initializer=_initializer(seed, i),
                name=f"conv_{i}",
            )
        )
        if i % 2 == 0:
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool_{i // 2}"))
    _head(layers, fc, (256, 256), num_classes, seed, len(filters))
    return keras.Sequential(layers, name=name)


def conv2(num_classes=10, input_shape=(32, 32, 3), dense=False, seed=None) -> keras.Sequential:
    """Conv-2 of Frankle & Carbin (2019), a scaled-down VGG.

    Two convolutions of 64 filters, each a 3 x 3 convolution with 'same'
    padding and ReLU, a 2 x 2 max-pool after every pair; then `flatten`,
    `hidden_1` and `hidden_2` (256 units, ReLU) and the linear `output`.
    Named `conv_1` ... `conv_2`, `pool_1` ..., so that `layer_rates` can
    name them. A 2-D `input_shape` (height, width) gets a channel axis
    (`add_channel`).

    The paper (Figure 2) trains it on CIFAR-10 with Adam, learning rate
    2e-4, batch 60, for 20K iterations, and prunes per round 10% of each
    convolution, 20% of each fully connected layer and 10% of the output
    layer (half the fully connected rate):
    `IterativeSchedule(..., rate=0.2, layer_rates=frankle_carbin_rates(model))`.

    Weights (kernels + biases) on CIFAR-10's 32 x 32 x 3: 4,301,642 (38,592
    in convolution kernels); on MNIST's 28 x 28 x 1: 3,317,450. The masked
    model's `count_params()` is twice that: every kernel and bias has a mask
    of its size.

    Args:
        num_classes: Number of output logits. Defaults to `10`.
        input_shape: `(height, width, channels)` or `(height, width)` of
            one input; at least 2 x 2. Defaults to `(32, 32, 3)`.
        dense: Build plain `keras.layers.Conv2D` / `Dense` layers instead
            of `MaskedConv2D` / `MaskedDense`. Defaults to `False`.
        seed: Integer seed for the initial weights; `None` draws from the
            global seed (`keras.utils.set_random_seed`). Defaults to `None`.

    Returns:
        An uncompiled `keras.Sequential` model.

    Example:

    >>> model = conv2(input_shape=(28, 28))
    >>> [l.name for l in model.layers if l.name.startswith(("conv", "hidden", "out"))]
    ['conv_1', 'conv_2', 'hidden_1', 'hidden_2', 'output']
    """
    return _vgg_like("conv2", (64, 64), num_classes, input_shape, dense, seed)


def conv4(num_classes=10, input_shape=(32, 32, 3), dense=False, seed=None) -> keras.Sequential:
    """Conv-4 of Frankle & Carbin (2019), a scaled-down VGG.

    Four convolutions (64, 64, 128, 128 filters), each a 3 x 3 convolution
    with 'same' padding and ReLU, a 2 x 2 max-pool after every pair; then
    `flatten`, `hidden_1` and `hidden_2` (256 units, ReLU) and the linear
    `output`. Named `conv_1` ... `conv_4`, `pool_1` ..., so that
    `layer_rates` can name them. A 2-D `input_shape` (height, width) gets a
    channel axis (`add_channel`).

    The paper (Figure 2) trains it on CIFAR-10 with Adam, learning rate
    3e-4, batch 60, for 25K iterations, and prunes per round 10% of each
    convolution, 20% of each fully connected layer and 10% of the output
    layer (half the fully connected rate):
    `IterativeSchedule(..., rate=0.2, layer_rates=frankle_carbin_rates(model))`.

    Weights (kernels + biases) on CIFAR-10's 32 x 32 x 3: 2,425,930 (259,776
    in convolution kernels); on MNIST's 28 x 28 x 1: 1,933,258. The masked
    model's `count_params()` is twice that: every kernel and bias has a mask
    of its size.

    Args:
        num_classes: Number of output logits. Defaults to `10`.
        input_shape: `(height, width, channels)` or `(height, width)` of
            one input; at least 4 x 4. Defaults to `(32, 32, 3)`.
        dense: Build plain `keras.layers.Conv2D` / `Dense` layers instead
            of `MaskedConv2D` / `MaskedDense`. Defaults to `False`.
        seed: Integer seed for the initial weights; `None` draws from the
            global seed (`keras.utils.set_random_seed`). Defaults to `None`.

    Returns:
        An uncompiled `keras.Sequential` model.

    Example:

    >>> model = conv4(input_shape=(28, 28))
    >>> [l.name for l in model.layers if l.name.startswith(("conv", "hidden", "out"))]
    ['conv_1', 'conv_2', 'conv_3', 'conv_4', 'hidden_1', 'hidden_2', 'output']
    """
    return _vgg_like("conv4", (64, 64, 128, 128), num_classes, input_shape, dense, seed)


def conv6(num_classes=10, input_shape=(32, 32, 3), dense=False, seed=None) -> keras.Sequential:
    """Conv-6 of Frankle & Carbin (2019), a scaled-down VGG.

    Six convolutions (64, 64, 128, 128, 256, 256 filters), each a 3 x 3
    convolution with 'same' padding and ReLU, a 2 x 2 max-pool after every
    pair; then `flatten`, `hidden_1` and `hidden_2` (256 units, ReLU) and
    the linear `output`. Named `conv_1` ... `conv_6`, `pool_1` ..., so that
    `layer_rates` can name them. A 2-D `input_shape` (height, width) gets a
    channel axis (`add_channel`).

    The paper (Figure 2) trains it on CIFAR-10 with Adam, learning rate
    3e-4, batch 60, for 30K iterations, and prunes per round 15% of each
    convolution, 20% of each fully connected layer and 10% of the output
    layer (half the fully connected rate):
    `IterativeSchedule(..., rate=0.2, layer_rates=frankle_carbin_rates(model))`.

    Weights (kernels + biases) on CIFAR-10's 32 x 32 x 3: 2,262,602
    (1,144,512 in convolution kernels; the paper's Figure 2 gives 1.7M in
    all, its convolutions and the other two networks match the counts here);
    on MNIST's 28 x 28 x 1: 1,802,698. The masked model's `count_params()`
    is twice that: every kernel and bias has a mask of its size.

    Args:
        num_classes: Number of output logits. Defaults to `10`.
        input_shape: `(height, width, channels)` or `(height, width)` of
            one input; at least 8 x 8. Defaults to `(32, 32, 3)`.
        dense: Build plain `keras.layers.Conv2D` / `Dense` layers instead
            of `MaskedConv2D` / `MaskedDense`. Defaults to `False`.
        seed: Integer seed for the initial weights; `None` draws from the
            global seed (`keras.utils.set_random_seed`). Defaults to `None`.

    Returns:
        An uncompiled `keras.Sequential` model.

    Example:

    >>> model = conv6(input_shape=(28, 28))
    >>> [l.name for l in model.layers if l.name.startswith(("conv", "hidden", "out"))]
    ['conv_1', 'conv_2', 'conv_3', 'conv_4', 'conv_5', 'conv_6', 'hidden_1', 'hidden_2', 'output']
    """
    return _vgg_like("conv6", (64, 64, 128, 128, 256, 256), num_classes, input_shape, dense, seed)


def lenet5(num_classes=10, input_shape=(28, 28, 1), dense=False, seed=None) -> keras.Sequential:
    """LeNet-5 (LeCun et al., 1998) as it is commonly implemented today.

    `conv_1` (6 filters 5 x 5, 'same' padding, ReLU), `pool_1` (2 x 2 max),
    `conv_2` (16 filters 5 x 5, 'valid', ReLU), `pool_2` (2 x 2 max),
    `flatten`, `hidden_1` (120, ReLU), `hidden_2` (84, ReLU) and the linear
    `output`. On a 28 x 28 MNIST digit the 'same' padding of `conv_1`
    gives the 28 x 28 C1 maps that the original computed from a 32 x 32
    padded input, so the layer sizes are the paper's: 61,706 weights
    (kernels + biases). With 32 x 32 x 3 inputs (CIFAR-10), `conv_1` keeps
    32 x 32 and the network has 83,126.

    What differs from the 1998 network: ReLU instead of the scaled tanh,
    max-pooling instead of trainable subsampling, C3 connected to all six
    S2 maps (not the paper's partial connection table), C5 as a dense
    layer after `flatten`, and a linear output with softmax cross-entropy
    instead of the RBF units.

    Frankle & Carbin (2019) did not prune LeNet-5; `frankle_carbin_rates`
    gives it their Conv-2/4 rule (10% of each convolution, 20% of each
    fully connected layer, 10% of the output layer per round).

    Args:
        num_classes: Number of output logits. Defaults to `10`.
        input_shape: `(height, width, channels)` or `(height, width)`; at
            least 12 x 12. Defaults to `(28, 28, 1)`.
        dense: Build plain Keras layers instead of masked ones.
            Defaults to `False`.
        seed: Integer seed for the initial weights; `None` draws from the
            global seed. Defaults to `None`.

    Returns:
        An uncompiled `keras.Sequential` model.

    Example:

    >>> model = lenet5(dense=True)
    >>> model.count_params()
    61706
    """
    _check_num_classes(num_classes)
    _check_seed(seed)
    layers = _image_input(input_shape, (12, 12), "lenet5")
    conv, fc = _layer_classes(dense)
    layers += [
        conv(
            6,
            5,
            padding="same",
            activation="relu",
            kernel_initializer=_initializer(seed, 1),
            name="conv_1",
        ),
        keras.layers.MaxPooling2D(2, name="pool_1"),
        conv(16, 5, activation="relu", kernel_initializer=_initializer(seed, 2), name="conv_2"),
        keras.layers.MaxPooling2D(2, name="pool_2"),
    ]
    _head(layers, fc, (120, 84), num_classes, seed, 2)
    return keras.Sequential(layers, name="lenet5")


def speech_cnn(
    input_shape=(49, 40, 1), num_classes=12, filters=64, dense=False, seed=None
) -> keras.Sequential:
    """`cnn-trad-fpool3` of Sainath & Parada (2015) for log-mel features.

    The keyword-spotting CNN of "Convolutional Neural Networks for
    Small-footprint Keyword Spotting" (Interspeech 2015, Table 1), on
    `(frames, mel bins)` inputs such as `keras_lth.data.speech_commands(...,
    flatten=False)` (49 x 40 by default):

    - `conv_1`: `filters` filters of 20 (time) x 8 (frequency), 'valid',
      ReLU, then `pool_1`: max-pool 1 x 3 (frequency only);
    - `conv_2`: `filters` filters of 10 x 4, 'valid', ReLU;
    - `flatten`, `linear`: 32 units without activation (the paper's
      low-rank linear layer), `hidden_1`: 128 units, ReLU;
    - `output`: `num_classes` logits.

    What differs from the paper: it used 32 frames (23 left, 8 right
    context) of 40 log-mels and 4 outputs; here the input is the whole
    1 s clip (49 frames) and the outputs are the 12 Speech Commands
    classes, which makes `linear` larger (10,752 inputs instead of 2,048).
    No dropout. With `filters=64` (the paper's) and 49 x 40 inputs it has
    524,076 weights (kernels + biases) and about 38 M multiplies per
    clip; `filters` scales both convolutions for a cheaper network.

    Sainath & Parada did not prune it; `frankle_carbin_rates` gives it the
    Conv-2/4 rule of Frankle & Carbin (2019): 10% of each convolution, 20%
    of `linear` and `hidden_1`, 10% of `output` per round.

    Args:
        input_shape: `(frames, bins)` or `(frames, bins, channels)`; at
            least 29 frames x 19 bins. Defaults to `(49, 40, 1)`.
        num_classes: Number of output logits. Defaults to `12`.
        filters: Filters of each convolution (positive integer).
            Defaults to `64`.
        dense: Build plain Keras layers instead of masked ones.
            Defaults to `False`.
        seed: Integer seed for the initial weights; `None` draws from the
            global seed. Defaults to `None`.

    Returns:
        An uncompiled `keras.Sequential` model.

    Example:

    >>> model = speech_cnn(input_shape=(49, 40), dense=True)
    >>> model.count_params()
    524076
    """
    _check_num_classes(num_classes)
    _check_seed(seed)
    if isinstance(filters, bool) or not isinstance(filters, numbers.Integral) or filters < 1:
        raise ValueError(
            "Received an invalid value for `filters`, expected a positive "
            f"integer. Received: filters={filters!r}"
        )
    layers = _image_input(input_shape, (29, 19), "speech_cnn")
    conv, fc = _layer_classes(dense)
    layers += [
        conv(
            filters,
            (20, 8),
            activation="relu",
            kernel_initializer=_initializer(seed, 1),
            name="conv_1",
        ),
        keras.layers.MaxPooling2D((1, 3), name="pool_1"),
        conv(
            filters,
            (10, 4),
            activation="relu",
            kernel_initializer=_initializer(seed, 2),
            name="conv_2",
        ),
        keras.layers.Flatten(name="flatten"),
        fc(32, kernel_initializer=_initializer(seed, 3), name="linear"),
        fc(128, activation="relu", kernel_initializer=_initializer(seed, 4), name="hidden_1"),
        fc(num_classes, kernel_initializer=_initializer(seed, 0), name="output"),
    ]
    return keras.Sequential(layers, name="speech_cnn")


#: Frankle & Carbin's per-round pruning rates (Figure 2): convolutions of
#: Conv-6 15%, of the other CNNs 10%; fully connected 20%; output 10%.
_CONV_RATES = {"conv6": 0.15}


def frankle_carbin_rates(model) -> dict:
    """`{layer name: per-round rate}` of Frankle & Carbin for a model built here.

    Their rule (Figure 2 of the paper): each convolution loses 10% of its
    weights per round (15% for Conv-6), each fully connected layer 20% and
    the output layer 10% (half the fully connected rate). Pass the result
    as `IterativeSchedule(layer_rates=...)`; `lenet5` and `speech_cnn` get
    the Conv-2/4 rule.

    Args:
        model: A model from this module (its layers' names and the model's
            name say which rate applies).

    Returns:
        A dict with one entry per masked layer.

    Example:

    >>> frankle_carbin_rates(lenet5())
    {'conv_1': 0.1, 'conv_2': 0.1, 'hidden_1': 0.2, 'hidden_2': 0.2, 'output': 0.1}
    """
    rates = {}
    for layer in model.layers:
        if isinstance(layer, MaskedConv2D):
            rates[layer.name] = _CONV_RATES.get(model.name, 0.1)
        elif isinstance(layer, MaskedDense):
            rates[layer.name] = 0.1 if layer.name == "output" else 0.2
    if not rates:
        raise ValueError(
            "Received an invalid value for `model`, expected a model of masked "
            "layers from `keras_lth.models` (built with dense=False). "
            f"Received: model '{getattr(model, 'name', model)}' has none"
        )
    return rates
