"""Frame sources on real files, a live-camera reader on a real (threaded) grabber, picamera2 on a stand-in."""

import sys
import threading
import time
import types

import cv2
import numpy as np
import pytest

from edge_fer.errors import SourceError
from edge_fer.sources import (FrameTimeout, ImageSource, LiveSource, VideoFileSource, _LatestFrame, lores_size,
                              open_picamera, open_source)
from support import SAMPLE, assert_one_line_error, make_video, run_cli


def test_video_file_is_read_in_order(tmp_path):
    video = make_video(tmp_path / "v.mp4", frames=12)
    src = open_source(str(video), need_color=True)
    assert isinstance(src, VideoFileSource) and not src.live
    frames = []
    while (f := src.read()) is not None:
        frames.append(f)
    src.close()
    assert [f.index for f in frames] == list(range(1, 13))
    assert frames[0].gray.ndim == 2 and frames[0].color.shape[2] == 3


def test_image_and_folder_sources(tmp_path):
    src = open_source(str(SAMPLE))
    assert isinstance(src, ImageSource) and src.read().name == SAMPLE.name and src.read() is None
    for name in ("b.png", "a.jpg"):
        cv2.imwrite(str(tmp_path / name), np.zeros((20, 20, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    names = [f.name for f in iter(open_source(str(tmp_path)).read, None)]
    assert names == ["a.jpg", "b.png"]


@pytest.mark.parametrize("spec, message", [
    ("ftp://example/x", "unknown source scheme"),
    ("/no/such/file.mp4", "source not found"),
])
def test_bad_specs(spec, message):
    with pytest.raises(SourceError, match=message):
        open_source(spec)


def test_empty_folder_and_unreadable_files(tmp_path):
    with pytest.raises(SourceError, match="no images in folder"):
        open_source(str(tmp_path))
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\0" * 1000)
    with pytest.raises(SourceError, match="cannot read video"):
        open_source(str(bad))
    img = tmp_path / "broken.jpg"
    img.write_bytes(b"nope")
    with pytest.raises(SourceError, match="cannot read image"):
        open_source(str(img)).read()


def test_missing_camera_is_a_clear_error():
    with pytest.raises(SourceError, match="camera 57 does not open"):
        open_source(57)


def test_latest_frame_skips_stale_frames_and_survives_failures():
    """A fast producer and a slow consumer: the consumer always gets the newest frame; failing grabs
    (an unplugged camera) are retried instead of ending the source."""
    counter = {"n": 0}

    def grab():
        counter["n"] += 1
        time.sleep(0.002)
        if 20 <= counter["n"] < 25:
            return None  # a glitch
        return np.full((4, 4), counter["n"] % 256, np.uint8), None

    reader = _LatestFrame(grab, reopen=None, name="test")
    src = LiveSource("test", reader, on_close=lambda: None, frame_timeout=2.0)
    first = src.read()
    time.sleep(0.2)
    second = src.read()
    assert second.gray[0, 0] > first.gray[0, 0] + 5  # frames in between were dropped, not queued
    src.close()
    assert src.read() is None


def test_live_source_times_out_when_camera_stalls(caplog):
    stalled = threading.Event()

    def grab():
        if stalled.is_set():
            time.sleep(0.01)
            return None
        stalled.set()
        return np.zeros((2, 2), np.uint8), None

    src = LiveSource("stall", _LatestFrame(grab, None, "stall"), lambda: None, frame_timeout=0.2)
    assert src.read() is not None
    for _ in range(2):
        with pytest.raises(FrameTimeout):
            src.read()
    src.close()
    # the failing grabs (retried with backoff all along) are logged once, not once per retry
    assert [r.getMessage() for r in caplog.records if r.name == "edge_fer.sources"] == \
        ["camera stall: read failed, retrying with backoff"]


class _StandInPicamera2:
    """The slice of picamera2's API the source uses; the real module needs libcamera (a Pi)."""

    instances: list = []

    def __init__(self, camera_num=0):
        if camera_num > 0:
            raise IndexError("list index out of range")
        self.started = self.closed = False
        self.configured = None
        _StandInPicamera2.instances.append(self)

    def create_video_configuration(self, main, lores):
        return {"main": main, "lores": lores}

    def configure(self, config):
        self.configured = config

    def start(self):
        self.started = True

    def _yuv(self):
        w, h = self.configured["lores"]["size"]
        yuv = np.zeros((h * 3 // 2, w), np.uint8)
        yuv[:h] = 100  # the Y plane: the gray image
        return yuv

    def capture_array(self, name="main"):
        assert name == "lores"
        time.sleep(0.005)
        return self._yuv()

    def capture_arrays(self, names):
        w, h = self.configured["main"]["size"]
        return (np.zeros((h, w, 3), np.uint8), self._yuv()), {}

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


@pytest.fixture
def picamera2_standin(monkeypatch):
    module = types.ModuleType("picamera2")
    module.Picamera2 = _StandInPicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    _StandInPicamera2.instances.clear()
    return _StandInPicamera2


def test_picamera_lores_y_plane_is_the_gray_frame(picamera2_standin):
    src = open_source("picamera", width=640, height=480)
    frame = src.read()
    assert frame.gray.shape == (240, 320) and frame.gray.dtype == np.uint8 and (frame.gray == 100).all()
    assert frame.color is None
    cam = picamera2_standin.instances[0]
    assert cam.configured["lores"]["format"] == "YUV420" and cam.started
    src.close()
    assert cam.closed


def test_picamera_with_colour_for_display(picamera2_standin):
    src = open_picamera(0, need_color=True)
    frame = src.read()
    assert frame.color.shape == (480, 640, 3) and frame.gray.shape == (240, 320)
    src.close()


@pytest.mark.parametrize("size, lores", [((640, 480), (320, 240)), ((1280, 720), (320, 180)),
                                         ((1920, 1080), (320, 180)), ((1640, 1232), (320, 240)),
                                         ((160, 120), (160, 120)), ((1280, 1024), (320, 256))])
def test_lores_keeps_the_main_streams_aspect_ratio(size, lores):
    assert lores_size(size) == lores


@pytest.mark.parametrize("need_color", [False, True])
def test_picamera_at_720p_gives_a_gray_frame_of_the_same_shape(picamera2_standin, need_color):
    src = open_source("picamera", width=1280, height=720, need_color=need_color)
    frame = src.read()
    src.close()
    config = picamera2_standin.instances[0].configured
    assert config["main"]["size"] == (1280, 720) and config["lores"]["size"] == (320, 180)
    assert frame.gray.shape == (180, 320) and (frame.gray == 100).all()
    assert (frame.color.shape if need_color else frame.color) == ((720, 1280, 3) if need_color else None)


def test_picamera_errors(picamera2_standin, monkeypatch):
    with pytest.raises(SourceError, match="Pi camera 1 does not start"):
        open_source("picamera:1")
    for spec in ("picamera:front", "picamera:", "picamera:-1", "picamera:1.5"):
        with pytest.raises(SourceError, match=f"picamera:N needs a camera number .*got '{spec}'"):
            open_source(spec)
    assert picamera2_standin.instances == []  # refused before any camera is touched
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(SourceError, match="python3-picamera2"):
        open_source("picamera")


def test_a_camera_name_instead_of_a_number_is_one_line():
    done = run_cli("run", "--source", "picamera:front", "--max-frames", "1")
    assert_one_line_error(done, "picamera:N needs a camera number", "'picamera:front'")
