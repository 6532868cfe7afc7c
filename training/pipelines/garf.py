"""GA+RF: backbone features, genetic-algorithm feature selection, a RandomForest; reports and device files.

    python -m training garf --data ../shared/data/fer2013.npz --backbone cnn --cnn runs/edge-cnn-w24 \\
        --out runs/garf-cnn

Steps: features of train/val/test (cached in ``OUT/features`` or ``--features``); a genetic
algorithm over feature masks whose fitness is a small forest fitted on a stratified sample of
train and scored on val; the final forest on all of train with the chosen mask (and, for
comparison, one on every feature); reports on val and test; the device files
(``NAME.json``, ``NAME.joblib``, ``NAME.backbone.tflite``) checked through the device's own
classifier. Val chooses (the mask), test is reported once at the end, as for the CNN.

The run folder gets ``metrics.json``, ``confusion_matrix.png``, ``classification_report.txt``
(the workstation forest on test), ``ga_history.csv``/``.png``, ``garf_config.json`` and the
device files; ``edge-fer eval --model OUT/model.json --data ...`` runs them.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_fer.errors import EdgeFerError
from edge_fer.garf import FORMAT
from edge_fer.labels import FER2013_LABELS

from ..common.data import DEFAULT_SEED
from ..features import add_backbone_arguments, backbone_scaling, backbone_spec, cached_features, load_data_splits

if TYPE_CHECKING:
    from ..ga import GAConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="FER2013 .npz, CSV (emotion,pixels,Usage) or image folder")
    p.add_argument("--out", required=True, type=Path, help="run folder (created)")
    p.add_argument("--features", type=Path, default=None, help="feature cache folder (default: OUT/features)")
    p.add_argument("--name", default="model", help="device files are OUT/NAME.json, .joblib, .backbone.tflite")
    p.add_argument("--limit", type=int, default=None, help="only the first N faces of each split (smoke tests)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seeds the GA, the forests and the fitness sample")
    p.add_argument("--jobs", type=int, default=2, help="processes scoring GA masks; threads of the final forests")
    add_backbone_arguments(p)
    g = p.add_argument_group("genetic algorithm (fitness: val accuracy of a small forest minus the size penalty)")
    g.add_argument("--population", type=int, default=24)
    g.add_argument("--generations", type=int, default=15, help="at most; see --patience")
    g.add_argument("--patience", type=int, default=5, help="stop after N generations without a better best mask")
    g.add_argument("--penalty", type=float, default=0.01,
                   help="fitness -= PENALTY x fraction of features kept (0.01: halving the mask is worth 0.5%% "
                        "val accuracy)")
    g.add_argument("--fitness-trees", type=int, default=30, help="trees of each fitness forest")
    g.add_argument("--fitness-samples", type=int, default=4000,
                   help="training faces (stratified sample) each fitness forest is fitted on")
    g.add_argument("--crossover", type=float, default=0.7, help="probability a pair is mated (uniform crossover)")
    g.add_argument("--mutation", type=float, default=0.5, help="probability a child is mutated")
    g.add_argument("--flip", type=float, default=None, help="per-bit flip probability of a mutation "
                                                            "(default 2 / features)")
    g.add_argument("--tournament", type=int, default=3, help="tournament size of the selection")
    g.add_argument("--elite", type=int, default=2, help="best masks carried over unchanged")
    g.add_argument("--init-fraction", type=float, default=0.5, help="share of features on in the first masks")
    f = p.add_argument_group("final forest and device files")
    f.add_argument("--trees", type=int, default=100, help="trees of the final forest")
    f.add_argument("--min-samples-leaf", type=int, default=10,
                   help="final forest leaf size: larger leaves keep the artifact small for the Pi")
    f.add_argument("--no-baseline", action="store_true", help="skip the comparison forest on all features")
    f.add_argument("--backbone-format", default="int8", choices=("int8", "float32"),
                   help="TFLite backbone for the device (int8 falls back to float32 if it does not convert)")
    f.add_argument("--calibration-samples", type=int, default=200, help="training faces calibrating an int8 backbone")
    f.add_argument("--timing-runs", type=int, default=100, help="batch-1 predictions timed on the device path")


def ga_config(args: argparse.Namespace) -> GAConfig:
    from ..ga import GAConfig  # DEAP on use only: `python -m training train` runs where it is not installed

    cfg = GAConfig(population=args.population, generations=args.generations, crossover=args.crossover,
                   mutation=args.mutation, flip=args.flip, tournament=args.tournament, elite=args.elite,
                   init_fraction=args.init_fraction, patience=args.patience, seed=args.seed, jobs=args.jobs)
    try:
        cfg.check()
    except ValueError as exc:
        raise EdgeFerError(str(exc)) from None
    return cfg


def stratified_sample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices of ``n`` rows of ``y`` keeping its class shares (all rows when ``n >= len(y)``)."""
    if n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return np.sort(idx)


def make_forest(args: argparse.Namespace):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=args.trees, min_samples_leaf=args.min_samples_leaf,
                                  n_jobs=args.jobs, random_state=args.seed)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole pipeline; returns the metrics written to ``OUT/metrics.json``."""
    import sklearn

    from ..ga import ForestFitness, plot_history, select_features

    spec = backbone_spec(args)
    cfg = ga_config(args)
    if min(args.trees, args.fitness_trees, args.fitness_samples, args.calibration_samples, args.timing_runs) < 1:
        raise EdgeFerError("--trees, --fitness-trees, --fitness-samples, --calibration-samples and --timing-runs "
                           "must be at least 1")
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "garf_config.json").write_text(json.dumps(
        {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "func"}, indent=2) + "\n")
    labels = FER2013_LABELS
    splits = load_data_splits(args.data, args.limit, args.seed)
    scaling = backbone_scaling(spec)
    fs = cached_features(args.features or args.out / "features", spec, args.data, splits, scaling, args.limit,
                         args.batch_size)
    x, y = fs.x, fs.y

    sample = stratified_sample(y["train"], args.fitness_samples, args.seed)
    fitness = ForestFitness(x["train"][sample], y["train"][sample], x["val"], y["val"], args.fitness_trees,
                            args.penalty, args.seed)
    print(f"GA over {fs.dim} features: population {cfg.population}, up to {cfg.generations} generations, "
          f"fitness forests of {args.fitness_trees} trees on {len(sample)} faces, {cfg.jobs} job(s)", file=sys.stderr)
    ga = select_features(fitness, fs.dim, cfg, report=_print_generation)
    _write_history(ga.history, args.out / "ga_history.csv")
    plot_history(ga.history, args.out / "ga_history.png",
                 f"GA on {spec.label}: {int(ga.mask.sum())} of {fs.dim} features")

    forest = make_forest(args).fit(x["train"][:, ga.mask], y["train"])
    pred = {s: forest.predict(x[s][:, ga.mask]) for s in x}
    baseline = None if args.no_baseline else _baseline(args, x, y)

    artifact = {"format": FORMAT, "labels": list(labels), "mask": ga.mask, "forest": forest,
                "backbone": {**spec.to_dict(), "dim": fs.dim, "scaling": scaling.to_dict()},
                "sklearn_version": sklearn.__version__}
    device = _export_and_verify(args, artifact, spec, splits, scaling, pred)
    test = (y["test"], pred["test"]) if "test" in pred else None
    from ..common.reports import write_reports

    ga_info = {**vars(cfg), "penalty": args.penalty, "fitness_trees": args.fitness_trees,
               "fitness_samples": int(len(sample)), "generations_run": len(ga.history) - 1,
               "masks_fitted": ga.evaluations, "stopped_early": ga.stopped_early, "best_fitness": ga.fitness,
               "best_val_accuracy": ga.accuracy, "seconds": ga.seconds}
    metrics = write_reports(
        args.out, labels, (y["val"], pred["val"]), test,
        extra={"model": f"ga-rf on {spec.label}", "backbone": artifact["backbone"], "data": str(args.data),
               "features_before": fs.dim, "features_after": int(ga.mask.sum()),
               "selected": np.flatnonzero(ga.mask).tolist(), "ga": ga_info,
               "forest": {"trees": args.trees, "min_samples_leaf": args.min_samples_leaf,
                          "nodes": int(sum(t.tree_.node_count for t in forest.estimators_))},
               "all_features_forest": baseline, "cnn_alone": _cnn_alone(spec), "device": device,
               "feature_seconds": fs.manifest.get("seconds"), "wall_time_s": round(time.time() - started, 1),
               "train_images": int(len(y["train"])), "scaling": scaling.to_dict()})
    print(_summary(args.out, metrics))
    return metrics


def _print_generation(row: dict) -> None:
    print(f"gen {row['generation']:2d}: best {row['best_fitness']:.4f} (val acc {row['best_accuracy']:.4f}, "
          f"{row['best_size']} features), mean {row['mean_fitness']:.4f}, mean size {row['mean_size']:.1f}, "
          f"{row['fitted']} fitted, {row['seconds']:.0f} s", file=sys.stderr, flush=True)


def _write_history(history: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)


def _baseline(args: argparse.Namespace, x: dict, y: dict) -> dict[str, Any]:
    """The same final forest on every feature: what the GA's selection is measured against."""
    forest = make_forest(args).fit(x["train"], y["train"])
    return {s: round(float((forest.predict(x[s]) == y[s]).mean()), 4) for s in x if s != "train"}


def _cnn_alone(spec) -> dict[str, Any] | None:
    """The backbone CNN's own val/test accuracy, from its run's metrics.json, for the comparison."""
    metrics = Path(spec.weights).parent / "metrics.json"
    if spec.name != "cnn" or not metrics.exists():
        return None
    m = json.loads(metrics.read_text())
    return {"run": str(metrics.parent), **{s: m[s]["accuracy"] for s in ("val", "test") if s in m}}


def _export_and_verify(args: argparse.Namespace, artifact: dict, spec, splits: dict, scaling, pred: dict) -> dict:
    """Device files into OUT, then the device path's accuracy, agreement and speed."""
    from convert.backbone import export_garf, verify_garf
    from convert.tflite import calibration_faces

    from ..features import build_backbone

    exported = export_garf(args.out, args.name, artifact, build_backbone(spec),
                           calibration_faces(splits["train"], args.calibration_samples, args.seed), scaling,
                           args.backbone_format, source={"data": str(args.data), "run": str(args.out)})
    print(f"wrote {exported.metadata}, {exported.forest.name}, {exported.backbone.name} "
          f"({exported.backbone_format} backbone)", file=sys.stderr)
    refs = {s: (splits[s], pred[s]) for s in ("val", "test") if s in splits}
    return {"files": [str(p) for p in (exported.metadata, exported.forest, exported.backbone)],
            "backbone_format": exported.backbone_format, **verify_garf(exported.metadata, refs, args.timing_runs)}


def _summary(out: Path, m: dict) -> str:
    parts = [f"{m['features_after']} of {m['features_before']} features", f"val acc {m['val']['accuracy']:.4f}"]
    if "test" in m:
        parts.append(f"test acc {m['test']['accuracy']:.4f}")
    d = m["device"]
    if "test_accuracy" in d:
        parts.append(f"device test acc {d['test_accuracy']:.4f} ({d['backbone_format']} backbone)")
    parts.append(f"{d['ms_per_face']:.2f} ms/face on the device path")
    if m["all_features_forest"] and "test" in m["all_features_forest"]:
        parts.append(f"all-features forest test acc {m['all_features_forest']['test']:.4f}")
    if m["cnn_alone"] and "test" in m["cnn_alone"]:
        parts.append(f"CNN alone test acc {m['cnn_alone']['test']:.4f}")
    return f"{out}: " + ", ".join(parts)
