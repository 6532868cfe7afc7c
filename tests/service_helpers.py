"""Real parts for the service tests: a mosquitto broker, an MQTT subscriber, test videos, an HTTP network camera,
edge-fer processes.

The broker is the Debian package's ``mosquitto`` binary, started on a free loopback port with
a generated config file and stopped afterwards; tests that need it skip with a clear reason
when it is not installed (CI's .ci/run installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "edge_fer" / "samples" / "astronaut.jpg"
# Under scripts/pi-check (qemu) a frame takes seconds, not milliseconds: waits tuned to native speed are
# stretched by this factor there (pi-check names the emulated CPU in PI_CHECK_CPU; its x86 reference is "x86").
# The waits below apply it themselves; a test scales only the figures it sets (a watchdog, a stall limit).
SLOWDOWN = 1.0 if os.environ.get("PI_CHECK_CPU", "x86") == "x86" else 5.0


def find_mosquitto() -> str | None:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def need_mosquitto() -> str:
    path = find_mosquitto()
    if path is None:
        pytest.skip("mosquitto is not installed (Debian: apt-get install mosquitto; CI's .ci/run does that)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A mosquitto on 127.0.0.1:<port>, no persistence (a restart forgets retained messages)."""

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None, tls: dict[str, Path] | None = None,
                 port: int | None = None):
        self.binary = need_mosquitto()
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.users, self.tls = users, tls
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "mosquitto.log"

    def _config(self) -> Path:
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice"]
        if os.geteuid() == 0:
            lines.append("user root")  # as root mosquitto would switch to user 'mosquitto' and lose our files
        if self.users:
            passwd = self.dir / "passwd"
            passwd.unlink(missing_ok=True)
            tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
            for i, (user, password) in enumerate(self.users.items()):
                args = [tool, "-b"] + (["-c"] if i == 0 else []) + [str(passwd), user, password]
                subprocess.run(args, check=True, capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [f"cafile {self.tls['ca']}", f"certfile {self.tls['cert']}", f"keyfile {self.tls['key']}"]
        conf = self.dir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> Broker:
        conf = self._config()
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited ({self.proc.returncode}): {self.log.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    at: float

    @property
    def text(self) -> str:
        return self.payload.decode()

    def json(self):
        return json.loads(self.payload)


class Subscriber:
    """A real paho client in the test process that records everything it receives."""

    def __init__(self, port: int, topics: list[str], *, user: str | None = None, password: str | None = None,
                 ca: Path | None = None, name: str = "test-subscriber"):
        import paho.mqtt.client as mqtt

        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{os.getpid()}-{id(self)}")
        if user:
            self.client.username_pw_set(user, password)
        if ca:
            self.client.tls_set(ca_certs=str(ca))
        self.topics = topics

        def on_connect(client, userdata, flags, rc, props):
            if not rc.is_failure:
                client.subscribe([(t, 1) for t in topics])

        def on_subscribe(client, userdata, mid, rcs, props):
            self._subscribed.set()

        def on_message(client, userdata, msg):
            with self._cond:
                self.messages.append(Message(msg.topic, msg.payload, bool(msg.retain), time.monotonic()))
                self._cond.notify_all()

        self.client.on_connect, self.client.on_subscribe, self.client.on_message = on_connect, on_subscribe, on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"test subscriber could not subscribe on port {port}")

    def wait_for(self, pred: Callable[[Message], bool], timeout: float = 10.0, after: int = 0) -> Message:
        """The first message (from index ``after`` on) matching ``pred``; fails the test after ``timeout``
        (times SLOWDOWN)."""
        timeout *= SLOWDOWN
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages[after:]:
                    if pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({m.topic for m in self.messages})
                    raise AssertionError(f"no matching message in {timeout} s; topics seen: {seen}")
                self._cond.wait(left)

    def on(self, topic: str) -> list[Message]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str, timeout: float = 5.0, **kw) -> Message:
    """What a new subscriber gets for ``topic`` right away: the retained message."""
    sub = Subscriber(port, [topic], name="retained-probe", **kw)
    try:
        return sub.wait_for(lambda m: m.topic == topic and m.retain, timeout)
    finally:
        sub.close()


def make_video(path: Path, frames: int = 60, size: tuple[int, int] = (320, 240), fourcc: str = "mp4v",
               fps: float = 15.0) -> Path:
    """A small video made from the shipped sample photo: the face drifts a little each frame."""
    image = cv2.imread(str(SAMPLE))
    w, h = size
    side = int(min(w, h) * 0.8)
    face = cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for i in range(frames):
        canvas = np.full((h, w, 3), 90, np.uint8)
        x = (w - side) // 4 + (i % 20)
        y = (h - side) // 2
        canvas[y:y + side, x:x + side] = face
        writer.write(canvas)
    writer.release()
    return path


@dataclass
class EdgeFer:
    """An ``edge-fer run`` subprocess with its stdout and stderr in files."""

    proc: subprocess.Popen
    out: Path
    err: Path

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_stderr(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout * SLOWDOWN
        while time.monotonic() < deadline:
            if text in self.stderr:
                return self.stderr
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not on stderr (exit {self.proc.poll()}):\n{self.stderr[-3000:]}")

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> tuple[int, float]:
        """Send ``sig``; (exit status, seconds until exit), waiting at most ``timeout`` (times SLOWDOWN)."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout * SLOWDOWN)
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_edge_fer(tmp: Path, args: list[str], env: dict[str, str] | None = None, name: str = "edge-fer") -> EdgeFer:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_FER_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    full_env["PYTHONPATH"] = str(ROOT) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env["PYTHONUNBUFFERED"] = "1"
    full_env.update(env or {})
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "edge_fer.cli", "run", *args], cwd=ROOT, env=full_env,
                                stdout=o, stderr=e)
    return EdgeFer(proc, out, err)


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` until it is true; fails the test after ``timeout`` (times SLOWDOWN)."""
    timeout *= SLOWDOWN
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class StreamServer:
    """An HTTP 'network camera': serves an MJPEG AVI at about 30 frames per second; can go away and come back."""

    def __init__(self, data: bytes, frames: int, port: int = 0):
        self.data, self.frames, self.port = data, frames, port
        self.httpd: ThreadingHTTPServer | None = None
        self.up = threading.Event()

    def start(self) -> StreamServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "video/x-msvideo")
                self.send_header("Content-Length", str(len(server.data)))
                self.end_headers()
                step = max(1, len(server.data) // server.frames)
                try:
                    for i in range(0, len(server.data), step):
                        if not server.up.is_set():
                            return  # the camera is unplugged: the connection just stops
                        self.wfile.write(server.data[i:i + step])
                        time.sleep(1 / 30)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.up.set()
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.up.clear()
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None
