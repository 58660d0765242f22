"""keras-lth: lottery-ticket pruning for Keras 3.

The public API is what `__all__` lists; everything else is internal.
"""

from keras_lth import data, models, pruning, reintroduce
from keras_lth.callbacks import PruningScheduler
from keras_lth.export import compact, strip
from keras_lth.layers import MaskedDense, density, masked_layers
from keras_lth.reintroduce import DoublePruning, ScoredPruning
from keras_lth.schedules import IterativeSchedule, OneShotSchedule

__version__ = "0.1.0"

__all__ = [
    "DoublePruning",
    "IterativeSchedule",
    "MaskedDense",
    "OneShotSchedule",
    "PruningScheduler",
    "ScoredPruning",
    "compact",
    "data",
    "density",
    "masked_layers",
    "models",
    "pruning",
    "reintroduce",
    "strip",
    "__version__",
]
