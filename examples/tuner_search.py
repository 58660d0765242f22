"""
Title: Searching prune schedules with keras-tuner
Description: Bayesian optimisation over lottery-ticket prune schedules
(method, rate per round, epochs per round, rewinding, scope, structure,
re-introduction) of LeNet-300-100 on MNIST-5k at 5% of the weights.

`keras_lth.tuner.PruningHyperModel` wraps a model-building function so that
keras-tuner searches the pruning schedule next to the model's own
hyperparameters (here the learning rate). Every trial prunes all the way to
`TARGET_DENSITY` inside one `fit`, and is scored on the validation accuracy of
its last round, i.e. of the network at the target density. The script then
retrains the best schedule and the default lottery-ticket schedule (rate 0.2
per round, rewind to init, the best trial's model hyperparameters and round
length) on `SEEDS` seeds and compares their test accuracy at the same density.
It prints the best schedule and the comparison (test accuracy mean ± sample
std over seeds), and writes both to `OUT_DIR/results.md` with the raw records
in `OUT_DIR/results.json`; `--report-only` rebuilds `results.md` from an
earlier run's `results.json`.

Run: `pip install "keras-lth[tuner]" && python examples/tuner_search.py`.
"""

import argparse
import json
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras 3 warns that fit's default shuffle=True is ignored for a tf.data
# dataset; the pipeline shuffles itself.
warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
# keras-tuner's get_best_models() restores weights without optimizer state.
warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")

import keras
import keras_tuner

import keras_lth as lth
from keras_lth.bench.report import stats  # mean and sample std (ddof=1), as keras-lth bench

"""
## Settings
"""

TARGET_DENSITY = 0.05  # keep 5% of the weights
MAX_TRIALS = 8
INITIAL_POINTS = 4  # random trials before the Gaussian process takes over
MAX_ROUNDS = 10  # so prune/rate searches 0.3 to 0.8 (0.3 needs 9 rounds)
EPOCHS_PER_ROUND = (2, 3)  # the searched range
BATCH_SIZE = 60
SEEDS = 2  # seeds of the final comparison
OUT_DIR = "runs/tuner_search"

"""
## The model: LeNet-300-100, with the learning rate as a model hyperparameter
"""


def build_model(hp):
    model = lth.models.lenet_300_100()
    model.compile(
        keras.optimizers.Adam(hp.Choice("learning_rate", [1.2e-3, 3e-3])),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


"""
## The search space: the defaults, narrowed where this budget needs it

`PruningHyperModel` declares the `prune/...` hyperparameters itself; any of
them declared here first is used as declared (keras-tuner's `hp.Fixed`,
ranges, choices). Late rewinding needs a rewind epoch shorter than a round.
"""


def search_space():
    hp = keras_tuner.HyperParameters()
    hp.Int("prune/epochs_per_round", *EPOCHS_PER_ROUND)
    hp.Choice("prune/method", list(lth.tuner.METHODS))
    hp.Int("prune/rewind_epoch", 1, 1, parent_name="prune/method", parent_values=["lth-late"])
    # re-introduction: the first event after a round's first epoch
    hp.Int("prune/start", 1, 1, parent_name="prune/method", parent_values=["double", "scored"])
    return hp


"""
## Retraining a schedule on several seeds
"""


def retrain(hypermodel, model_hp, schedule, seed, data):
    keras.utils.set_random_seed(seed)
    train_ds, val_ds, test_ds, _ = data
    model = build_model(model_hp)
    scheduler = hypermodel.scheduler_from(schedule, test_data=test_ds, seed=seed, verbose=0)
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=scheduler.total_epochs,
        callbacks=[scheduler],
        verbose=0,
    )
    return scheduler.rounds


def summary_line(name, plan, runs):
    acc = [100 * rounds[-1]["test"]["accuracy"] for rounds in runs]
    mean, std, _ = stats(acc)
    dens = 100 * runs[0][-1]["density"]
    return (
        f"| {name} | {plan['method']} | {plan['rounds']} x {plan['epochs_per_round']} "
        f"({plan['total_epochs']} epochs) | {plan['exact_rate']:.3f} | {plan['rewind']!r} | "
        f"{plan['scope']} / {plan['structure']} | {dens:.1f}% | "
        f"{mean:.2f} ± {std:.2f} |"
    )


"""
## Main
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-trials", type=int, default=MAX_TRIALS)
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--out", default=OUT_DIR)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild results.md from OUT/results.json, without searching or training",
    )
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.report_only:
        with open(os.path.join(args.out, "results.json")) as f:
            write_report(json.load(f), args)
        return
    start = time.time()

    keras.utils.set_random_seed(0)
    data = lth.data.mnist(batch_size=BATCH_SIZE, seed=0)
    train_ds, val_ds, _, _ = data
    hypermodel = lth.tuner.PruningHyperModel(
        build_model, target_density=TARGET_DENSITY, max_rounds=MAX_ROUNDS
    )
    tuner = keras_tuner.BayesianOptimization(
        hypermodel,
        objective=keras_tuner.Objective("val_accuracy", "max"),
        hyperparameters=search_space(),
        max_trials=args.max_trials,
        num_initial_points=INITIAL_POINTS,
        max_consecutive_failed_trials=args.max_trials,
        seed=0,
        directory=os.path.join(args.out, "tuner"),
        overwrite=True,
    )
    tuner.search(train_ds, validation_data=val_ds, verbose=0)
    search_time = time.time() - start

    trials = sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id))
    print(f"\nSearch: {len(trials)} trials in {search_time:.0f}s")
    for t in trials:
        values = {k: v for k, v in t.hyperparameters.values.items() if k != "prune/method"}
        method = t.hyperparameters.values["prune/method"]
        if t.status == "COMPLETED":
            outcome = f"val acc {100 * t.score:.2f}%"
        else:
            outcome = t.status + ": " + t.message.strip().splitlines()[-1].split(": ", 1)[-1]
        print(f"  trial {t.trial_id} {method:12s} {outcome}  {values}")

    best_hp = tuner.get_best_hyperparameters()[0]
    best_plan = hypermodel.describe(best_hp)
    best_model = tuner.get_best_models()[0]
    print(f"\nBest schedule: {best_plan}")
    print(f"Best model's density: {lth.density(best_model):.4f}")

    # The default lottery-ticket schedule, same model and round length.
    default = {
        "prune/method": "lth",
        "prune/rate": 0.2,
        "prune/epochs_per_round": best_plan["epochs_per_round"],
        "prune/scope": "layer",
        "prune/structure": "weight",
    }
    # Without the search's round budget: the default prunes for 14 rounds.
    reference = lth.tuner.PruningHyperModel(build_model, target_density=TARGET_DENSITY)
    default_plan = reference.describe(default)

    records = {"best": [], "default": []}
    for seed in range(args.seeds):
        for name, schedule in (("best", best_hp), ("default", default)):
            t0 = time.time()
            rounds = retrain(reference, best_hp, schedule, seed, data)
            records[name].append(rounds)
            print(
                f"seed {seed} {name}: {time.time() - t0:.0f}s, test acc "
                f"{100 * rounds[-1]['test']['accuracy']:.2f}% at "
                f"{100 * rounds[-1]['density']:.1f}% of the weights",
                flush=True,
            )
    total_time = time.time() - start

    result = {
        "best_hyperparameters": best_hp.values,
        "best": best_plan,
        "default": default_plan,
        "trials": [
            {
                "id": t.trial_id,
                "status": t.status,
                "score": t.score,
                "hyperparameters": t.hyperparameters.values,
            }
            for t in trials
        ],
        "records": records,
        "search_seconds": search_time,
        "total_seconds": total_time,
    }
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(result, f, indent=1)
    write_report(result, args)
    print(f"\nWrote {args.out}/results.md and results.json")


def write_report(result, args):
    """results.md from a run's results.json contents."""
    seeds = len(result["records"]["best"])
    scores = [t["score"] for t in result["trials"] if t["status"] == "COMPLETED"]
    lines = [
        (
            "| schedule | method | rounds x epochs | rate/round | rewind | scope / structure "
            "| weights left | test acc (%) |"
        ),
        "|---|---|---|---:|---|---|---:|---:|",
        summary_line("best found", result["best"], result["records"]["best"]),
        summary_line("default lth", result["default"], result["records"]["default"]),
        "",
        f"Learning rate {result['best_hyperparameters']['learning_rate']}; test accuracy mean ± "
        f"std (n − 1) over {seeds} seed(s) at the end of the last round. Search: "
        f"{len(result['trials'])} trials, best val acc {100 * max(scores):.2f}%, "
        f"{result['search_seconds']:.0f}s; total {result['total_seconds']:.0f}s.",
    ]
    text = "\n".join(lines)
    print("\n" + text)
    note = ""
    if args.report_only:
        note = (
            "Tables recomputed from `results.json` by "
            f"`python examples/tuner_search.py --out {args.out} --report-only`.\n\n"
        )
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(
            f"`python examples/tuner_search.py --max-trials {len(result['trials'])} "
            f"--seeds {seeds}`\n\n{note}{text}\n"
        )


if __name__ == "__main__":
    main()
