"""Benchmark settings: the training protocol every method shares.

`PRESETS` holds the named protocols and `PRESET_METHODS` the methods each
runs by default:

- `"quick"`: the project's main job (embedded MNIST-5k; 14 minutes on 2
  CPU cores with `--jobs auto`, `docs/results/bench_quick_auto/log.txt`): the dense net, the seed's two
  algorithms (`double-complement`, `double-feedback`, `scored`) and the
  baselines they are compared with at equal density and at equal training
  budget (`lth`, `imp-finetune`, `oneshot`, `gradual` and the budget-matched
  `oneshot-matched`). The round length comes from a measured convergence
  study (`benchmarks/convergence.py`, `docs/results/convergence.md`).
  To keep it short, the controls (`lth-late`, `lth-reinit`,
  `random-mask`), neuron pruning (`neuron-l1`, `neuron-l2`), the tfmot
  reference (`tfmot`, which `gradual` matches exactly) and
  `gradual-matched` (38 rounds' worth of passes per seed, as much as 2.4
  iterative runs; `oneshot-matched` already gives the budget-matched
  baseline) run only in `"standard"`;
- `"standard"`: the same protocol with every method;
- `"paper"`: Frankle & Carbin's LeNet protocol on full MNIST, every method.

`settings(...)` builds and checks one.
"""

from __future__ import annotations

import dataclasses
import os

DATASETS = ("mnist", "speech_commands")
MODELS = ("mlp", "cnn")


@dataclasses.dataclass(frozen=True)
class Settings:
    """The shared training protocol of one benchmark.

    One "epoch" below is one evaluation period: `steps_per_epoch` training
    steps (or one pass over the training set when `None`) followed by a
    validation pass. Round `r` of the iterative methods prunes `rate` of each
    hidden (fully connected) layer's remaining weights, `conv_rate` of each
    convolution's and `output_rate` of the output layer's (Frankle & Carbin).

    Args:
        dataset: `"mnist"` or `"speech_commands"`. Defaults to `"mnist"`.
        source: The data module's `source`: `"embedded"`, `"tfds"` or a
            directory of IDX files for MNIST; `"tfds"` or a directory tree
            for Speech Commands. Defaults to `"embedded"`.
        model: `"mlp"` (LeNet-300-100 for MNIST, `lth.models.speech_mlp` for
            speech) or `"cnn"` (`lth.models.lenet5` for MNIST, the
            `cnn-trad-fpool3` of `lth.models.speech_cnn` with `cnn_filters`
            filters for speech). Defaults to `"mlp"`.
        preset: Name of the preset these settings came from.
        seeds: Number of seeds, `0 .. seeds - 1`. Defaults to `3`.
        densities: Target densities (shares of weights kept, in (0, 1)) of
            the one-run-per-density methods and the columns of the summary;
            `None` for the nominal densities of the iterative rounds `levels`.
        levels: Iterative rounds whose densities are the default `densities`.
            Defaults to `(3, 6, 10, 15)`: 51.3, 26.3, 10.8 and 3.6% of
            LeNet-300-100's weights.
        batch_size: Training batch. Defaults to `60`.
        learning_rate: Adam's learning rate. Defaults to `1.2e-3`.
        steps_per_epoch: Steps between two evaluations, or `None` for one
            pass over the training set. Defaults to `None`.
        epochs_per_round: Epochs of one training round (`E`). Defaults to
            `12` (see `docs/results/convergence.md`).
        rate: Per-round pruning rate of the fully connected hidden layers.
            Defaults to `0.2`.
        conv_rate: Per-round rate of the convolutions. Defaults to `0.1`.
        output_rate: Per-round rate of the output layer. Defaults to `0.1`.
        late_rewind: Epoch `k` that `lth-late` rewinds to. Defaults to `1`.
        gradual_begin: Share of a gradual run's epochs before pruning starts.
            Defaults to `0.25`.
        gradual_end: Share of a gradual run's epochs when the final sparsity
            is reached (the rest fine-tunes). Defaults to `0.75`.
        gradual_frequency: Steps between two gradual pruning updates, or
            `None` for one update per epoch. Defaults to `None`.
        steps_per_execution: Keras's `steps_per_execution` (it changes the
            speed, not the results), or `None` for one execution per epoch.
            It is capped to a divisor of the epoch's steps, is the gradual
            frequency for `gradual` when that divides the epoch, and is 1
            for `tfmot`, whose step counter is a batch hook. Defaults to
            `None`.
        cnn_filters: Filters of each convolution of the speech CNN.
            Defaults to `32`.
    """

    dataset: str = "mnist"
    source: str = "embedded"
    model: str = "mlp"
    preset: str = "quick"
    seeds: int = 3
    densities: tuple | None = None
    levels: tuple = (3, 6, 10, 15)
    batch_size: int = 60
    learning_rate: float = 1.2e-3
    steps_per_epoch: int | None = None
    epochs_per_round: int = 12
    rate: float = 0.2
    conv_rate: float = 0.1
    output_rate: float = 0.1
    late_rewind: int = 1
    gradual_begin: float = 0.25
    gradual_end: float = 0.75
    gradual_frequency: int | None = None
    steps_per_execution: int | None = None
    cnn_filters: int = 32

    def config(self) -> dict:
        """The fields that shape a single run's results (not `seeds`, `preset`,
        `densities`, or `steps_per_execution`, which only changes the speed)."""
        out = dataclasses.asdict(self)
        for name in ("seeds", "preset", "densities", "levels", "steps_per_execution"):
            out.pop(name)
        return out


PRESETS = {
    # Embedded MNIST-5k (3,500 / 500 / 1,000): rounds of 12 passes, each a
    # Keras epoch followed by a validation pass, 15 rounds (3.6% of the
    # weights left), 3 seeds.
    "quick": {},
    # The same protocol, every method.
    "standard": {},
    # Frankle & Carbin (2019), LeNet-300-100: 55,000/5,000/10,000 MNIST,
    # Adam 1.2e-3, batch 60, 50,000 iterations per round, evaluation every
    # 100 iterations, rates 0.2 / 0.2 / 0.1, 5 trials, down to 3.6%.
    "paper": {
        "source": "tfds",
        "seeds": 5,
        "levels": (1, 2, 3, 5, 7, 9, 12, 15),
        "steps_per_epoch": 100,
        "epochs_per_round": 500,
        "late_rewind": 10,
    },
}

# The methods of each preset when `--methods` is not given ("all": every one).
PRESET_METHODS = {
    "quick": (
        "dense",
        "oneshot",
        "oneshot-matched",
        "imp-finetune",
        "lth",
        "gradual",
        "double-complement",
        "double-feedback",
        "scored",
    ),
    "standard": "all",
    "paper": "all",
}

_SPEECH = {"batch_size": 100, "learning_rate": 1e-3, "source": None}


def settings(dataset="mnist", preset="quick", **overrides) -> Settings:
    """The `Settings` of `preset` for `dataset`, with `overrides` applied.

    `None` overrides are ignored, so command-line defaults pass through.

    Raises:
        ValueError: naming the argument, what was expected and what was
            received, for an unknown dataset, model or preset, a density
            outside (0, 1), a missing data directory and other bad values.
    """
    if dataset not in DATASETS:
        raise ValueError(
            f"Received an invalid value for `dataset`, expected one of {DATASETS}. "
            f"Received: dataset={dataset!r}"
        )
    if preset not in PRESETS:
        raise ValueError(
            f"Received an invalid value for `preset`, expected one of {tuple(PRESETS)}. "
            f"Received: preset={preset!r}"
        )
    values = {**PRESETS[preset], **(_SPEECH if dataset == "speech_commands" else {})}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["dataset"], values["preset"] = dataset, preset
    if overrides.get("late_rewind") is None and isinstance(values.get("epochs_per_round"), int):
        # the preset's rewind epoch must stay inside a shorter round
        late = values.get("late_rewind", Settings.late_rewind)
        values["late_rewind"] = min(late, values["epochs_per_round"] - 1)
    s = Settings(**values)
    _check(s)
    return s


def default_methods(preset) -> tuple | str:
    """The methods `preset` runs when none are named (a tuple, or `"all"`)."""
    return PRESET_METHODS.get(preset, "all")


def _check(s: Settings):
    if s.model not in MODELS:
        raise ValueError(
            f"Received an invalid value for `model`, expected one of {MODELS}. "
            f"Received: model={s.model!r}"
        )
    if s.source is None:
        raise ValueError(
            "Received no value for `source`, expected 'tfds' or a directory of "
            f"the {s.dataset} dataset. Received: source=None"
        )
    named = ("embedded", "tfds") if s.dataset == "mnist" else ("tfds",)
    if s.source not in named and not os.path.isdir(s.source):
        raise ValueError(
            f"Received an invalid value for `source`, expected one of {named} or "
            f"an existing data directory. Received: source={s.source!r} (no such "
            "directory)"
        )
    for name in ("seeds", "batch_size", "epochs_per_round", "cnn_filters"):
        _positive_int(getattr(s, name), name)
    for name in ("steps_per_epoch", "gradual_frequency", "steps_per_execution"):
        if getattr(s, name) is not None:
            _positive_int(getattr(s, name), name)
    if s.densities is not None:
        if not s.densities:
            raise ValueError(
                "Received an invalid value for `densities`, expected at least one "
                "density in (0, 1). Received: densities=()"
            )
        for d in s.densities:
            if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d < 1:
                raise ValueError(
                    "Received an invalid value for `densities`, expected shares of "
                    f"weights kept in (0, 1). Received: densities={s.densities!r}"
                )
    for name in ("rate", "conv_rate", "output_rate"):
        if not 0 < getattr(s, name) < 1:
            raise ValueError(
                f"Received an invalid value for `{name}`, expected a rate in (0, 1). "
                f"Received: {name}={getattr(s, name)!r}"
            )
    if not 0 <= s.late_rewind < s.epochs_per_round:
        raise ValueError(
            "Received an invalid value for `late_rewind`, expected an epoch in "
            f"[0, epochs_per_round={s.epochs_per_round}). Received: "
            f"late_rewind={s.late_rewind!r}"
        )
    if not 0 <= s.gradual_begin < s.gradual_end <= 1:
        raise ValueError(
            "Received invalid values for `gradual_begin` / `gradual_end`, expected "
            f"0 <= begin < end <= 1. Received: gradual_begin={s.gradual_begin!r}, "
            f"gradual_end={s.gradual_end!r}"
        )
    if not s.levels or any(
        isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in s.levels
    ):
        raise ValueError(
            "Received an invalid value for `levels`, expected positive round "
            f"indices. Received: levels={s.levels!r}"
        )


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"Received an invalid value for `{name}`, expected a positive integer. "
            f"Received: {name}={value!r}"
        )
