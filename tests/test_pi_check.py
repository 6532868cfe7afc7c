"""scripts/pi-check: its bad-input paths (fast, offline, with stub tools) and, where qemu is here, a real run."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.devtools.pi_check import checks, common

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "pi-check"
QEMU = shutil.which("qemu-aarch64-static")
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
needs_keyring = pytest.mark.skipif(not KEYRING.exists(), reason="no debian-archive-keyring: a build stops before apt")


def pi_check(*args: str, path: str, python: str | None = None, timeout: float = 120,
             popen: bool = False, **env_extra: str):
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PI_CHECK_ROOT")}
    env.update(PATH=path, **env_extra)
    cmd = [python or sys.executable, str(SCRIPT), *args]
    if popen:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


def assert_one_error_line(proc, *fragments: str) -> str:
    """Could not run: exit status 2 and exactly one line on stderr, ``pi-check: error: ...``."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in lines if line.startswith("pi-check: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def stub(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


@pytest.fixture
def stubs(tmp_path):
    """A PATH with fake qemu, apt-get and dpkg-deb: the build runs offline up to where a stub fails."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    stub(bin_, "qemu-aarch64-static", 'echo "qemu-aarch64 version 7.2 (stub)"\n')
    stub(bin_, "dpkg-deb", 'mkdir -p "$3/usr/bin" && : > "$3/usr/bin/python3.11"\n')
    # apt-get: `update` succeeds; `install --download-only` drops one .deb into Dir::Cache::archives.
    stub(bin_, "apt-get", r'''
for a in "$@"; do case "$a" in Dir::Cache::archives=*) debs=${a#Dir::Cache::archives=};; esac; done
case " $* " in
  *" update "*) exit 0;;
  *" install "*) : > "$debs/python3.11_3.11.2-6_arm64.deb"; exit 0;;
esac
exit 1
''')
    for tool in ("sh", "mkdir", "sleep", "cat"):  # what the stubs themselves use
        real = shutil.which(tool)
        if real:
            os.symlink(real, bin_ / tool)
    return bin_


def leftovers(root: Path) -> list[str]:
    """Anything under the cache besides the lock and the build log: a half-built root would show here."""
    return sorted(p.name for p in root.iterdir() if p.name not in (".lock", "build.log")) if root.exists() else []


# ------------------------------------------------------------------------------------------ fast, offline


def test_missing_qemu_is_one_line_and_builds_nothing(tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    proc = pi_check("--root", str(tmp_path / "root"), path=str(empty))
    assert_one_error_line(proc, "qemu-aarch64-static not found", "apt-get install qemu-user-static",
                          "--install-tools")
    assert not (tmp_path / "root").exists()


def test_install_tools_without_apt_is_one_line(tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    proc = pi_check("--install-tools", "--root", str(tmp_path / "root"), path=str(empty))
    assert_one_error_line(proc, "qemu-aarch64-static not found", "apt-get is not available")


def test_missing_unshare_for_the_tests_is_one_line(tmp_path, stubs):
    proc = pi_check("--root", str(tmp_path / "root"), path=str(stubs))
    assert_one_error_line(proc, "unshare not found", "--no-tests")


def test_missing_apt_get_for_the_build_is_one_line(tmp_path, stubs):
    (stubs / "apt-get").unlink()
    proc = pi_check("--no-tests", "--root", str(tmp_path / "root"), path=str(stubs))
    assert_one_error_line(proc, "apt-get not found", "Debian or Ubuntu")
    assert leftovers(tmp_path / "root") == []


def test_python_without_the_device_stack_is_one_line(tmp_path, stubs):
    fake = stub(tmp_path, "python", "exit 1\n")
    proc = pi_check("--no-tests", "--python", str(fake), "--root", str(tmp_path / "root"), path=str(stubs))
    assert_one_error_line(proc, "lacks pip", "--python")


@pytest.mark.parametrize("args", [["--cpu", "pi3"], ["--faces", "0"], ["--frames", "-1"], ["--bogus"]])
def test_bad_arguments_exit_2(tmp_path, args):
    proc = pi_check(*args, "--root", str(tmp_path / "root"), path=os.environ.get("PATH", ""))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("pi-check: error: ")
    assert not (tmp_path / "root").exists()


@needs_keyring
def test_failed_package_download_leaves_nothing_and_a_rerun_says_the_same(tmp_path, stubs):
    stub(stubs, "apt-get", 'echo "Err:1 http://deb.debian.org/debian bookworm InRelease"\n'
                           'echo "E: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  '
                           'Could not resolve host: deb.debian.org"\nexit 100\n')
    root = tmp_path / "root"
    messages = []
    for _ in range(2):
        proc = pi_check("--no-tests", "--root", str(root), path=str(stubs))
        messages.append(assert_one_error_line(proc, "downloading the arm64 package lists failed",
                                              "E: Failed to fetch", "build.log"))
        assert leftovers(root) == []
    assert messages[0] == messages[1]
    assert "Could not resolve host" in (root / "build.log").read_text()


@needs_keyring
def test_failed_wheel_download_leaves_nothing_and_a_rerun_says_the_same(tmp_path, stubs):
    python = stub(tmp_path, "python", '''
case "$*" in
  *"pip install"*) echo "ERROR: Could not find a version that satisfies the requirement ai-edge-litert==2.3.0"
                   echo "ERROR: No matching distribution found for ai-edge-litert==2.3.0"; exit 1;;
esac
exit 0
''')
    root = tmp_path / "root"
    messages = []
    for _ in range(2):
        proc = pi_check("--no-tests", "--python", str(python), "--root", str(root), path=str(stubs))
        messages.append(assert_one_error_line(proc, "installing the aarch64 wheels failed",
                                              "ai-edge-litert==2.3.0"))
        assert leftovers(root) == []
    assert messages[0] == messages[1]


@needs_keyring
def test_killed_build_leaves_nothing(tmp_path, stubs):
    stub(stubs, "apt-get", "sleep 60\n")
    root = tmp_path / "root"
    proc = pi_check("--no-tests", "--root", str(root), path=str(stubs), popen=True)
    try:
        deadline = time.monotonic() + 30
        while not list(root.glob(".build-*")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(root.glob(".build-*")), "the build never started"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert leftovers(root) == []


@needs_keyring
def test_a_stale_build_folder_is_cleared(tmp_path, stubs):
    """A build killed with SIGKILL cannot clean up; the next run removes its folder before building."""
    root = tmp_path / "root"
    (root / ".build-0123456789ab-dead").mkdir(parents=True)
    (root / ".build-0123456789ab-dead" / "sysroot").mkdir()
    stub(stubs, "apt-get", 'echo "E: Failed to fetch"; exit 100\n')
    proc = pi_check("--no-tests", "--root", str(root), path=str(stubs))
    assert_one_error_line(proc, "E: Failed to fetch")
    assert leftovers(root) == []


def test_requirements_pin_every_device_dependency():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    wanted = [re.split(r"[<>=!~ ;\[]", line.strip())[0].lower()
              for line in cfg["options"]["install_requires"].splitlines() if line.strip()]
    pinned = {}
    for line in common.REQUIREMENTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[name.strip().lower()] = version.strip()
    assert wanted and all(pinned.get(name) for name in wanted), (wanted, pinned)
    assert not {"tensorflow", "tensorflow-cpu", "keras"} & set(pinned)


def test_cpuinfo_files_describe_the_boards():
    for model, part in (("pi4", "0xd08"), ("pi5", "0xd0b")):  # Cortex-A72, Cortex-A76
        text = (common.HERE / f"cpuinfo-{model}").read_text()
        assert text.count("processor\t:") == 4
        assert f"CPU part\t: {part}" in text and "CPU implementer\t: 0x41" in text


def test_device_tests_leave_out_the_workstation_side():
    files = checks.device_tests()
    assert "tests/test_pi_check.py" not in files
    for name in files:
        text = (ROOT / name).read_text()
        assert not re.search(r"^\s*(import|from)\s+(tensorflow|training|convert)\b", text, re.M), name
    if (ROOT / "tests" / "test_cli.py").exists():
        assert "tests/test_cli.py" in files


def test_raw_comparison_rules(tmp_path):
    np = pytest.importorskip("numpy")
    from scripts.devtools.pi_check import probe

    raw_problem = checks.raw_problem

    def compare(ref: dict, got: dict) -> dict:
        np.savez(tmp_path / "ref.npz", **ref)
        np.savez(tmp_path / "got.npz", **got)
        return probe.compare(str(tmp_path / "ref.npz"), str(tmp_path / "got.npz"))

    out = np.array([[-128, 0, 127], [5, 6, 7]], np.int8)
    before = np.array([[1, 2, 3], [4, 5, 6]], np.int8)
    out_1lsb = out.copy()
    out_1lsb[1, 2] += 1
    before_1lsb = before.copy()
    before_1lsb[0, 0] -= 1

    same = compare(dict(output=out, before_final=before), dict(output=out, before_final=before))
    assert same["output"]["max"] == 0 and raw_problem(same, "SOFTMAX", strict=False) is None

    one = compare(dict(output=out, before_final=before), dict(output=out_1lsb, before_final=before))
    assert (one["output"]["max"], one["output"]["differ"], one["output"]["faces_differ"]) == (1, 1, 1)
    assert one["output"]["argmax_differ"] == 0
    assert raw_problem(one, "SOFTMAX", strict=False) is None  # the final int8 SOFTMAX may differ by 1 LSB ...
    assert "1 LSB" in raw_problem(one, "SOFTMAX", strict=True)  # ... unless --strict
    assert "1 LSB" in raw_problem(one, "FULLY_CONNECTED", strict=False)  # and only a SOFTMAX

    two = out.copy()
    two[0, 0] += 2
    assert "2 LSB" in raw_problem(compare(dict(output=out, before_final=before),
                                          dict(output=two, before_final=before)), "SOFTMAX", strict=False)
    inside = compare(dict(output=out, before_final=before), dict(output=out, before_final=before_1lsb))
    assert "before its final SOFTMAX differs" in raw_problem(inside, "SOFTMAX", strict=False)

    no_final = compare(dict(output=out), dict(output=out_1lsb))  # the final op was delegated: no allowance
    assert "1 LSB" in raw_problem(no_final, None, strict=False)
    shapes = compare(dict(output=out), dict(output=out[:1]))
    assert "shapes" in raw_problem(shapes, None, strict=False)

    zoomed = np.zeros((2, 2, 48, 48), np.uint8)  # the test-time views' zoomed pixels must be identical
    zoomed_off = zoomed.copy()
    zoomed_off[1, 0, 3, 4] = 1
    assert raw_problem(compare(dict(output=out, zoomed=zoomed), dict(output=out, zoomed=zoomed)), None,
                       strict=True) is None
    assert "zoomed faces differ from x86 by up to 1" in raw_problem(
        compare(dict(output=out, zoomed=zoomed), dict(output=out, zoomed=zoomed_off)), None, strict=False)


def test_the_raw_probe_zooms_every_face_at_every_candidate_zoom(tmp_path):
    np = pytest.importorskip("numpy")
    from scripts.devtools.pi_check import probe

    faces = np.random.default_rng(0).integers(0, 256, (3, 48, 48), dtype=np.uint8)
    np.save(tmp_path / "f.npy", faces)
    probe.raw(str(tmp_path / "f.npy"), str(tmp_path / "r.npz"))
    zoomed = np.load(tmp_path / "r.npz")["zoomed"]
    assert zoomed.shape == (3, 2, 48, 48)  # face by face: zooms 0.9 and 0.95
    from edge_fer.preprocess import zoom_faces

    np.testing.assert_array_equal(zoomed[:, 0], zoom_faces(faces, 0.9))


def test_detect_comparison_rules():
    face = {"box": [10, 20, 30, 30], "score": 0.9, "landmarks": [[15.0, 25.0], [30.0, 25.0]]}
    ref = {"faces": {"blazeface/a.jpg": [face], "blazeface-full/a.jpg": []}}
    raw = {"blazeface/a.jpg/regressors": {"max": 0.2}}

    detail, problem = checks.detect_line(ref, ref, raw)
    assert problem is None and "1 faces in 2 model/photo pairs" in detail and "0 px" in detail
    near = {"faces": {**ref["faces"], "blazeface/a.jpg": [{**face, "landmarks": [[15.5, 25.0], [30.0, 25.0]]}]}}
    assert checks.detect_line(ref, near, raw)[1] is None  # within 1 px
    off = {"faces": {**ref["faces"], "blazeface/a.jpg": [{**face, "box": [12, 20, 30, 30]}]}}
    assert "beyond the tolerance: 2 px" in checks.detect_line(ref, off, raw)[1]
    missing = {"faces": {**ref["faces"], "blazeface/a.jpg": []}}
    assert "blazeface/a.jpg: 0 faces, x86 1" in checks.detect_line(ref, missing, raw)[1]


# ------------------------------------------------------------------------------------------ real run


@pytest.mark.slow
@pytest.mark.skipif(QEMU is None, reason="qemu-aarch64-static is not installed (apt-get install qemu-user-static)")
def test_fast_check_passes_under_emulation(tmp_path):
    """The fast part for real: builds (or reuses) .pi-root, runs the device path as a Pi 5 and compares
    100 faces with x86. Needs the network the first time (Debian and PyPI)."""
    out = tmp_path / "verdict.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--fast", "--cpu", "pi5", "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=1200)
    if proc.returncode == 2 and "failed" in proc.stderr and ("download" in proc.stderr or "wheels" in proc.stderr):
        pytest.skip(f"no network for the first build: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "verdict: PASS" in proc.stdout
    result = json.loads(out.read_text())
    pi5 = result["models"]["pi5"]
    assert pi5["python"].startswith("3.11.")
    assert {"import", "detect", "info", "predict", "run", "raw"} <= set(pi5["steps"])
    assert pi5["raw"]["output"]["max"] <= 1
    if "before_final" in pi5["raw"]:  # everything up to the final op is bit-identical to x86
        assert pi5["raw"]["before_final"]["max"] == 0
