"""The shipped model's card, ``docs/model/README.md``: what it is, how it was made, how well it does.

Shipping (:mod:`convert.ship`) writes it from the files it puts beside it: the run's
``metrics.json``, ``history.csv``, ``train_config.json`` (and ``device_train.json`` for a run made
on a GPU machine), the conversion's ``default.verify.json`` and the model's metadata (views,
temperature fit, figures), so every number in the card has a file behind it. ``python -m convert
card`` rewrites it for the model already shipped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from edge_fer.classifier import MODELS_DIR
from edge_fer.errors import ModelError, exit_status
from edge_fer.metadata import load_metadata

from training.common.runs import DEVICE_RECORD, read_history, training_command

from . import SHIPPED_DOCS


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _started_from(init: dict | None, epochs: Any) -> list[str]:
    """The card's line for a run that began from a trained network (``--init``), whose epochs count too."""
    if not init:
        return []
    before = f", itself {init['epochs']} epochs of run `{init.get('run', '?')}`" if init.get("epochs") else ""
    commit = f" (code at {init['git_commit'][:10]})" if init.get("git_commit") else ""
    return [f"- Started from `{init['path']}`, sha256 {init['sha256'][:12]}{before}{commit}; this run trained "
            f"it {epochs} more epochs (`git log --format=%h -- edge_fer/models/default.tflite` lists the models "
            f"shipped before, and their cards)."]


def _total(init: dict | None, epochs: Any) -> Any:
    return init["epochs"] + epochs if init and init.get("epochs") and isinstance(epochs, int) else epochs


def card(docs_dir: Path, model: Path) -> str:
    """The card's Markdown for the network ``model`` whose reports are in ``docs_dir``."""
    meta = load_metadata(model)
    m, src = meta.metrics, meta.source
    run = _read_json(docs_dir / "metrics.json")
    config = _read_json(docs_dir / "train_config.json")
    device = _read_json(docs_dir / DEVICE_RECORD)  # trained on a GPU machine by scripts/device-train
    verify = _read_json(docs_dir / "default.verify.json")
    hp = run.get("hyperparameters", {})
    history = docs_dir / "history.csv"
    epochs = (len(read_history(history).get("loss", [])) if history.is_file() else None) \
        or run.get("epochs") or src.get("epochs")
    resumed = config.get("resumed_at_epochs") or []
    final_fit = bool(run.get("val_seen_in_training"))  # --fit-on train+val: val trained, so it chose nothing
    lines = [
        "# The shipped model",
        "",
        f"`edge_fer/models/{model.name}`: one `{src.get('arch', run.get('model', '?'))}` network"
        + (f" of width {hp['width']}" if "width" in hp else "")
        + f", {src.get('params', run.get('params', '?')):,} parameters, {meta.quantization}, "
        f"{m.get('size_bytes', model.stat().st_size) / 1e6:.2f} MB; {meta.views.per_face()}, "
        f"{m.get('ms_per_face', float('nan')):.2f} ms/face on one x86 thread. Labels: {', '.join(meta.labels)}.",
        "",
        "## How it was made",
        "",
        f"- Data: `{device.get('data') or run.get('data', src.get('data', '?'))}` ("
        + ("train and val carried to the GPU machine by `scripts/device-train pack`, test kept here; "
           if device else "") + f"{run.get('train_images', '?')} training faces); "
        + ("fitted on train and val (PublicTest): the final fit of a recipe a train-only twin chose on val, so "
           "the val figures below are not held out; test (PrivateTest) reported once." if final_fit else
           "fitted on train, chosen on val (PublicTest), test (PrivateTest) reported once."),
        *_started_from(run.get("init"), epochs),
        f"- Training: **{_total(run.get('init'), epochs)} epochs in all**"
        + (f" (resumed after epochs {', '.join(map(str, resumed))})" if resumed else "")
        + (", the last epoch kept" if final_fit else
           f", best on val at epoch {run.get('best_epoch', src.get('best_epoch', '?'))}") + "; schedule "
        f"{run.get('lr_schedule', '?')}, augmentation {'on' if run.get('augment') else 'off'}, label smoothing "
        f"{run.get('label_smoothing', 0)}, backend {run.get('backend', '?')}, "
        f"code at {(run.get('git_commit') or '?')[:10]}.",
    ]
    avg = run.get("weight_average")
    if avg:
        epoch = "the last epoch" if final_fit else "the best epoch"
        lines.append(f"- Weights of epochs {avg['epochs'][0]}-{avg['epochs'][1]} averaged: val "
                     f"{avg['val_accuracy']:.2%} against {avg['best_epoch_val_accuracy']:.2%} for {epoch}, so "
                     f"the shipped network is {'the average' if avg['chosen'] else epoch}.")
    if device:
        data = device.get("data") or "../shared/data/fer2013.npz"
        lines += [("- Commands (from a clone with the data; the second runs on a GPU machine, "
                   "docs/device-training.md; the runs in one call share the GPU, so each one's epochs depend on "
                   "the others):"), "", "  ```bash", "  scripts/device-train pack", f"  {device['command']}",
                  "  scripts/device-train land " + (device["out"] if device.get("out", "$OUT") != "$OUT" else
                                                    "RESULTS   # the folder the call's files came back to"),
                  f"  python -m convert --run runs/{device.get('run', 'NAME')} --data {data} --edgetpu --ship",
                  "  ```", ""]
    elif config:
        lines += ["- Commands (from a clone with the data; the second converts, checks and ships):", "", "  ```bash",
                  f"  {training_command(config)}", f"  python -m convert --run {config['out']} --edgetpu --ship",
                  "  ```", ""]
    else:
        lines += ["- Commands: this run kept no train_config.json; docs/results.md gives the commands that "
                  "retrain and convert it.", ""]
    lines += [
        "## How well it does (device path: int8, its views, this file)",
        "",
        "| split | accuracy | macro-F1 | float (Keras) | int8 = float |",
        "|---|---|---|---|---|",
    ]
    for split in ("val", "test"):
        if f"{split}_accuracy" in m:
            float_acc, agree = m.get(f"float_{split}_accuracy"), m.get(f"agreement_{split}")
            lines.append(f"| {split} | {m[f'{split}_accuracy']:.2%} | {m.get(f'{split}_macro_f1', 0):.2%} | "
                         + (f"{float_acc:.2%} | {agree:.1%} |" if float_acc is not None else "- | - |"))
    per_class = verify.get("splits", {}).get("test", {}).get("per_class", {})
    if per_class:
        lines += ["", "Per class on test (conversion's check):", "",
                  "| class | precision | recall | F1 | faces |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | {c['support']} |"
                  for name, c in per_class.items()]
    fit = meta.extra.get("temperature_fit")
    if fit:
        how = "given (the train-only twin's)" if fit["split"] == "given" else f"fitted on {fit['split']}"
        lines += ["", f"Calibration: temperature **{meta.temperature:g}** {how}; expected "
                  "calibration error (15 bins), NLL and accuracy before -> after (the views' probabilities are "
                  "averaged after the temperature, so the answer can change where they disagree):", ""]
        lines += [f"- {s}: ECE {fit[s]['ece_before']:.4f} -> {fit[s]['ece_after']:.4f}, NLL "
                  f"{fit[s]['nll_before']:.4f} -> {fit[s]['nll_after']:.4f}, accuracy "
                  f"{fit[s]['accuracy_before']:.2%} -> {fit[s]['accuracy_after']:.2%}" for s in ("val", "test")
                  if s in fit]
    check = verify.get("edgetpu_op_check")
    if check:
        n = sum(check["ops"].values())
        ops = ", ".join(f"{k} x{v}" for k, v in check["ops"].items())
        lines += ["", (f"Edge TPU: all {n} ops are Edge TPU ops ({ops})" if not check["cpu_ops"] else
                       f"Edge TPU: ops left on the CPU: {', '.join(dict.fromkeys(c['op'] for c in check['cpu_ops']))} "
                       f"(of {ops})")
                  + ("; the batch-1 twin `python -m convert --run DIR --edgetpu` writes is what the compiler takes."
                     if check.get("dynamic_batch") else ".")]
    figures = [(name, what) for name, what in (
        ("curves.png", "training curves"), ("confusion_matrix.png", "confusion matrix (the run's Keras model, test)"),
        ("classification_report.txt", "classification report"),
        ("default.calibration.png", "reliability before and after the temperature"))
        if (docs_dir / name).is_file()]
    lines += ["", "## Files", ""] + [f"- [{name}]({name}): {what}" for name, what in figures]
    return "\n".join(lines) + "\n"


def write_card(docs_dir: Path = SHIPPED_DOCS, model: Path = MODELS_DIR / "default.tflite") -> Path:
    if not model.is_file():
        raise ModelError(f"no shipped network at {model} (a card is written for one network)")
    path = docs_dir / "README.md"
    path.write_text(card(docs_dir, model))
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m convert card``: rewrite docs/model/README.md for the shipped network."""
    def run(_: None) -> None:
        print(f"wrote {write_card()}", file=sys.stderr)

    if argv:
        print("usage: python -m convert card   (rewrites docs/model/README.md for the shipped network)",
              file=sys.stderr)
        return 2
    return exit_status(run, None)
