"""The benchmark's pruning methods: named configurations, nothing more.

Each `Method` says how a run trains and prunes; `keras_lth.bench.runner`
turns it into a model, a `PruningScheduler` and a `fit` call. `kind` decides
how many runs a method needs:

- `"dense"`: one run per seed, no pruning;
- `"iterative"`: one run per seed whose rounds pass through every density
  (one record per round);
- `"target"`: one run per seed and target density.

A `"target"` method with `budget="matched"` trains as long as the iterative
methods do to reach its density (their cumulative passes, as in Renda et al.,
2020), so that methods compare at equal training budget too.

`process="tfmot"` methods run in a child process started with
`TF_USE_LEGACY_KERAS=1`, because importing tensorflow-model-optimization
switches `tf.keras` to legacy Keras for the whole process (see
`keras_lth.bench.child`).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Method:
    """One named pruning configuration.

    Args:
        name: The name on the command line and in the results.
        description: One line for `keras-lth bench --list`.
        kind: `"dense"`, `"iterative"` or `"target"` (see the module).
        rewind: The scheduler's `rewind` (`"init"`, `"reinit"`, `None`) or
            `"late"` (the preset's `late_rewind` epoch). Defaults to `"init"`.
        structure: `"weight"` or `"neuron"`. Defaults to `"weight"`.
        norm: The neuron norm, `"l1"` or `"l2"`. Defaults to `"l1"`.
        reintroduce: `None`; `"complement"`, `"feedback"` (`lth.DoublePruning`
            with in-round swaps) or `"scored"` (`lth.ScoredPruning`, in-round);
            `"feedback-prune"` or `"scored-prune"` (the same strategies with
            re-selection at the pruning steps, `when="prune"`, their
            defaults). Defaults to `None`.
        process: `"main"`, or `"tfmot"` for a child process with legacy
            Keras. Defaults to `"main"`.
        budget: `"own"` (the method's own length: one round for `dense` and
            `random-mask`, two for `oneshot`, `gradual` and `tfmot`) or
            `"matched"` (a `"target"` method given the iterative methods'
            budget at its density: `r + 1` rounds for the density of round
            `r`). Defaults to `"own"`.
    """

    name: str
    description: str
    kind: str
    rewind: object = "init"
    structure: str = "weight"
    norm: str = "l1"
    reintroduce: str | None = None
    process: str = "main"
    budget: str = "own"

    def config(self) -> dict:
        return dataclasses.asdict(self)


METHODS = {
    m.name: m
    for m in (
        Method("dense", "the unpruned network (the reference)", "dense", rewind=None),
        Method(
            "oneshot",
            "train, prune once to the target density, fine-tune",
            "target",
            rewind=None,
        ),
        Method(
            "oneshot-matched",
            "oneshot with the iterative methods' budget at its density (fine-tunes longer)",
            "target",
            rewind=None,
            budget="matched",
        ),
        Method(
            "imp-finetune",
            "iterative magnitude pruning, keep the trained weights",
            "iterative",
            rewind=None,
        ),
        Method("lth", "iterative magnitude pruning, rewind to init (tickets)", "iterative"),
        Method("lth-late", "iterative, rewind to the weights after epoch k", "iterative", "late"),
        Method("lth-reinit", "iterative, random re-initialisation control", "iterative", "reinit"),
        Method(
            "random-mask",
            "a random mask at the same layer densities, trained from init (control)",
            "target",
        ),
        Method(
            "neuron-l1",
            "iterative neuron pruning by l1 norm, rewind to init",
            "iterative",
            structure="neuron",
            norm="l1",
        ),
        Method(
            "neuron-l2",
            "iterative neuron pruning by l2 norm, rewind to init",
            "iterative",
            structure="neuron",
            norm="l2",
        ),
        Method(
            "gradual",
            "gradual pruning: tfmot PolynomialDecay on MaskedDense (PruningScheduler)",
            "target",
            rewind=None,
            process="tfmot",
        ),
        Method(
            "gradual-matched",
            "gradual with the iterative methods' budget at its density",
            "target",
            rewind=None,
            process="tfmot",
            budget="matched",
        ),
        Method(
            "tfmot",
            "tfmot.sparsity.keras.prune_low_magnitude, same schedule (the reference)",
            "target",
            rewind=None,
            process="tfmot",
        ),
        Method(
            "double-complement",
            "iterative, rewind to init, DoublePruning(mode='complement', when='round'): "
            "swaps every epoch",
            "iterative",
            reintroduce="complement",
        ),
        Method(
            "double-feedback",
            "iterative, rewind to init, DoublePruning(mode='feedback', when='round'): "
            "swaps every epoch",
            "iterative",
            reintroduce="feedback",
        ),
        Method(
            "scored",
            "iterative, rewind to init, ScoredPruning(when='round'): swaps by score every epoch",
            "iterative",
            reintroduce="scored",
        ),
        Method(
            "double-prune",
            "iterative, rewind to init, DoublePruning(mode='feedback', when='prune') (the "
            "default): re-selection at the pruning steps",
            "iterative",
            reintroduce="feedback-prune",
        ),
        Method(
            "scored-prune",
            "iterative, rewind to init, ScoredPruning(when='prune') (the default): "
            "re-selection by score at the pruning steps",
            "iterative",
            reintroduce="scored-prune",
        ),
    )
}


def get_methods(names) -> list[Method]:
    """The `Method`s named in `names` (a list, or `"all"`), in `METHODS` order.

    Raises:
        ValueError: for an unknown name or an empty selection.
    """
    if names is None or names == "all" or list(names) == ["all"]:
        return list(METHODS.values())
    names = list(names)
    unknown = [n for n in names if n not in METHODS]
    if unknown or not names:
        raise ValueError(
            "Received an invalid value for `methods`, expected names among "
            f"{list(METHODS)} or 'all'. Received: methods={names!r}"
        )
    return [m for n, m in METHODS.items() if n in names]


def listing() -> str:
    """The text of `keras-lth bench --list`."""
    width = max(len(n) for n in METHODS)
    return "\n".join(f"{m.name:<{width}}  {m.kind:<9}  {m.description}" for m in METHODS.values())
