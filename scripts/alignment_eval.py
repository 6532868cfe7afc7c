"""Does turning faces upright before the crop help? FER2013 test faces at known tilts, through the real detector.

Each test face (48x48) is enlarged 3x, padded (edge pixels repeated) into a 288x288 image and
turned by each angle. The detector runs on that image; where it finds the face, the shipped
classifier reads the crop twice, as cut (``crop_face``) and turned upright by the eyes
(``align_face``). Accuracy is over the faces found at that angle, so both columns see the same
faces. The labelled shared photos (angry, smiling, crying) are checked the same way.

    python scripts/alignment_eval.py --data ../shared/data/fer2013.npz --detector blazeface-full
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_fer.classifier import load_classifier
from edge_fer.datasets import LabeledFaces, load_split
from edge_fer.detectors import Detector, open_detector
from edge_fer.errors import SourceError, exit_status
from edge_fer.preprocess import align_face, crop_face, eye_angle, prepare_images

PHOTOS = {"photo_angry_man.jpg": "angry", "photo_smiling_man.jpg": "happy", "photo_crying_woman_occluded.jpg": "sad"}


@dataclass
class AngleRow:
    angle: int
    faces: int
    found: int
    acc_crop: float
    acc_aligned: dict[str, float]  # min_tilt (degrees) -> accuracy when faces tilted more than that are aligned
    eye_angle_error: float         # median |measured eye angle - true tilt|, degrees


def rotate(image: np.ndarray, angle: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def fer_rows(faces: LabeledFaces, detector: Detector, angles: list[int], limit: int | None,
             min_tilts: list[float]) -> list[AngleRow]:
    xs, ys = faces.x, faces.y
    if limit:
        xs, ys = xs[:limit], ys[:limit]
    classifier = load_classifier()
    margin = classifier.metadata.face_margin
    rows = []
    for angle in angles:
        crops, aligned, labels, errors, tilts = [], [], [], [], []
        for face, label in zip(xs, ys):
            big = cv2.resize(face, (144, 144), interpolation=cv2.INTER_LINEAR)
            canvas = rotate(cv2.copyMakeBorder(big, 72, 72, 72, 72, cv2.BORDER_REPLICATE), angle)
            found = [d for d in detector.detect(canvas) if d.eyes is not None]
            found = [d for d in found if abs(d.box[0] + d.box[2] / 2 - 144) < 48 and abs(d.box[1] + d.box[3] / 2 - 144) < 48]
            if not found:
                continue
            best = found[0]
            crops.append(crop_face(canvas, best.box, margin))
            aligned.append(align_face(canvas, best.box, best.eyes, margin))
            labels.append(label)
            tilts.append(abs(eye_angle(best.eyes)))
            errors.append(abs(eye_angle(best.eyes) + angle))  # an image turned +a (counter-clockwise) tilts the eyes by -a
        labels, tilts = np.array(labels), np.array(tilts)
        right = [np.argmax(classifier.predict(prepare_images(batch, classifier.input_size)), 1) == labels
                 for batch in (crops, aligned)] if len(labels) else [np.zeros(0, bool)] * 2
        acc = {f"{t:g}": round(float(np.mean(np.where(tilts > t, right[1], right[0]))) if len(labels) else 0.0, 4)
               for t in min_tilts}
        rows.append(AngleRow(angle, len(xs), len(labels), round(float(np.mean(right[0])) if len(labels) else 0.0, 4),
                             acc, round(float(np.median(errors)), 2) if errors else 0.0))
    return rows


def photo_rows(media: Path, detector: Detector, angles: list[int]) -> list[dict]:
    classifier = load_classifier()
    margin = classifier.metadata.face_margin
    out = []
    for name, truth in PHOTOS.items():
        image = cv2.imread(str(media / name))
        if image is None:
            raise SourceError(f"cannot read {media / name} as an image")
        for angle in angles:
            turned = rotate(cv2.copyMakeBorder(image, *[image.shape[0] // 4] * 2, *[image.shape[1] // 4] * 2,
                                               cv2.BORDER_REPLICATE), angle)
            found = detector.detect(turned)
            row = {"photo": name, "truth": truth, "angle": angle, "found": len(found)}
            if found and found[0].eyes is not None:
                gray = cv2.cvtColor(turned, cv2.COLOR_BGR2GRAY)
                for kind, crop in (("crop", crop_face(gray, found[0].box, margin)),
                                   ("aligned", align_face(gray, found[0].box, found[0].eyes, margin))):
                    p = classifier.predict(prepare_images([crop], classifier.input_size))[0]
                    row[kind] = f"{classifier.labels[int(np.argmax(p))]} (p({truth})={p[classifier.labels.index(truth)]:.2f})"
            out.append(row)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/fer2013.npz"))
    parser.add_argument("--media", type=Path, default=Path("../shared/media"),
                        help="the folder of the labelled photos; a folder that does not exist (such as 'none') "
                             "leaves the photo rows out")
    parser.add_argument("--detector", default="blazeface-full")
    parser.add_argument("--angles", type=int, nargs="+", default=[0, 15, 30])
    parser.add_argument("--split", choices=["val", "test"], default="test")
    parser.add_argument("--limit", type=int, default=None, help="only the first N faces")
    parser.add_argument("--min-tilt", type=float, nargs="+", default=[0.0],
                        help="align only faces whose eyes tilt more than this (degrees); several are compared")
    return exit_status(run, parser.parse_args())


def run(args: argparse.Namespace) -> None:
    faces = load_split(args.data, args.split)  # a one-line DataError for a missing or malformed file
    missing = [name for name in PHOTOS if not (args.media / name).is_file()] if args.media.exists() else []
    if missing:
        raise SourceError(f"{args.media} lacks {', '.join(missing)}: --media is the folder of the labelled photos "
                          f"(one that does not exist skips them)")
    # The chosen detector, its model files fetched on first use (as `edge-fer` does); no fallback to another.
    detector = open_detector(args.detector, progress=lambda line: print(line, file=sys.stderr, flush=True))
    rows = fer_rows(faces, detector, args.angles, args.limit, args.min_tilt)
    print(f"FER2013 {args.split} faces through {args.detector}; accuracy over the faces found at each tilt")
    print(f"{'tilt':>5} {'found':>11} {'acc crop':>9} " + " ".join(f"{'aligned >' + k:>12}" for k in rows[0].acc_aligned)
          + f" {'eye-angle err':>13}")
    for r in rows:
        print(f"{r.angle:>5} {r.found:>5}/{r.faces:<5} {r.acc_crop:9.4f} "
              + " ".join(f"{v:12.4f}" for v in r.acc_aligned.values()) + f" {r.eye_angle_error:13.2f}")
    photos = photo_rows(args.media, detector, args.angles) if args.media.exists() else []
    for row in photos:
        print(f"{row['photo']:<34} tilt {row['angle']:>3}: crop {row.get('crop', '-')}, aligned {row.get('aligned', '-')}")
    print(json.dumps({"detector": args.detector, "fer2013": [asdict(r) for r in rows], "photos": photos},
                     separators=(",", ":")))


if __name__ == "__main__":
    sys.exit(main())
