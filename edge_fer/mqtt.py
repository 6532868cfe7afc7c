"""MQTT output: availability, state and faces under a topic prefix, plus Home Assistant discovery.

The vision loop never waits for the network. :meth:`MqttPublisher.write` (the loop's sink
call) only decides whether a message is due and puts it in a bounded queue; a publisher
thread hands queued messages to paho-mqtt, whose own network thread (``loop_start``) talks
to the broker, reconnecting with backoff (1 s doubling to 30 s). When the queue is full the
*oldest* message is dropped (the newest state is the one worth sending) and counted; so are
messages paho refuses. The count is in every state message and in the exit summary.

Topics (prefix default ``edge-fer/<device-id>``; payload schemas in docs/service.md):

- ``<prefix>/availability``: ``online`` / ``offline``, retained, QoS 1; ``offline`` is also
  the last will, so a crash or power loss shows ``offline``.
- ``<prefix>/state``: retained JSON (dominant emotion, face count, FPS, dropped count), sent
  when the dominant emotion or the face count changes (at most 5 per second) and at least
  every ``state_interval`` seconds.
- ``<prefix>/faces``: the per-frame record of ``--output jsonl``, not retained; sent at most
  every ``faces_interval`` seconds while faces are seen, and right away (at most 5 per second)
  when the faces or their emotions change, including one ``"faces": []`` when the last leaves.
- ``<discovery-prefix>/sensor/edge_fer_<id>/{emotion,faces,fps}/config``: Home Assistant
  discovery, retained, sent on every connection and again whenever Home Assistant publishes
  ``online`` on ``<discovery-prefix>/status``.

A refused connection (wrong user or password, not authorised) is logged as one error line
and retried with the same backoff, so fixing the broker's side needs no restart; the vision
loop runs on either way.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt

from . import __version__
from .config import MqttSettings
from .errors import EdgeFerError

if TYPE_CHECKING:
    from .pipeline import FrameResult
    from .sources import Frame

log = logging.getLogger(__name__)

CHANGE_MIN_GAP = 0.2     # seconds: a change is published at most 5 times per second
KEEPALIVE = 30           # seconds: the broker sends the last will after 1.5x this without a word
RECONNECT_DELAY = (1, 30)  # paho's backoff: 1 s, doubling, at most 30 s


def node_id(device_id: str) -> str:
    """Home Assistant's node id: ``edge_fer_<device id>`` with only ``[A-Za-z0-9_-]``."""
    return "edge_fer_" + re.sub(r"[^A-Za-z0-9_-]", "_", device_id)


def discovery_messages(s: MqttSettings, device_id: str) -> list[tuple[str, dict[str, Any]]]:
    """(topic, config) of the three Home Assistant sensors: emotion, faces, fps."""
    node = node_id(device_id)
    state, avail = f"{s.topic}/state", f"{s.topic}/availability"
    common = {
        "state_topic": state,
        "availability_topic": avail,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {"identifiers": [node], "name": f"edge-fer {device_id}", "manufacturer": "edge-fer",
                   "model": "facial emotion recognition (TFLite)", "sw_version": __version__},
        "origin": {"name": "edge-fer", "sw_version": __version__},
    }
    sensors = {
        "emotion": {"name": "Emotion", "icon": "mdi:emoticon-outline",
                    "value_template": "{{ value_json.emotion if value_json.emotion else 'none' }}",
                    "json_attributes_topic": state,
                    "json_attributes_template": "{{ {'score': value_json.score, 'probs': value_json.probs} | tojson }}"},
        "faces": {"name": "Faces", "icon": "mdi:account-multiple", "value_template": "{{ value_json.faces }}",
                  "state_class": "measurement"},
        "fps": {"name": "FPS", "icon": "mdi:speedometer", "value_template": "{{ value_json.fps }}",
                "unit_of_measurement": "fps", "state_class": "measurement", "entity_category": "diagnostic",
                "suggested_display_precision": 1},
    }
    return [(f"{s.discovery_prefix}/sensor/{node}/{obj}/config", {**cfg, "unique_id": f"{node}_{obj}", **common})
            for obj, cfg in sensors.items()]


class _Client(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed (for one clear log line)."""

    last_error: BaseException | None = None

    def reconnect(self):  # noqa: D102 (paho's loop thread calls this for every attempt)
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_error = exc
            raise


_REFUSED_HINTS = {
    "Bad user name or password": "check mqtt.user and the password",
    "Not authorized": "check mqtt.user, the password and the broker's ACL",
    "Identifier rejected": "another client may use the same device id",
}


class MqttPublisher:
    """A sink that publishes to MQTT without ever blocking the loop; ``start()`` it, ``close()`` it."""

    def __init__(self, settings: MqttSettings, device_id: str):
        """``settings`` as resolved (port and topic filled in); ``device_id`` names the client and the device."""
        self.s = settings
        self.device_id = device_id
        self.where = f"{settings.host}:{settings.port}"
        self.t_avail = f"{settings.topic}/availability"
        self.t_state = f"{settings.topic}/state"
        self.t_faces = f"{settings.topic}/faces"
        self.t_ha_status = f"{settings.discovery_prefix}/status"
        self._q: queue.Queue = queue.Queue(maxsize=settings.queue)
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._client: _Client | None = None
        self._thread: threading.Thread | None = None
        self._state_key = "connecting"
        self._ever_connected = False
        self._last_refusal = ""
        self.sent = 0              # data messages handed to paho while connected
        self._dropped_queue = 0    # by the loop thread: queue full (oldest dropped), or left at exit
        self._dropped_send = 0     # by the publisher thread: paho refused the message
        self.frames = 0
        self._started = time.monotonic()
        self._last_state_t = float("-inf")
        self._last_state_key: tuple | None = None
        self._last_state: dict[str, Any] | None = None
        self._last_faces_t = float("-inf")
        self._last_faces_key: tuple | None = None

    # --- life cycle ------------------------------------------------------------------------------------------------

    def prepare(self) -> MqttPublisher:
        """Set up the client (will, credentials, TLS, broker address) without connecting: whatever in the
        settings cannot work fails here, so a reload can find out before it lets the running publisher go."""
        s = self.s
        client = _Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-fer-{self.device_id}", clean_session=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.will_set(self.t_avail, "offline", qos=1, retain=True)
        if s.user is not None:
            client.username_pw_set(s.user, s.password.get() if s.password is not None else None)
        if s.tls:
            try:
                client.tls_set(ca_certs=str(s.ca) if s.ca else None)
            except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
                raise EdgeFerError(f"mqtt: cannot use CA certificate {s.ca}: {exc}") from None
        client.reconnect_delay_set(*RECONNECT_DELAY)
        client.max_queued_messages_set(s.queue)
        try:
            client.connect_async(s.host, s.port, keepalive=KEEPALIVE)  # records the address; loop_start connects
        except ValueError as exc:
            raise EdgeFerError(f"mqtt: {exc}") from None
        self._client = client
        return self

    def start(self) -> MqttPublisher:
        """Connect in the background; returns at once (a broker that is down is retried, not waited for)."""
        if self._client is None:
            self.prepare()
        client, s = self._client, self.s
        self._thread = threading.Thread(target=self._drain, name="mqtt-publisher", daemon=True)
        self._thread.start()
        client.loop_start()
        log.info("mqtt: connecting to %s as %s, topics under %s/", self.where, client._client_id.decode(), s.topic)
        return self

    def close(self, timeout: float = 1.0) -> None:
        """Flush what is queued, publish ``offline``, disconnect: all within ``timeout`` seconds."""
        client = self._client
        if client is None or self._thread is None or self._closing.is_set():  # never started: nothing to close
            return
        deadline = time.monotonic() + timeout
        if not self._connected.is_set() and self._state_key == "connecting":
            self._connected.wait(min(0.5, timeout / 2))  # a short run: give the first connection a moment
        self._closing.set()
        if self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic() - 0.5))
        self._dropped_queue += self._q.qsize()
        if self._connected.is_set():
            try:
                info = client.publish(self.t_avail, "offline", qos=1, retain=True)
                info.wait_for_publish(max(0.05, deadline - time.monotonic() - 0.1))
            except (RuntimeError, ValueError) as exc:
                log.debug("mqtt: offline not confirmed: %s", exc)
        client.disconnect()
        stopper = threading.Thread(target=client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(max(0.05, deadline - time.monotonic()))

    # --- the loop's side -------------------------------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        return self._dropped_queue + self._dropped_send

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def write(self, result: FrameResult, frame: Frame) -> None:
        """Queue the state and faces messages that are due for this frame; never blocks."""
        now = time.monotonic()
        self.frames += 1
        dom = result.dominant
        key = (dom.emotion if dom else None, len(result.faces))
        since = now - self._last_state_t
        if since >= self.s.state_interval or (key != self._last_state_key and since >= CHANGE_MIN_GAP):
            state = self.state_payload(result, now)
            self._last_state, self._last_state_t, self._last_state_key = state, now, key
            self._enqueue((self.t_state, state, self.s.qos, True))
        faces_key = tuple((f.track, f.emotion) for f in result.faces)
        since = now - self._last_faces_t
        if (result.faces and since >= self.s.faces_interval) or \
                (faces_key != self._last_faces_key and since >= min(CHANGE_MIN_GAP, self.s.faces_interval)):
            record = result.to_dict()
            if frame.name:
                record["image"] = frame.name
            self._last_faces_t, self._last_faces_key = now, faces_key
            self._enqueue((self.t_faces, record, self.s.qos, False))

    def state_payload(self, result: FrameResult, now: float | None = None) -> dict[str, Any]:
        now = time.monotonic() if now is None else now
        return result.state_dict(frames=self.frames, dropped=self.dropped, uptime=now - self._started)

    def _enqueue(self, item: tuple) -> None:
        while True:
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()  # drop the oldest: the newest state matters more
                    self._dropped_queue += 1
                except queue.Empty:
                    pass

    def summary(self) -> str:
        line = f"mqtt {self.where}: {self.sent} messages sent, {self.dropped} dropped"
        if not self._ever_connected:
            line += ", never connected" + (f" ({self._last_refusal})" if self._last_refusal else "")
        return line

    # --- the publisher thread --------------------------------------------------------------------------------------

    def _drain(self) -> None:
        pending = None
        while True:
            if pending is None:
                try:
                    pending = self._q.get(timeout=0.2)
                except queue.Empty:
                    if self._closing.is_set():
                        return
                    continue
            if not self._connected.is_set():
                if self._closing.is_set():
                    self._dropped_send += 1  # the message in hand; the queued ones are counted by close()
                    return
                self._connected.wait(0.2)
                continue
            topic, payload, qos, retain = pending
            pending = None
            try:
                info = self._client.publish(topic, json.dumps(payload, separators=(",", ":")), qos=qos,
                                            retain=retain)
                ok = info.rc == mqtt.MQTT_ERR_SUCCESS
            except (RuntimeError, ValueError, OSError) as exc:
                log.debug("mqtt: publish failed: %r", exc)
                ok = False
            if ok:
                self.sent += 1
            else:
                self._dropped_send += 1

    # --- paho's network thread -------------------------------------------------------------------------------------

    def _set_state(self, key: str, level: int, message: str, *args: Any) -> None:
        """Log a connection state once, when it changes (a broker that stays down is not logged again)."""
        if key != self._state_key:
            self._state_key = key
            log.log(level, message, *args)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            reason = str(reason_code)
            self._last_refusal = reason
            hint = _REFUSED_HINTS.get(reason, "check the broker's settings")
            self._set_state(f"refused:{reason}", logging.ERROR,
                            "mqtt: %s refused the connection: %s (%s); retrying with backoff, the loop goes on",
                            self.where, reason, hint)
            return
        recovered = self._state_key != "connecting"  # after a logged failure, say so at the same level
        again = self._ever_connected
        self._ever_connected = True
        self._set_state("connected", logging.WARNING if recovered else logging.INFO,
                        "mqtt: connected to %s%s", self.where, " again" if again else "")
        client.publish(self.t_avail, "online", qos=1, retain=True)
        if self.s.discovery:
            client.subscribe(self.t_ha_status, qos=1)
            self._publish_discovery(client)
        if self._last_state is not None:  # a restarted broker may have lost the retained state
            client.publish(self.t_state, json.dumps(self._last_state, separators=(",", ":")), qos=self.s.qos,
                           retain=True)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._closing.is_set():
            self._set_state("lost", logging.WARNING,
                            "mqtt: lost the connection to %s (%s); reconnecting with backoff, the loop goes on",
                            self.where, reason_code)

    def _on_connect_fail(self, client, userdata) -> None:
        exc = getattr(client, "last_error", None)
        why = (exc.strerror or str(exc)) if isinstance(exc, OSError) and (exc.strerror or str(exc)) else \
            (repr(exc) if exc else "unknown error")
        self._set_state("unreachable", logging.WARNING,
                        "mqtt: cannot connect to %s: %s; retrying with backoff, the loop goes on", self.where, why)

    def _on_message(self, client, userdata, message) -> None:
        if message.topic == self.t_ha_status and message.payload.strip().lower() == b"online":
            log.info("mqtt: Home Assistant is online: re-sending discovery")
            self._publish_discovery(client)
            if self._last_state is not None:
                client.publish(self.t_state, json.dumps(self._last_state, separators=(",", ":")),
                               qos=self.s.qos, retain=True)

    def _publish_discovery(self, client) -> None:
        for topic, config in discovery_messages(self.s, self.device_id):
            client.publish(topic, json.dumps(config, separators=(",", ":")), qos=1, retain=True)
