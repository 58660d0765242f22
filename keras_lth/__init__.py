"""keras-lth: lottery-ticket pruning for Keras 3.

The public API is what `__all__` lists, plus `keras_lth.tuner` (keras-tuner
searches over prune schedules), which is imported on first access because it
needs the optional keras-tuner (`pip install "keras-lth[tuner]"`); it stays out
of `__all__` so that `from keras_lth import *` works without it. Everything
else is internal.
"""

from keras_lth import data, distributed, layers, models, pruning, reintroduce
from keras_lth.callbacks import PruningScheduler
from keras_lth.compaction import compact
from keras_lth.conversion import prunable
from keras_lth.export import strip
from keras_lth.layers import MaskedDense, density, masked_layers
from keras_lth.reintroduce import DoublePruning, ScoredPruning
from keras_lth.schedules import IterativeSchedule, OneShotSchedule

__version__ = "0.1.0"


def __getattr__(name):
    if name == "tuner":
        import importlib

        return importlib.import_module("keras_lth.tuner")
    raise AttributeError(f"module 'keras_lth' has no attribute {name!r}")


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
    "distributed",
    "layers",
    "masked_layers",
    "models",
    "prunable",
    "pruning",
    "reintroduce",
    "strip",
    "__version__",
]
