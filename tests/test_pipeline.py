"""Detection, tracking and classification together, on the shipped sample and real videos."""

import cv2
import pytest

from edge_fer.classifier import load_classifier
from edge_fer.detectors.haar import HaarConfig, HaarDetector
from edge_fer.errors import ModelError
from edge_fer.pipeline import Pipeline, classify_image
from edge_fer.preprocess import to_gray
from edge_fer.runner import run_loop
from edge_fer.sources import open_source
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
