"""The checks on each side and how their results compare with x86."""

from __future__ import annotations

import json
from pathlib import Path

from .common import DESELECT, NOT_DEVICE, PROBE, REPO
from .runner import Runner, StepError, _tail

def check_env(r: Runner) -> dict:
    e = r.json([PROBE, "env"], 300)
    problems = []
    if r.root is not None and e["machine"] != "aarch64":
        problems.append(f"machine is {e['machine']}")
    if e["import_errors"]:
        problems.append("; ".join(f"{k}: {v}" for k, v in e["import_errors"].items()))
    if e["heavy_imported"]:
        problems.append(f"importing edge_fer loaded {', '.join(e['heavy_imported'])}")
    if r.root is not None and e["heavy_installed"]:
        problems.append(f"the root holds {', '.join(e['heavy_installed'])}")
    if problems:
        raise StepError("; ".join(problems))
    return e


def check_info(r: Runner) -> dict:
    p = r.run(["-m", "edge_fer.cli", "info", "--json"], 300)
    if p.returncode != 0:
        raise StepError(_tail(p))
    info = json.loads(p.stdout)
    problems = []
    if r.root is not None and not info["machine"].endswith("aarch64"):
        problems.append(f"machine {info['machine']}")
    if not info["haar_cascades"]:
        problems.append("no Haar cascades")
    if info["backend"] != "ai-edge-litert":
        problems.append(f"backend {info['backend']}")
    if "error" in info["model"]:
        problems.append(info["model"]["error"])
    if problems:
        raise StepError(", ".join(problems))
    return info


def compare_faces(ref: list[dict], got: list[dict]) -> str:
    """How the faces of two runs (one record per photo or frame) compare: boxes, top emotions, probabilities."""
    boxes_differ = emotions_differ = faces = 0
    prob_diff = 0.0
    for a, b in zip(ref, got):
        if [f["box"] for f in a["faces"]] != [f["box"] for f in b["faces"]]:
            boxes_differ += 1
            continue
        for fa, fb in zip(a["faces"], b["faces"]):
            faces += 1
            emotions_differ += fa["emotion"] != fb["emotion"]
            prob_diff = max([prob_diff, *(abs(fa["probs"][k] - fb["probs"].get(k, 0.0)) for k in fa["probs"])])
    if len(ref) != len(got):
        return f"{len(got)} records against x86's {len(ref)}"
    if not boxes_differ and not emotions_differ and prob_diff == 0:
        return "identical to x86"
    parts = [f"face boxes differ from x86 in {boxes_differ} of {len(ref)}" if boxes_differ else "same face boxes as x86"]
    parts.append(f"top emotion differs on {emotions_differ} of {faces} faces" if emotions_differ else "same emotions")
    parts.append(f"probabilities within {prob_diff:.4f}")
    return ", ".join(parts)


def _save(r: "Runner", name: str, text: str) -> None:
    (r.work / f"{name}-{r.label}.jsonl").write_text(text)


def check_predict(r: Runner, photos: list[Path]) -> list[dict]:
    p = r.run(["-m", "edge_fer.cli", "predict", *photos, "--json"], 600)
    _save(r, "predict", p.stdout)
    if p.returncode != 0:
        raise StepError(_tail(p))
    records = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    if len(records) != len(photos):
        raise StepError(f"{len(records)} results for {len(photos)} photos")
    if not records[0]["faces"]:
        raise StepError(f"no face found in {photos[0].name}")
    return records


def check_run(r: Runner, video: Path, frames: int) -> list[dict]:
    p = r.run(["-m", "edge_fer.cli", "run", "--source", video, "--max-frames", frames, "--output", "jsonl"], 900)
    _save(r, "run", p.stdout)
    if p.returncode != 0:
        raise StepError(_tail(p))
    try:
        records = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise StepError(f"a --output jsonl line is not JSON ({exc})") from None
    if [rec["frame"] for rec in records] != list(range(1, frames + 1)):
        raise StepError(f"expected frames 1..{frames}, got {len(records)} records")
    if not any(rec["faces"] for rec in records):
        raise StepError("no face in any frame")
    return records


def check_raw(r: Runner, faces: Path) -> tuple[dict, Path]:
    out = r.work / f"raw-{r.label}.npz"
    meta = r.json([PROBE, "raw", faces, out], 1800)
    return meta, out


# BlazeFace on aarch64 against x86: the float kernels may round differently, so the decoded faces must
# agree within these (the raw tensors' largest difference is reported beside).
DETECT_TOLERANCE = {"px": 1.0, "score": 1e-3}


def check_detect(r: Runner, photos: list[Path]) -> tuple[dict, Path]:
    out = r.work / f"detect-{r.label}.npz"
    return r.json([PROBE, "detect", out, *photos], 1800), out


def detect_line(ref: dict, got: dict, cmp: dict) -> tuple[str, str | None]:
    """(detail, problem): faces per model and photo must match x86's in number, boxes and keypoints within
    DETECT_TOLERANCE['px'] pixels and scores within DETECT_TOLERANCE['score']."""
    problems = [c["error"] for c in cmp.values() if "error" in c]
    px = score = 0.0
    n = 0
    for name, want in ref["faces"].items():
        have = got["faces"].get(name, [])
        if len(have) != len(want):
            problems.append(f"{name}: {len(have)} faces, x86 {len(want)}")
            continue
        for a, b in zip(want, have):
            n += 1
            coords = [*a["box"], *(v for p in a["landmarks"] for v in p)]
            other = [*b["box"], *(v for p in b["landmarks"] for v in p)]
            px = max(px, *(abs(x - y) for x, y in zip(coords, other)))
            score = max(score, abs(a["score"] - b["score"]))
    raw = max((c["max"] for c in cmp.values() if "max" in c), default=0.0)
    detail = (f"{n} faces in {len(ref['faces'])} model/photo pairs; largest difference from x86: {px:g} px, "
              f"score {score:.2g}, raw outputs {raw:.2g} (tolerance {DETECT_TOLERANCE['px']:g} px, "
              f"score {DETECT_TOLERANCE['score']:g})")
    if px > DETECT_TOLERANCE["px"] or score > DETECT_TOLERANCE["score"]:
        problems.append(f"faces differ from x86 beyond the tolerance: {px:g} px, score {score:.2g}")
    return detail, ("; ".join(problems) if problems else None)


def device_tests() -> list[str]:
    """tests/ files that need only the device side (no TensorFlow, training or conversion)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if p.name != "test_pi_check.py" and not NOT_DEVICE.search(p.read_text(errors="replace")))


def deselected() -> list[str]:
    """Node ids of device tests too slow to run emulated (deselect-under-emulation.txt here)."""
    rows = (line.split("#", 1)[0].strip() for line in DESELECT.read_text().splitlines()) if DESELECT.exists() else ()
    return [row for row in rows if row]


def check_tests(r: Runner, files: list[str], timeout: float) -> str:
    skip = [x for node in deselected() for x in ("--deselect", node)]
    p = r.run(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "-o", "addopts=", "-rfE",
               "--basetemp", r.work / f"pytest-{r.label}", *skip, *files], timeout, binfmt=True)
    rows = [x for x in p.stdout.splitlines() if x.strip()]
    if not rows and p.returncode != 0:
        raise StepError(f"the tests did not start ({_tail(p)}); they need unshare and a binfmt_misc of their own "
                        f"(Linux 6.7 or later, user namespaces allowed), else pass --no-tests")
    summary = rows[-1].strip("= ") if rows else "no output"
    if p.returncode == 124:
        raise StepError(f"timed out after {timeout:.0f} s ({summary})")
    if p.returncode not in (0, 5):
        failed = [x.split(" ", 1)[1].split(" - ")[0] for x in rows if x.startswith(("FAILED", "ERROR"))]
        raise StepError(f"{summary}" + (f": {', '.join(failed[:5])}" if failed else f" ({_tail(p)})"))
    return summary

def raw_problem(cmp: dict, final_op: str | None, strict: bool) -> str | None:
    """Every tensor must be identical to x86, except that the final int8 SOFTMAX may differ by 1 LSB:
    TFLite builds a different kernel for it on aarch64 (TFLITE_SOFTMAX_USE_UINT16_LUT), so a real Pi
    differs from x86 there too. --strict removes that allowance. The zoomed faces of the test-time
    views must be identical pixels."""
    for c in cmp.values():
        if "error" in c:
            return c["error"]
    zoomed = cmp.get("zoomed")
    if zoomed and zoomed["max"] != 0:
        return (f"the test-time views' zoomed faces differ from x86 by up to {zoomed['max']:g} grey levels "
                f"({zoomed['differ']} of {zoomed['values']} pixels)")
    out, before = cmp["output"], cmp.get("before_final")
    unit = " LSB" if out["int"] else ""
    if before and before["max"] != 0:
        return (f"the model's result before its final {final_op} differs from x86 by up to {before['max']:g}{unit} "
                f"({before['differ']} of {before['values']} values)")
    allowed = 1 if (final_op == "SOFTMAX" and out["int"] and before is not None and not strict) else 0
    if out["max"] > allowed:
        return (f"output differs from x86 by up to {out['max']:g}{unit} ({out['differ']} of {out['values']} values"
                + (", --strict" if strict and allowed == 0 and final_op == "SOFTMAX" else "") + ")")
    return None


def raw_line(cmp: dict, final_op: str | None, faces: int) -> str:
    out, before = cmp["output"], cmp.get("before_final")
    unit = " LSB" if out["int"] else ""
    parts = []
    if before is not None:
        parts.append(f"before {final_op}: max diff {before['max']:g}{unit}")
    parts.append(f"output: max diff {out['max']:g}{unit} ({out['differ']} of {out['values']} values; "
                 f"top class differs on {out['argmax_differ']} of {faces} faces)")
    if "zoomed" in cmp:
        parts.append(f"zoomed views: max diff {cmp['zoomed']['max']:g} ({cmp['zoomed']['values']} pixels)")
    return "; ".join(parts)


