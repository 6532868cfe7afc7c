"""pi-check: run edge-fer's device path on the Raspberry Pi OS software stack, emulated, and compare with x86.

Raspberry Pi OS (bookworm, 64-bit) runs Debian's aarch64 Python 3.11. This script builds that
stack from nothing, once (Debian's arm64 python3.11 and its library closure unpacked into a
root, plus the aarch64 wheels of the device dependencies; cached in .pi-root/), then, under
qemu user-mode emulation with a Pi 4 (Cortex-A72) and a Pi 5 (Cortex-A76) CPU model:

  1. imports every edge_fer module (no TensorFlow in the root, none imported),
  2. runs `edge-fer info`, `edge-fer predict` on photos and `edge-fer run --source VIDEO
     --max-frames 30 --output jsonl`,
  3. runs the shipped model on a few hundred FER2013 test faces and compares its raw int8
     tensors with the same run on this x86 machine,
  4. runs both BlazeFace face detectors on the photos and compares their raw outputs and
     decoded faces with x86 (within 1 px and 0.001 in score),
  5. runs the device tests (tests/ without the training/conversion ones; as a Pi 5, or
     --tests-cpu) unless --no-tests or --fast,

and prints a verdict. Exit status: 0 all checks passed, 1 a check failed, 2 it could not run
(a tool is missing, a download failed, bad arguments): then one `pi-check: error:` line.

Timings under emulation say nothing about a Pi's speed; none are reported as such.

    scripts/pi-check                  # both CPU models, with the device tests
    scripts/pi-check --fast           # the fast part: no device tests, fewer faces
    scripts/pi-check --cpu pi4 --faces 500 --json verdict.json
    scripts/pi-check --detect-only    # only the import and BlazeFace checks
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import common
from .checks import (check_detect, check_env, check_info, check_predict, check_raw, check_run, check_tests,
                     compare_faces, deselected, detect_line, device_tests, raw_line, raw_problem)
from .common import CPUS, DESELECT, MEDIA_PHOTOS, MEDIA_VIDEO, PROBE, REPO, SAMPLE, SHARED, Fatal, say
from .root import default_python, ensure_root, find_tools
from .runner import Runner, StepError, kill_all
from .verdict import verdict


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="pi-check", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    ap.add_argument("--cpu", choices=[*CPUS, "all"], default="all",
                    help="CPU model: pi4 (Cortex-A72), pi5 (Cortex-A76) or all (default)")
    ap.add_argument("--faces", type=int, default=None, help="faces to compare with x86 (default 300; --fast: 100)")
    ap.add_argument("--frames", type=int, default=30, help="frames for `edge-fer run` (default 30)")
    ap.add_argument("--tests", action=argparse.BooleanOptionalAction, default=None,
                    help="run the device tests under emulation (default: yes; --fast: no)")
    ap.add_argument("--tests-cpu", choices=[*CPUS, "all"], default=None,
                    help="CPU model(s) the device tests run on (default pi5, or the --cpu one: the tests exercise "
                         "Python code; the kernels of both models are checked by the raw outputs)")
    ap.add_argument("--fast", action="store_true", help="the quick part: no device tests, 100 faces")
    ap.add_argument("--detect-only", action="store_true",
                    help="only the import and BlazeFace detector checks (no info, predict, run, raw or tests)")
    ap.add_argument("--jobs", type=int, default=None,
                    help="CPU models checked at once (default: 2 with 4 or more cores, else 1)")
    ap.add_argument("--strict", action="store_true",
                    help="require the final output tensor to be identical too (see the int8 SOFTMAX note)")
    ap.add_argument("--shared", type=Path, default=SHARED,
                    help="folder with data/fer2013.npz and media/ (default ../shared); without them the sample "
                         "photo, a video made from it and synthetic faces are used")
    ap.add_argument("--root", type=Path, default=Path(os.environ.get("PI_CHECK_ROOT", REPO / ".pi-root")),
                    help="where the built root is cached (default .pi-root/; env PI_CHECK_ROOT)")
    ap.add_argument("--rebuild", action="store_true", help="build the root again even if a cached one exists")
    ap.add_argument("--install-tools", action="store_true",
                    help="apt-get install qemu-user-static when it is missing (implied with CI=true as root)")
    ap.add_argument("--python", default=None,
                    help="the x86 Python for the reference run and pip (default: this one if it has "
                         "ai-edge-litert, else .venv/bin/python)")
    ap.add_argument("--test-timeout", type=float, default=1200, help="seconds for the device tests per CPU model")
    ap.add_argument("--json", type=Path, default=None, help="also write the verdict as JSON to this file")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (raw outputs, test temp files)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no progress lines, only the verdict")
    args = ap.parse_args(argv)
    if args.tests is None:
        args.tests = not (args.fast or args.detect_only)
    if args.faces is None:
        args.faces = 100 if args.fast else 300
    if args.faces < 1 or args.frames < 1:
        ap.error("--faces and --frames must be at least 1")
    if args.tests_cpu is None:
        args.tests_cpu = args.cpu if args.cpu != "all" else "pi5"
    elif args.cpu != "all" and args.tests_cpu not in (args.cpu, "all"):
        ap.error(f"--tests-cpu {args.tests_cpu} is not among the checked CPU models (--cpu {args.cpu})")
    if args.jobs is None:
        args.jobs = 2 if (os.cpu_count() or 1) >= 4 else 1
    if args.jobs < 1:
        ap.error("--jobs must be at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse(argv)
    common.QUIET = args.quiet

    def terminate(*_):
        kill_all()
        sys.exit(143)  # so cleanup (finally) runs on a kill

    signal.signal(signal.SIGTERM, terminate)
    try:
        return check(args)
    except Fatal as exc:
        print(f"pi-check: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        kill_all()
        print("pi-check: error: interrupted", file=sys.stderr)
        return 130
    finally:
        kill_all()


def check(args) -> int:
    t_start = time.monotonic()
    args.python = args.python or default_python()
    tools = find_tools(args)
    models = list(CPUS) if args.cpu == "all" else [args.cpu]
    cache = args.root.resolve()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        lock = open(cache / ".lock", "w")
    except OSError as exc:
        raise Fatal(f"cannot use {cache} for the root: {exc.strerror}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say(f"waiting for another pi-check run ({cache / '.lock'})")
        fcntl.flock(lock, fcntl.LOCK_EX)
    t0 = time.monotonic()
    root, manifest, built = ensure_root(cache, tools, args.python, args.rebuild)
    setup_s = time.monotonic() - t0
    work = Path(tempfile.mkdtemp(prefix="pi-check-"))
    try:
        return run_checks(args, tools, models, root, manifest, built, setup_s, work, t_start)
    finally:
        if args.keep:
            say(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_checks(args, tools, models, root, manifest, built, setup_s, work, t_start) -> int:
    qemu_version = subprocess.run([tools["qemu"], "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    media, fer_npz = args.shared / "media", args.shared / "data" / "fer2013.npz"
    photos = [SAMPLE] + [media / n for n in MEDIA_PHOTOS if (media / n).exists()]
    x86 = Runner(None, None, tools, args.python, work)
    results: dict = {"root": str(root), "built_now": built, "setup_seconds": round(setup_s, 1),
                     "qemu": qemu_version, "packages": manifest["packages"], "wheels": manifest["wheels"],
                     "root_bytes": manifest.get("bytes"), "models": {}}

    # Inputs and the x86 reference: same inputs, same code, this machine's x86 wheels.
    say(f"x86 reference run ({args.python})")
    faces_npy, video = work / "faces.npy", work / "video.mp4"
    if (media / MEDIA_VIDEO).exists():
        video = media / MEDIA_VIDEO

    def make_video() -> str:
        if video.parent == media:
            return f"{MEDIA_VIDEO} (../shared/media)"
        return x86.json([PROBE, "video", video, max(40, args.frames)], 300)["source"]

    def x86_frames() -> Path:
        x86.json([PROBE, "frames", video, args.frames, work / "frames-x86.npz"], 300)
        return work / "frames-x86.npz"

    ref: dict = {}
    steps = [("env", lambda: check_env(x86)), ("models", lambda: x86.json([PROBE, "models"], 600)),
             ("detect", lambda: check_detect(x86, photos))]
    if not args.detect_only:
        steps += [("faces", lambda: x86.json([PROBE, "faces", faces_npy, args.faces, fer_npz], 300)),
                  ("video", make_video), ("predict", lambda: check_predict(x86, photos)),
                  ("run", lambda: check_run(x86, video, args.frames)), ("frames", x86_frames),
                  ("raw", lambda: check_raw(x86, faces_npy))]
    for name, fn in steps:
        try:
            ref[name] = fn()
        except StepError as exc:
            raise Fatal(f"the x86 reference run failed at {name}: {exc}") from None
    results.update(faces_source=ref["faces"]["source"] if "faces" in ref else "-",
                   video=ref.get("video", "-"), photos=[p.name for p in photos])
    results["x86"] = {"python": ref["env"]["python"], "versions": ref["env"]["versions"],
                      "final_op": ref["raw"][0]["final_op"] if "raw" in ref else None}
    tests = device_tests() if args.tests else []

    test_models = set(CPUS if args.tests_cpu == "all" else [args.tests_cpu]) if tests else set()
    for model in models:
        results["models"][model] = {"cpu": CPUS[model][0], "board": CPUS[model][1], "steps": {}}
    if args.jobs > 1 and len(models) > 1:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for future in [pool.submit(check_model, model, results["models"][model], args, tools, root, work, ref,
                                       photos, video, faces_npy, tests if model in test_models else [])
                           for model in models]:
                future.result()
    else:
        for model in models:
            check_model(model, results["models"][model], args, tools, root, work, ref, photos, video, faces_npy,
                        tests if model in test_models else [])

    results["ok"] = all(s["ok"] for m in results["models"].values() for s in m["steps"].values())
    results["seconds"] = round(time.monotonic() - t_start, 1)
    print(verdict(results, args))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if results["ok"] else 1


def compared(x86: Runner, ref: Path, got: Path, key: str) -> dict:
    """``probe compare`` of two result files on the host; a failure becomes an error under ``key``."""
    try:
        return x86.json([PROBE, "compare", ref, got], 300)
    except StepError as exc:
        return {key: {"error": f"comparing failed: {exc}"}}


def check_model(model, res, args, tools, root, work, ref, photos, video, faces_npy, tests) -> None:
    """Every check for one CPU model; results go into ``res``."""
    cpu, board = CPUS[model]
    r = Runner(root, model, tools, args.python, work)
    x86 = Runner(None, None, tools, args.python, work)
    say(f"{board} ({cpu}) under qemu: import, BlazeFace" + ("" if args.detect_only else ", info, predict, run, raw outputs")
        + (f", device tests ({len(tests)} files)" if tests else ""))

    def step(name, fn):
        t = time.monotonic()
        try:
            value = fn()
            res["steps"][name] = {"ok": True, "seconds": round(time.monotonic() - t, 1)}
            return value
        except (StepError, ValueError, KeyError, TypeError, OSError) as exc:
            error = str(exc) if isinstance(exc, StepError) else f"{exc.__class__.__name__}: {exc}"
            res["steps"][name] = {"ok": False, "error": error, "seconds": round(time.monotonic() - t, 1)}
            say(f"{model} {name}: FAILED: {error}")
            return None

    env = step("import", lambda: check_env(r))
    if env:
        res["python"], res["versions"] = env["python"], env["versions"]
        opt = env.get("optional_missing") or {}
        res["steps"]["import"]["detail"] = (f"{len(env['modules']) - len(opt)} edge_fer modules, no TensorFlow"
                                            + (f"; without optional extras: {', '.join(opt)}" if opt else ""))
    found = step("detect", lambda: check_detect(r, photos))
    if found:
        detail, problem = detect_line(ref["detect"][0], found[0], compared(x86, ref["detect"][1], found[1], "raw"))
        res["steps"]["detect"]["detail"] = detail
        if problem:
            res["steps"]["detect"].update(ok=False, error=problem)
    if args.detect_only:
        return
    info = step("info", lambda: check_info(r))
    if info:
        res["steps"]["info"]["detail"] = f"{info['machine']}, {info['backend']}, Haar cascades found"
    pred = step("predict", lambda: check_predict(r, photos))
    if pred:
        n = sum(len(rec["faces"]) for rec in pred)
        res["steps"]["predict"]["vs_x86"] = vs = compare_faces(ref["predict"], pred)
        res["steps"]["predict"]["detail"] = (f"{n} face{'s' if n != 1 else ''} in {len(photos)} "
                                             f"photo{'s' if len(photos) != 1 else ''}; {vs}")
    run = step("run", lambda: check_run(r, video, args.frames))
    if run:
        with_faces = sum(1 for rec in run if rec["faces"])
        res["steps"]["run"]["vs_x86"] = vs = compare_faces(ref["run"], run)
        res["steps"]["run"]["detail"] = f"{len(run)} jsonl frames, {with_faces} with faces; {vs}"
        if vs != "identical to x86":  # is it the pixels the decoder delivers, or what the device path does with them?
            decoded = r.work / f"frames-{r.label}.npz"
            try:
                r.json([PROBE, "frames", video, args.frames, decoded], 600)
                d = x86.json([PROBE, "compare", ref["frames"], decoded], 300)["frames"]
                res["steps"]["run"]["decoded_vs_x86"] = d
                res["steps"]["run"]["detail"] += (
                    f" (the decoded frames themselves differ from x86's in {d['faces_differ']} of {args.frames}, "
                    f"by up to {d['max']:g} gray levels: OpenCV's video decoding is not bit-exact across CPUs)"
                    if d["max"] else " (with identical decoded frames)")
            except (StepError, KeyError) as exc:
                res["steps"]["run"]["detail"] += f" (decoded frames not compared: {exc})"
    raw = step("raw", lambda: check_raw(r, faces_npy))
    if raw:
        cmp = compared(x86, ref["raw"][1], raw[1], "output")
        res["raw"] = {"final_op": raw[0]["final_op"], "faces": raw[0]["faces"], **cmp}
        if not any("error" in c for c in cmp.values()):
            res["steps"]["raw"]["detail"] = raw_line(cmp, raw[0]["final_op"], raw[0]["faces"])
        problem = raw_problem(cmp, raw[0]["final_op"], args.strict)
        if problem:
            res["steps"]["raw"].update(ok=False, error=problem)
    if tests:
        summary = step("tests", lambda: check_tests(r, tests, args.test_timeout))
        if summary:
            n_skip = len(deselected())
            res["steps"]["tests"]["detail"] = (f"{summary} ({len(tests)} files"
                                               + (f", {n_skip} left out emulated: {DESELECT.name}" if n_skip else "") + ")")


