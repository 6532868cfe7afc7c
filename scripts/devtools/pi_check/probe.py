"""What scripts/pi-check runs on each side (x86 host, aarch64 under qemu); results are JSON on stdout.

    probe.py env                        versions, machine; every edge_fer module imports, without TensorFlow
    probe.py raw FACES.npy OUT.npz      the shipped model's raw output tensor (and the input of its final
                                        op) for each face: one invoke per face, one thread; and the
                                        faces zoomed as the test-time views zoom them
    probe.py faces OUT.npy N [NPZ]      (host) N faces to compare on: FER2013 test faces from NPZ when it
                                        exists, else crops of the shipped sample photo and random faces
    probe.py video OUT.mp4 [FRAMES]     (host) a short MP4 of the shipped sample photo drifting
    probe.py frames VIDEO N OUT.npz     the first N frames of VIDEO, decoded and gray, as the device path sees them
    probe.py compare REF.npz GOT.npz    (host) the largest differences between two ``raw``, ``frames`` or
                                        ``detect`` results
    probe.py models                     (host) the BlazeFace model files: found in the caches, else fetched
    probe.py detect OUT.npz PHOTO...    BlazeFace short- and full-range on each photo, one thread: the raw
                                        network outputs (OUT.npz) and the decoded faces (JSON)

The emulated root holds the device dependencies and nothing else, so ``env`` and ``raw`` use
only the standard library, numpy, OpenCV, the interpreter and edge_fer.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import pkgutil
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

DISTS = ("numpy", "opencv-python-headless", "ai-edge-litert", "click", "paho-mqtt", "prometheus-client")
HEAVY = ("tensorflow", "keras", "tf_keras", "torch", "jax", "sklearn")
# Optional extras a Pi may lack (edge-fer[garf], apt's python3-picamera2, the legacy interpreter).
OPTIONAL = ("sklearn", "joblib", "picamera2", "libcamera", "tflite_runtime")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def env() -> dict:
    import edge_fer

    modules = sorted(m.name for m in pkgutil.walk_packages(edge_fer.__path__, "edge_fer."))
    failed, optional = {}, {}
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            (optional if (exc.name or "").split(".")[0] in OPTIONAL else failed)[name] = str(exc)
        except Exception as exc:  # reported, not raised: pi-check prints it
            failed[name] = f"{exc.__class__.__name__}: {exc}"
    import cv2

    from edge_fer.detectors.haar import HaarDetector

    HaarDetector()  # loads haarcascade_frontalface_default.xml from the wheel
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "executable": sys.executable,
        "versions": {d: _version(d) for d in DISTS},
        "modules": modules,
        "import_errors": failed,
        "optional_missing": optional,
        "heavy_imported": sorted(m for m in HEAVY if m in sys.modules),
        "heavy_installed": sorted(m for m in HEAVY if importlib.util.find_spec(m) is not None),
        "haar": str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"),
    }


def _model_input(classifier, faces):
    """The classifier's own uint8-pixel -> model-input mapping, as ``predict`` applies it."""
    import numpy as np

    lut = getattr(classifier, "_lut", None)
    if lut is None:  # rebuilt from the metadata's scaling and the input tensor's quantization
        detail = classifier.interpreter.get_input_details()[0]
        sc = classifier.metadata.scaling
        values = (np.arange(256, dtype=np.float32) - sc.mean) / sc.std
        scale, zero = detail["quantization"]
        dtype = np.dtype(detail["dtype"])
        if dtype == np.float32:
            lut = values
        else:
            info = np.iinfo(dtype)
            lut = np.clip(np.round(values / scale + zero), info.min, info.max).astype(dtype)
    return lut[faces][..., None]


def _final_op(interp) -> dict | None:
    """The op that writes the output tensor, when it runs outside the delegate (e.g. SOFTMAX)."""
    try:
        ops = interp._get_ops_details()
    except AttributeError:
        return None
    out = interp.get_output_details()[0]["index"]
    for op in ops:
        if out in list(op["outputs"]) and op["op_name"] != "DELEGATE" and len(op["inputs"]) == 1:
            return {"name": op["op_name"], "input": int(op["inputs"][0])}
    return None


def raw(faces_path: str, out_path: str, model: str | None = None) -> dict:
    """The output tensor, not dequantized, for every face (batch 1, one thread), of every network in the model
    (an ensemble's members side by side, in member order). Where the final op runs outside the XNNPACK
    delegate, its input (the delegate's result) is kept too: it is still intact after ``invoke`` because
    nothing runs after the final op."""
    import numpy as np

    from edge_fer.classifier import DEFAULT_MODEL, model_files

    path = Path(model) if model else DEFAULT_MODEL
    networks = [f for f in model_files(path) if f.suffix == ".tflite"]
    faces = np.load(faces_path)
    results = [_raw_one(network, faces) for network in networks]
    keys = [k for k in results[0][0] if all(k in r[0] for r in results)]
    result = {key: np.concatenate([r[0][key] for r in results], axis=-1) for key in keys}
    result["zoomed"] = _zoomed(faces)
    np.savez(out_path, **result)
    return {"faces": len(faces), "dtype": str(result["output"].dtype), "model": str(path),
            "networks": [r[1]["model"] for r in results], "backend": results[0][1]["backend"],
            "final_op": results[0][1]["final_op"] if "before_final" in result else None,
            "seconds_per_face": sum(r[1]["seconds"] for r in results) / max(1, len(faces))}


def _zoomed(faces):
    """Every face at every zoom a model's views may use (``edge_fer.views.ZOOM_CANDIDATES``), face by face."""
    import numpy as np

    from edge_fer.preprocess import zoom_faces
    from edge_fer.views import ZOOM_CANDIDATES

    zooms = sorted({s for zset in ZOOM_CANDIDATES for s in zset if s != 1.0})
    return np.stack([zoom_faces(faces, s) for s in zooms], axis=1)


def _raw_one(network: Path, faces) -> tuple[dict, dict]:
    """One TFLite network's raw outputs on ``faces``, and how they were made."""
    import numpy as np

    from edge_fer.classifier import TFLiteClassifier

    classifier = TFLiteClassifier(network, num_threads=1)
    interp = classifier.interpreter
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    if int(inp["shape"][0]) != 1:
        interp.resize_tensor_input(inp["index"], [1, *inp["shape"][1:]])
        interp.allocate_tensors()
    final = _final_op(interp)
    x = _model_input(classifier, faces)
    outputs, before_final = [], []
    t = time.perf_counter()
    for i in range(len(x)):
        interp.set_tensor(inp["index"], x[i : i + 1])
        interp.invoke()
        outputs.append(interp.get_tensor(out["index"]).copy())
        if final:
            try:
                before_final.append(interp.get_tensor(final["input"]).copy())
            except ValueError:  # the runtime freed that intermediate (float models): compare outputs only
                final, before_final = None, []
    seconds = time.perf_counter() - t
    result = {"output": np.concatenate(outputs)}
    if final:
        result["before_final"] = np.concatenate(before_final)
    return result, {"model": str(classifier.model_path), "backend": classifier.backend,
                    "final_op": final["name"] if final else None, "seconds": seconds}


def faces(out_path: str, n: str, npz: str | None = None) -> dict:
    """Faces both sides classify. FER2013's PrivateTest faces, evenly spaced over the split, when the
    dataset is here; otherwise jittered crops of the shipped sample's face plus seeded random faces."""
    import numpy as np

    n = int(n)
    if npz and Path(npz).exists():
        test_x = np.load(npz)["test_x"]
        idx = np.linspace(0, len(test_x) - 1, min(n, len(test_x))).round().astype(int)
        np.save(out_path, np.ascontiguousarray(test_x[idx], dtype=np.uint8))
        return {"faces": len(idx), "source": f"FER2013 test faces ({Path(npz).name}, {len(idx)} of {len(test_x)})"}
    import cv2

    from edge_fer.bench import SAMPLE_IMAGE
    from edge_fer.detectors.haar import HaarDetector
    from edge_fer.preprocess import resize_face, to_gray

    rng = np.random.default_rng(0)
    gray = to_gray(cv2.imread(str(SAMPLE_IMAGE)))
    boxes = [d.box for d in HaarDetector().detect(gray)]
    out = []
    if boxes:
        x, y, w, h = boxes[0]
        for _ in range(n // 3):
            s = rng.uniform(0.8, 1.25)
            cw, ch = int(w * s), int(h * s)
            cx = int(np.clip(x + w / 2 + rng.uniform(-0.15, 0.15) * w - cw / 2, 0, gray.shape[1] - cw))
            cy = int(np.clip(y + h / 2 + rng.uniform(-0.15, 0.15) * h - ch / 2, 0, gray.shape[0] - ch))
            out.append(resize_face(gray[cy : cy + ch, cx : cx + cw], (48, 48)))
    while len(out) < n:
        out.append(rng.integers(0, 256, (48, 48), dtype=np.uint8))
    np.save(out_path, np.stack(out).astype(np.uint8))
    crops = n // 3 if boxes else 0
    return {"faces": n, "source": f"no FER2013 here: {crops} crops of the shipped sample's face and "
                                  f"{n - crops} seeded random faces"}


def video(out_path: str, frames: str = "40") -> dict:
    """A real MP4 (mp4v) of the shipped sample photo drifting over a gray canvas."""
    from edge_fer.bench import SAMPLE_IMAGE, write_sample_video

    write_sample_video(out_path, int(frames))
    return {"video": out_path, "source": f"synthetic: the shipped {SAMPLE_IMAGE.name} drifting, {frames} frames"}


def frames(video_path: str, n: str, out_path: str) -> dict:
    """The first N frames of a video as the device path decodes them (gray), to tell decoding
    differences from detection differences."""
    import cv2
    import numpy as np

    from edge_fer.preprocess import to_gray

    cap = cv2.VideoCapture(video_path)
    grays = []
    while len(grays) < int(n):
        ok, image = cap.read()
        if not ok:
            break
        grays.append(to_gray(image))
    cap.release()
    np.savez(out_path, frames=np.stack(grays))
    return {"frames": len(grays)}


def models() -> dict:
    """Make sure the BlazeFace models are in the user cache, which both sides read (same HOME)."""
    from edge_fer.detectors.fetch import MODEL_FILES, fetch, find_model
    from edge_fer.errors import ModelError

    try:
        paths = [find_model(name) for name in MODEL_FILES]
        fetched = False
    except ModelError:
        paths, fetched = fetch(), True
    return {"models": [str(p) for p in paths], "fetched": fetched}


def detect(out_path: str, *photos: str) -> dict:
    """Each BlazeFace model on each photo (BGR, as the device path gives it), one interpreter thread."""
    import cv2
    import numpy as np

    from edge_fer.detectors import make_detector

    arrays, faces = {}, {}
    for key in ("blazeface", "blazeface-full"):
        detector = make_detector(key, threads=1)
        interp = detector.interpreter
        for photo in photos:
            found = detector.detect(cv2.imread(photo))
            name = f"{key}/{Path(photo).name}"
            for o in interp.get_output_details():  # the network's raw outputs for this photo
                arrays[f"{name}/{o['name']}"] = interp.get_tensor(o["index"]).copy()
            faces[name] = [{"box": list(d.box), "score": d.score, "landmarks": [list(p) for p in d.landmarks]}
                           for d in found]
    np.savez(out_path, **arrays)
    return {"faces": faces}


def compare(ref_path: str, got_path: str) -> dict:
    """The largest difference between two ``raw`` results, per tensor: in LSB for integer tensors."""
    import numpy as np

    a, b = np.load(ref_path), np.load(got_path)
    result = {}
    for key in a.files:
        if key not in b.files or a[key].shape != b[key].shape:
            result[key] = {"error": f"{key}: shapes {a[key].shape} and {b[key].shape if key in b.files else None}"}
            continue
        x, y = a[key], b[key]
        d = np.abs(x.astype(np.float64) - y.astype(np.float64)).reshape(len(x), -1)
        result[key] = {"max": float(d.max()) if d.size else 0.0, "differ": int((d > 0).sum()), "values": int(d.size),
                       "faces_differ": int((d > 0).any(axis=1).sum()), "int": x.dtype.kind in "iu"}
        if key == "output":
            result[key]["argmax_differ"] = int((x.reshape(len(x), -1).argmax(1) != y.reshape(len(y), -1).argmax(1))
                                               .sum())
    return result


COMMANDS = {"env": (env, 0, 0), "raw": (raw, 2, 3), "faces": (faces, 2, 3), "video": (video, 1, 2),
            "compare": (compare, 2, 2), "frames": (frames, 3, 3), "models": (models, 0, 0), "detect": (detect, 2, 99)}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS or not COMMANDS[argv[0]][1] <= len(argv) - 1 <= COMMANDS[argv[0]][2]:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps(COMMANDS[argv[0]][0](*argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
