"""The HTTP view of a run: a page, the annotated MJPEG stream, a snapshot, state, events, metrics, health.

A standard-library ``ThreadingHTTPServer`` on its own threads; the vision loop only hands
over references (:class:`~edge_fer.web.frames.FrameHub`) and counts frames
(:class:`~edge_fer.web.metrics.Metrics`), so no viewer can slow it down. Routes are a fixed
table: an unknown path is 404, a wrong method 405; nothing from a request ever reaches the file
system (the page is read from the package once, at start).

Safe by default: the view listens on 127.0.0.1; listening on any other address needs a token
(``Authorization: Bearer <token>``, or ``?token=`` for a browser) or an explicit ``insecure``.
"""

from __future__ import annotations

import hmac
import json
import logging
import select
import socket
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from contextlib import contextmanager
from importlib import resources
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

from ..config import HttpSettings
from ..errors import EdgeFerError
from ..pipeline import FrameResult
from ..sources import Frame
from .frames import FrameHub
from .metrics import LiveValues, Metrics, RunFacts

log = logging.getLogger(__name__)

BOUNDARY = "edge-fer-frame"
SNAPSHOT_WAIT = 3.0     # seconds a snapshot waits for a frame before 503
EVENT_PERIOD = 0.2      # /api/events: at most 5 state events per second
STATE_EVERY = 1.0       # /api/events: the state at least this often, so a page's uptime and health stay current
STREAM_REPEAT = 3.0     # /stream.mjpg: the last JPEG again after this long without a new one (a stalled camera):
                        # proxies keep the connection, and a viewer that went away is noticed by the write
CLIENT_TIMEOUT = 10.0   # a client that takes no data for this long is dropped (frees its stream slot)


def _reconnects(source: Any) -> int:
    return int(getattr(source, "reconnects", 0) or 0)


class WebView:
    """A sink of the vision loop that serves what it sees over HTTP. ``close()`` stops it within a second.

    The service calls :meth:`attach` after every (re)build with the new parts, :meth:`write`
    (as a sink) and :meth:`record` (from ``on_frame``, timings complete) for every frame.
    """

    def __init__(self, settings: HttpSettings):
        problem = settings.exposure()  # run's settings were checked already; this guards every other caller
        if problem:
            raise EdgeFerError(problem)
        self.s = settings
        self.started = time.monotonic()
        self.hub = FrameHub(settings.fps)
        self.metrics = Metrics(self.facts, self.live)
        self.page = resources.files(__package__).joinpath("page.html").read_bytes()
        self.frames = 0
        self._facts: RunFacts | None = None
        self._source: Any = None
        self._mqtt: Any = None
        self._carried = {"reconnects": 0, "sent": 0, "dropped": 0}  # counts of parts a reload replaced
        self._result: FrameResult | None = None
        self._last_frame: float | None = None
        self._lock = threading.Lock()
        self.clients = {"stream": 0, "events": 0}  # connected now, by kind
        self.closed = threading.Event()
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        try:
            self.server = _Server((settings.host, settings.port), _Handler, self, family)
        except OSError as exc:
            self.hub.close()
            raise EdgeFerError(f"web view: cannot listen on {settings.address}: {exc.strerror or exc}") from None
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http-server", daemon=True)
        self._thread.start()
        log.info("web view on %s (metrics /metrics, health /healthz)", self.url)

    @property
    def url(self) -> str:
        host = f"[{self.s.host}]" if ":" in self.s.host else self.s.host
        return f"http://{host}:{self.port}/"

    # --- the service's side ----------------------------------------------------------------------------------------

    def attach(self, facts: RunFacts, source: Any, mqtt: Any) -> None:
        """The parts of the current build; counts of replaced parts carry over, so counters only go up."""
        with self._lock:
            if self._source is not None and source is not self._source:
                self._carried["reconnects"] += _reconnects(self._source)
            if self._mqtt is not None and mqtt is not self._mqtt:
                self._carried["sent"] += self._mqtt.sent
                self._carried["dropped"] += self._mqtt.dropped
            self._facts, self._source, self._mqtt = facts, source, mqtt
        self.metrics.add_labels(facts.labels)

    def write(self, result: FrameResult, frame: Frame) -> None:
        """The sink call: hand the frame to the JPEG side (a reference, no copy)."""
        self.hub.write(result, frame)

    def record(self, result: FrameResult) -> None:
        """The ``on_frame`` call: metrics, state and health."""
        self.metrics.record(result)
        self.frames += 1
        self._result = result
        self._last_frame = time.monotonic()

    def close(self) -> None:
        self.closed.set()
        self.hub.close()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(1.0)

    # --- what the routes serve -------------------------------------------------------------------------------------

    def facts(self) -> RunFacts | None:
        return self._facts

    def live(self) -> LiveValues:
        result, mqtt, now = self._result, self._mqtt, time.monotonic()
        c = self._carried
        return LiveValues(
            fps=result.fps if result else 0.0,
            faces=len(result.faces) if result else 0,
            uptime=now - self.started,
            last_frame_age=None if self._last_frame is None else now - self._last_frame,
            camera_reconnects=c["reconnects"] + _reconnects(self._source),
            mqtt_sent=None if mqtt is None else c["sent"] + mqtt.sent,
            mqtt_dropped=None if mqtt is None else c["dropped"] + mqtt.dropped,
            mqtt_connected=None if mqtt is None else mqtt.connected,
            stream_clients=self.clients["stream"], event_clients=self.clients["events"], jpegs=self.hub.encoded)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, body): healthy while the newest frame is younger than ``stall`` seconds."""
        now = time.monotonic()
        source = self._facts.source if self._facts else "the source"
        if self._last_frame is None:
            waited = now - self.started
            if waited <= self.s.stall:
                return True, {"status": "starting", "frames": 0}
            return False, {"status": "stalled", "frames": 0,
                           "reason": f"no frame from {source} since the start {waited:.1f} s ago "
                                     f"(threshold {self.s.stall:g} s)"}
        age = now - self._last_frame
        if age <= self.s.stall:
            return True, {"status": "ok", "frames": self.frames, "last_frame_age": round(age, 3)}
        return False, {"status": "stalled", "frames": self.frames, "last_frame_age": round(age, 3),
                       "reason": f"no frame from {source} for {age:.1f} s (threshold {self.s.stall:g} s)"}

    def state(self, as_shown: bool = False) -> dict[str, Any]:
        """The device, the MQTT ``state`` fields and the newest ``--output jsonl`` record (None before a frame).

        ``as_shown``: while the stream is watched, the record of the frame on the newest JPEG instead,
        so the page's bars agree with the picture beside them.
        """
        f, result, v = self._facts, self._result, self.live()
        if as_shown and self.clients["stream"] and self.hub.shown is not None:
            result = self.hub.shown
        device = None if f is None else {
            "device_id": f.device_id, "version": f.version, "model": f.model, "backend": f.backend,
            "detector": f.detector, "source": f.source, "labels": list(f.labels)}
        state = None if result is None else result.state_dict(frames=self.frames, dropped=v.mqtt_dropped or 0,
                                                              uptime=v.uptime)
        _, health = self.health()
        return {"device": device, "state": state, "record": None if result is None else result.to_dict(),
                "health": health, "uptime": round(v.uptime, 1)}

    def take_slot(self, kind: str) -> bool:
        """Count a ``stream`` or ``events`` client in, unless ``max_clients`` of that kind are connected."""
        with self._lock:
            if self.clients[kind] >= self.s.max_clients:
                return False
            self.clients[kind] += 1
            return True

    def free_slot(self, kind: str) -> None:
        with self._lock:
            self.clients[kind] -= 1

    def authorized(self, header: str | None, query_token: str | None) -> bool:
        if self.s.token is None:
            return True
        expected = self.s.token.get().encode()
        offered = None
        if header and header[:7].lower() == "bearer ":
            offered = header[7:].strip()
        elif query_token is not None:
            offered = query_token
        return offered is not None and hmac.compare_digest(offered.encode(), expected)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, view: WebView, family: socket.AddressFamily):
        self.address_family = family
        self.view = view
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn), which can hang on a device without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]


_ROUTES = ("/", "/stream.mjpg", "/snapshot.jpg", "/api/state", "/api/events", "/metrics", "/healthz")
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the page's URL may carry ?token=
    "X-Frame-Options": "DENY",
}
_PAGE_CSP = ("default-src 'none'; img-src 'self'; connect-src 'self'; style-src 'unsafe-inline'; "
             "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    server_version = "edge-fer"
    sys_version = ""
    timeout = CLIENT_TIMEOUT

    # --- dispatch ------------------------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._dispatch(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    def _not_allowed(self) -> None:
        path = urlsplit(self.path).path
        if path not in _ROUTES:
            self._reply(404, {"error": "not found"})
        else:
            self._reply(405, {"error": f"method {self.command} not allowed"}, headers={"Allow": "GET, HEAD"})

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed  # noqa: N815

    def _dispatch(self, head: bool) -> None:
        view = self.server.view
        url = urlsplit(self.path)
        if url.path not in _ROUTES:
            self._reply(404, {"error": "not found"}, head=head)
            return
        query = parse_qs(url.query)
        if not view.authorized(self.headers.get("Authorization"), (query.get("token") or [None])[0]):
            self._reply(401, {"error": "a token is needed: 'Authorization: Bearer <token>' or ?token=<token>"},
                        head=head, headers={"WWW-Authenticate": 'Bearer realm="edge-fer"'})
            return
        try:
            if url.path == "/":
                self._send(200, view.page, "text/html; charset=utf-8", head, {"Content-Security-Policy": _PAGE_CSP})
            elif url.path == "/api/state":
                self._reply(200, view.state(), head=head)
            elif url.path == "/healthz":
                healthy, body = view.health()
                self._reply(200 if healthy else 503, body, head=head)
            elif url.path == "/metrics":
                body, ctype = view.metrics.render(self.headers.get("Accept"))
                self._send(200, body, ctype, head)
            elif url.path == "/snapshot.jpg":
                self._snapshot(view, head)
            elif url.path == "/stream.mjpg":
                self._stream(view, head)
            else:
                self._events(view, head)
        except OSError:  # the client went away (or stopped reading): nothing to answer
            self.close_connection = True

    # --- responses -----------------------------------------------------------------------------------------------------

    def _send(self, code: int, body: bytes, ctype: str, head: bool = False,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in {**_SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _reply(self, code: int, data: Any, head: bool = False, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(data, separators=(",", ":")).encode() + b"\n", "application/json", head, headers)

    @contextmanager
    def _streaming(self, view: WebView, kind: str, ctype: str, head: bool) -> Iterator[bool]:
        """A ``kind`` client's slot and response head for the inside; True when the body should follow (not
        HEAD). With ``max_clients`` of the kind connected, a 503 instead and False."""
        if not view.take_slot(kind):
            noun = {"stream": "stream", "events": "event"}[kind]
            self._reply(503, {"error": f"{view.s.max_clients} {noun} clients already"}, head=head,
                        headers={"Retry-After": "5"})
            yield False
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            for k, v in _SECURITY_HEADERS.items():
                self.send_header(k, v)
            self.end_headers()
            self.close_connection = True
            yield not head
        finally:
            view.free_slot(kind)

    def _snapshot(self, view: WebView, head: bool) -> None:
        jpeg = view.hub.snapshot(SNAPSHOT_WAIT)
        if jpeg is None:
            self._reply(503, {"error": f"no frame within {SNAPSHOT_WAIT:g} s"}, head=head, headers={"Retry-After": "1"})
        else:
            self._send(200, jpeg, "image/jpeg", head)

    def _stream(self, view: WebView, head: bool) -> None:
        with self._streaming(view, "stream", f"multipart/x-mixed-replace; boundary={BOUNDARY}", head) as body:
            if not body:
                return
            seq, sent_at = 0, time.monotonic()
            with view.hub.watching():
                while not view.closed.is_set():
                    got = view.hub.next_jpeg(seq, 1.0)
                    if got is None:  # no new frame (a stalled camera, or none yet): is the viewer still there?
                        if self._client_gone():
                            return
                        if time.monotonic() - sent_at < STREAM_REPEAT:
                            continue
                        got = view.hub.latest_jpeg()
                        if got is None:  # no JPEG made yet: nothing to repeat
                            continue
                    seq, jpeg = got
                    self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}"
                                     f"\r\n\r\n".encode() + jpeg + b"\r\n")
                    sent_at = time.monotonic()

    def _client_gone(self) -> bool:
        """Whether the client closed its end (EOF or a reset): it only sends the request, so anything readable
        after it that is not data means it went away, even while this side has nothing to write."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):  # a reset, or a socket closed already
            return True

    def _events(self, view: WebView, head: bool) -> None:
        with self._streaming(view, "events", "text/event-stream", head) as body:
            if not body:
                return
            # The state on every new frame (at most 5 times a second), on every change of health, and at least
            # every STATE_EVERY seconds: a stalled camera shows as such, and the uptime keeps counting.
            sent_frames, sent_status, sent_at = -1, None, 0.0
            while True:
                now = time.monotonic()
                frames, (_, health) = view.frames, view.health()
                if frames != sent_frames or health["status"] != sent_status or now - sent_at >= STATE_EVERY:
                    state = view.state(as_shown=True)
                    self.wfile.write(b"data: " + json.dumps(state, separators=(",", ":")).encode() + b"\n\n")
                    sent_frames, sent_status, sent_at = frames, state["health"]["status"], now
                if view.closed.wait(EVENT_PERIOD):
                    return

    # --- logs: no request lines with their ?token= at info level ----------------------------------------------------------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("http: %s %s %s %s", self.client_address[0], self.command, urlsplit(self.path).path, code)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.debug("http: %s %s", self.client_address[0], format % args)
