"""A bounded keras-tuner sweep of the re-introduction settings on MNIST-5k.

Issue 10, item 2, at the size that one ~30-minute hold of the shared 2-core
machine allows: LeNet-300-100 on the embedded MNIST-5k (3,500 train, 500
validation, 1,000 test digits, batch 60), pruned per layer, by weights, at
rate 0.5 per round (4 rounds to 10% of the weights, 5 rounds to 3.6%), 2
epochs per round, rewinding to the initial weights, Adam 1.2e-3.

The candidates are plain `lth` and the two strategies with re-introduction
in the rounds (`when="round"`, today's default, one event per round after
its first epoch) or re-selection at the pruning step (`when="prune"`), at
`fraction` 0.2 and 1.0 (`DoublePruning` in feedback mode, the cheap one;
`ScoredPruning` with `prune_by="score"` in the rounds, its default, and
`prune_by="magnitude"` at the pruning step, where `fraction=0` is plain
IMP). keras-tuner's `GridSearch` runs every candidate through the
project's own `keras_lth.tuner.PruningHyperModel` with 3 executions (seeds
0, 1, 2: the initial weights and the data order, the same for every
candidate) per trial; its objective, the validation accuracy of the last
round averaged over the seeds, selects; test accuracy (scored on the
scheduler's `test_data` at the last round's end) is reported, mean ± sample
std over the seeds, with the project's noise bound
(`keras_lth.bench.report.within_noise`: 2 standard errors).

    python benchmarks/reintroduction_sweep.py --out docs/results/reintroduction_sweep

writes `results.json` (every run's record, the tuner's scores, timings and
the load average) after each density and `results.md` (the tables);
`--report-only` rebuilds `results.md` from `results.json`. Needs
keras-tuner.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")

import keras  # noqa: E402
import keras_tuner  # noqa: E402

import keras_lth as lth  # noqa: E402
from keras_lth.bench.presets import settings  # noqa: E402
from keras_lth.bench.report import stats, within_noise  # noqa: E402

DENSITIES = (0.10, 0.036)
SEEDS = 3
BATCH_SIZE = 60
LEARNING_RATE = 1.2e-3
# the benchmark's speech settings
_SPEECH = settings("speech_commands", source="tfds")
SPEECH_BATCH_SIZE, SPEECH_LEARNING_RATE = _SPEECH.batch_size, _SPEECH.learning_rate
COMMON = {
    "prune/rate": 0.5,
    "prune/epochs_per_round": 2,
    "prune/scope": "layer",
    "prune/structure": "weight",
}
_DOUBLE = {"prune/method": "double", "prune/double_mode": "feedback"}
_SCORED = {"prune/method": "scored", "prune/prune_by": "score"}
_ROUND = {"prune/when": "round", "prune/every": 1, "prune/start": 1, "prune/fraction": 0.2}
_PRUNE = {"prune/when": "prune", "prune/fraction": 0.2}
CANDIDATES = {
    "lth": {"prune/method": "lth"},
    # the first sweep (2 epochs per round)
    "double round f=0.2": {**_DOUBLE, **_ROUND},
    "double prune f=0.2": {**_DOUBLE, **_PRUNE},
    "double prune f=1.0": {**_DOUBLE, **_PRUNE, "prune/fraction": 1.0},
    "scored round f=0.2": {**_SCORED, **_ROUND},
    "scored prune f=0.2": {**_SCORED, **_PRUNE, "prune/prune_by": "magnitude"},
    "scored prune f=1.0": {
        **_SCORED,
        **_PRUNE,
        "prune/fraction": 1.0,
        "prune/prune_by": "magnitude",
    },
    # the wider sweep: one setting changed at a time from the in-round defaults
    "double complement": {**_DOUBLE, **_ROUND, "prune/double_mode": "complement"},
    "double round f=0.05": {**_DOUBLE, **_ROUND, "prune/fraction": 0.05},
    "double round start=2 every=2": {**_DOUBLE, **_ROUND, "prune/start": 2, "prune/every": 2},
    "double round value=zero": {**_DOUBLE, **_ROUND, "prune/value": "zero"},
    "double round value=rewind": {**_DOUBLE, **_ROUND, "prune/value": "rewind"},
    "scored round by magnitude": {**_SCORED, **_ROUND, "prune/prune_by": "magnitude"},
    "scored round f=0.05": {**_SCORED, **_ROUND, "prune/fraction": 0.05},
    "scored round start=2 every=2": {**_SCORED, **_ROUND, "prune/start": 2, "prune/every": 2},
    "scored round value=zero": {**_SCORED, **_ROUND, "prune/value": "zero"},
    "scored round score_decay=0.5": {**_SCORED, **_ROUND, "prune/score_decay": 0.5},
    "scored prune by score": {**_SCORED, **_PRUNE},
    "scored prune score_decay=0.5": {
        **_SCORED,
        **_PRUNE,
        "prune/prune_by": "magnitude",
        "prune/score_decay": 0.5,
    },
}
FIRST_SWEEP = [
    "lth",
    "double round f=0.2",
    "double prune f=0.2",
    "double prune f=1.0",
    "scored round f=0.2",
    "scored prune f=0.2",
    "scored prune f=1.0",
]
"""The first sweep's candidates (`--candidates` default)."""


DATA_LINES = {
    "mnist": "the embedded MNIST-5k (3,500 / 500 / 1,000 digits), LeNet-300-100, batch 60, Adam 1.2e-3",
    "speech_commands": (
        "a Speech Commands tree (the `--source` of the command; synthetic espeak-ng "
        "speech where it was built by `keras_lth.data.synthetic_speech`), the speech MLP "
        "(256-256) on flat log-mel features, batch 100, Adam 1e-3"
    ),
}


class Task:
    """The data and network of a sweep.

    `"mnist"`: LeNet-300-100 on the embedded MNIST-5k, batch 60, Adam 1.2e-3.
    `"speech_commands"`: `lth.models.speech_mlp` (256-256) on the flat
    log-mel features of the Speech Commands tree `source`, batch 100, Adam
    1e-3 (the benchmark's speech settings). A seed fixes the data order (and
    the tree's `_silence_` / `_unknown_` draws) exactly as in `keras-lth bench`.
    """

    def __init__(self, dataset="mnist", source=None):
        self.dataset, self.source = dataset, source
        if dataset == "mnist":
            self.batch_size, self.learning_rate, self.input_dim = BATCH_SIZE, LEARNING_RATE, None
        elif dataset == "speech_commands":
            if not source or not os.path.isdir(source):
                raise ValueError(
                    "Received an invalid value for `--source`, expected the directory "
                    "of a Speech Commands tree (e.g. `python -m "
                    f"keras_lth.data.synthetic_speech DIR 96`). Received: {source!r}"
                )
            self.batch_size, self.learning_rate = SPEECH_BATCH_SIZE, SPEECH_LEARNING_RATE
            self.input_dim = self.load(0)[3].input_shape[0]
        else:
            raise ValueError(
                "Received an invalid value for `--dataset`, expected 'mnist' or "
                f"'speech_commands'. Received: {dataset!r}"
            )

    def load(self, seed):
        if self.dataset == "mnist":
            return lth.data.mnist(batch_size=self.batch_size, seed=seed)
        return lth.data.speech_commands(self.source, batch_size=self.batch_size, seed=seed)

    def build_model(self, hp=None):
        if self.dataset == "mnist":
            model = lth.models.lenet_300_100()
        else:
            model = lth.models.speech_mlp(self.input_dim)
        model.compile(
            keras.optimizers.Adam(self.learning_rate),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model


class SweepHyperModel(lth.tuner.PruningHyperModel):
    """`PruningHyperModel` over a fixed list of candidates (one `candidate` choice).

    Every `fit` starts the next seed (the tuner's executions of a trial run in
    order) from fresh weights drawn with it, every trial's scheduler also
    scores `test_data`, and every run's last record is kept in `runs`.
    """

    def __init__(self, names, seeds, common, task, **kwargs):
        super().__init__(task.build_model, **kwargs)
        self.task = task
        self.names = list(names)
        self.common = dict(common)
        self.test_data = None
        self.runs = []
        self._seeds = itertools.cycle(range(seeds))
        self._seed = None

    def build(self, hp):
        hp.Choice("candidate", self.names)
        return self.build_model(hp)

    def fit(self, hp, model, *args, **kwargs):
        name = hp.get("candidate")
        # the seed of this execution: its initial weights and its data order,
        # the same for every candidate (a paired comparison)
        self._seed = next(self._seeds)
        keras.utils.set_random_seed(self._seed)
        model.set_weights(self.build_model(hp).get_weights())
        train_ds, val_ds, self.test_data, _ = self.task.load(self._seed)
        t0 = time.time()
        values = {**self.common, **CANDIDATES[name]}
        metrics = super().fit(values, model, train_ds, validation_data=val_ds, **kwargs)
        record = self._scheduler.rounds[-1]
        self.runs.append(
            {
                "candidate": name,
                "seed": self._seed,
                "seconds": time.time() - t0,
                "val_accuracy": record["final"]["val_accuracy"],
                "test_accuracy": record["test"]["accuracy"],
                "density": record["density"],
                "rounds": [
                    {k: r[k] for k in ("round", "density", "swaps", "reselected") if k in r}
                    for r in self._scheduler.rounds
                ],
            }
        )
        print(
            f"  {name:20s} seed {self._seed}: val {100 * self.runs[-1]['val_accuracy']:.2f}% "
            f"test {100 * self.runs[-1]['test_accuracy']:.2f}% at "
            f"{100 * record['density']:.2f}% ({self.runs[-1]['seconds']:.0f}s)",
            flush=True,
        )
        return metrics

    def scheduler_from(self, hp, **kwargs):
        self._scheduler = super().scheduler_from(hp, test_data=self.test_data, **kwargs)
        return self._scheduler


def sweep(density, names, seeds, common=COMMON, task=None):
    task = task or Task()
    hypermodel = SweepHyperModel(names, seeds, common, task, target_density=density, seed=0)
    tuner = keras_tuner.GridSearch(
        hypermodel,
        objective=keras_tuner.Objective("val_accuracy", "max"),
        max_trials=len(names),
        executions_per_trial=seeds,
        seed=0,
        directory=tempfile.mkdtemp(prefix="reintroduction_sweep_"),  # trial files: not kept
        project_name=f"density_{density}",
        overwrite=True,
    )
    start = time.time()
    tuner.search(verbose=0)  # every execution builds its seed's data (`SweepHyperModel.fit`)
    trials = sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id))
    best = tuner.get_best_hyperparameters()[0].get("candidate")
    return {
        "density": density,
        "plans": {n: hypermodel.describe({**common, **CANDIDATES[n]}) for n in names},
        "trials": [
            {"candidate": t.hyperparameters.get("candidate"), "status": t.status, "score": t.score}
            for t in trials
        ],
        "selected": best,
        "runs": hypermodel.runs,
        "seconds": time.time() - start,
        "loadavg_after": os.getloadavg(),
    }


def write_report(result, out):
    command = result.get(
        "command",
        "python benchmarks/reintroduction_sweep.py --out docs/results/reintroduction_sweep",
    )
    lines = [f"`{command}`", ""]
    if result.get("dataset"):
        lines += [f"Data: {DATA_LINES[result['dataset']]}.", ""]
    for part in result["densities"]:
        names = [n for n in CANDIDATES if n in part["plans"]]
        by = {n: [r for r in part["runs"] if r["candidate"] == n] for n in names}
        ref = stats([100 * r["test_accuracy"] for r in by["lth"]])
        plan = part["plans"]["lth"]
        lines += [
            f"## {100 * part['density']:.1f}% of the weights",
            "",
            f"{plan['rounds']} pruning rounds (after the dense round 0) at rate {plan['exact_rate']:.3f}, "
            f"{plan['epochs_per_round']} epochs each ({plan['total_epochs']} epochs); "
            f"selected on validation by the tuner: **{part['selected']}**; "
            f"{part['seconds']:.0f} s, load average after "
            f"{', '.join(f'{x:.1f}' for x in part['loadavg_after'])}.",
            "",
            "| candidate | val acc (%) | test acc (%) | test vs lth | re-entered / swapped "
            "weights per run |",
            "|---|---:|---:|---|---:|",
        ]
        for n in names:
            runs = by[n]
            if not runs:
                continue
            v = stats([100 * r["val_accuracy"] for r in runs])
            t = stats([100 * r["test_accuracy"] for r in runs])
            if n == "lth":
                verdict = "—"
            else:
                diff = t[0] - ref[0]
                verdict = (
                    f"{diff:+.2f} ({'within noise' if within_noise(t, ref) else 'beyond noise'})"
                )
            moved = [
                sum(
                    (x.get("reselected") or {}).get("count", 0)
                    + (x.get("swaps") or {}).get("reintroduced", 0)
                    for x in r["rounds"]
                )
                for r in runs
            ]
            lines.append(
                f"| {n} | {v[0]:.2f} ± {v[1]:.2f} | {t[0]:.2f} ± {t[1]:.2f} | {verdict} | "
                f"{sum(moved) / len(moved):.0f} |"
            )
        lines += [
            "",
            f"Mean ± sample std (n − 1) over {len(by['lth'])} seeds; density at the end "
            f'{100 * part["runs"][0]["density"]:.2f}%. "Within noise": the difference of '
            "means is at most 2 standard errors.",
            "",
        ]
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/reintroduction_sweep")
    parser.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument(
        "--candidates",
        nargs="+",
        choices=[*CANDIDATES, "all"],
        default=FIRST_SWEEP,
        help="the candidates to run (lth, the reference, always runs); 'all': every one",
    )
    parser.add_argument("--epochs-per-round", type=int, default=COMMON["prune/epochs_per_round"])
    parser.add_argument("--dataset", choices=["mnist", "speech_commands"], default="mnist")
    parser.add_argument("--source", help="the Speech Commands tree (--dataset speech_commands)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    if "all" in args.candidates:
        args.candidates = list(CANDIDATES)
    args.candidates = ["lth"] + [n for n in args.candidates if n != "lth"]  # the reference
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.json")
    if args.report_only:
        with open(path) as f:
            write_report(json.load(f), args.out)
        return
    if args.epochs_per_round < 2:
        parser.error(
            "--epochs-per-round: expected an integer >= 2 (the first epoch of a round "
            f"precedes its first event). Received: {args.epochs_per_round}"
        )
    common = {**COMMON, "prune/epochs_per_round": args.epochs_per_round}
    task = Task(args.dataset, args.source)
    result = {
        "command": shlex.join(
            [
                "python",
                "benchmarks/reintroduction_sweep.py",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "dataset": args.dataset,
        "loadavg_before": os.getloadavg(),
        "densities": [],
    }
    for density in args.densities:
        print(f"density {density}", flush=True)
        result["densities"].append(sweep(density, args.candidates, args.seeds, common, task))
        with open(path, "w") as f:
            json.dump(result, f, indent=1)
    write_report(result, args.out)


if __name__ == "__main__":
    main()
