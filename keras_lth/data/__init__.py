"""`tf.data` input pipelines: MNIST and Google Speech Commands.

Every loader returns `DataSplits(train, validation, test, info)`: batched
`(x, y)` datasets (float32 features, int32 labels) and a `DatasetInfo`.
"""

# The functions shadow their modules' names (`keras_lth.data.mnist` is the
# function); import helpers from `keras_lth.data.idx` and friends.
from keras_lth.data.common import DatasetInfo, DataSplits
from keras_lth.data.idx import read_idx, write_idx
from keras_lth.data.mnist import mnist
from keras_lth.data.speech_commands import speech_commands
from keras_lth.data.wav import read_wav, write_wav

__all__ = [
    "DataSplits",
    "DatasetInfo",
    "mnist",
    "read_idx",
    "read_wav",
    "speech_commands",
    "write_idx",
    "write_wav",
]
