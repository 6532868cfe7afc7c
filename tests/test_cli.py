"""The ``edge-fer`` command end to end: click's runner for speed, real subprocesses for exit codes and stderr."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edge_fer.cli import main
from support import FER_NPZ, FIXTURES, MEDIA, ROOT, SAMPLE, SHIPPED_NETWORK, assert_one_line_error, make_video, run_cli


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("media") / "clip.mp4", frames=20)


def invoke(*args):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


def test_run_jsonl_schema(video):
    result = invoke("run", "--source", str(video), "--output", "jsonl", "--max-frames", "10")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["frame"] for r in records] == list(range(1, 11))
    for r in records:
        assert set(r) == {"frame", "ts", "fps", "faces"} and isinstance(r["fps"], float)
    face = records[-1]["faces"][0]
    assert set(face) == {"box", "emotion", "score", "probs", "track"}
    assert len(face["box"]) == 4 and face["emotion"] in face["probs"] and face["track"] == 1
    assert abs(sum(face["probs"].values()) - 1) < 1e-2 and face["score"] == max(face["probs"].values())


def test_run_defaults_to_shipped_sample_and_records(tmp_path):
    out = tmp_path / "annotated.mp4"
    result = invoke("run", "--record", str(out))
    assert result.exit_code == 0, result.output
    assert "1 face" in result.stdout and out.stat().st_size > 1000
    assert "1 frames" in result.stderr


def test_run_image_folder_reports_each_image(tmp_path):
    import shutil
    for name in ("a.jpg", "b.jpg"):
        shutil.copy(SAMPLE, tmp_path / name)
    result = invoke("run", "--source", str(tmp_path), "--output", "jsonl")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["image"] for r in records] == ["a.jpg", "b.jpg"] and all(len(r["faces"]) == 1 for r in records)


def test_run_limits(video):
    result = invoke("run", "--source", str(video), "--output", "none", "--duration", "0")
    assert result.exit_code == 0 and result.stdout == "" and "--duration" in result.stderr


def test_predict_json_annotate_and_plot(tmp_path):
    ann, plot = tmp_path / "ann.jpg", tmp_path / "probs.png"
    result = invoke("predict", str(SAMPLE), "--json", "--annotate", str(ann), "--plot", str(plot))
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["image"] == str(SAMPLE) and len(record["faces"]) == 1
    assert ann.stat().st_size > 1000 and plot.stat().st_size > 500


def test_eval_on_npz_with_plot(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "faces.npz"
    np.savez(data, test_x=rng.integers(0, 256, (40, 48, 48), dtype=np.uint8), test_y=rng.integers(0, 7, 40))
    plot = tmp_path / "cm.png"
    result = invoke("eval", "--data", str(data), "--json", "--plot", str(plot))
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert {"accuracy", "macro_f1", "n", "per_class", "confusion"} <= set(metrics)
    assert metrics["n"] == 40 and np.array(metrics["confusion"]).sum() == 40 and plot.exists()


def test_eval_metrics_match_definitions():
    from edge_fer.evaluate import metrics
    r = metrics(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), ("a", "b", "c"))
    assert r.accuracy == 0.5
    assert r.per_class["b"]["precision"] == pytest.approx(1 / 3) and r.per_class["b"]["recall"] == 1.0
    assert r.per_class["c"]["f1"] == 0.0 and r.macro_f1 == pytest.approx((2 / 3 + 0.5 + 0) / 3)


def test_bench_json_on_synthetic_frames():
    result = invoke("bench", "--frames", "30", "--warmup", "5", "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    row = record["rows"][0]
    assert row["status"] == "ok" and row["frames_with_faces"] >= 30 and row["fps"] > 0
    assert set(row["stages_ms"]) == {"capture", "detect", "preprocess", "classify", "output", "total"}
    assert row["ms_per_face"] > 0 and row["size_mb"] > 0


def test_bench_table_compares_models(video):
    result = invoke("bench", "--source", str(video), "--frames", "15", "--warmup", "2",
                    "--model", str(SHIPPED_NETWORK), "--model", str(FIXTURES / "missing.tflite"))
    assert result.exit_code == 0, result.output
    assert SHIPPED_NETWORK.name in result.stdout and "error: model not found" in result.stdout


def test_info_json():
    result = invoke("info", "--json")
    data = json.loads(result.stdout)
    assert data["backend"] == "ai-edge-litert" and data["haar_cascades"] is True
    assert data["model"]["labels"][3] == "happy"
    assert set(data["face_models"]) == {"face_detection_short_range.tflite", "face_detection_full_range.tflite"}


@pytest.mark.parametrize("args, fragment", [
    (["run", "--camera", "57"], "camera 57 does not open"),
    (["run", "--source", "gopher://x"], "unknown source scheme"),
    (["run", "--source", "missing.mp4"], "source not found"),
    (["run", "--model", "missing.tflite"], "model not found"),
    (["predict", "README.md"], "cannot read image"),
    (["eval", "--data", "missing.npz"], "dataset not found"),
    (["run", "--camera", "0", "--source", "x.mp4"], "either --camera or --source"),
])
def test_user_mistakes_are_one_line(args, fragment):
    assert_one_line_error(run_cli(*args), fragment)


def test_corrupt_model_and_wrong_labels_are_one_line(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00garbage" * 100)
    assert_one_line_error(run_cli("run", "--model", str(bad)), "cannot load model")
    import shutil
    model = tmp_path / "m.tflite"
    shutil.copy(SHIPPED_NETWORK, model)
    meta = json.loads(SHIPPED_NETWORK.with_suffix(".json").read_text())
    meta["labels"] = ["happy", "sad"]
    (tmp_path / "m.json").write_text(json.dumps(meta))
    assert_one_line_error(run_cli("predict", str(SAMPLE), "--model", str(model)), "labels list 2")


def test_empty_folder_and_unreadable_video(tmp_path):
    assert_one_line_error(run_cli("run", "--source", str(tmp_path)), "no images in folder")
    bad = tmp_path / "x.mp4"
    bad.write_bytes(b"not a video")
    assert_one_line_error(run_cli("run", "--source", str(bad)), "cannot read video")


def test_device_path_never_imports_tensorflow(video):
    code = ("import sys; from edge_fer.cli import main\n"
            f"try:\n    main(['run', '--source', {str(video)!r}, '--output', 'none', '--max-frames', '5'])\n"
            "except SystemExit:\n    pass\n"
            "main.main(['info'], standalone_mode=False)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'sklearn', 'training', 'convert'))\n"
            "print('LEAKED', bad)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "LEAKED []" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
def test_real_video_subprocess_jsonl():
    proc = run_cli("run", "--source", str(MEDIA / "video_webcam_man_expressions.mp4"), "--output", "jsonl")
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(records) == 49 and sum(bool(r["faces"]) for r in records) >= 45


@pytest.mark.skipif(not FER_NPZ.exists(), reason="../shared/data is absent")
def test_eval_on_fer2013_val_split():
    proc = run_cli("eval", "--data", str(FER_NPZ), "--split", "val", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 3589


def test_http_stream_is_read_as_a_live_source(video):
    """A real HTTP server on loopback serving the clip: the URL path of --source."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(video.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{video.name}"
        proc = run_cli("run", "--source", url, "--output", "jsonl", "--max-frames", "5", timeout=60)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 5


def test_display_without_gui_is_one_line(video):
    import cv2
    if "GUI" in cv2.getBuildInformation() and "NO" not in cv2.getBuildInformation().split("GUI:")[1][:40]:
        pytest.skip("this OpenCV has GUI support")
    assert_one_line_error(run_cli("run", "--source", str(video), "--display"), "--display needs")
