"""The ``edge-fer`` command end to end: click's runner for speed, real subprocesses for exit codes and stderr."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from edge_fer.cli import main
from support import (FER_NPZ, FIXTURES, MEDIA, ROOT, SAMPLE, SHIPPED_NETWORK, assert_one_line_error, copy_model,
                     make_video, run_cli)


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
    from edge_fer.labels import FER2013_LABELS

    r = metrics(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), ("a", "b", "c"))
    assert r.accuracy == 0.5
    assert r.per_class["b"]["precision"] == pytest.approx(1 / 3) and r.per_class["b"]["recall"] == 1.0
    assert r.per_class["c"]["f1"] == 0.0 and r.macro_f1 == pytest.approx((2 / 3 + 0.5 + 0) / 3)
    # classes neither in the labels nor in the answers are left out of the average, as scikit-learn does:
    # a folder of happy and sad photos, all right, scores 1, not 2/7
    two = metrics(np.array([3, 3, 4, 4]), np.array([3, 3, 4, 4]), FER2013_LABELS)
    assert two.macro_f1 == 1.0 and two.per_class["angry"]["f1"] == 0.0


def test_bench_json_on_synthetic_frames():
    result = invoke("bench", "--frames", "30", "--warmup", "5", "--threads", "1", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    row = record["rows"][0]
    assert row["status"] == "ok" and row["fps"] > 0
    assert record["frames"] == row["frames"] == 30 and 28 <= row["frames_with_faces"] <= 30  # warm-up left out
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


def test_bench_rows_count_the_frames_after_warm_up_like_the_header(video):
    """The table's faces column, the header and the JSON all leave the warm-up frames out."""
    result = invoke("bench", "--source", str(video), "--frames", "12", "--warmup", "5", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "12 frames after 5 warm-up" in result.stdout
    record = json.loads(result.stdout.splitlines()[-1])
    row = record["rows"][0]
    assert record["frames"] == row["frames"] == 12 and 10 <= row["frames_with_faces"] <= 12
    assert f"{row['frames_with_faces']:>4}/{12:<4}" in result.stdout


def test_predict_output_folder_that_cannot_be_made_is_one_line(tmp_path):
    taken = tmp_path / "out.jpg"
    taken.write_bytes(b"an image from before")
    assert_one_line_error(run_cli("predict", str(SAMPLE), str(SAMPLE), "--annotate", str(taken)),
                          "--annotate", "is a file")
    assert_one_line_error(run_cli("predict", str(SAMPLE), str(SAMPLE), "--plot", str(taken / "plots")),
                          "--plot: cannot make folder")
    assert taken.read_bytes() == b"an image from before"


def test_a_reader_that_stops_reading_is_not_an_error():
    """`edge-fer predict --json *.jpg | head -1`: the pipe closes before the output is written; exit 0, no noise."""
    proc = subprocess.Popen([sys.executable, "-m", "edge_fer.cli", "predict", "--json", str(SAMPLE), str(SAMPLE)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # long before the child has started: its first write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and "Traceback" not in err and "Exception ignored" not in err, err
    assert err == "", err


@pytest.mark.parametrize("model", [".", "/", "tests"])
def test_a_folder_as_model_is_one_line(model):
    assert_one_line_error(run_cli("predict", str(SAMPLE), "--model", model), "is a folder, not a model file")


def test_a_path_without_a_file_name_has_no_metadata_path():
    from edge_fer.errors import ModelError
    from edge_fer.metadata import metadata_path
    for path in (".", "/", "models/.."):
        with pytest.raises(ModelError, match="not a model file"):
            metadata_path(path)
    assert metadata_path("models/x.tflite").as_posix() == "models/x.json"


@pytest.mark.parametrize("field, value", [
    ("face_margin", None), ("extra", None), ("metrics", [1, 2]), ("source", "notes"), ("flip_average", "false"),
    ("input_size", [48]), ("input_size", [48, 0]), ("scaling", {"mean": 0, "std": None}), ("scaling", None),
    ("labels", None), ("labels", ["happy", 3]), ("sha256", 12), ("temperature", None), ("view_scales", None),
])
def test_each_malformed_metadata_field_is_one_model_error(tmp_path, field, value):
    from edge_fer.errors import ModelError
    from edge_fer.metadata import load_metadata
    model = copy_model(FIXTURES / "tiny_int8.tflite", tmp_path, **{field: value})
    with pytest.raises(ModelError, match=f"m.json: '{field}'") as caught:
        load_metadata(model)
    assert "\n" not in str(caught.value)


def test_hand_edited_metadata_with_null_fields_is_one_line(tmp_path):
    model = copy_model(FIXTURES / "tiny_int8.tflite", tmp_path, face_margin=None, extra=None)
    assert_one_line_error(run_cli("predict", str(SAMPLE), "--model", str(model)),
                          "m.json: 'face_margin' must be a number, not null")
    model = copy_model(FIXTURES / "tiny_int8.tflite", tmp_path, extra=None)
    assert_one_line_error(run_cli("eval", "--data", "missing.npz", "--model", str(model)),
                          "m.json: 'extra' must be a JSON object, not null")


@pytest.mark.parametrize("annotations, fragment", [
    ({"images": [{"boxes": [[1, 2, 3, 4]]}]}, "image 1: 'file' must be a file name"),
    ({"images": [{"file": "a.jpg"}]}, "image 1 (a.jpg): 'boxes' must be a list of [x, y, w, h] boxes, not None"),
    ({"images": [{"file": "a.jpg", "boxes": None}]}, "'boxes' must be a list"),
    ({"images": [{"file": "a.jpg", "boxes": [[1, 2, 3]]}]}, "'boxes' must be a list"),
    ({"images": [{"file": "a.jpg", "boxes": [], "ignore": [["x", 0, 1, 1]]}]}, "'ignore' must be a list"),
    ({"images": ["a.jpg"]}, "image 1 must be an object"),
    ({"images": {"a.jpg": [[1, 2, 3, 4]]}}, "'images' must be a list"),
])
def test_bad_face_annotations_are_one_line(tmp_path, annotations, fragment):
    from edge_fer.errors import EdgeFerError
    from edge_fer.facebench import load_annotated
    import shutil
    shutil.copy(SAMPLE, tmp_path / "a.jpg")
    (tmp_path / "annotations.json").write_text(json.dumps(annotations))
    with pytest.raises(EdgeFerError, match=re.escape(fragment)):
        load_annotated(tmp_path)


def test_bench_with_bad_face_annotations_is_one_line_before_any_run(tmp_path):
    (tmp_path / "annotations.json").write_text(json.dumps({"images": [{"file": "a.jpg", "boxes": None}]}))
    proc = run_cli("bench", "--faces", str(tmp_path), "--frames", "2", "--warmup", "0")
    assert_one_line_error(proc, "annotations.json: image 1 (a.jpg): 'boxes' must be a list")
    assert proc.stdout == ""


def _stalling_camera(frames_first: int, period: float = 0.0):
    """A real LiveSource whose grab delivers ``frames_first`` frames (one each ``period`` s), then none."""
    import threading
    import time

    from edge_fer.sources import LiveSource, _LatestFrame

    count = {"n": 0}
    closed = threading.Event()

    def grab():
        time.sleep(period or 0.01)
        if count["n"] >= frames_first:
            return None
        count["n"] += 1
        return np.full((4, 4), count["n"], np.uint8), None

    src = LiveSource("stalling camera", _LatestFrame(grab, None, "stall"), closed.set, frame_timeout=0.2)
    src.closed = closed
    return src


def test_bench_decode_waits_out_a_slow_live_source():
    """A camera slower than the frame timeout misses now and then: decode asks again, as the run loop does."""
    from edge_fer.bench import decode_all
    src = _stalling_camera(frames_first=100, period=0.3)  # each read waits 0.2 s, then once more
    buffered = decode_all(src, 3)
    seen = [int(f.gray[0, 0]) for f in buffered.frames]
    assert len(seen) == len(buffered.capture_s) == 3 and seen == sorted(set(seen))
    assert src.closed.is_set()


def test_bench_decode_of_a_stalled_live_source_is_a_source_error():
    from edge_fer.bench import decode_all
    from edge_fer.errors import SourceError
    src = _stalling_camera(frames_first=2)
    with pytest.raises(SourceError, match=r"no frame from stalling camera within 0\.2 s \(3 times in a row, "
                                          r"after [12] frames\)"):
        decode_all(src, 10, patience=3)
    assert src.closed.is_set()


@pytest.mark.parametrize("shape", ["column", "one-hot", "one-hot bool"])
def test_eval_reads_column_and_one_hot_labels_like_plain_ones(tmp_path, shape):
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (30, 48, 48), dtype=np.uint8), rng.integers(0, 7, 30)
    np.savez(tmp_path / "plain.npz", test_x=x, test_y=y)
    other = {"column": y[:, None], "one-hot": np.eye(7)[y], "one-hot bool": np.eye(7, dtype=bool)[y]}[shape]
    np.savez(tmp_path / "other.npz", test_x=x, test_y=other)
    plain = invoke("eval", "--data", str(tmp_path / "plain.npz"), "--json")
    result = invoke("eval", "--data", str(tmp_path / "other.npz"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == json.loads(plain.stdout)
    assert json.loads(result.stdout)["n"] == 30


@pytest.mark.parametrize("form", ["npz", "csv"])
def test_fer2013_class_numbers_are_read_by_name_for_a_model_that_orders_its_labels_otherwise(tmp_path, form):
    """A FER2013 file numbers angry..neutral 0..6; a model whose labels come alphabetically must see each face's
    class under its own number for that name, or eval scores it against the wrong class."""
    from edge_fer.datasets import load_split
    from edge_fer.labels import FER2013_LABELS

    rng = np.random.default_rng(2)
    x, y = rng.integers(0, 256, (14, 48, 48), dtype=np.uint8), np.arange(14) % 7
    data = tmp_path / f"faces.{form}"
    if form == "npz":
        np.savez(data, test_x=x, test_y=y)
    else:
        data.write_text("emotion,pixels,Usage\n" + "".join(
            f"{c},{' '.join(map(str, face.ravel()))},PrivateTest\n" for c, face in zip(y, x)))
    alphabetical = tuple(sorted(FER2013_LABELS))
    faces = load_split(data, "test", labels=alphabetical)
    assert [alphabetical[i] for i in faces.y] == [FER2013_LABELS[i] for i in y]
    assert load_split(data, "test").y.tolist() == y.tolist()  # FER2013's own order: as written


@pytest.mark.parametrize("y, fragment", [
    (np.zeros((30, 3)), "y of shape (n,), (n, 1) or one-hot (n, 7), got (30, 48, 48) and (30, 3)"),
    (np.zeros((30, 7)), "read as one-hot labels, but some rows mark no class"),
    (np.zeros((30, 2, 2)), "got (30, 48, 48) and (30, 2, 2)"),
    (np.full(30, 2.5), "y must hold whole class numbers 0..6"),
])
def test_eval_on_labels_of_another_shape_is_one_line(tmp_path, y, fragment):
    data = tmp_path / "faces.npz"
    np.savez(data, test_x=np.zeros((30, 48, 48), np.uint8), test_y=y)
    assert_one_line_error(run_cli("eval", "--data", str(data)), fragment)


# --- the service's config file in the other commands --------------------------------------------------------------------

def test_the_services_file_with_an_open_web_view_serves_the_other_commands(tmp_path):
    """``[http] listen = "0.0.0.0:8080"`` with the token in the unit's environment (absent from a shell) or in a
    token file: predict, eval and info serve no web view, so they take the file; run and bench --http refuse it
    without a token, and bench reads the token file when it serves the view."""
    data = tmp_path / "faces.npz"
    rng = np.random.default_rng(0)
    np.savez(data, test_x=rng.integers(0, 256, (8, 48, 48), dtype=np.uint8), test_y=rng.integers(0, 7, 8))
    (tmp_path / "token").write_text("s3cret\n")
    in_env = tmp_path / "in-env.toml"
    in_env.write_text('detector = "haar"\n[http]\nlisten = "0.0.0.0:8080"\n')
    with_file = tmp_path / "with-file.toml"
    with_file.write_text('detector = "haar"\n[http]\nlisten = "0.0.0.0:8080"\ntoken_file = "token"\n')
    no_token = {"EDGE_FER_HTTP_TOKEN": "", "EDGE_FER_HTTP_INSECURE": "", "EDGE_FER_CONFIG": ""}
    runner = CliRunner(env=no_token)
    for cfg in (in_env, with_file):
        for args in (["info", "--json"], ["eval", "--data", str(data), "--json"], ["predict", str(SAMPLE), "--json"]):
            result = runner.invoke(main, [*args, "--config", str(cfg)], catch_exceptions=False)
            assert result.exit_code == 0, (cfg.name, args, result.output)
            assert json.loads(result.stdout), args
    refused = "the web view would listen on 0.0.0.0:8080, beyond this machine, without a token"
    assert_one_line_error(run_cli("run", "--config", str(in_env), "--max-frames", "1", env=no_token),
                          f"{in_env}: http.listen: {refused}")
    assert_one_line_error(run_cli("bench", "--config", str(in_env), "--frames", "1", env=no_token),
                          f"{in_env}: http.listen: {refused}")
    assert_one_line_error(run_cli("bench", "--http", "0.0.0.0:8091", "--frames", "1", env=no_token),
                          "--http: the web view would listen on 0.0.0.0:8091, beyond this machine, without a token")
    result = runner.invoke(main, ["bench", "--config", str(with_file), "--http", "0.0.0.0:0", "--frames", "2",
                                  "--warmup", "0", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "bench: web view on http://0.0.0.0:" in result.stderr and "s3cret" not in result.output
    rows = json.loads(result.stdout)["rows"]
    assert [r["status"] for r in rows] == ["ok", "ok"] and rows[1]["model"].endswith(" + web view")


def test_on_a_terminal_an_image_is_named_on_its_own_line(tmp_path):
    """What the README's first command prints: on a real terminal (a pseudo-terminal here) each image's line
    names it, as when piped; a video's line is rewritten in place."""
    import pty

    primary, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "edge_fer.cli", "run", "--source", str(SAMPLE),
                             "--detector", "haar"], stdout=secondary, stderr=subprocess.DEVNULL, cwd=ROOT)
    os.close(secondary)
    out = b""
    try:
        while chunk := _read_pty(primary):
            out += chunk
    finally:
        proc.wait(timeout=120)
        os.close(primary)
    lines = out.decode().replace("\r\n", "\n").split("\n")
    assert proc.returncode == 0 and any(line.startswith(f"{SAMPLE.name}: frame      1 |") for line in lines), out


def _read_pty(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # the child closed its end
        return b""
