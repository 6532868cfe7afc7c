"""Detection, tracking and classification together, on the shipped sample and real videos; the run loop's
fault handling and rate limit."""

import logging
import threading
import time

import cv2
import numpy as np
import pytest

from edge_fer.classifier import load_classifier
from edge_fer.detectors.haar import HaarConfig, HaarDetector
from edge_fer.errors import ModelError
from edge_fer.pipeline import Pipeline, classify_image, detect, detector_view
from edge_fer.preprocess import to_gray
from edge_fer.runner import run_loop
from edge_fer.sources import Frame, LiveSource, _LatestFrame, open_source
from edge_fer.tracker import iou
from support import MEDIA, SAMPLE, make_video


@pytest.fixture(scope="module")
def classifier():
    return load_classifier(num_threads=1)


def test_sample_has_one_face_at_any_detection_width():
    gray = to_gray(cv2.imread(str(SAMPLE)))
    for width in (0, 320, 200):
        found = HaarDetector(HaarConfig(det_width=width)).detect(gray)
        assert len(found) == 1, width
        x, y, w, h = found[0].box
        assert 150 < x < 210 and 40 < y < 100 and 80 < w < 120  # the astronaut's face, in full-size pixels


def test_detect_near_refinds_a_tracked_face():
    gray = to_gray(cv2.imread(str(SAMPLE)))
    det = HaarDetector()
    box = det.detect(gray)[0].box
    shifted = (box[0] + 6, box[1] - 4, box[2], box[3])
    again = det.detect_near(gray, [shifted, (0, 400, 60, 60)])
    assert again[1] is None
    assert abs(again[0].box[0] - box[0]) < 12 and abs(again[0].box[2] - box[2]) < 20


def test_missing_cascade_is_a_model_error():
    with pytest.raises(ModelError, match="Haar cascade"):
        HaarDetector(HaarConfig(cascade="no_such_cascade.xml"))


def test_max_faces_keeps_largest(tmp_path):
    gray = to_gray(cv2.imread(str(SAMPLE)))
    big = cv2.resize(gray, None, fx=1.5, fy=1.5)
    canvas = cv2.hconcat([cv2.resize(gray, (big.shape[1] // 2, big.shape[0] // 2)), big[: big.shape[0] // 2]])
    det = HaarDetector(HaarConfig(max_faces=1, det_width=0))
    boxes = det.detect(canvas)
    assert len(boxes) <= 1


def test_video_tracks_keep_one_id(tmp_path, classifier):
    video = make_video(tmp_path / "v.mp4", frames=30)
    pipeline = Pipeline(classifier, HaarDetector(), detect_every=2, full_detect_every=10)
    results = []
    summary = run_loop(open_source(str(video)), pipeline, [], on_frame=results.append)
    assert summary.frames == 30 and summary.frames_with_faces >= 28
    assert {f.track for r in results for f in r.faces} == {1}
    detected = [r.frame for r in results if r.detected]
    assert detected[:3] == [1, 3, 5]
    face = results[-1].faces[0]
    assert face.emotion in classifier.labels and abs(sum(face.probs.values()) - 1) < 1e-3


def test_classify_image_gives_one_result_per_face(classifier):
    faces = classify_image(classifier, HaarDetector(), to_gray(cv2.imread(str(SAMPLE))), align=False)
    assert len(faces) == 1 and faces[0].to_dict()["box"] == list(faces[0].box)


@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
def test_real_video_face_in_almost_every_frame(classifier):
    pipeline = Pipeline(classifier, HaarDetector())
    summary = run_loop(open_source(str(MEDIA / "video_woman_talking.mp4")), pipeline, [])
    assert summary.frames == 464
    assert summary.frames_with_faces >= 0.97 * summary.frames


@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
@pytest.mark.parametrize("name, n_faces", [("photo_smiling_man.jpg", 1), ("photo_angry_man.jpg", 1),
                                           ("photo_no_faces_cartoon.jpg", 0)])
def test_real_photos(classifier, name, n_faces):
    gray = to_gray(cv2.imread(str(MEDIA / name)))
    assert len(classify_image(classifier, HaarDetector(), gray, align=False)) == n_faces


@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
def test_group_selfie_finds_the_six_people():
    gray = to_gray(cv2.imread(str(MEDIA / "photo_group_selfie_6people.jpg")))
    boxes = HaarDetector(HaarConfig(det_width=0, min_size=80, equalize=True)).detect(gray)
    assert len(boxes) == 6


@pytest.mark.media
@pytest.mark.skipif(not MEDIA.exists(), reason="../shared/media is absent")
@pytest.mark.parametrize("name, emotion", [("photo_smiling_man.jpg", "happy"), ("photo_angry_man.jpg", "angry")])
def test_shipped_model_reads_clear_expressions(classifier, name, emotion):
    gray = to_gray(cv2.imread(str(MEDIA / name)))
    assert classify_image(classifier, HaarDetector(), gray, align=False)[0].emotion == emotion


def test_shipped_sample_is_a_happy_face(classifier):
    faces = classify_image(classifier, HaarDetector(), to_gray(cv2.imread(str(SAMPLE))), align=False)
    assert faces[0].emotion == "happy"


# --- frames that change size, faults on a frame, the rate limit's heartbeat, colour/gray mapping -------------------

def scene_720p() -> np.ndarray:
    """A 1280x720 BGR scene with the shipped sample photo (one face) in its lower right corner."""
    scene = np.full((720, 1280, 3), 90, np.uint8)
    scene[208:, 768:] = cv2.imread(str(SAMPLE))
    return scene


class FrameList:
    """A source over ready-made images, read in order: ``live`` like a camera, or not, like a file."""

    def __init__(self, images, live: bool):
        self.name, self.live = "frames", live
        self._images = iter(images)
        self._index = 0

    def read(self):
        image = next(self._images, StopIteration)
        if image is StopIteration:
            return None
        self._index += 1
        gray = image if image is None or image.ndim == 2 else to_gray(image)
        return Frame(self._index, time.time(), gray, image if image is not None and image.ndim == 3 else None)

    def close(self):
        pass


def test_a_stream_that_comes_back_at_a_lower_resolution_is_tracked_at_its_new_size(classifier):
    """The tracked box of the 720p frame lies outside the 640x360 frame that follows (a stream reconnecting at a
    lower resolution): the tracking starts over at the new size instead of searching and cropping there. The
    source is not live, so any error would end the loop."""
    big = scene_720p()
    small = cv2.resize(big, (640, 360), interpolation=cv2.INTER_AREA)
    images = [big] * 6 + [small] * 7 + [big] * 5
    truth = {img.shape[:2]: HaarDetector().detect(img)[0].box for img in (big, small)}
    pipeline = Pipeline(classifier, HaarDetector(), detect_every=2, full_detect_every=10)
    results = []
    summary = run_loop(FrameList(images, live=False), pipeline, [], on_frame=results.append)
    assert summary.frames == len(images) and summary.skipped == 0
    for image, result in zip(images, results):
        height, width = image.shape[:2]
        assert len(result.faces) == 1, result.frame  # found again at once after each change, no stale box
        x, y, w, h = face_box = result.faces[0].box
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
        assert iou(face_box, truth[(height, width)]) > 0.6, (result.frame, face_box)
        assert result.faces[0].emotion in classifier.labels
    assert [r.frame for r in results if r.detected][:5] == [1, 3, 5, 7, 9]  # each size change detects at once
    assert results[6].detected and results[13].detected


def bad_frames():
    """What a misbehaving driver might hand over: an empty buffer, or none at all."""
    return [np.zeros((0, 1280), np.uint8), None]


def test_a_live_source_survives_frames_the_pipeline_fails_on(classifier, caplog):
    big = scene_720p()
    empty, missing = bad_frames()
    images = [big] * 3 + [empty] * 3 + [big] * 2 + [missing] * 2 + [big] * 3
    results = []
    with caplog.at_level(logging.ERROR, logger="edge_fer.runner"):
        summary = run_loop(FrameList(images, live=True), Pipeline(classifier, HaarDetector()), [],
                           on_frame=results.append)
    assert summary.skipped == 5 and summary.frames == 8 and summary.stopped_by == "end of source"
    logged = [r.getMessage() for r in caplog.records if "skipping it" in r.getMessage()]
    assert len(logged) == 2  # once per kind of error, not once per frame
    assert "frame 4 of frames" in logged[0] and "frame 9 of frames" in logged[1]
    assert [r.frame for r in results] == [1, 2, 3, 7, 8, 11, 12, 13]
    assert all(len(r.faces) == 1 and iou(r.faces[0].box, (936, 268, 108, 108)) > 0.6 for r in results)


@pytest.mark.parametrize("bad", bad_frames(), ids=["empty", "missing"])
def test_a_file_frame_the_pipeline_fails_on_still_ends_the_loop(classifier, bad):
    with pytest.raises(Exception):  # noqa: B017 (whatever the pipeline raised: the same frame fails on every run)
        run_loop(FrameList([scene_720p(), bad], live=False), Pipeline(classifier, HaarDetector()), [])


def test_a_slow_rate_cap_calls_on_wait_while_it_sleeps(classifier):
    """Under a cap of one frame in 1000 s the loop sleeps after its frame; ``on_wait`` (where the service feeds
    the watchdog) still runs every ``wait_beat`` seconds of the sleep."""
    stop = threading.Event()
    beats = []

    def on_wait():
        beats.append(time.monotonic())
        if len(beats) == 3:
            stop.set()

    summary = run_loop(FrameList([scene_720p()] * 5, live=True), Pipeline(classifier, HaarDetector()), [],
                       stop=stop, max_fps=0.001, on_wait=on_wait, wait_beat=0.01)
    assert summary.frames == 1 and len(beats) == 3 and summary.stopped_by == "signal"


def test_on_wait_is_not_called_while_a_live_source_delivers_nothing(classifier):
    """A camera that gives no frames: ``on_idle`` runs for each timed-out read, the reads follow each other
    without the cap's sleep in between, and ``on_wait`` never runs (the watchdog starves, as it should)."""

    def grab():  # a camera that never delivers a frame
        time.sleep(0.01)

    stop = threading.Event()
    idles, beats = [], []

    def on_idle(exc):
        idles.append(exc)
        if len(idles) == 3:
            stop.set()

    src = LiveSource("dead", _LatestFrame(grab, None, "dead"), lambda: None, frame_timeout=0.05)
    try:
        summary = run_loop(src, Pipeline(classifier, HaarDetector()), [], stop=stop, max_fps=0.02,
                           on_idle=on_idle, on_wait=lambda: beats.append(1), wait_beat=0.01)
    finally:
        src.close()
    assert summary.frames == 0 and len(idles) == 3 and beats == []


class ColourHaar(HaarDetector):
    """Haar run on the colour image: a detector that asks for colour, as BlazeFace does."""

    key = "colour-haar"
    wants_color = True


@pytest.mark.parametrize("lores", [(320, 180), (320, 240)], ids=["same-aspect", "4:3-lores"])
def test_boxes_found_in_colour_map_onto_a_gray_frame_of_any_shape(lores):
    """A Pi camera's gray frame is its lores stream: a 1280x720 colour frame with a 320x180 gray one, or a
    mismatched 320x240 one. Boxes found in colour land where that face is in the gray frame either way."""
    color = scene_720p()
    gray = to_gray(cv2.resize(color, lores, interpolation=cv2.INTER_AREA))
    frame = Frame(1, 0.0, gray, color)
    detector = ColourHaar()
    image, (fx, fy) = detector_view(detector, frame)
    assert image is color and (fx, fy) == (lores[0] / 1280, lores[1] / 720)
    (found,) = detect(detector, frame)
    cx, cy, cw, ch = detector.detect(color)[0].box
    expected = (cx * fx, cy * fy, cw * fx, ch * fy)
    assert all(abs(a - b) <= 1 for a, b in zip(found.box, expected)), (found.box, expected)
    x, y, w, h = found.box
    face = gray[y:y + h, x:x + w]
    assert HaarDetector(HaarConfig(min_size=20)).detect(cv2.resize(face, (w * 3, w * 3))) != []  # a face is there


def test_tracked_faces_are_refound_in_colour_at_another_aspect_ratio(classifier):
    """The tracked-face search maps boxes into the colour image and back with both factors."""
    color = scene_720p()
    gray = to_gray(cv2.resize(color, (320, 240), interpolation=cv2.INTER_AREA))
    pipeline = Pipeline(classifier, ColourHaar(), detect_every=1, full_detect_every=100)
    results = [pipeline.process(Frame(i, 0.0, gray, color)) for i in range(1, 5)]
    assert [r.detected for r in results] == [True] * 4
    boxes = [r.faces[0].box for r in results]
    assert all(iou(box, boxes[0]) > 0.6 for box in boxes) and {r.faces[0].track for r in results} == {1}
    assert abs(boxes[0][1] - 268 * 240 / 720) <= 3  # y scaled by 1/3, not by the width's 1/4
