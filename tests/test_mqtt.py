"""MQTT output against a real mosquitto started on a free loopback port (skipped when it is not installed)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from edge_fer.labels import FER2013_LABELS
from service_helpers import (SLOWDOWN, Broker, Subscriber, make_video, need_mosquitto, retained, start_edge_fer,
                             wait_until)

LABELS = set(FER2013_LABELS)
STATE_KEYS = {"ts", "emotion", "score", "probs", "faces", "fps", "frames", "dropped", "uptime"}


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "clip.mp4", frames=40)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    need_mosquitto()
    with Broker(tmp_path_factory.mktemp("broker")) as b:
        yield b


def run_args(video: Path, port: int, device: str, *extra: str) -> list[str]:
    return ["--source", str(video), "--loop", "--output", "none", "--max-fps", "30", "--mqtt-host", "127.0.0.1",
            "--mqtt-port", str(port), "--device-id", device, *extra]


def check_state(state: dict) -> None:
    assert set(state) == STATE_KEYS, state
    assert isinstance(state["ts"], float) and state["ts"] > 1.6e9
    assert state["emotion"] is None or state["emotion"] in LABELS
    if state["faces"]:
        assert state["emotion"] in LABELS and 0.0 <= state["score"] <= 1.0
        assert set(state["probs"]) == LABELS
    else:
        assert state["emotion"] is None and state["score"] is None and state["probs"] == {}
    assert isinstance(state["faces"], int) and state["faces"] >= 0
    assert isinstance(state["fps"], (int, float)) and state["fps"] >= 0
    assert isinstance(state["frames"], int) and state["frames"] >= 1
    assert isinstance(state["dropped"], int) and state["dropped"] >= 0
    assert isinstance(state["uptime"], (int, float))


def check_faces(record: dict) -> None:
    assert set(record) == {"frame", "ts", "fps", "faces"}, record
    assert isinstance(record["frame"], int)
    for face in record["faces"]:
        assert set(face) == {"box", "emotion", "score", "probs", "track"}
        assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
        assert face["emotion"] in LABELS and set(face["probs"]) == LABELS
        assert isinstance(face["track"], int)


def test_messages_schema_discovery_and_sigterm(tmp_path, broker, video):
    """online (retained) -> state/faces/discovery with the documented shapes -> HA re-announce -> SIGTERM."""
    prefix = "edge-fer/schema"
    sub = Subscriber(broker.port, [f"{prefix}/#", "homeassistant/#"])
    run = start_edge_fer(tmp_path, run_args(video, broker.port, "schema", "--mqtt-state-interval", "0.5",
                                            "--mqtt-faces-interval", "0.2"))
    try:
        sub.wait_for(lambda m: m.topic == f"{prefix}/availability" and m.text == "online", 20)
        state = sub.wait_for(lambda m: m.topic == f"{prefix}/state").json()
        check_state(state)
        faces = sub.wait_for(lambda m: m.topic == f"{prefix}/faces" and m.json()["faces"]).json()
        check_faces(faces)
        assert faces["faces"], "the sample face is found in the generated video"
        for obj in ("emotion", "faces", "fps"):
            topic = f"homeassistant/sensor/edge_fer_schema/{obj}/config"
            config = sub.wait_for(lambda m, t=topic: m.topic == t).json()
            assert config["state_topic"] == f"{prefix}/state"
            assert config["availability_topic"] == f"{prefix}/availability"
            assert config["unique_id"] == f"edge_fer_schema_{obj}"
            assert config["device"]["identifiers"] == ["edge_fer_schema"]
            assert "value_json" in config["value_template"]
        # retained for late subscribers: availability, state, discovery
        assert retained(broker.port, f"{prefix}/availability").text == "online"
        check_state(retained(broker.port, f"{prefix}/state").json())
        # Home Assistant restarts: discovery is sent again
        n = len(sub.on("homeassistant/sensor/edge_fer_schema/emotion/config"))
        mark = len(sub.messages)
        sub.publish("homeassistant/status", "online")
        sub.wait_for(lambda m: m.topic == "homeassistant/sensor/edge_fer_schema/emotion/config", 10, after=mark)
        assert len(sub.on("homeassistant/sensor/edge_fer_schema/emotion/config")) == n + 1
        # SIGTERM: finish the frame, publish offline, exit 0 (terminate waits at most the unit's TimeoutStopSec, 10 s)
        mark = len(sub.messages)
        rc, seconds = run.terminate(signal.SIGTERM)
        print(f"SIGTERM to exit: {seconds:.2f} s")
        assert rc == 0, run.stderr
        offline = sub.wait_for(lambda m: m.topic == f"{prefix}/availability", 5, after=mark)
        assert offline.text == "offline"
        assert retained(broker.port, f"{prefix}/availability").text == "offline"
        summary = run.stderr.strip().splitlines()[-1]
        assert "stopped by SIGTERM" in summary and f"mqtt 127.0.0.1:{broker.port}:" in summary
        assert " 0 dropped" in summary
        assert "Traceback" not in run.stderr
    finally:
        run.kill()
        sub.close()


def test_last_will_shows_offline_when_killed(tmp_path, broker, video):
    prefix = "edge-fer/will"
    sub = Subscriber(broker.port, [f"{prefix}/availability"])
    run = start_edge_fer(tmp_path, run_args(video, broker.port, "will"))
    try:
        sub.wait_for(lambda m: m.text == "online", 20)
        mark = len(sub.messages)
        run.proc.send_signal(signal.SIGKILL)
        run.proc.wait(10)
        assert sub.wait_for(lambda m: True, 10, after=mark).text == "offline"
        assert retained(broker.port, f"{prefix}/availability").text == "offline"
    finally:
        run.kill()
        sub.close()


def test_broker_outage_is_survived_and_counted(tmp_path, video):
    """The broker stops mid-run and comes back: the loop goes on, reconnects, publishes again, counts drops."""
    prefix = "edge-fer/outage"
    broker = Broker(tmp_path / "broker").start()
    run = start_edge_fer(tmp_path, run_args(video, broker.port, "outage", "--mqtt-queue", "5",
                                            "--mqtt-faces-interval", "0", "--mqtt-state-interval", "0.5"))
    sub = Subscriber(broker.port, [f"{prefix}/#"])
    try:
        before = sub.wait_for(lambda m: m.topic == f"{prefix}/state", 20).json()
        sub.close()
        broker.stop()
        time.sleep(2.0 * SLOWDOWN)  # long enough for the queues (5 + paho's 5) to overflow, even emulated
        assert run.proc.poll() is None, "the run survives the broker going away"
        broker.start()  # same port, no persistence: nothing retained survives
        sub = Subscriber(broker.port, [f"{prefix}/#"])
        assert sub.wait_for(lambda m: m.topic == f"{prefix}/availability", 20).text == "online"
        after = sub.wait_for(lambda m: m.topic == f"{prefix}/state" and m.json()["dropped"] > 0, 10).json()
        check_state(after)
        assert after["frames"] > before["frames"]
        assert retained(broker.port, f"{prefix}/availability").text == "online"
        rc, _ = run.terminate()
        assert rc == 0, run.stderr
        err = run.stderr
        assert err.count("lost the connection") == 1, err  # logged once per state change
        assert "connected to 127.0.0.1" in err and "again" in err
        summary = err.strip().splitlines()[-1]
        dropped = int(summary.split(" dropped")[0].rsplit(" ", 1)[1])
        assert dropped > 0, summary
    finally:
        run.kill()
        sub.close()
        broker.stop()


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory):
    need_mosquitto()
    if not (shutil.which("mosquitto_passwd") or Path("/usr/bin/mosquitto_passwd").exists()):
        pytest.skip("mosquitto_passwd is not installed")
    with Broker(tmp_path_factory.mktemp("auth-broker"), users={"cam": "s3cret-Pa55"}) as b:
        yield b


def test_wrong_password_is_one_clear_error_and_the_loop_runs(tmp_path, auth_broker, video):
    wrong = tmp_path / "password"
    wrong.write_text("not-the-Pa55word\n")
    run = start_edge_fer(tmp_path, ["--source", str(video), "--loop", "--output", "jsonl", "--max-fps", "30",
                                    "--mqtt-host", "127.0.0.1", "--mqtt-port", str(auth_broker.port),
                                    "--device-id", "badpw", "--mqtt-user", "cam", "--mqtt-password-file",
                                    str(wrong), "-vv"])
    try:
        run.wait_stderr("refused the connection", 20)
        lines = len(run.stdout.splitlines())
        time.sleep(3.5)  # paho retries after 1 s and 2 s more: the refusal must still be logged once
        assert run.proc.poll() is None
        # Frames keep flowing while MQTT is refused (waited for, not timed: an emulated Pi is slow).
        wait_until(lambda: len(run.stdout.splitlines()) > lines + 10, 120, "frames while MQTT is refused")
        rc, _ = run.terminate()
        assert rc == 0
        err = run.stderr
        refused = [ln for ln in err.splitlines() if "refused the connection" in ln]
        assert len(refused) == 1, err
        assert "Not authorized" in refused[0] or "Bad user name or password" in refused[0]
        assert "check mqtt.user" in refused[0]
        assert "not-the-Pa55word" not in err and "not-the-Pa55word" not in run.stdout
        assert "never connected" in err.strip().splitlines()[-1]
    finally:
        run.kill()


def test_password_from_the_environment_connects(tmp_path, auth_broker, video):
    sub = Subscriber(auth_broker.port, ["edge-fer/goodpw/availability"], user="cam", password="s3cret-Pa55")
    run = start_edge_fer(tmp_path, run_args(video, auth_broker.port, "goodpw", "--mqtt-user", "cam", "-vv"),
                         env={"EDGE_FER_MQTT_PASSWORD": "s3cret-Pa55"})
    try:
        sub.wait_for(lambda m: m.text == "online", 20)
        rc, _ = run.terminate()
        assert rc == 0
        assert "s3cret-Pa55" not in run.stderr
    finally:
        run.kill()
        sub.close()


def test_tls_with_a_private_ca(tmp_path, video):
    need_mosquitto()
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    run_ = lambda *a: subprocess.run([openssl, *a], check=True, capture_output=True)  # noqa: E731
    run_("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=edge-fer test CA",
         "-keyout", str(ca_key), "-out", str(ca))
    run_("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run_("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
         "-extfile", str(ext), "-out", str(cert))
    with Broker(tmp_path / "tls-broker", tls={"ca": ca, "cert": cert, "key": key}) as broker:
        sub = Subscriber(broker.port, ["edge-fer/tls/availability"], ca=ca)
        run = start_edge_fer(tmp_path, run_args(video, broker.port, "tls", "--mqtt-tls", "--mqtt-ca", str(ca),
                                                "--no-mqtt-discovery"))
        try:
            sub.wait_for(lambda m: m.text == "online", 20)
            rc, _ = run.terminate()
            assert rc == 0, run.stderr
        finally:
            run.kill()
            sub.close()


def test_publisher_never_blocks_and_counts_drops_without_a_broker():
    """In-process: nothing listens on the port; writes return at once, the oldest messages are dropped."""
    from service_helpers import free_port

    from edge_fer.config import MqttSettings
    from edge_fer.mqtt import MqttPublisher
    from edge_fer.pipeline import FaceResult, FrameResult
    from edge_fer.sources import Frame
    import numpy as np

    pub = MqttPublisher(MqttSettings(host="127.0.0.1", port=free_port(), topic="edge-fer/x",
                                     queue=3, faces_interval=0.0, state_interval=0.2), device_id="x").start()
    frame = Frame(1, time.time(), np.zeros((10, 10), np.uint8))
    t0 = time.perf_counter()
    for i in range(50):
        face = FaceResult((1, 2, 3, 4), "happy" if i % 2 else "sad", 0.9, {"happy": 0.9, "sad": 0.1}, 1)
        pub.write(FrameResult(i, time.time(), 10.0, [face]), frame)
    # A write that waited for the network would wait out a connect timeout per message: 50 of them take minutes.
    assert time.perf_counter() - t0 < 5.0, "write() must not wait for the network"
    assert pub.dropped >= 40
    t0 = time.perf_counter()
    pub.close(timeout=1.0)
    assert time.perf_counter() - t0 < 10.0, "close() gives up after its timeout"
    assert pub.sent == 0 and pub.dropped >= 47
    assert "never connected" in pub.summary()
    json.dumps(pub.state_payload(FrameResult(1, time.time(), 1.0, [])))  # a no-face state is JSON too
