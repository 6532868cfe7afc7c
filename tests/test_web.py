"""The web view of ``edge-fer run --http``: a real run on a video, a real HTTP client, a real Chromium.

Every test talks to an ``edge-fer run`` subprocess over 127.0.0.1 with ``http.client``, or, for how the
view behaves while frames stop, to a real view in this process that the test hands frames to as the
vision loop does (so it decides when the "camera" stalls); no part of the server is replaced. Timing
checks compare frame rates with a wide margin; waits have generous deadlines.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edge_fer.config import ConfigError, HttpSettings, resolve
from edge_fer.pipeline import FrameResult
from edge_fer.sources import Frame
from edge_fer.web.frames import FrameHub
from edge_fer.web.server import WebView
from browser import Browser
from service_helpers import (SAMPLE, SLOWDOWN, Broker, EdgeFer, StreamServer, free_port, make_video, start_edge_fer,
                             wait_until)
from support import MEDIA, assert_one_line_error, run_cli

TALKING = MEDIA / "video_woman_talking.mp4"
SIZE = (480, 360)


# --- helpers ---------------------------------------------------------------------------------------------------------

def request(port: int, path: str, method: str = "GET", headers: dict[str, str] | None = None,
            timeout: float = 10.0) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


def get_json(port: int, path: str, **kw) -> tuple[int, dict]:
    status, _, body = request(port, path, **kw)
    return status, json.loads(body)


def wait_serving(run: EdgeFer, port: int, timeout: float = 60.0) -> None:
    """Until /healthz says ok (the model is loaded and frames flow)."""
    def ok() -> bool:
        assert run.proc.poll() is None, f"edge-fer exited {run.proc.returncode}:\n{run.stderr[-3000:]}"
        try:
            status, body = get_json(port, "/healthz", timeout=2)
        except (OSError, ValueError):
            return False
        return status == 200 and body["status"] == "ok"

    wait_until(ok, timeout, "the web view to serve frames")


def stream_parts(port: int, count: int, path: str = "/stream.mjpg", timeout: float = 20.0) -> list[bytes]:
    """The first ``count`` JPEG parts of the MJPEG stream, read as a browser would."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        ctype = resp.headers["Content-Type"]
        assert ctype.startswith("multipart/x-mixed-replace; boundary=")
        boundary = b"--" + ctype.split("boundary=", 1)[1].encode()
        parts = []
        while len(parts) < count:
            line = resp.readline()
            if not line:
                raise AssertionError(f"the stream ended after {len(parts)} parts")
            if line.strip() != boundary:
                continue
            headers = {}
            while (line := resp.readline().strip()):
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            assert headers["content-type"] == "image/jpeg"
            parts.append(resp.read(int(headers["content-length"])))
        return parts
    finally:
        conn.close()


def metrics(port: int, **kw) -> dict:
    status, headers, body = request(port, "/metrics", **kw)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(body.decode())}


def sample(families: dict, family: str, name: str | None = None, **labels: str) -> float:
    for s in families[family].samples:
        if s.name == (name or family) and all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    raise AssertionError(f"no sample {name or family}{labels} in {families[family].samples}")


def frame_rate(port: int, seconds: float) -> float:
    """Frames per second of the loop over ``seconds``, from the frames counter."""
    before = sample(metrics(port), "edge_fer_frames", "edge_fer_frames_total")
    t0 = time.monotonic()
    time.sleep(seconds)
    after = sample(metrics(port), "edge_fer_frames", "edge_fer_frames_total")
    return (after - before) / (time.monotonic() - t0)


def still_video(path: Path, frames: int = 60) -> Path:
    """An MP4 whose frames are all the same (the sample photo on gray): any pixel that changes is annotation."""
    image = cv2.imread(str(SAMPLE))
    w, h = SIZE
    side = int(h * 0.8)
    canvas = np.full((h, w, 3), 90, np.uint8)
    canvas[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side] = \
        cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 15, SIZE)
    for _ in range(frames):
        writer.write(canvas)
    writer.release()
    return path


def drawn_box(drawn: np.ndarray, near: tuple[int, int, int, int], slack: int = 15) -> tuple[int, int, int]:
    """The rectangle outline drawn near ``near`` (x, y, w, h), as (left, right, bottom).

    Its sides are the columns drawn over most of the face's height, its bottom the lowest row drawn
    over most of its width (the label sits on the top edge). The box of the frame that was encoded
    may differ a little from the one in the state read before it.
    """
    x, y, w, h = near
    drawn = cv2.dilate(drawn.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # 1-pixel lines, blurred by JPEG
    x0, y0 = max(0, x - slack), max(0, y - slack)
    region = drawn[y0:y + h + slack, x0:x + w + slack]
    cols = np.flatnonzero(region.sum(axis=0) >= 0.7 * h)
    rows = np.flatnonzero(region.sum(axis=1) >= 0.7 * w)
    assert len(cols) and len(rows), "no box outline near the face"
    return x0 + int(cols.min()), x0 + int(cols.max()), y0 + int(rows.max())


def stream_status(port: int) -> int:
    """The status a new /stream.mjpg client gets (the connection is closed right after)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/stream.mjpg")
        resp = conn.getresponse()
        try:
            return resp.status
        finally:
            resp.close()
    finally:
        conn.close()


def raw_client(port: int, path: str) -> socket.socket:
    """A client that sends its request and reads nothing."""
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s


def server_events(port: int, timeout: float = 10.0) -> Iterator[dict]:
    """The /api/events messages as they come (each one's JSON); a gap over ``timeout`` seconds fails."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    resp = None
    try:
        conn.request("GET", "/api/events")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
        while line := resp.readline():
            if line.startswith(b"data: "):
                yield json.loads(line[6:])
    finally:
        if resp is not None:
            resp.close()
        conn.close()


def gray_frame(index: int, size: tuple[int, int]) -> tuple[FrameResult, Frame]:
    w, h = size
    image = np.full((h, w), 90, np.uint8)
    image[h // 4:3 * h // 4, w // 4:3 * w // 4] = 200
    return FrameResult(frame=index, ts=time.time(), fps=10.0, faces=[]), Frame(index, time.time(), image)


def feed(view: WebView, index: int, size: tuple[int, int] = (320, 240)) -> None:
    """One frame, handed over as the vision loop does (the sink call, then on_frame)."""
    result, frame = gray_frame(index, size)
    view.write(result, frame)
    view.record(result)


class Camera:
    """Frames for a view at about 10 per second until the ``with`` ends (the camera stalls)."""

    def __init__(self, view: WebView, size: tuple[int, int] = (320, 240)):
        self.view, self.size = view, size
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-camera", daemon=True)

    def _run(self) -> None:
        index = 0
        while not self._stop.wait(0.1):
            index += 1
            feed(self.view, index, self.size)

    def __enter__(self) -> Camera:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def a_view(**settings) -> WebView:
    return WebView(HttpSettings(**{"listen": "127.0.0.1:0", "stall": 1.0, **settings}))


def stop(run: EdgeFer) -> None:
    if run.proc.poll() is None:
        rc, seconds = run.terminate(signal.SIGTERM)
        assert rc == 0, run.stderr
        assert seconds < 5 * SLOWDOWN, "a connected viewer does not hold up the exit"


# --- one run on a video, shared by the tests that only look ----------------------------------------------------------

@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return still_video(tmp_path_factory.mktemp("media") / "still.mp4")


@pytest.fixture(scope="module")
def served(tmp_path_factory, clip):
    """(port, run, raw frame): ``edge-fer run`` on the still video, looped, with the view on 127.0.0.1."""
    tmp = tmp_path_factory.mktemp("served")
    port = free_port()
    run = start_edge_fer(tmp, ["--source", str(clip), "--loop", "--output", "none", "--max-fps", "25",
                               "--http", f"127.0.0.1:{port}", "--http-max-clients", "2", "-v"])
    try:
        wait_serving(run, port)
        ok, raw = cv2.VideoCapture(str(clip)).read()
        assert ok
        yield port, run, raw
    finally:
        try:
            stop(run)
        finally:
            run.kill()


def test_page_is_self_contained(served):
    port, run, _ = served
    status, headers, body = request(port, "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    page = body.decode()
    for needed in ("stream.mjpg", "api/events", "EventSource", ".bar"):
        assert needed in page
    lower = page.lower()
    for external in ('src="http', "src='http", 'href="http', "@import", "url(", "//fonts.", "cdn"):
        assert external not in lower, f"the page must not load {external}... from elsewhere"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, body = request(port, "/", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) == len(page.encode())


def test_stream_parts_decode_and_show_the_face_box(served):
    port, _, raw = served
    _, state = get_json(port, "/api/state")
    x, y, w, h = state["record"]["faces"][0]["box"]
    parts = stream_parts(port, 5)
    assert len(set(parts)) >= 2, "the stream moves on (a new JPEG per frame, the video is looped)"
    for jpeg in parts:
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == raw.shape
        drawn = np.abs(image.astype(int) - raw.astype(int)).max(axis=2) > 40  # what annotation changed
        assert 0 < drawn.mean() < 0.1, "a box and a label, nothing else"
        left, right, bottom = drawn_box(drawn, (x, y, w, h))
        assert abs(left - x) <= 8 and abs(right - (x + w)) <= 8 and abs(bottom - (y + h)) <= 8, \
            f"the box drawn ({left}..{right}, bottom {bottom}) is around the face at {(x, y, w, h)}"


def test_snapshot_state_and_health(served):
    port, _, raw = served
    status, headers, body = request(port, "/snapshot.jpg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == raw.shape
    status, state = get_json(port, "/api/state")
    assert status == 200
    device = state["device"]
    assert device["model"].endswith((".tflite", ".json")) and device["backend"] and device["detector"]
    assert len(device["labels"]) == 7 and device["source"].endswith("still.mp4")
    st, rec = state["state"], state["record"]
    assert set(st) == {"ts", "emotion", "score", "probs", "faces", "fps", "frames", "dropped", "uptime"}
    assert st["faces"] == 1 and st["emotion"] in device["labels"] and st["fps"] > 0 and st["dropped"] == 0
    assert set(rec) == {"frame", "ts", "fps", "faces"} and rec["faces"][0]["track"] >= 1
    assert abs(sum(rec["faces"][0]["probs"].values()) - 1) < 0.01
    status, health = get_json(port, "/healthz")
    assert status == 200 and health["status"] == "ok" and health["last_frame_age"] < 5 * SLOWDOWN


def test_metrics_parse_with_prometheus_client(served):
    port, _, _ = served
    m = metrics(port)
    frames = sample(m, "edge_fer_frames", "edge_fer_frames_total")
    assert frames > 0 and m["edge_fer_frames"].type == "counter"
    assert sample(m, "edge_fer_faces", "edge_fer_faces_total") >= sample(
        m, "edge_fer_frames_with_faces", "edge_fer_frames_with_faces_total") > 0
    emotions = {s.labels["emotion"]: s.value for s in m["edge_fer_emotions"].samples}
    assert len(emotions) == 7 and sum(emotions.values()) == sample(m, "edge_fer_faces", "edge_fer_faces_total")
    hist = m["edge_fer_stage_seconds"]
    assert hist.type == "histogram"
    for stage in ("capture", "detect", "preprocess", "classify", "output", "total"):
        count = sample(m, "edge_fer_stage_seconds", "edge_fer_stage_seconds_count", stage=stage)
        assert count == pytest.approx(frames, abs=3)  # scraped while the loop runs
        assert sample(m, "edge_fer_stage_seconds", "edge_fer_stage_seconds_bucket", stage=stage, le="+Inf") == count
    assert 0 < sample(m, "edge_fer_fps") <= 40
    assert sample(m, "edge_fer_faces_in_frame") == 1
    assert sample(m, "edge_fer_camera_reconnects", "edge_fer_camera_reconnects_total") == 0
    assert sample(m, "edge_fer_last_frame_age_seconds") < 5 * SLOWDOWN and sample(m, "edge_fer_uptime_seconds") > 0
    info = m["edge_fer_model_info"].samples[0]  # an info metric: a gauge of 1 with labels, in this format
    assert info.value == 1 and info.labels["backend"] and info.labels["model"] and info.labels["detector"]
    assert m["edge_fer_device_info"].samples[0].labels["source"].endswith("still.mp4")
    assert "edge_fer_mqtt_dropped" not in m, "no MQTT metrics without MQTT"
    for name in ("edge_fer_http_stream_clients", "edge_fer_http_event_clients", "edge_fer_http_jpegs"):
        assert name in m


def test_unknown_paths_404_and_wrong_methods_405(served):
    port, _, _ = served
    for path in ("/nope", "/index.html", "/../../etc/passwd", "/%2e%2e/etc/passwd", "/static/", "/metrics/",
                 "/edge_fer/web/page.html", "//etc/passwd"):
        status, _, body = request(port, path)
        assert status == 404, path
        assert b"root:" not in body and b"<html" not in body
    for method, path in (("POST", "/metrics"), ("PUT", "/"), ("DELETE", "/api/state"), ("POST", "/stream.mjpg")):
        status, headers, _ = request(port, path, method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD", (method, path)
    assert request(port, "/nope", method="POST")[0] == 404


def test_stream_clients_are_capped_and_a_client_that_never_reads_does_not_slow_the_loop(served):
    port, _, _ = served
    window = 3.0 * SLOWDOWN  # emulated, a few frames a second: a longer window counts enough of them
    before = frame_rate(port, window)
    stalled = []
    for _ in range(2):  # --http-max-clients 2: both slots taken by clients that never read a byte
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        stalled.append(s)
    try:
        wait_until(lambda: sample(metrics(port), "edge_fer_http_stream_clients") == 2, 10, "2 stream clients")
        status, headers, _ = request(port, "/stream.mjpg")
        assert status == 503 and headers["Retry-After"]
        time.sleep(2.0)  # the clients' buffers fill up; the server's writes to them block
        during = frame_rate(port, window)
        assert during > 0.5 * before, f"{during:.1f} fps with stalled viewers vs {before:.1f} without"
        status, _ = get_json(port, "/api/state")
        assert status == 200, "other requests are still served"
    finally:
        for s in stalled:
            s.close()
    wait_until(lambda: sample(metrics(port), "edge_fer_http_stream_clients") == 0, 15, "the slots freed")
    assert len(stream_parts(port, 2)) == 2


def test_metrics_count_mqtt_messages_and_drops_while_the_broker_is_away(tmp_path, clip):
    with Broker(tmp_path / "broker") as broker:
        port = free_port()
        run = start_edge_fer(tmp_path, ["--source", str(clip), "--loop", "--output", "none", "--max-fps", "20",
                                        "--http", str(port), "--mqtt-host", "127.0.0.1", "--mqtt-port",
                                        str(broker.port), "--mqtt-queue", "1", "--mqtt-faces-interval", "0.2"])
        try:
            wait_serving(run, port)
            wait_until(lambda: sample(metrics(port), "edge_fer_mqtt_connected") == 1, 15, "mqtt connected")
            wait_until(lambda: sample(metrics(port), "edge_fer_mqtt_sent", "edge_fer_mqtt_sent_total") > 0, 15,
                       "messages sent")
            broker.stop()
            wait_until(lambda: sample(metrics(port), "edge_fer_mqtt_connected") == 0, 15, "mqtt disconnected")
            before = sample(metrics(port), "edge_fer_mqtt_dropped", "edge_fer_mqtt_dropped_total")
            wait_until(lambda: sample(metrics(port), "edge_fer_mqtt_dropped", "edge_fer_mqtt_dropped_total") > before,
                       15, "messages dropped while the broker is away (a queue of 1)")
            dropped = sample(metrics(port), "edge_fer_mqtt_dropped", "edge_fer_mqtt_dropped_total")
            assert get_json(port, "/api/state")[1]["state"]["dropped"] >= dropped
            stop(run)
        finally:
            run.kill()


# --- a source that stalls ----------------------------------------------------------------------------------------------

def test_health_turns_503_while_the_camera_stalls_and_200_when_it_is_back(tmp_path):
    avi = make_video(tmp_path / "cam.avi", frames=150, fourcc="MJPG", fps=30)
    camera = StreamServer(avi.read_bytes(), 150).start()
    port = free_port()
    run = start_edge_fer(tmp_path, ["--source", f"http://127.0.0.1:{camera.port}/cam.avi", "--output", "none",
                                    "--http", str(port), "--http-stall", "2"])
    try:
        wait_serving(run, port)
        camera.stop()  # the network camera goes away: its connection just stops delivering

        def stalled() -> bool:
            status, body = get_json(port, "/healthz")
            return status == 503 and body["status"] == "stalled"

        wait_until(stalled, 15, "/healthz 503")
        status, body = get_json(port, "/healthz")
        assert "no frame from http://127.0.0.1" in body["reason"] and "threshold 2 s" in body["reason"]
        assert sample(metrics(port), "edge_fer_last_frame_age_seconds") > 2
        status, _, _ = request(port, "/snapshot.jpg")
        assert status == 200, "the last frame is still there to look at"
        camera = StreamServer(avi.read_bytes(), 150, port=camera.port).start()
        wait_serving(run, port, 30)
        assert sample(metrics(port), "edge_fer_camera_reconnects", "edge_fer_camera_reconnects_total") >= 1
        stop(run)
    finally:
        run.kill()
        camera.stop()


def test_a_reload_keeps_the_view_and_its_viewers_unless_its_settings_change(tmp_path, clip):
    port, other = free_port(), free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'source = "{clip}"\nloop = true\noutput = "none"\nmax_fps = 20.0\n[http]\nlisten = "{port}"\n')
    run = start_edge_fer(tmp_path, ["--config", str(cfg)])
    try:
        wait_serving(run, port)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/stream.mjpg")
        viewer = conn.getresponse()
        assert viewer.status == 200
        cfg.write_text(cfg.read_text().replace("max_fps = 20.0", "max_fps = 15.0"))
        run.proc.send_signal(signal.SIGHUP)
        run.wait_stderr("configuration reloaded (changed: max_fps)", 20)
        frames = sample(metrics(port), "edge_fer_frames", "edge_fer_frames_total")
        viewer.read(200_000)  # the viewer was kept: its stream goes on
        assert sample(metrics(port), "edge_fer_frames", "edge_fer_frames_total") >= frames > 0
        conn.close()
        cfg.write_text(cfg.read_text().replace(f'listen = "{port}"', f'listen = "{other}"'))
        run.proc.send_signal(signal.SIGHUP)
        run.wait_stderr("http.listen", 20)
        wait_serving(run, other)
        with pytest.raises(OSError):
            request(port, "/healthz", timeout=2)
        stop(run)
    finally:
        run.kill()


# --- frames stop: a stalled camera, viewers that hang up, a frame that cannot be drawn --------------------------------

def test_events_say_stalled_and_keep_the_uptime_current_while_no_frame_comes():
    view = a_view()
    try:
        events = server_events(view.port)
        seen: list[tuple[str, float]] = []

        def until(status: str, count: int) -> None:
            n = 0
            for state in events:
                seen.append((state["health"]["status"], state["uptime"]))
                n += seen[-1][0] == status
                if n >= count:
                    return
            raise AssertionError(f"the events ended: {seen}")

        until("stalled", 3)  # a camera that never delivers: "starting", then "stalled", not silence
        assert seen[0][0] == "starting" and {st for st, _ in seen} == {"starting", "stalled"}, seen
        stalled = [up for st, up in seen if st == "stalled"]
        assert stalled == sorted(stalled) and stalled[-1] > stalled[0], f"the uptime goes on: {seen}"
        with Camera(view):
            until("ok", 1)
        seen.clear()
        until("stalled", 3)  # the camera stops after frames came: the events say so, and go on
        assert seen[-1][0] == "stalled" and seen[-1][1] > seen[-3][1], seen
        status, body = get_json(view.port, "/healthz")
        assert status == 503 and body["status"] == "stalled"
        events.close()
    finally:
        view.close()


def test_stream_clients_that_hang_up_while_no_frame_comes_free_their_slots():
    view = a_view(max_clients=2)
    port = view.port
    try:
        for _ in range(2):  # page reloads during a stall, twice max_clients of them
            gone = [raw_client(port, "/stream.mjpg") for _ in range(2)]
            wait_until(lambda: sample(metrics(port), "edge_fer_http_stream_clients") == 2, 15, "2 stream clients")
            assert stream_status(port) == 503
            for s in gone:
                s.close()
            wait_until(lambda: sample(metrics(port), "edge_fer_http_stream_clients") == 0, 30,
                       "the slots of the clients that hung up freed, with no frame to send them")
        assert stream_status(port) == 200
        feed(view, 1)  # one frame, then none: a viewer gets its picture, then the same again (the connection is kept
        first, again = stream_parts(port, 2)  # busy, and a viewer that went away is noticed by the write)
        assert first == again
        assert cv2.imdecode(np.frombuffer(first, np.uint8), cv2.IMREAD_COLOR).shape == (240, 320, 3)
    finally:
        view.close()


def test_the_jpeg_encoder_skips_a_frame_it_cannot_draw_and_goes_on(caplog):
    hub = FrameHub(fps=30)
    bad = Frame(0, time.time(), None, np.zeros((240, 320, 3), np.uint8))  # no gray image: an AttributeError, not cv2's
    caplog.set_level(logging.DEBUG, logger="edge_fer.web.frames")

    def logged(level: int) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "edge_fer.web.frames" and r.levelno == level]

    try:
        with hub.watching():
            got = (0, b"")
            for i, level in enumerate((logging.WARNING, logging.DEBUG)):  # the first time a warning, then debug
                hub.write(gray_frame(10 * i + 1, SIZE)[0], bad)
                wait_until(lambda level=level: len(logged(level)) == 1, 10, "the bad frame tried")
                hub.write(*gray_frame(10 * i + 2, SIZE))
                got = hub.next_jpeg(got[0], 10.0)
                assert got is not None, "the encoder thread still makes JPEGs"
                assert cv2.imdecode(np.frombuffer(got[1], np.uint8), cv2.IMREAD_COLOR).shape == (360, 480, 3)
        (warning,) = logged(logging.WARNING)
        assert "cannot encode frame 1: AttributeError" in warning.getMessage(), "once per kind, then at debug level"
        assert hub.snapshot(5.0) == got[1]
    finally:
        hub.close()


# --- listening beyond this machine -------------------------------------------------------------------------------------

def test_a_non_loopback_address_needs_a_token_or_insecure(tmp_path):
    port = free_port()
    proc = run_cli("run", "--source", str(SAMPLE), "--http", f"0.0.0.0:{port}", "--output", "none", timeout=60)
    assert_one_line_error(proc, f"0.0.0.0:{port}", "token", "--http-insecure")

    token = "tok-" + os.urandom(8).hex()
    run = start_edge_fer(tmp_path, ["--source", str(SAMPLE), "--loop", "--max-fps", "10", "--output", "none",
                                    "--http", f"0.0.0.0:{port}", "-vv"], env={"EDGE_FER_HTTP_TOKEN": token})
    try:
        def up() -> bool:
            assert run.proc.poll() is None, run.stderr
            try:
                return request(port, "/healthz", headers={"Authorization": f"Bearer {token}"})[0] == 200
            except OSError:
                return False

        wait_until(up, 60, "the view with a token")
        for path in ("/", "/api/state", "/metrics", "/healthz", "/snapshot.jpg", "/stream.mjpg", "/api/events"):
            status, headers, _ = request(port, path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer"), path
            assert request(port, path + "?token=wrong")[0] == 401
            assert request(port, path, headers={"Authorization": "Bearer wrong"})[0] == 401
        assert request(port, "/api/state", headers={"Authorization": f"Bearer {token}"})[0] == 200
        assert request(port, f"/?token={token}")[0] == 200  # the browser page
        assert request(port, f"/metrics?token={token}")[0] == 200
        assert len(stream_parts(port, 1, f"/stream.mjpg?token={token}")) == 1
        stop(run)
        assert token not in run.stderr, "the token never reaches the log"
    finally:
        run.kill()

    run = start_edge_fer(tmp_path, ["--source", str(SAMPLE), "--loop", "--max-fps", "10", "--output", "none",
                                    "--http", f"0.0.0.0:{port}", "--http-insecure"], name="insecure")
    try:
        wait_serving(run, port)
        assert request(port, "/api/state")[0] == 200
        stop(run)
    finally:
        run.kill()


def test_http_settings_from_the_file_the_environment_and_the_command_line(tmp_path):
    (tmp_path / "token").write_text("s3cret\n")
    cfg = tmp_path / "config.toml"
    cfg.write_text('[http]\nlisten = "0.0.0.0:8080"\ntoken_file = "token"\nfps = 5\nmax_clients = 2\nstall = 3\n')
    s = resolve({}, {}, cfg)
    assert (s.http.host, s.http.port, s.http.fps, s.http.max_clients, s.http.stall) == ("0.0.0.0", 8080, 5.0, 2, 3.0)
    assert s.http.token.get() == "s3cret" and "s3cret" not in repr(s)
    assert resolve({}, {"EDGE_FER_HTTP_TOKEN": "env"}, cfg).http.token.get() == "env"
    assert resolve({}, {"EDGE_FER_HTTP": "9000"}, cfg).http.address == "127.0.0.1:9000"
    assert resolve({"http": "[::1]:9001"}, {}, cfg).http.address == "[::1]:9001"
    assert resolve({}, {}).http.listen is None, "off by default"
    problems = [
        ({"http": "0.0.0.0:8080"}, {}, "--http: the web view would listen on 0.0.0.0:8080, beyond this machine"),
        ({}, {"EDGE_FER_HTTP": "lan-host:8080"}, "EDGE_FER_HTTP: the web view would listen on lan-host:8080"),
        ({"http": "99999"}, {}, "--http: must be PORT, HOST:PORT or [IPv6]:PORT with a port from 0 to 65535"),
        ({"http": "a:b:8080"}, {}, "--http: must be PORT, HOST:PORT or [IPv6]:PORT, got 'a:b:8080'"),
        ({"http_fps": 0.0}, {}, "--http-fps: must be a number from 0.5 to 60"),
    ]
    for cli, env, expected in problems:
        with pytest.raises(ConfigError) as err:
            resolve(cli, env)
        assert str(err.value).startswith(expected), str(err.value)
    assert resolve({"http": "0.0.0.0:8080", "http_insecure": True}, {}).http.exposure() is None
    assert resolve({"http": "localhost:8080"}, {}).http.exposure() is None
    bad = tmp_path / "bad.toml"
    bad.write_text('[http]\nlisten = "8080"\ntoken = "in-the-file"\n')
    with pytest.raises(ConfigError) as err:
        resolve({}, {}, bad)
    assert "http.token: a token is not allowed in the config file; put it in a file named by http.token_file, " \
           "or in EDGE_FER_HTTP_TOKEN" in str(err.value)


# --- a real browser ----------------------------------------------------------------------------------------------------

def test_chromium_shows_the_stream_and_the_bars(tmp_path, clip):
    video = TALKING if TALKING.exists() else clip
    port = free_port()
    run = start_edge_fer(tmp_path, ["--source", str(video), "--loop", "--output", "none", "--max-fps", "25",
                                    "--http", str(port), "--device-id", "kitchen"])
    try:
        wait_serving(run, port)
        with Browser() as browser:
            browser.open(f"http://127.0.0.1:{port}/")
            width = browser.wait_for("document.getElementById('stream').naturalWidth")
            assert width == cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FRAME_WIDTH)
            bars = browser.wait_for("""(() => { const b = [...document.querySelectorAll('.bar')];
                return b.length ? b.map(e => [e.dataset.label, parseFloat(e.style.width)]) : null; })()""")
            assert len(bars) == 7 and abs(sum(w for _, w in bars) - 100) < 2, bars
            header = browser.evaluate("document.querySelector('header').innerText")
            assert "kitchen" in header and "fps" in header and "ok" in header
            time.sleep(1.0)
            shot = browser.screenshot(tmp_path / "web-view.png")
            box = browser.evaluate("""(() => { const r = document.getElementById('stream').getBoundingClientRect();
                return [r.x, r.y, r.width, r.height].map(Math.round); })()""")
        image = cv2.imread(str(shot))
        x, y, w, h = box
        assert w > 300 and h > 150
        view = image[y:y + h, x:x + w]
        assert view.std() > 20, "the stream area shows a picture, not a blank"
        if os.environ.get("EDGE_FER_WEB_SCREENSHOT"):  # how docs/web-view.png is made
            shutil.copy(shot, os.environ["EDGE_FER_WEB_SCREENSHOT"])
        stop(run)
    finally:
        run.kill()


def test_chromium_shows_a_stall_and_comes_back_after_a_restart_and_a_503():
    badge = "document.getElementById('health').textContent"
    width = "document.getElementById('stream').naturalWidth"
    view = a_view(max_clients=1)
    port = view.port
    try:
        with Browser() as browser:
            browser.call("Network.enable")
            browser.kept.add("Network.responseReceived")
            with Camera(view, (320, 240)):
                browser.open(f"http://127.0.0.1:{port}/")
                browser.wait_for(f"{width} === 320 && {badge} === 'ok'", 30)
            browser.wait_for(f"{badge} === 'stalled'", 30)  # the camera stopped: the page says so
            uptime = browser.evaluate("document.getElementById('uptime').textContent")
            browser.wait_for(f"document.getElementById('uptime').textContent !== {uptime!r}", 30)
            view.close()  # a restart of the service: the stream and the events end, the port is refused
            browser.wait_for(f"{badge} === 'reconnecting'", 30)
            for _ in range(3):  # the new view's only event slot taken before the page's retry gets there
                view = a_view(listen=f"127.0.0.1:{port}", max_clients=1)
                hog = raw_client(port, "/api/events")
                hog.settimeout(10)
                answer = b""
                while b"\r\n" not in answer and (chunk := hog.recv(64)):
                    answer += chunk
                if answer.startswith(b"HTTP/1.0 200"):
                    break
                hog.close()
                view.close()
            else:
                raise AssertionError("the page always took the event slot first")
            try:  # the page's retry gets a 503, on which a browser gives up on an EventSource for good
                browser.wait_event("Network.responseReceived", lambda p: p["response"]["url"].endswith(
                    "/api/events") and p["response"]["status"] == 503, 30)
            finally:
                hog.close()
            with Camera(view, (160, 120)):  # the page makes a new EventSource, then a new stream of the new view
                browser.wait_for(f"{width} === 160 && {badge} === 'ok'", 60)
    finally:
        view.close()
