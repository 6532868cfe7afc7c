"""``edge-fer eval --detect`` on real photos: the device's detector and crop, and no-face photos counted."""

import json
import shutil

import cv2
import numpy as np
import pytest

from edge_fer.build import make_detector
from edge_fer.classifier import load_classifier
from edge_fer.config import resolve
from edge_fer.pipeline import classify_image
from support import SAMPLE, assert_one_line_error, run_cli


@pytest.fixture
def photos(tmp_path):
    """happy/astronaut.jpg (one face) and neutral/blank.png (none): two photos, one without a face."""
    root = tmp_path / "photos"
    (root / "happy").mkdir(parents=True)
    (root / "neutral").mkdir()
    shutil.copy(SAMPLE, root / "happy" / "astronaut.jpg")
    cv2.imwrite(str(root / "neutral" / "blank.png"), np.full((240, 320, 3), 128, np.uint8))
    return root


def test_a_photo_without_a_face_is_counted_not_dropped(photos):
    proc = run_cli("eval", "--detect", "--data", str(photos), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["photos"] == 2 and result["no_face"] == 1 and result["no_face_rate"] == 0.5
    assert result["no_face_by_class"]["neutral"] == 1 and result["faces"]["n"] == 1
    by_file = {p["file"]: p for p in result["per_photo"]}
    assert by_file["neutral/blank.png"]["emotion"] is None and by_file["neutral/blank.png"]["faces"] == 0
    astronaut = by_file["happy/astronaut.jpg"]
    # The photo's answer is exactly what predict gives for its largest face.
    detector = make_detector(resolve({}, {}, read_secrets=False))  # the default detector, as the command uses
    expected = max(classify_image(load_classifier(), detector, cv2.imread(str(SAMPLE)), align=True),
                   key=lambda f: f.box[2] * f.box[3])
    assert astronaut["emotion"] == expected.emotion and astronaut["box"] == list(expected.box)
    assert astronaut["score"] == pytest.approx(expected.score, abs=1e-4)
    assert result["accuracy"] == (0.5 if astronaut["emotion"] == "happy" else 0.0)


def test_the_table_has_a_no_face_row(photos, tmp_path):
    plot = tmp_path / "cm.png"
    proc = run_cli("eval", "--detect", "--data", str(photos), "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("no face "))
    assert row.split()[2] == "1"
    assert "photos 2   with a face 1   no face 1 (50.0%)" in proc.stdout
    assert "no face in: neutral/blank.png" in proc.stdout and plot.exists()


def test_bad_photo_folders_are_one_line(tmp_path):
    assert_one_line_error(run_cli("eval", "--detect", "--data", str(tmp_path / "missing")), "dataset not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy(SAMPLE, empty / "loose.jpg")  # a photo, but in no class folder
    assert_one_line_error(run_cli("eval", "--detect", "--data", str(empty)), "no photos in class folders")
    (empty / "cheerful").mkdir()
    assert_one_line_error(run_cli("eval", "--detect", "--data", str(empty)), "folder name is not a label")
    npz = tmp_path / "faces.npz"
    np.savez(npz, test_x=np.zeros((2, 48, 48), np.uint8), test_y=np.zeros(2))
    assert_one_line_error(run_cli("eval", "--detect", "--data", str(npz)), "is not a folder")


def test_shared_media_photos(shared_dir, tmp_path):
    """The real photos of ../shared/media: three with a face, the cartoon without one, all four counted."""
    media = shared_dir / "media"
    layout = {"angry": "photo_angry_man.jpg", "sad": "photo_crying_woman_occluded.jpg",
              "happy": "photo_smiling_man.jpg", "surprise": "photo_no_faces_cartoon.jpg"}
    for label, name in layout.items():
        if not (media / name).exists():
            pytest.skip(f"{media / name} is missing")
        (tmp_path / label).mkdir()
        shutil.copy(media / name, tmp_path / label / name)
    proc = run_cli("eval", "--detect", "--data", str(tmp_path), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    by_file = {p["file"]: p for p in result["per_photo"]}
    assert result["photos"] == 4 and result["faces"]["n"] + result["no_face"] == 4
    assert by_file["surprise/photo_no_faces_cartoon.jpg"]["emotion"] is None
    assert by_file["happy/photo_smiling_man.jpg"]["emotion"] == "happy"
