"""Train an emotion CNN on FER2013 and write a complete run folder.

    python -m training train --data ../shared/data/fer2013.npz --arch edge-cnn --out runs/edge-cnn

``--config best_config.json`` (written by ``python -m training tune``) sets the architecture,
its hyperparameters and the learning rate; flags given on the command line win over it.

The run folder holds ``model.keras`` (the network the run ends with: the best epoch on val, the
last epoch of a final fit, or the ``--average-last`` average), ``model.h5``, ``best.keras`` and
``last.keras`` (training graphs with their optimizer, for ``--resume``), ``tail/`` (with
``--average-last``), ``train_config.json`` (the options, which a resume takes back),
``teacher.npy`` (with ``--teacher``: its probabilities, which a resume takes back), ``history.csv``,
``curves.png``, ``confusion_matrix.png``, ``classification_report.txt`` and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from edge_fer.errors import EdgeFerError
from edge_fer.labels import FER2013_LABELS
from edge_fer.preprocess import DEFAULT_SCALING, scale_pixels

from .common.data import DEFAULT_SEED
from .common.runs import read_history, read_run, save_whole

# What the run options left out mean: a new run's defaults, or a resumed run's own recorded values.
RUN_DEFAULTS = {"epochs": 60, "batch_size": 128, "patience": 12, "label_smoothing": 0.0, "class_weights": 0.0,
                "ferplus": None, "ferplus_mix": 0.5, "teacher": None, "teacher_mix": 0.5, "no_augment": False,
                "erasing": 0.0, "limit": None, "average_last": 0, "seed": DEFAULT_SEED, "width": None,
                "activation": None}
# The network's own options: the checkpoint fixes them, so a resume may not change them.
NETWORK_OPTIONS = ("arch", "width", "activation", "no_augment")

# Architectures with a strided 1x1 Conv2D, which crashes TF 2.19-2.21's oneDNN path in fit.
# Everything else keeps oneDNN on: it halves the epoch time on this CPU.
NEEDS_ONEDNN_OFF = {"mini-xception"}
TEACHER_FILE = "teacher.npy"  # the run folder's copy of the teacher's probabilities for the training faces


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="FER2013 .npz, CSV (emotion,pixels,Usage) or image folder")
    p.add_argument("--arch", default=None, help="edge-cnn (default), seed-cnn or mini-xception")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="hyperparameters from 'python -m training tune' (its best_config.json)")
    p.add_argument("--width", type=int, default=None, help="edge-cnn base width (default 24)")
    p.add_argument("--activation", choices=("relu", "leaky_relu"), default=None,
                   help="edge-cnn/seed-cnn activation (default relu; LEAKY_RELU does not map to the Edge TPU)")
    p.add_argument("--out", required=True, type=Path, help="run folder (created)")
    p.add_argument("--epochs", type=int, default=None,
                   help="the run's total epochs (default 60), which a cosine schedule spans; with --resume it counts "
                        "the run's earlier epochs too (a larger value stretches the rest of the schedule)")
    p.add_argument("--batch-size", type=int, default=None, help="default 128")
    p.add_argument("--optimizer", choices=("adam", "sgd"), default=None,
                   help="adam (default) or sgd: SGD with Nesterov momentum 0.9, the recipe of the best published "
                        "single FER2013 network; a resumed run keeps its own")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: Adam 1e-3, seed-cnn 1e-4; SGD 1e-2); with --resume, the run's "
                        "own unless given")
    p.add_argument("--lr-schedule", choices=("plateau", "cosine", "cosine-minutes"), default=None,
                   help="plateau (default): halve the LR when val loss stalls; cosine: anneal from --lr to 1%% of it "
                        "over the run's --epochs, across any number of --resume sessions (a long run); "
                        "cosine-minutes: anneal over this call's --max-minutes (a one-shot run on a time budget). "
                        "With --resume, the run's own schedule unless given")
    p.add_argument("--patience", type=int, default=None, help="EarlyStopping patience on val accuracy (default 12)")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="stop after the epoch that passes this wall time (checkpoints kept: --resume goes on)")
    p.add_argument("--label-smoothing", type=float, default=None, help="default 0: off")
    p.add_argument("--class-weights", type=float, default=None, metavar="POWER",
                   help="weight classes by inverse frequency ** POWER (0 = off, 0.5 = damped, 1 = full)")
    p.add_argument("--ferplus", type=Path, default=None, help="ferplus_votes.npz for soft targets")
    p.add_argument("--ferplus-mix", type=float, default=None,
                   help="share of the FER+ vote distribution in targets (default 0.5)")
    p.add_argument("--teacher", type=Path, default=None, metavar="MODEL",
                   help="distil: mix this model's probabilities (any model edge-fer runs, e.g. an ensemble .json, "
                        "or a .npy of them for the training faces from 'scripts/device-train pack --teacher') "
                        "into the training targets; computed once, kept in OUT/teacher.npy for --resume")
    p.add_argument("--teacher-mix", type=float, default=None,
                   help="share of the teacher's probabilities in targets (default 0.5)")
    p.add_argument("--no-augment", action="store_true", default=None,
                   help="turn off flip/shift/rotate/zoom/brightness/contrast")
    p.add_argument("--erasing", type=float, default=None, metavar="P",
                   help="random erasing: with probability P a face gets one rectangle (2-20%% of its area) of "
                        "noise, after the other augmentations (default 0: off)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training images (smoke tests)")
    p.add_argument("--fit-on", choices=("train", "train+val"), default=None,
                   help="train (default), or train+val: the final fit of a recipe chosen on val (its schedule and "
                        "epochs fixed by a train-only twin run). Val then trains too, so it can no longer choose: "
                        "model.keras is the last epoch (or the --average-last average) and its val figures are "
                        "marked as seen")
    p.add_argument("--init", type=Path, default=None, metavar="MODEL",
                   help="start a new run from a trained network's weights instead of random ones: a .keras "
                        "network of the same architecture (a run's model.keras), or an int8 edge-cnn .tflite such "
                        "as edge_fer/models/default.tflite (unfolded: training.unfold)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from last.keras; the options left out are the run's own "
                        "(train_config.json), and the network's (--arch, --width, ...) cannot change")
    p.add_argument("--average-last", type=int, default=None, metavar="K",
                   help="keep the network's weights after each of the run's last K epochs (in OUT/tail/) and, when "
                        "the run has done all --epochs, average them into one network, which becomes model.keras if "
                        "it scores higher on val than the best epoch (default 0: off)")
    p.add_argument("--seed", type=int, default=None, help=f"default {DEFAULT_SEED}")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress: 0 none, 1 bar, 2 line")


def run(args: argparse.Namespace) -> dict:
    """Train (or go on training) one network into ``args.out``; returns its metrics.json content."""
    config, earlier, recorded, initial_epoch = _settle(args)
    final_fit = args.fit_on == "train+val"
    from .common.data import load_splits

    # Data first: a bad dataset or teacher is reported before TensorFlow loads and prints its start-up banner.
    splits = load_splits(args.data, seed=args.seed)
    train = splits.train
    if args.limit:
        train.x, train.y = train.x[: args.limit], train.y[: args.limit]
    if final_fit:
        train.x, train.y = np.concatenate([train.x, splits.val.x]), np.concatenate([train.y, splits.val.y])
    labels = FER2013_LABELS
    y_train, sample_w = _targets(args, train, len(labels))
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0" if args.arch in NEEDS_ONEDNN_OFF else "1")
    from .common.keras_env import keras
    from .common.reports import write_reports

    hp = _hyperparameters(args, config)
    lr = args.lr or (config.lr if config else None) or (
        1e-2 if args.optimizer == "sgd" else 1e-4 if args.arch == "seed-cnn" else 1e-3)
    keras.utils.set_random_seed(args.seed + initial_epoch)  # a resumed session draws new orders (see fresh_streams)
    x_train = scale_pixels(train.x, DEFAULT_SCALING)[..., None]
    x_val = scale_pixels(splits.val.x, DEFAULT_SCALING)[..., None]
    y_val = np.eye(len(labels), dtype=np.float32)[splits.val.y]

    args.out.mkdir(parents=True, exist_ok=True)
    model, lr = _model(args, hp, lr, recorded, initial_epoch, x_train, len(labels))
    # What the run started from, read once at its start: a resume hours later may not find the file.
    init = recorded.get("init_record") if args.resume else init_record(args.init) if args.init else None
    config_record = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"}
    (args.out / "train_config.json").write_text(json.dumps(
        {**recorded, **config_record, "init_record": init, "peak_lr": lr, "resumed_at_epochs": [
            *recorded.get("resumed_at_epochs", []), *([initial_epoch] if args.resume else [])]}, indent=2) + "\n")

    started = time.time()
    best_so_far = max(earlier.get("val_accuracy") or [-math.inf])
    model.fit(x_train, y_train, sample_weight=sample_w, batch_size=args.batch_size, shuffle=True,
              validation_data=(x_val, y_val), validation_batch_size=512, epochs=args.epochs,
              initial_epoch=initial_epoch, callbacks=_callbacks(args, lr, best_so_far, started, final_fit),
              verbose=args.verbose)
    wall = time.time() - started

    history = read_history(args.out / "history.csv")
    network, averaged = _final_network(args, history, splits.val, final_fit)
    network.save(args.out / "model.keras")
    network.save(args.out / "model.h5")

    def predict(x_uint8: np.ndarray) -> np.ndarray:
        return network.predict(scale_pixels(x_uint8, DEFAULT_SCALING)[..., None], batch_size=512,
                               verbose=0).argmax(1)

    test = (splits.test.y, predict(splits.test.x)) if splits.test is not None else None
    metrics = write_reports(
        args.out, labels, (splits.val.y, predict(splits.val.x)), test,
        extra={"model": args.arch, "params": int(network.count_params()), "epochs": len(history.get("loss", [])),
               "best_epoch": (len(history["loss"]) if final_fit else int(np.argmax(history["val_accuracy"])) + 1)
               if history.get("val_accuracy") else None,
               "wall_time_s": round(wall, 1), "train_images": len(train), "data": str(args.data),
               "scaling": DEFAULT_SCALING.to_dict(), "input_size": list(x_train.shape[1:3]),
               "ferplus_mix": args.ferplus_mix if args.ferplus else 0.0,
               "teacher": str(args.teacher) if args.teacher else None,
               "init": init,
               "teacher_mix": args.teacher_mix if args.teacher else 0.0,
               "label_smoothing": args.label_smoothing, "class_weights_power": args.class_weights,
               "backend": keras.backend.backend(),
               "augment": not args.no_augment, "erasing": args.erasing, "optimizer": args.optimizer,
               "lr_schedule": args.lr_schedule,
               "hyperparameters": {**hp, "lr": lr}, "weight_average": averaged, "fit_on": args.fit_on,
               "val_seen_in_training": final_fit},
        history=history)
    line = f"val acc {metrics['val']['accuracy']:.4f}"
    if "test" in metrics:
        line += f", test acc {metrics['test']['accuracy']:.4f} (macro-F1 {metrics['test']['macro_f1']:.4f})"
    print(f"{args.out}: {line}")
    return metrics


def _settle(args: argparse.Namespace):
    """Fill in what a run's own record or the defaults decide, and reject contradictions in one line each.

    Returns the tuned config (or None), the history and recorded settings of a resumed run, and
    the epoch it resumes at (0 for a new run). Nothing here loads TensorFlow.
    """
    from .tuned import TunedConfig  # no TensorFlow: the architecture must be known before it loads

    earlier, recorded = read_run(args.out) if args.resume else ({}, {})
    if not args.resume and any((args.out / name).exists() for name in ("last.keras", "history.csv")):
        raise EdgeFerError(f"{args.out} holds a run already: continue it with --resume, or train into a new --out")
    for name in NETWORK_OPTIONS:
        given, theirs = getattr(args, name), recorded.get(name)
        if given is not None and theirs is not None and given != theirs:
            flag = "--" + name.replace("_", "-")
            what = "trains with augmentation" if name == "no_augment" else f"has {flag} {theirs}"
            raise EdgeFerError(f"--resume: {args.out} {what}, which its checkpoint fixes: drop {flag}")
    if args.resume and args.config is None and recorded.get("config"):
        args.config = Path(recorded["config"])
    for name, default in RUN_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, recorded.get(name, default))
    for name in ("ferplus", "teacher"):
        setattr(args, name, Path(getattr(args, name)) if getattr(args, name) else None)
    config = TunedConfig.read(args.config) if args.config else None
    if config and args.arch and args.arch != config.arch:
        raise EdgeFerError(f"--arch {args.arch} differs from the {config.arch} tuned in {args.config}")
    args.arch = args.arch or recorded.get("arch") or (config.arch if config else "edge-cnn")
    initial_epoch = len(earlier.get("loss", []))
    args.lr_schedule = args.lr_schedule or recorded.get("lr_schedule") or "plateau"
    for name, default, why in (("optimizer", "adam", " (the checkpoint carries its optimizer's state)"),
                               ("fit_on", "train", "")):
        given, theirs = getattr(args, name), recorded.get(name, default)
        if args.resume and given and given != theirs:
            raise EdgeFerError(f"--resume: {args.out} {'trains with' if name == 'optimizer' else 'fits on'} "
                               f"{theirs}, not {given}{why}")
        setattr(args, name, given or recorded.get(name) or default)
    if args.resume and args.init:
        raise EdgeFerError("--init starts a new run from a network; --resume goes on from the run's last.keras: "
                           "drop one")
    if args.resume and recorded.get("init"):  # kept in the record; last.keras holds the weights now
        args.init = Path(recorded["init"])
    elif args.init and not args.init.is_file():
        raise EdgeFerError(f"--init {args.init}: no such file (a .keras network or an int8 edge-cnn .tflite)")
    if args.fit_on == "train+val" and (args.ferplus or args.teacher):
        raise EdgeFerError("--fit-on train+val takes plain labels: FER+ votes and teachers cover the train rows only")
    if not 0 <= args.erasing <= 1 or (args.erasing and args.no_augment):
        raise EdgeFerError(f"--erasing {args.erasing:g}: give a probability between 0 and 1, without --no-augment")
    if args.lr_schedule == "cosine-minutes" and not args.max_minutes:
        raise EdgeFerError("--lr-schedule cosine-minutes anneals over --max-minutes: give it")
    if args.resume and initial_epoch >= args.epochs:  # Keras would return at once, a cosine schedule never run
        raise EdgeFerError(f"--resume: {args.out} already has {initial_epoch} epoch{'s' * (initial_epoch != 1)} "
                           f"and --epochs {args.epochs} is the last epoch number: give more "
                           f"(e.g. --epochs {initial_epoch + 30})")
    if not 0 <= args.average_last <= args.epochs:
        raise EdgeFerError(f"--average-last {args.average_last}: give a number of epochs between 0 and --epochs "
                           f"{args.epochs}")
    if not 0 <= args.teacher_mix <= 1:
        raise EdgeFerError(f"--teacher-mix {args.teacher_mix:g}: give a share between 0 and 1")
    return config, earlier, recorded, initial_epoch


def _targets(args: argparse.Namespace, train, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Training targets (one-hot, or mixed with FER+ votes or a teacher's probabilities) and sample weights."""
    from .common.data import class_weights, ferplus_targets

    teacher = _teacher(args, train.x) if args.teacher else None
    if args.ferplus:
        if args.limit or Path(args.data).suffix != ".npz":
            raise EdgeFerError("--ferplus needs the full fer2013.npz (its rows align with ferplus_votes.npz)")
        y = ferplus_targets(args.ferplus, "train", train.y, args.ferplus_mix)
    else:
        y = np.eye(n_classes, dtype=np.float32)[train.y]
    if teacher is not None:
        y = (1 - args.teacher_mix) * y + args.teacher_mix * teacher
    weights = (class_weights(train.y, n_classes, args.class_weights)[train.y] if args.class_weights
               else np.ones(len(train), np.float32))
    return y, weights


def _teacher(args: argparse.Namespace, faces: np.ndarray) -> np.ndarray:
    """The teacher's probabilities for the training faces, computed once at a run's start and kept in its folder
    (``teacher.npy``): a resume sessions later trains on the very same targets, without running the teacher
    again (minutes for an ensemble with test-time views) and without its files, which may have changed or gone."""
    from .common.data import teacher_targets

    kept = args.out / TEACHER_FILE
    if args.resume and kept.exists():
        return teacher_targets(kept, faces, FER2013_LABELS)
    probs = teacher_targets(args.teacher, faces, FER2013_LABELS)
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(kept, probs)
    return probs


def _hyperparameters(args: argparse.Namespace, config) -> dict:
    """The architecture's keyword arguments: the tuned config's, then the command line's."""
    from .models import ARCHITECTURES, hyperparameters

    if args.arch not in ARCHITECTURES:
        raise EdgeFerError(f"unknown architecture {args.arch!r}: choose from {', '.join(ARCHITECTURES)}")
    hp = dict(config.model) if config else {}
    if args.arch == "edge-cnn":
        hp["width"] = args.width or hp.get("width", 24)
    if args.activation:
        hp["activation"] = args.activation
    unknown = sorted(set(hp) - set(hyperparameters(args.arch)))
    if unknown:
        raise EdgeFerError(f"{args.arch} has no hyperparameter {', '.join(unknown)} "
                           f"(it takes {', '.join(hyperparameters(args.arch))})")
    return hp


def _model(args: argparse.Namespace, hp: dict, lr: float, recorded: dict, initial_epoch: int, faces: np.ndarray,
           n_classes: int):
    """The compiled training graph (new, from ``--init``, or from ``last.keras``) and the peak learning rate."""
    from .common.keras_env import keras
    from .models import build

    if args.resume:  # the checkpoint is the training graph (augmentation included) with its optimizer state
        model = load_checkpoint(args.out / "last.keras")
        if (model.name == AUGMENTED) == args.no_augment:
            raise EdgeFerError(f"--resume: {args.out} trains {'with' if args.no_augment else 'without'} "
                               f"augmentation: {'drop' if args.no_augment else 'add'} --no-augment")
        # A cosine schedule starts from the run's peak rate; the plateau schedule goes on from the current one.
        lr = args.lr or (recorded.get("peak_lr") if args.lr_schedule == "cosine" else None) \
            or float(model.optimizer.learning_rate.numpy())
        model.optimizer.learning_rate.assign(lr)
        if model.name == AUGMENTED:  # the probability may change between sessions; the layer reads it when traced
            model.get_layer("augment").erasing = args.erasing
            fresh_streams(model.get_layer("augment"), args.seed, initial_epoch)
        print(f"resuming {args.out} at epoch {initial_epoch + 1} of {args.epochs} ({args.lr_schedule}, "
              f"learning rate {lr:g})", file=sys.stderr)
        return model, lr
    model = build(args.arch, faces.shape[1:], n_classes, **hp)
    if args.init:
        start_from(model, args.init, faces)
    if not args.no_augment:
        model = with_augmentation(model, args.seed, args.erasing)
    optimizer = (keras.optimizers.SGD(lr, momentum=0.9, nesterov=True) if args.optimizer == "sgd"
                 else keras.optimizers.Adam(lr))
    model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
                  metrics=["accuracy"])
    return model, lr


def _callbacks(args: argparse.Namespace, lr: float, best_so_far: float, started: float, final_fit: bool):
    """Checkpoints (best on val, last, the optional tail), early stopping, the schedule, the CSV log, and the
    optional deadline."""
    from .common.keras_env import keras

    if args.lr_schedule == "cosine":  # over the run's epochs: a resumed run continues the same curve
        schedule = cosine_callback(lambda epoch, epochs: epoch / max(1, epochs - 1), lr)
    elif args.lr_schedule == "cosine-minutes":
        schedule = cosine_callback(lambda epoch, epochs: (time.time() - started) / (args.max_minutes * 60), lr)
    else:
        schedule = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                                     patience=max(2, args.patience // 3), min_lr=1e-6)
    # The CSV log comes last: its rows are the epochs a resume counts as done, so a session killed between
    # an epoch's files and its row trains that epoch again rather than skipping it.
    callbacks = [
        checkpoint_callback(args.out / "best.keras", best_so_far),  # a resumed run keeps a better best
        checkpoint_callback(args.out / "last.keras"),
        *([tail_callback(args.out, args.epochs - args.average_last)] if args.average_last else []),
        keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=args.epochs if final_fit else args.patience),
        schedule,  # both schedules put the epoch's learning rate into the logs
        keras.callbacks.CSVLogger(args.out / "history.csv", append=args.resume),
    ]
    if args.max_minutes:
        callbacks.append(deadline_callback(
            started + args.max_minutes * 60,
            lambda epoch: print(f"\ntime budget of {args.max_minutes:g} min reached after epoch {epoch + 1}",
                                file=sys.stderr)))
    return callbacks


def _final_network(args: argparse.Namespace, history: dict, val, final_fit: bool):
    """The network the run ships as model.keras, and the weight average's record (None when none was made).

    The best epoch on val, or the last one when val trained too; once the run has done all its
    epochs with ``--average-last K``, the mean of the last K epochs' weights replaces it if it
    scores higher on val (always, for a final fit: its twin's val chose the recipe).
    """
    chosen_file = args.out / ("last.keras" if final_fit else "best.keras")  # val trained: it cannot choose an epoch
    network = network_of(load_checkpoint(chosen_file))
    epochs = range(args.epochs - args.average_last + 1, args.epochs + 1)  # 1-based, the run's last K
    tail = [tail_file(args.out, epoch) for epoch in epochs]
    if not (args.average_last and len(history.get("loss", [])) >= args.epochs and all(p.is_file() for p in tail)):
        return network, None

    def val_accuracy() -> float:
        x = scale_pixels(val.x, DEFAULT_SCALING)[..., None]
        return float((network.predict(x, batch_size=512, verbose=0).argmax(1) == val.y).mean())

    before = val_accuracy()
    network = average_weights(network, tail)
    after = val_accuracy()
    averaged = {"epochs": [epochs[0], epochs[-1]], "val_accuracy": round(after, 4),
                "best_epoch_val_accuracy": round(before, 4), "chosen": final_fit or after > before}
    print(f"weights of epochs {averaged['epochs'][0]}-{averaged['epochs'][1]} averaged: val {after:.4f} against "
          f"{before:.4f} for the {'last' if final_fit else 'best'} epoch: "
          f"{'the average' if averaged['chosen'] else 'the best epoch'} is model.keras", file=sys.stderr)
    return (network if averaged["chosen"] else network_of(load_checkpoint(chosen_file))), averaged


AUGMENTED = "augmented"  # the name of the training graph, to tell its checkpoints from a bare network's
TAIL = "tail"  # the run folder's subfolder of per-epoch weights for --average-last


def start_from(network, path: Path, faces: np.ndarray) -> None:
    """Give ``network`` the weights of the trained network in ``path`` (one clear error when they do not fit).

    A ``.tflite`` is unfolded with batch statistics measured on the first 4,096 of ``faces``
    (scaled, as the network takes them): enough for stable means and variances per channel.
    """
    unfolded = path.suffix == ".tflite"
    if unfolded:
        from .unfold import unfold

        source = unfold(path, faces[:4096])
    else:
        source = network_of(load_checkpoint(path))
    theirs = source.get_weights()
    if [w.shape for w in theirs] != [w.shape for w in network.get_weights()]:
        if unfolded:  # the first kernel's output channels are an edge-cnn's width
            width = theirs[0].shape[-1]
            raise EdgeFerError(f"--init {path} is an edge-cnn network of width {width}: give --arch edge-cnn "
                               f"--width {width}")
        raise EdgeFerError(f"--init {path} holds a network of {source.count_params()} parameters, not this run's: "
                           f"give its --arch and --width")
    network.set_weights(theirs)


def init_record(path: Path) -> dict:
    """What a run started from, for its card: the file, its sha256, and the epochs and run its metadata names."""
    from edge_fer.metadata import load_metadata, sha256_of

    record = {"path": str(path), "sha256": sha256_of(path)}
    if path.suffix == ".tflite":
        source = load_metadata(path, verify_sha=False).source
        record.update({k: source[k] for k in ("run", "epochs", "git_commit") if source.get(k) is not None})
    return record


def tail_file(out: Path, epoch: int) -> Path:
    """Where a run folder keeps the network's weights after ``epoch`` (1-based) for --average-last."""
    return out / TAIL / f"epoch-{epoch:03d}.weights.h5"


def with_augmentation(network, seed: int, erasing: float = 0.0):
    """``network`` behind on-the-fly augmentation: the graph ``fit`` trains and the checkpoints hold.

    The augmentation acts only in training, so validation sees the faces as they are. Being a
    layer (not a ``tf.data`` map), it runs on any Keras backend and on the accelerator that
    trains (:class:`training.augment.FaceAugment`). :func:`network_of` takes the network back
    out for export; :func:`load_checkpoint` reads the checkpoints. The tuner trains through the
    same function, so a tuned configuration means the same thing here.
    """
    from .augment import FaceAugment
    from .common.keras_env import keras

    inputs = keras.Input(network.input_shape[1:])
    augment = FaceAugment(seed=seed, erasing=erasing, name="augment")
    return keras.Model(inputs, network(augment(inputs)), name=AUGMENTED)


def load_checkpoint(path: Path):
    """A checkpoint the trainer wrote (best.keras, last.keras), augmentation layer included."""
    from . import augment  # noqa: F401  (registers FaceAugment with Keras)
    from .common.keras_env import keras

    try:
        return keras.models.load_model(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise EdgeFerError(f"cannot read checkpoint {path} ({type(exc).__name__}: {exc}); "
                           f"it is not one the trainer wrote whole: start the run again") from None


def fresh_streams(augment, seed: int, epoch: int) -> None:
    """Start ``augment``'s random stream where no earlier session of the run has drawn.

    A checkpoint does not keep the stream's position, and the trainer seeds the shuffling
    likewise, so without this every resumed session would replay the faces of the run's first
    epochs with the very same shifts, flips and lighting, in the very same order: the network
    sees those exact images again and again (its training accuracy jumps, nothing new is
    learnt). Seeding by the epoch the session starts at keeps a resumed run reproducible.
    """
    state = augment.seed_generator.state
    state.assign(np.array([seed + epoch, 0], dtype=state.dtype))


def network_of(model):
    """The trained network inside a checkpoint of :func:`with_augmentation`'s graph (or the model itself)."""
    return model.layers[-1] if model.name == AUGMENTED else model


def checkpoint_callback(path: Path, best: float | None = None, monitor: str = "val_accuracy"):
    """A Keras callback that saves the training graph to ``path`` after every epoch, whole or not at all.

    Without ``best`` it saves every epoch; with it (``-inf`` for a new run) only an epoch whose
    ``monitor`` is higher than ``best`` and than every epoch it saved before. Keras'
    ``ModelCheckpoint`` writes in place, so a session killed mid-write left a run that could not
    resume; this one writes through :func:`save_whole`.
    """
    from .common.keras_env import keras

    class Checkpoint(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            nonlocal best
            if best is not None:
                value = (logs or {}).get(monitor)
                if value is None or value <= best:
                    return
                best = float(value)
            save_whole(path, self.model.save)

    return Checkpoint()


def tail_callback(out: Path, first: int):
    """A Keras callback that saves the network's weights (augmentation left out) after each epoch from ``first``
    (0-based) on, into the run folder ``out``'s :func:`tail_file`, for :func:`average_weights`."""
    from .common.keras_env import keras

    class Tail(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch >= first:
                path = tail_file(out, epoch + 1)
                path.parent.mkdir(parents=True, exist_ok=True)
                save_whole(path, network_of(self.model).save_weights)

    return Tail()


def average_weights(network, paths: list[Path]):
    """``network`` with the mean of the weights saved at ``paths`` (stochastic weight averaging of a run's tail).

    Why: late in a cosine schedule successive epochs sit around one minimum; their mean lies nearer
    its centre than any one of them, which often generalises a little better, for no cost on the
    device. Batch-norm statistics are averaged too (the epochs are close, so they stay consistent);
    integer state (seed counters) keeps the last epoch's value.
    """
    sums = None
    for path in paths:
        network.load_weights(path)
        values = [w.numpy() for w in network.weights]
        sums = values if sums is None else [s + v if np.issubdtype(v.dtype, np.floating) else v
                                            for s, v in zip(sums, values)]
    network.set_weights([s / len(paths) if np.issubdtype(s.dtype, np.floating) else s for s in sums])
    return network


def deadline_callback(deadline: float, on_stop: Callable[[int], None] | None = None):
    """A Keras callback that stops training after the epoch that ends past ``deadline`` (``time.time()``).

    Checkpoints are already written by then, so nothing is lost; ``on_stop(epoch)`` runs each time it fires.
    """
    from .common.keras_env import keras

    class Deadline(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if time.time() > deadline:
                self.model.stop_training = True
                if on_stop is not None:
                    on_stop(epoch)

    return Deadline()


def cosine_lr(progress: float, lr: float, floor: float = 0.01) -> float:
    """Half a cosine from ``lr`` (progress 0) down to ``floor * lr`` (progress 1 and beyond)."""
    return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, progress)))))


def cosine_callback(progress: Callable[[int, int], float], lr: float | None = None):
    """Set the learning rate at each epoch's start from ``progress(epoch, epochs)``, the share of the budget spent.

    A time budget on a shared CPU fits an unknown number of epochs, so ``train`` passes a
    progress that follows the clock, not the epoch count: the run still ends annealed however
    slow its epochs were. ``epochs`` is the fit's own (Hyperband gives each bracket its own).
    With ``lr=None`` each fit anneals from the rate its model was compiled with, so one callback
    serves every trial of a search.
    """
    from .common.keras_env import keras

    class Cosine(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.lr = float(self.model.optimizer.learning_rate.numpy()) if lr is None else lr

        def on_epoch_begin(self, epoch, logs=None):
            self.model.optimizer.learning_rate.assign(cosine_lr(progress(epoch, self.params["epochs"]), self.lr))

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())

    return Cosine()
