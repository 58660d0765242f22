"""The unified pruning benchmark (`keras-lth bench`).

Every method (`methods.METHODS`) trains the same network on the same data,
budgets and seeds (`presets.Settings`); `runner` runs them resumably into
`results.jsonl`, and `report` turns that file into `summary.md` and plots.
Not imported by `import keras_lth`; nothing here imports
tensorflow-model-optimization except the child process (`child`).
"""

from keras_lth.bench.methods import METHODS, Method, get_methods
from keras_lth.bench.presets import PRESETS, Settings, settings
from keras_lth.bench.report import write_report
from keras_lth.bench.runner import Plan, make_plan, run_benchmark

__all__ = [
    "METHODS",
    "PRESETS",
    "Method",
    "Plan",
    "Settings",
    "get_methods",
    "make_plan",
    "run_benchmark",
    "settings",
    "write_report",
]
