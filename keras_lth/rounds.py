"""The round layout of iterative pruning: which epoch belongs to which round.

Round 0 trains the dense network for `epochs_per_round` epochs; each of the
`rounds` pruning rounds then starts with a prune (and a rewind) and trains
again. With late rewinding (`rewind=k`, an epoch index) the weights restart
from their values after epoch `k` of round 0, so the later rounds train
`epochs_per_round - k` epochs each: the run is shorter than
`(rounds + 1) * epochs_per_round`.

`RoundLayout` is the one place where this arithmetic lives; the scheduler,
`IterativeSchedule.layout`, the tuner and the benchmark all ask it.
"""

from __future__ import annotations

import dataclasses
import numbers

from keras_lth.pruning import _check_int


def late_epoch(rewind) -> int:
    """The late-rewinding epoch `k` of a `rewind` setting (0 unless an integer)."""
    if isinstance(rewind, numbers.Integral) and not isinstance(rewind, bool):
        return int(rewind)
    return 0


@dataclasses.dataclass(frozen=True)
class RoundLayout:
    """Epochs of each round of an iterative pruning run.

    Args:
        rounds: Number of pruning rounds after round 0 (positive integer).
        epochs_per_round: Epochs of round 0 (positive integer).
        late: Late-rewinding epoch `k` in `[0, epochs_per_round)`: rounds
            after round 0 train `epochs_per_round - late` epochs. Defaults
            to `0`.

    Example:

    >>> layout = RoundLayout(rounds=2, epochs_per_round=3, late=1)
    >>> layout.total_epochs, [layout.round_start(r) for r in range(3)]
    (7, [0, 3, 5])
    >>> [layout.round_of(e) for e in range(7)]
    [0, 0, 0, 1, 1, 2, 2]
    """

    rounds: int
    epochs_per_round: int
    late: int = 0

    def __post_init__(self):
        _check_int(self.rounds, "rounds", 1)
        _check_int(self.epochs_per_round, "epochs_per_round", 1)
        if (
            isinstance(self.late, bool)
            or not isinstance(self.late, numbers.Integral)
            or not 0 <= self.late < self.epochs_per_round
        ):
            raise ValueError(
                "Received an invalid value for `rewind`, expected an epoch "
                f"index in [0, epochs_per_round={self.epochs_per_round}). "
                f"Received: rewind={self.late!r}"
            )

    @classmethod
    def for_rewind(cls, rounds, epochs_per_round, rewind) -> RoundLayout:
        """The layout for a scheduler's `rewind` setting (`"init"`, `k`, ...)."""
        return cls(rounds, epochs_per_round, late_epoch(rewind))

    @property
    def total_epochs(self) -> int:
        """Epochs of the whole run: round 0 and every pruning round."""
        return self.epochs_per_round + self.rounds * self.round_length(1)

    def round_length(self, r: int) -> int:
        """Nominal epochs of round `r`."""
        return self.epochs_per_round - (self.late if r >= 1 else 0)

    def round_start(self, r: int) -> int:
        """First epoch (0-based) of round `r`."""
        return 0 if r == 0 else self.epochs_per_round + (r - 1) * self.round_length(1)

    def round_end(self, r: int) -> int | None:
        """Last epoch of round `r`; `None` for the last round, which runs until `fit` stops."""
        if r >= self.rounds:
            return None
        return self.round_start(r + 1) - 1

    def round_of(self, epoch: int) -> int:
        """Index of the round that epoch `epoch` (0-based) belongs to.

        Epochs past `total_epochs` belong to the last round.
        """
        if epoch < self.epochs_per_round:
            return 0
        return min(self.rounds, 1 + (epoch - self.epochs_per_round) // self.round_length(1))
