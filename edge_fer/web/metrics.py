"""Prometheus metrics of a run, in a registry of their own (``/metrics``).

Counters and latency histograms are updated once per frame from the loop's ``on_frame``
callback (a few microseconds: prometheus_client's plain counters, no formatting). Values
that already live elsewhere (FPS, MQTT counts, camera reconnects, viewers) are read only
when Prometheus scrapes, by a collector, so they cost the loop nothing. Every metric is
listed in docs/service.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric

from .. import __version__
from ..pipeline import STAGES, FrameResult

# Per-stage latency from 0.5 ms (a classify on a desktop) to 2.5 s (a hung camera read).
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class RunFacts:
    """What the view says about this run: fixed until a reload rebuilds the parts."""

    device_id: str
    model: str
    backend: str
    detector: str
    source: str
    labels: tuple[str, ...]
    version: str = __version__


@dataclass(frozen=True)
class LiveValues:
    """Values read at scrape time from the parts that own them."""

    fps: float
    faces: int
    uptime: float
    last_frame_age: float | None      # None before the first frame
    camera_reconnects: int
    mqtt_sent: int | None             # None: MQTT is off
    mqtt_dropped: int | None
    mqtt_connected: bool | None
    stream_clients: int
    event_clients: int
    jpegs: int


class Metrics:
    """The run's metrics; :meth:`record` is the loop's per-frame call, :meth:`render` the scrape."""

    def __init__(self, facts: Callable[[], RunFacts | None], live: Callable[[], LiveValues]):
        disable_created_metrics()  # no *_created series: they double the page and no dashboard uses them
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = Counter("edge_fer_frames", "Frames processed", registry=r)
        self.frames_with_faces = Counter("edge_fer_frames_with_faces", "Frames in which at least one face was seen",
                                         registry=r)
        self.faces = Counter("edge_fer_faces", "Faces classified, summed over frames", registry=r)
        self.emotions = Counter("edge_fer_emotions", "Faces classified, summed over frames, by their (smoothed) "
                                "top emotion", ["emotion"], registry=r)
        self.stages = Histogram("edge_fer_stage_seconds", "Per-frame latency of each stage of the vision loop",
                                ["stage"], buckets=STAGE_BUCKETS, registry=r)
        self._stage = {s: self.stages.labels(s) for s in (*STAGES, "total")}
        self._emotion: dict[str, Counter] = {}
        r.register(_Collector(facts, live))

    def add_labels(self, labels: Iterable[str]) -> None:
        """Show every label of the model from the start, at 0, so rates exist before an emotion is first seen."""
        for label in labels:
            if label not in self._emotion:
                self._emotion[label] = self.emotions.labels(label)

    def record(self, result: FrameResult) -> None:
        """Count one processed frame (its timings are complete once the loop calls ``on_frame``)."""
        self.frames.inc()
        if result.faces:
            self.frames_with_faces.inc()
            self.faces.inc(len(result.faces))
            for face in result.faces:
                child = self._emotion.get(face.emotion)
                if child is None:
                    child = self._emotion[face.emotion] = self.emotions.labels(face.emotion)
                child.inc()
        for stage, seconds in result.timings.items():
            child = self._stage.get(stage)
            if child is None:
                child = self._stage[stage] = self.stages.labels(stage)
            child.observe(seconds)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """(body, content type): Prometheus' text format, or OpenMetrics when the scraper's Accept header asks."""
        encoder, ctype = choose_encoder(accept or "")
        return encoder(self.registry), ctype


class _Collector:
    """Gauges and counters owned by other parts, read when scraped."""

    def __init__(self, facts: Callable[[], RunFacts | None], live: Callable[[], LiveValues]):
        self._facts, self._live = facts, live

    def describe(self) -> Iterable[Metric]:
        return self._families(None, None)

    def collect(self) -> Iterable[Metric]:
        return self._families(self._facts(), self._live())

    @staticmethod
    def _families(f: RunFacts | None, v: LiveValues | None) -> list[Metric]:
        def gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=value)  # value None: the family without a sample

        def counter(name: str, doc: str, value: float | None) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=value)

        out: list[Metric] = [
            gauge("edge_fer_fps", "Frames per second of the vision loop (moving average)", v and v.fps),
            gauge("edge_fer_faces_in_frame", "Faces in the newest frame", v and v.faces),
            gauge("edge_fer_uptime_seconds", "Seconds since the view started", v and v.uptime),
            gauge("edge_fer_last_frame_age_seconds", "Seconds since the newest frame was processed "
                  "(absent before the first frame)", v.last_frame_age if v else None),
            counter("edge_fer_camera_reconnects", "Times a live source delivered frames again after failing",
                    v and v.camera_reconnects),
            gauge("edge_fer_http_stream_clients", "Clients on /stream.mjpg now", v and v.stream_clients),
            gauge("edge_fer_http_event_clients", "Clients on /api/events now", v and v.event_clients),
            counter("edge_fer_http_jpegs", "Annotated JPEGs encoded for viewers", v and v.jpegs),
        ]
        if v is None or v.mqtt_sent is not None:
            out += [
                counter("edge_fer_mqtt_sent", "MQTT data messages handed to the client while connected",
                        v and v.mqtt_sent),
                counter("edge_fer_mqtt_dropped", "MQTT messages dropped (queue full while the broker was away or "
                        "slow, or refused by the client)", v and v.mqtt_dropped),
                gauge("edge_fer_mqtt_connected", "1 while connected to the MQTT broker",
                      None if v is None else float(bool(v.mqtt_connected))),
            ]
        info = InfoMetricFamily("edge_fer_model", "The model, interpreter and face detector in use")
        device = InfoMetricFamily("edge_fer_device", "This device's id, edge-fer version and source")
        if f is not None:
            info.add_metric([], {"model": f.model, "backend": f.backend, "detector": f.detector})
            device.add_metric([], {"device_id": f.device_id, "version": f.version, "source": f.source})
        return [*out, info, device]

