"""Pruning schedules: how many rounds, how long, and how much to prune.

`IterativeSchedule` describes lottery-ticket style iterative magnitude pruning
(train, prune, rewind, repeat); `OneShotSchedule` is the single-round case.
`PruningScheduler` also accepts a `tfmot.sparsity.keras.PruningSchedule`
(`ConstantSparsity`, `PolynomialDecay` or a subclass) for gradual pruning;
`is_tfmot_schedule` recognises one without importing tfmot, because importing
tfmot switches `tf.keras` to legacy Keras for the whole process.
"""

from __future__ import annotations

import keras

from keras_lth import pruning
from keras_lth.rounds import RoundLayout


def _check_positive_int(value, name):
    return pruning._check_int(value, name, 1)


@keras.saving.register_keras_serializable(package="keras_lth")
class IterativeSchedule:
    """Iterative magnitude pruning in rounds (Frankle & Carbin, 2019).

    Round 0 trains the dense network; each of the `rounds` pruning rounds then
    removes `rate` of the remaining weights (or neurons) and trains again, so
    a run has `rounds + 1` training rounds of `epochs_per_round` epochs.

    Args:
        rounds: Number of pruning rounds (positive integer).
        epochs_per_round: Training epochs per round (positive integer).
        rate: Share of the remaining weights pruned per round, in (0, 1).
            Defaults to `0.2`. Mutually exclusive with `target_density`.
        layer_rates: Optional `{layer name: rate}` overrides, e.g. half the
            rate for the output layer as in the paper.
        target_density: Instead of `rate`, the density (share of weights
            kept) to reach after `rounds` rounds; the per-round rate is
            `1 - target_density ** (1 / rounds)`. Layers in `layer_rates`
            keep their own rate.

    Example:

    >>> s = IterativeSchedule(rounds=10, epochs_per_round=8, rate=0.2)
    >>> s.total_epochs
    88
    >>> s.layout(rewind=2).total_epochs  # late rewinding: later rounds train 6 epochs
    68
    >>> round(s.density_after(10), 3)
    0.107
    """

    def __init__(
        self,
        rounds,
        epochs_per_round,
        rate=None,
        layer_rates=None,
        target_density=None,
    ):
        self.rounds = _check_positive_int(rounds, "rounds")
        self.epochs_per_round = _check_positive_int(epochs_per_round, "epochs_per_round")
        if rate is not None and target_density is not None:
            raise ValueError(
                "Pass either `rate` or `target_density`, not both. Received: "
                f"rate={rate!r}, target_density={target_density!r}"
            )
        self.target_density = target_density
        if target_density is not None:
            self.rate = pruning.rate_for_target(target_density, self.rounds)
        else:
            self.rate = pruning._check_rate(0.2 if rate is None else rate)
        if layer_rates is not None and not isinstance(layer_rates, dict):
            raise ValueError(
                "Received an invalid value for `layer_rates`, expected a dict "
                f"of layer name -> rate. Received: layer_rates={layer_rates!r}"
            )
        self.layer_rates = {
            str(k): pruning._check_rate(v, f"layer_rates[{k!r}]")
            for k, v in (layer_rates or {}).items()
        }

    def rate_for(self, layer_name):
        """The per-round rate of one layer."""
        return self.layer_rates.get(layer_name, self.rate)

    def density_after(self, round_index, layer_name=None):
        """Nominal density of a layer after `round_index` pruning rounds."""
        return pruning.density_after(self.rate_for(layer_name), round_index)

    def layout(self, rewind="init") -> RoundLayout:
        """The round layout of a run with this schedule and `rewind`.

        Args:
            rewind: The `PruningScheduler`'s `rewind`: with an epoch index `k`
                (late rewinding) the rounds after round 0 train
                `epochs_per_round - k` epochs; any other setting keeps
                `epochs_per_round`. Defaults to `"init"`.

        Returns:
            A `keras_lth.rounds.RoundLayout` (`total_epochs`, `round_of`,
            `round_start`, `round_end`), the one the scheduler uses.
        """
        return RoundLayout.for_rewind(self.rounds, self.epochs_per_round, rewind)

    @property
    def total_epochs(self):
        """Epochs of a run whose rounds all train `epochs_per_round` epochs.

        That is `(rounds + 1) * epochs_per_round`: the length of a run that
        rewinds to `"init"`, `"reinit"` or not at all. Late rewinding
        (`rewind=k`) shortens the later rounds: use
        `schedule.layout(rewind=k).total_epochs`, or the scheduler's
        `total_epochs`, which always agree.
        """
        return self.layout().total_epochs

    def get_config(self):
        config = {
            "rounds": self.rounds,
            "epochs_per_round": self.epochs_per_round,
            "layer_rates": dict(self.layer_rates),
        }
        if self.target_density is not None:
            config["target_density"] = self.target_density
        else:
            config["rate"] = self.rate
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="keras_lth")
class OneShotSchedule(IterativeSchedule):
    """One-shot pruning: train, prune once to the target, train again.

    Args:
        epochs_per_round: Training epochs before and after the single prune.
        rate: Share of the weights to prune at once, in (0, 1). Mutually
            exclusive with `target_density`. Defaults to `0.8`.
        layer_rates: Optional `{layer name: rate}` overrides.
        target_density: Share of the weights to keep, in (0, 1).

    Example:

    >>> OneShotSchedule(epochs_per_round=5, target_density=0.1).rate
    0.9
    """

    def __init__(self, epochs_per_round, rate=None, layer_rates=None, target_density=None):
        if rate is None and target_density is None:
            rate = 0.8
        super().__init__(
            rounds=1,
            epochs_per_round=epochs_per_round,
            rate=rate,
            layer_rates=layer_rates,
            target_density=target_density,
        )

    def get_config(self):
        config = super().get_config()
        config.pop("rounds")
        return config


def is_tfmot_schedule(schedule) -> bool:
    """True for a `tfmot.sparsity.keras.PruningSchedule` (or subclass).

    Checked by class name and module so tfmot is never imported here.
    """
    return any(
        cls.__name__ == "PruningSchedule"
        and cls.__module__.startswith("tensorflow_model_optimization")
        for cls in type(schedule).__mro__
    )
