"""The unified pruning benchmark (`keras-lth bench`).

Every method (`methods.METHODS`) trains the same network on the same data,
budgets and seeds (`presets.Settings`); `runner` runs them resumably into
`results.jsonl` (`workers`: in N processes with `--jobs N`; `results`: the
directory, its shards and their merging), and `report` turns the results
into `summary.md` and plots.
Not imported by `import keras_lth`; nothing here imports
tensorflow-model-optimization except the child process (`child`).
"""

from keras_lth.bench.methods import METHODS, Method, get_methods
from keras_lth.bench.presets import PRESETS, Settings, settings
from keras_lth.bench.report import report_directory, write_report
from keras_lth.bench.results import Shard
from keras_lth.bench.runner import Plan, make_plan, run_benchmark

__all__ = [
    "METHODS",
    "PRESETS",
    "Method",
    "Plan",
    "Settings",
    "Shard",
    "get_methods",
    "make_plan",
    "report_directory",
    "run_benchmark",
    "settings",
    "write_report",
]
