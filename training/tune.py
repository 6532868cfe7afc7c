"""Hyperparameter search with Keras Tuner: RandomSearch or Hyperband over one architecture.

    python -m training tune --data ../shared/data/fer2013.npz --arch edge-cnn --out runs/tune-edge-cnn
    python -m training train --data ../shared/data/fer2013.npz --config runs/tune-edge-cnn/best_config.json \\
        --out runs/edge-cnn-tuned

The objective is val accuracy (val = PublicTest; test is never seen here). Every trial trains
through the trainer's own pipeline (augmentation included) on a fixed random sample of train,
so trials differ only in their hyperparameters. OUT gets:

  search/           Keras Tuner's state and trial folders; the same command again resumes
                    (finished trials are kept; a larger --trials or --max-minutes goes on)
  trials.csv        every trial: status, val accuracy, epochs, hyperparameters
  best_config.json  the best trial, in the form ``train --config`` reads
  search.json       what was searched (space, fixed values, budget) and how long it took

Cost on 2 CPU cores: an edge-cnn epoch costs about 5.6 ms per training face at width 24
(measured: 161 s for FER2013's 28.7k faces), times (width / 24)^2 for other widths, plus about
8 s for the val pass. The default budget (6 trials x 6 epochs on 10000 faces, cut at 45
minutes) is therefore about 40 minutes for edge-cnn at width 24 (measured: 66-70 s per epoch,
7 minutes per trial). Every trial anneals its learning rate (cosine), so it is scored at the
end of a short schedule, not mid-stride; even so, about 470 steps rank how fast a configuration
learns more than where it ends, which favours high rates and light regularisation. That is the
smallest budget that ranks at all here (5 epochs on 6000 faces at a constant rate scored
17-25% val, near chance); retrain the best with ``train --config`` and compare it trained.
seed-cnn is about 4x slower per face, so give it --max-minutes.
On a GPU machine see docs/ensembles.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_fer.errors import EdgeFerError
from edge_fer.labels import FER2013_LABELS
from edge_fer.preprocess import DEFAULT_SCALING, scale_pixels

from .common.data import DEFAULT_SEED
from .tuned import TunedConfig

ALGORITHMS = ("random", "hyperband")
# Choices per hyperparameter; "lr" is Adam's learning rate, the rest are the architecture's keyword arguments.
SPACES: dict[str, dict[str, list]] = {
    "edge-cnn": {"width": [16, 24, 32], "kernel": [3, 5], "dropout": [0.1, 0.2, 0.3, 0.4, 0.5],
                 "l2": [0.0, 1e-5, 1e-4, 1e-3], "lr": [3e-4, 1e-3, 3e-3]},
    "seed-cnn": {"filters": [32, 64], "kernel": [3, 5], "wide_kernel": [3, 5], "dropout": [0.1, 0.25, 0.4],
                 "l2": [0.0, 1e-5, 1e-4, 1e-3], "lr": [3e-5, 1e-4, 3e-4]},
    "mini-xception": {"l2": [1e-3, 3e-3, 1e-2, 3e-2], "lr": [3e-4, 1e-3, 3e-3]},
}
HAS_ACTIVATION = {"edge-cnn", "seed-cnn"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="FER2013 .npz, CSV (emotion,pixels,Usage) or image folder")
    p.add_argument("--arch", default="edge-cnn", choices=tuple(SPACES), help="architecture to tune (default edge-cnn)")
    p.add_argument("--out", required=True, type=Path, help="search folder (created; resumed when it exists)")
    p.add_argument("--algorithm", default="random", choices=ALGORITHMS,
                   help="random: --trials configurations of --epochs each; hyperband: successive halving up to "
                        "--epochs per configuration, at most --trials trials (default random)")
    p.add_argument("--activation", default=None, choices=("relu", "leaky_relu"),
                   help="fixed for the whole search (edge-cnn, seed-cnn; default relu)")
    p.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                   help="fix a hyperparameter instead of searching it, e.g. --fix width=24 (repeatable)")
    b = p.add_argument_group("budget (a search stops at whichever comes first)")
    b.add_argument("--trials", type=int, default=6, help="trials in all, resumed ones included (default 6)")
    b.add_argument("--epochs", type=int, default=6, help="epochs per trial (hyperband: at most; default 6)")
    b.add_argument("--max-minutes", type=float, default=45.0,
                   help="no new trial starts, and the running one stops, after this wall time (default 45)")
    b.add_argument("--train-samples", type=int, default=10000,
                   help="random training faces every trial fits on (default 10000; 0 = all)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--overwrite", action="store_true", help="discard a previous search in OUT instead of resuming")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seeds the sample, the search and the weights")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress: 0 none, 1 bar, 2 line")


@dataclass
class SearchResult:
    best: TunedConfig
    trials: list[dict[str, Any]]  # the rows of trials.csv
    wall_time_s: float


def run(args: argparse.Namespace) -> SearchResult:
    """Check the request (before TensorFlow loads), search, and write the result files."""
    fixed = _fixed(args)
    budget = {"trials": args.trials, "epochs": args.epochs, "max_minutes": args.max_minutes,
              "train_samples": args.train_samples}
    if min(args.trials, args.epochs) < 1 or args.max_minutes <= 0 or args.train_samples < 0:
        raise EdgeFerError("--trials and --epochs must be at least 1, --max-minutes positive, --train-samples >= 0")
    request = {"arch": args.arch, "algorithm": args.algorithm, "fixed": fixed, "space": SPACES[args.arch],
               "seed": args.seed, "data": str(args.data), "train_samples": args.train_samples}
    _check_resumable(args.out, request, args.overwrite)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search.json").write_text(json.dumps({"request": request}, indent=2) + "\n")  # for a resume
    from .train import NEEDS_ONEDNN_OFF

    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0" if args.arch in NEEDS_ONEDNN_OFF else "1")
    return _search(args, request, budget)


def _fixed(args: argparse.Namespace) -> dict[str, Any]:
    """``--fix`` and ``--activation`` as ``{name: value}``, checked against the architecture's space."""
    fixed: dict[str, Any] = {}
    for item in args.fix:
        name, sep, text = item.partition("=")
        if not sep or name not in SPACES[args.arch]:
            raise EdgeFerError(f"--fix {item}: expected NAME=VALUE with NAME one of {', '.join(SPACES[args.arch])}")
        try:
            fixed[name] = json.loads(text)
        except json.JSONDecodeError:
            fixed[name] = text
    if args.activation:
        if args.arch not in HAS_ACTIVATION:
            raise EdgeFerError(f"{args.arch} has no activation option (only {', '.join(sorted(HAS_ACTIVATION))})")
        fixed["activation"] = args.activation
    return fixed


def _check_resumable(out: Path, request: dict[str, Any], overwrite: bool) -> None:
    """A search resumes only the same request: another arch, algorithm or space would mix incomparable trials."""
    path = out / "search.json"
    if overwrite or not path.exists():
        return
    try:
        previous = json.loads(path.read_text()).get("request", {})
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise EdgeFerError(f"cannot read {path} ({exc}): pass --overwrite to start afresh") from None
    changed = sorted(k for k in request if previous.get(k) != request[k])
    if changed:
        raise EdgeFerError(f"{out} holds a different search ({', '.join(changed)} changed): "
                           f"pass --overwrite to discard it or choose another --out")


def _search(args: argparse.Namespace, request: dict[str, Any], budget: dict[str, Any]) -> SearchResult:
    from .common.tf_env import keras  # before keras_tuner, which imports TensorFlow itself

    try:
        import keras_tuner as kt
    except ImportError:
        raise EdgeFerError("the search needs keras-tuner: pip install -e '.[train]' from the checkout") from None
    from .common.data import load_splits
    from .models import build
    from .train import deadline_callback, with_augmentation

    keras.utils.set_random_seed(args.seed)
    splits = load_splits(args.data, seed=args.seed)
    train = splits.train
    if args.train_samples and args.train_samples < len(train):
        idx = np.sort(np.random.default_rng(args.seed).choice(len(train), args.train_samples, replace=False))
        train.x, train.y = train.x[idx], train.y[idx]
    n_classes = len(FER2013_LABELS)
    x_train = scale_pixels(train.x, DEFAULT_SCALING)[..., None]
    x_val = scale_pixels(splits.val.x, DEFAULT_SCALING)[..., None]
    eye = np.eye(n_classes, dtype=np.float32)

    space = SPACES[args.arch]
    hps = kt.HyperParameters()
    for name, value in request["fixed"].items():
        hps.Fixed(name, value)

    def build_model(hp: kt.HyperParameters) -> keras.Model:
        values = {name: hp.Choice(name, choices) for name, choices in space.items()}
        if "activation" in request["fixed"]:
            values["activation"] = hp.get("activation")
        lr = values.pop("lr")
        model = with_augmentation(build(args.arch, x_train.shape[1:], n_classes, **values), args.seed)
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="categorical_crossentropy", metrics=["accuracy"])
        return model

    common = dict(objective="val_accuracy", hyperparameters=hps, seed=args.seed, directory=str(args.out),
                  project_name="search", overwrite=args.overwrite)
    if args.algorithm == "random":
        tuner = kt.RandomSearch(build_model, max_trials=args.trials, **common)
    else:
        tuner = kt.Hyperband(build_model, max_epochs=args.epochs, factor=3, **common)
        tuner.oracle.max_trials = args.trials
    started = time.time()
    deadline = started + args.max_minutes * 60
    try:
        tuner.search(x_train, eye[train.y], batch_size=args.batch_size, shuffle=True,
                     validation_data=(x_val, eye[splits.val.y]), validation_batch_size=512,
                     epochs=args.epochs, verbose=args.verbose,
                     callbacks=[_annealed(), deadline_callback(deadline, _no_new_trials(tuner.oracle))])
    except RuntimeError as exc:  # Keras Tuner gives up after 3 failed trials in a row
        last = [line for line in str(exc).splitlines() if line.strip()]
        raise EdgeFerError(f"the search failed: {last[-1] if last else exc}") from None
    wall = time.time() - started
    return _write_results(args, tuner.oracle, request, budget, wall)


def _annealed():
    """Each trial anneals its own learning rate over its epochs (cosine, towards 1%).

    A short trial at a constant rate ends wherever its last noisy step left it: 5 epochs on 6000
    faces at a fixed rate scored 17-25% val accuracy (chance is 14%), which ranks nothing. Ending
    every trial annealed compares configurations at the end of a (short) schedule, as ``train
    --lr-schedule cosine`` will use them. Progress is ``epoch / epochs``, so the last epoch of a
    short trial runs a little above 1% (a 6-epoch trial ends near 8% of its peak), unlike
    ``train``, which reaches 1% at its last epoch.
    """
    from .train import cosine_callback

    return cosine_callback(lambda epoch, epochs: epoch / max(1, epochs))


def _no_new_trials(oracle):
    """Past the deadline the running trial stops (the callback) and no new trial starts (this)."""
    def stop(epoch: int) -> None:
        oracle.max_trials = len(oracle.trials)

    return stop


def _write_results(args: argparse.Namespace, oracle, request: dict[str, Any], budget: dict[str, Any],
                   wall: float) -> SearchResult:
    rows = []
    for trial_id in oracle.start_order:
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        rows.append({"trial": trial_id, "status": trial.status, "val_accuracy": trial.score,
                     "epochs": values.get("tuner/epochs", args.epochs),
                     **{k: v for k, v in values.items() if not k.startswith("tuner/")}})
    best_trials = oracle.get_best_trials(1)
    if not best_trials or best_trials[0].score is None:
        raise EdgeFerError(f"no trial of the search in {args.out} finished (see {args.out / 'search'})")
    top = best_trials[0]
    model = {k: v for k, v in top.hyperparameters.values.items() if not k.startswith("tuner/")}
    lr = model.pop("lr")
    best = TunedConfig(args.arch, model, lr, float(top.score),
                       {"algorithm": args.algorithm, "trial": top.trial_id, "trials": len(rows), **budget})
    best.write(args.out / "best_config.json")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with open(args.out / "trials.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "search.json").write_text(json.dumps(
        {"request": request, "budget": budget, "wall_time_s": round(wall, 1), "trials": len(rows),
         "best": asdict(best)}, indent=2) + "\n")
    print(f"{args.out}: best val acc {best.val_accuracy:.4f} of {len(rows)} trials ({wall / 60:.1f} min): "
          f"{json.dumps({**model, 'lr': lr})}", file=sys.stderr)
    return SearchResult(best, rows, wall)
