"""Ensembles of converted models: probability averaging and stacking, fitted on val, reported on test.

    python -m training ensemble --members runs/edge-cnn/model_int8.tflite runs/edge-cnn-leaky/model_int8.tflite \\
        --data ../shared/data/fer2013.npz --out models/ensemble

Members are TFLite models run through the device's own classifier, so the probabilities the
combiners learn from are the ones the Pi will compute. Three combiners:

  average   the mean of the members' probabilities; nothing is fitted
  tree      a DecisionTree over the members' stacked probabilities (the seeds' meta-learner)
  logistic  a multinomial logistic regression over the same

Val (PublicTest) is the only data a combiner sees: the members were trained on train, so
their train predictions are overconfident and a meta-learner fitted on them would learn to
trust whichever member overfits most. Val is also the selection set, so each stacked
combiner's hyperparameters (tree depth, leaf size, criterion; the regularisation C) are chosen
by stratified k-fold cross-validation on val, and the chosen setting is then refitted on all of
val. Which combiner to recommend is decided on the same cross-validated val accuracy (averaging
is scored on the same folds). Test (PrivateTest) is used once, to report every member and
every combiner, with a paired bootstrap interval of each combiner's gain over the best member
(best on val), so "beats the single model by more than the noise" is a number, not a guess.

OUT gets the members (copied, with their metadata), one device model per combiner
(``NAME_average.json``, ``NAME_tree.json``, ``NAME_logistic.json``, each loadable with
``--model``), ``results.md`` (the table for the README) and ``ensemble_report.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_fer.classifier import TFLiteClassifier, load_classifier
from edge_fer.datasets import LabeledFaces
from edge_fer.ensemble import COMBINERS, KIND, Average, Combiner, Logistic, Tree, check_members
from edge_fer.errors import EdgeFerError, ModelError
from edge_fer.evaluate import EvalResult, check_labels, metrics, predict_all
from edge_fer.metadata import metadata_path, sha256_of

from ..common.data import DEFAULT_SEED
from ..common.stats import bootstrap_gain

# Meta-learner grids, searched by k-fold CV on val; small because val is small (3589 faces).
TREE_GRID = {"max_depth": [2, 3, 4, 5, 6, 8, 10], "min_samples_leaf": [1, 5, 20, 50], "criterion": ["gini", "entropy"]}
LOGISTIC_GRID = {"C": [0.01, 0.1, 1.0, 10.0, 100.0]}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--members", nargs="+", required=True, type=Path, metavar="TFLITE",
                   help="two or more converted models (each with its .json), e.g. the ReLU and LeakyReLU CNNs")
    p.add_argument("--data", required=True, help="FER2013 .npz, CSV or image folder: val fits, test reports")
    p.add_argument("--out", required=True, type=Path, help="output folder (created)")
    p.add_argument("--name", default="ensemble", help="device models are OUT/NAME_COMBINER.json (default ensemble)")
    p.add_argument("--combiner", nargs="+", default=list(COMBINERS), choices=COMBINERS,
                   help="which combiners to fit and write (default: all three)")
    p.add_argument("--folds", type=int, default=5, help="k of the cross-validation on val (default 5)")
    p.add_argument("--limit", type=int, default=None, help="only the first N val and N test faces (smoke tests)")
    p.add_argument("--timing-runs", type=int, default=200, help="batch-1 predictions timed per model (1 thread)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED,
                   help="folds, tree ties and bootstrap (train's seed carves val)")
    p.add_argument("--ship", action="store_true",
                   help="make the recommended combiner edge-fer's default model, only if its test gain over the best "
                        "member lies above the noise (95%% bootstrap interval above 0)")


@dataclass
class Fitted:
    """One combiner, with its cross-validated val accuracy and the setting CV chose."""

    combiner: Combiner
    cv_accuracy: float
    cv_std: float
    params: dict[str, Any]


@dataclass
class Row:
    """One line of the results table."""

    name: str
    kind: str  # "member" or a combiner
    val_accuracy: float  # members: on all of val; combiners: k-fold CV mean on val
    test: EvalResult | None
    gain: tuple[float, float, float] | None  # test accuracy minus the best member's: (mean, 2.5%, 97.5%)
    ms_per_face: float
    path: Path

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "val_accuracy": self.val_accuracy,
                "test_accuracy": self.test.accuracy if self.test else None,
                "test_macro_f1": self.test.macro_f1 if self.test else None,
                "gain_vs_best_member": list(self.gain) if self.gain else None,
                "ms_per_face": self.ms_per_face, "path": str(self.path)}


def stacked(probs: np.ndarray) -> np.ndarray:
    """Member probabilities ``(n, members, labels)`` -> meta-features ``(n, members x labels)``, member-major."""
    return probs.reshape(len(probs), -1)


def fit_combiners(probs: np.ndarray, y: np.ndarray, kinds: Sequence[str], folds: int = 5,
                  seed: int = 0) -> dict[str, Fitted]:
    """Fit each combiner of ``kinds`` on val probabilities ``(n, members, labels)`` and labels ``y``.

    Stacked combiners pick their hyperparameters by stratified k-fold CV, then refit on all of ``probs``.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.tree import DecisionTreeClassifier

    n_members, n_labels = probs.shape[1:]
    x = stacked(probs)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    fitted: dict[str, Fitted] = {}
    for kind in kinds:
        if kind == "average":
            average = Average(np.full(n_members, 1.0 / n_members))
            scores = [float((average(probs[v]).argmax(1) == y[v]).mean()) for _, v in cv.split(x, y)]
            fitted[kind] = Fitted(average, float(np.mean(scores)), float(np.std(scores)), {})
            continue
        estimator, grid = ((DecisionTreeClassifier(random_state=seed), TREE_GRID) if kind == "tree" else
                           (LogisticRegression(max_iter=5000), LOGISTIC_GRID))
        search = GridSearchCV(estimator, grid, cv=cv, scoring="accuracy", n_jobs=1)
        with warnings.catch_warnings():  # tiny val sets: classes with fewer faces than folds
            warnings.simplefilter("ignore")
            search.fit(x, y)
        i = search.best_index_
        scores = [search.cv_results_[f"split{k}_test_score"][i] for k in range(folds)]
        combiner = export_tree(search.best_estimator_, n_labels) if kind == "tree" else \
            export_logistic(search.best_estimator_, n_labels)
        fitted[kind] = Fitted(combiner, float(np.mean(scores)), float(np.std(scores)), search.best_params_)
    return fitted


def export_tree(model, n_labels: int) -> Tree:
    """A fitted ``DecisionTreeClassifier`` as the device's numpy :class:`~edge_fer.ensemble.Tree`."""
    t = model.tree_
    value = t.value[:, 0, :].astype(np.float64)
    value = value / np.where(value.sum(1, keepdims=True) > 0, value.sum(1, keepdims=True), 1)
    return Tree(np.asarray(model.classes_, np.int64), t.children_left.astype(np.int64),
                t.children_right.astype(np.int64), t.feature.astype(np.int64), t.threshold.astype(np.float64),
                value, n_labels)


def export_logistic(model, n_labels: int) -> Logistic:
    """A fitted multinomial ``LogisticRegression`` as the device's numpy :class:`~edge_fer.ensemble.Logistic`."""
    return Logistic(np.asarray(model.classes_, np.int64), model.coef_.astype(np.float64),
                    model.intercept_.astype(np.float64), n_labels)


def run(args: argparse.Namespace) -> list[Row]:
    if len(args.members) < 2:
        raise EdgeFerError("--members needs two or more models")
    if args.folds < 2 or args.timing_runs < 1 or (args.limit is not None and args.limit < 1):
        raise EdgeFerError("--folds must be at least 2, --timing-runs and --limit at least 1")
    for path in args.members:
        if not path.is_file():
            raise ModelError(f"model not found: {path}")
    names = _member_names(args.members)
    members = [TFLiteClassifier(path) for path in args.members]
    check_members(members, [str(p) for p in args.members])
    val, test = _data(args, members[0])
    print(f"members on {len(val)} val and {len(test) if test is not None else 0} test faces ...", file=sys.stderr)
    val_probs = np.stack([predict_all(m, val.x) for m in members], axis=1)
    fitted = fit_combiners(val_probs, val.y, args.combiner, args.folds, args.seed)
    member_val = [float((val_probs[:, i].argmax(1) == val.y).mean()) for i in range(len(members))]
    best = int(np.argmax(member_val))
    scorer = _Scorer(test, np.stack([predict_all(m, test.x) for m in members], axis=1) if test is not None else None,
                     best, args)

    args.out.mkdir(parents=True, exist_ok=True)
    files = _copy_members(args.members, names, args.out)
    rows = [scorer.row(path, "member", member_val[i], lambda p, i=i: p[:, i]) for i, path in enumerate(files)]
    for kind, fit in fitted.items():
        path = _write_ensemble(args, kind, fit, files, members, len(val))
        rows.append(scorer.row(path, kind, fit.cv_accuracy, fit.combiner))
        _add_figures(path, rows[-1], fit)
    chosen = max(fitted, key=lambda k: fitted[k].cv_accuracy)
    _write_reports(args, rows, fitted, chosen, files[best].name)
    if args.ship:
        _ship(next(r for r in rows if r.kind == chosen), args.out / f"{args.name}_{chosen}.json")
    return rows


def _ship(row: Row, path: Path, **dest: Path) -> None:
    """Ship the chosen ensemble as the default (``dest``: ``ship_ensemble``'s folders), or say why not."""
    if not row.gain or row.gain[1] <= 0:
        print(f"not shipped: {path.name}'s gain over the best member is within the noise (or unmeasured); "
              f"the shipped model stays", file=sys.stderr)
        return
    from convert.ship import ship_ensemble

    for written in ship_ensemble(path, **dest):
        print(f"shipped {written}", file=sys.stderr)


def _data(args: argparse.Namespace, first: TFLiteClassifier) -> tuple[LabeledFaces, LabeledFaces | None]:
    """Val and test faces at the members' input size; a val carved from train must be the one training carved."""
    from ..common.data import load_splits

    splits = load_splits(args.data, size=first.input_size, seed=args.seed)
    check_labels(first.labels, splits.val.labels, "the members'")
    faces = [splits.val, splits.test]
    if args.limit:
        faces = [replace(f, x=f.x[: args.limit], y=f.y[: args.limit]) if f is not None else None for f in faces]
    if faces[1] is None:
        print(f"warning: {args.data} has no test split; only val figures are reported", file=sys.stderr)
    return faces


def _member_names(paths: Sequence[Path]) -> list[str]:
    """File names for the members in OUT; same-named members (model_int8 of two runs) get their run folder's name."""
    names = [p.name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{p.parent.name}_{p.name}" for p in paths]
    if len(set(names)) < len(names):
        raise ModelError(f"members share file and folder names ({', '.join(map(str, paths))}): rename them")
    return names


def _copy_members(paths: Sequence[Path], names: Sequence[str], out: Path) -> list[Path]:
    """Copy each member and its metadata into ``out``, so the ensemble travels as one folder."""
    copied = []
    for src, name in zip(paths, names):
        dest = out / name
        if src.resolve() != dest.resolve():
            shutil.copy2(src, dest)
            if metadata_path(src).exists():
                shutil.copy2(metadata_path(src), metadata_path(dest))
        copied.append(dest)
    return copied


def _write_ensemble(args: argparse.Namespace, kind: str, fit: Fitted, files: list[Path],
                    members: Sequence[TFLiteClassifier], n_val: int) -> Path:
    path = args.out / f"{args.name}_{kind}.json"
    meta = replace(members[0].metadata, kind=KIND, flip_average=False, view_scales=(1.0,), sha256=None, metrics={},
                   quantization="+".join(dict.fromkeys(m.metadata.quantization for m in members)),
                   source={"members": [f.name for f in files], "data": str(args.data), "fitted_on": "val",
                           "n_val": n_val, "folds": args.folds, "params": fit.params},
                   extra={"members": [{"file": f.name, "sha256": sha256_of(f)} for f in files],
                          "combiner": fit.combiner.to_dict()})
    path.write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
    return path


@dataclass
class _Scorer:
    """Test figures (once, at the end) and device-path timing for each table row."""

    test: LabeledFaces | None
    test_probs: np.ndarray | None  # (n, members, labels)
    best: int  # the member with the best val accuracy: the baseline of every gain
    args: argparse.Namespace

    def row(self, path: Path, kind: str, val_accuracy: float, combine) -> Row:
        """``combine`` maps member probabilities ``(n, members, labels)`` to this row's ``(n, labels)``."""
        from edge_fer.bench import ms_per_face

        result = gain = None
        if self.test is not None:
            pred = combine(self.test_probs).argmax(1)
            baseline = self.test_probs[:, self.best].argmax(1) == self.test.y
            result = metrics(self.test.y, pred, self.test.labels)
            gain = bootstrap_gain(pred == self.test.y, baseline, self.args.seed)
        ms = ms_per_face(load_classifier(path, num_threads=1), self.args.timing_runs)
        return Row(path.name, kind, val_accuracy, result, gain, ms, path)


def _add_figures(path: Path, row: Row, fit: Fitted) -> None:
    """Fold the ensemble's figures into its metadata, as ``convert`` does for a single model."""
    meta = json.loads(path.read_text())
    meta["metrics"] = {"val_cv_accuracy": round(fit.cv_accuracy, 4), "val_cv_std": round(fit.cv_std, 4),
                       "ms_per_face": round(row.ms_per_face, 3)}
    if row.test:
        meta["metrics"].update(test_accuracy=round(row.test.accuracy, 4), test_macro_f1=round(row.test.macro_f1, 4),
                               n_test=row.test.n)
    path.write_text(json.dumps(meta, indent=2) + "\n")


def table(rows: Sequence[Row]) -> str:
    """The README table: one line per member and per combiner."""
    lines = ["| model | kind | val acc | test acc | test macro-F1 | gain vs best member [95% CI] | ms/face |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        test = f"{r.test.accuracy:.4f} | {r.test.macro_f1:.4f}" if r.test else "- | -"
        gain = ("-" if r.gain is None or r.kind == "member" else
                f"{100 * r.gain[0]:+.1f} pt [{100 * r.gain[1]:+.1f}, {100 * r.gain[2]:+.1f}]")
        val = f"{r.val_accuracy:.4f}" + (" (CV)" if r.kind != "member" else "")
        lines.append(f"| {r.name} | {r.kind} | {val} | {test} | {gain} | {r.ms_per_face:.2f} |")
    return "\n".join(lines)


def _write_reports(args: argparse.Namespace, rows: list[Row], fitted: dict[str, Fitted], chosen: str,
                   best_member: str) -> None:
    chosen_row = next(r for r in rows if r.kind == chosen)
    verdict = (f"{chosen} has the best cross-validated val accuracy; against {best_member} (the best member on "
               f"val) on test it gains ")
    if chosen_row.gain:
        mean, lo, hi = chosen_row.gain
        verdict += (f"{100 * mean:+.1f} pt [95% CI {100 * lo:+.1f}, {100 * hi:+.1f}]: "
                    + ("more than the noise" if lo > 0 else "within the noise, so the single model stays"))
    else:
        verdict += "nothing measurable (no test split)"
    text = (f"{table(rows)}\n\nval acc: members on all of val, combiners as the mean of {args.folds}-fold CV on "
            f"val; ms/face: 1 thread, batch 1, on this machine (run `edge-fer bench` on the Pi).\n\n{verdict}.\n")
    (args.out / "results.md").write_text(text)
    report = {"rows": [r.to_dict() for r in rows], "chosen": chosen, "best_member": best_member,
              "verdict": verdict, "folds": args.folds, "data": str(args.data), "limit": args.limit,
              "combiners": {k: {"cv_accuracy": f.cv_accuracy, "cv_std": f.cv_std, "params": f.params}
                            for k, f in fitted.items()}}
    (args.out / "ensemble_report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(text)
