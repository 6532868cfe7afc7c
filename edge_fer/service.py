"""``edge-fer run`` as a long-running service: build from settings, loop, reload, shut down cleanly.

- Start-up: model, detector, source, outputs and MQTT are built from the resolved settings;
  then systemd gets ``READY=1`` (the camera and the model are up; MQTT connects in the
  background and is not waited for).
- Every processed frame feeds systemd's watchdog (:class:`~edge_fer.systemd.Notifier`), and so
  does the sleep of a ``max_fps`` cap after one; a source without frames does not, and says so
  in ``STATUS=`` and once in the log.
- SIGTERM / SIGINT: the current frame is finished, ``offline`` is published, outputs are
  flushed and closed, exit status 0 (well within 2 seconds for files and cameras alike).
- ``--http``: a :class:`~edge_fer.web.WebView` serves the page, stream, state, metrics and
  health from its own threads; it is a sink (a reference to each frame) and counts each
  frame in ``on_frame``. It is kept across reloads unless its settings change.
- SIGHUP: the config file is read again (the command line and the environment still take
  precedence). A new configuration that does not validate, or whose model, detector, MQTT
  client (TLS, address) or source does not open, is logged as one error line and the running
  one stays. Otherwise the pipeline is
  rebuilt; the model and the MQTT connection are kept when their settings did not change (so
  Home Assistant sees no ``offline`` blip).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any, Callable

from .config import HttpSettings, Settings
from .errors import EdgeFerError
from .runner import LoopingSource, RunSummary, run_loop
from .systemd import Notifier, configure_logging

log = logging.getLogger(__name__)

CLOSE_BUDGET = 1.0  # seconds for MQTT to flush and publish offline at exit


class _Signals:
    """SIGTERM/SIGINT stop the loop after the current frame; SIGHUP asks for a reload."""

    def __init__(self, stop: threading.Event):
        self.stop = stop
        self.name: str | None = None   # the terminating signal, once one came
        self.reload = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._terminate)
        if hasattr(signal, "SIGHUP"):
            self._old[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._hangup)

    def restore(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def _terminate(self, signum, frame) -> None:
        self.name = signal.Signals(signum).name
        self.stop.set()

    def _hangup(self, signum, frame) -> None:
        if self.name is None:
            self.reload = True
            self.stop.set()


class Service:
    """The parts of one run and their life cycle. ``reload`` re-resolves the settings (SIGHUP)."""

    def __init__(self, settings: Settings, reload: Callable[[], Settings] | None = None,
                 notifier: Notifier | None = None):
        self.settings = settings
        self._reload_settings = reload
        self.notifier = notifier or Notifier()
        self.stop = threading.Event()
        self.signals = _Signals(self.stop)
        self.classifier = None
        self.source = None
        self.still = False
        self.pipeline = None
        self.sinks: list = []
        self.mqtt = None
        self.web = None
        self._http = None  # the web view's settings in use
        self._applied: Settings | None = None
        self._idle_since: float | None = None
        self._idle_warned = False

    # --- building -------------------------------------------------------------------------------------------------

    def apply(self, s: Settings) -> None:
        """Build (or rebuild) everything for settings ``s``; on failure the previous parts keep running.

        What can fail on new settings alone (the model, the detector, the MQTT client's TLS and
        address) is built before any running part is let go. The source cannot be: a camera does
        not open twice, so the old one is closed first and opened again if the new one fails.
        """
        from .build import make_classifier, make_pipeline

        old = self._applied
        configure_logging(s.service.verbose)
        classifier = self.classifier if old is not None and old.classifier == s.classifier else \
            make_classifier(s.classifier)
        pipeline = make_pipeline(s, classifier)
        new_mqtt = old is None or (old.mqtt, old.service.device_id) != (s.mqtt, s.service.device_id)
        publisher = None
        if new_mqtt and s.mqtt.host:
            from .mqtt import MqttPublisher

            publisher = MqttPublisher(s.mqtt, s.service.device_id).prepare()
        self._apply_web(s.http if s.http.listen else None, reloading=old is not None)
        if old is not None:  # a camera cannot be opened twice: let go of the old one first
            self._close_sinks()
            self.source.close()
            self.source = None
        try:
            source, still = open_source(s)
            try:
                sinks = make_sinks(s, source)
            except BaseException:
                source.close()
                raise
        except EdgeFerError:
            if old is None:
                raise
            self.source, self.still = open_source(old)  # if even this fails, the service exits and is restarted
            self.sinks = make_sinks(old, self.source)
            if self.web is not None:
                self.web.attach(run_facts(old, self.pipeline, self.source), self.source, self.mqtt)
            raise
        self.classifier, self.source, self.still, self.sinks, self.pipeline = classifier, source, still, sinks, pipeline
        if new_mqtt:
            if self.mqtt is not None:
                self.mqtt.close(CLOSE_BUDGET)
            self.mqtt = publisher.start() if publisher is not None else None
        if self.web is not None:
            self.web.attach(run_facts(s, pipeline, self.source), self.source, self.mqtt)
        self._applied = self.settings = s

    def _apply_web(self, http: HttpSettings | None, reloading: bool) -> None:
        """Start, restart or stop the web view when its settings change; a reload that cannot listen keeps the old."""
        if http == self._http:
            return
        from .web import WebView

        previous = self._http
        self._close_web()
        try:
            self.web = WebView(http) if http is not None else None
        except EdgeFerError:
            if reloading and previous is not None:
                self.web = WebView(previous)  # its address was freed just now
                self._http = previous
                self.web.attach(run_facts(self._applied, self.pipeline, self.source), self.source, self.mqtt)
            raise
        self._http = http

    def status_line(self) -> str:
        line = f"running on {self.source.name}" if self.source is not None else "starting"
        if self.mqtt is not None:
            line += f", publishing to mqtt {self.mqtt.where} under {self.mqtt.s.topic}/"
        if self.web is not None:
            line += f", web view on {self.web.url}"
        return line

    # --- running --------------------------------------------------------------------------------------------------

    def run(self) -> tuple[RunSummary, list[str]]:
        """Run until the source ends, a limit is hit, or SIGTERM/SIGINT; returns the summary and extra lines."""
        self.signals.install()
        total = RunSummary()
        started = time.perf_counter()
        extra: list[str] = []
        try:
            self.apply(self.settings)
            self.notifier.ready(self.status_line())
            log.info("%s", self.status_line())
            while True:
                s = self.settings.service
                max_frames = None if s.max_frames is None else max(0, s.max_frames - total.frames)
                duration = None if s.duration is None else max(0.0, s.duration - (time.perf_counter() - started))
                summary = run_loop(self.source, self.pipeline, self._all_sinks(), max_frames=max_frames,
                                   duration=duration, stop=self.stop, still=self.still, on_frame=self._on_frame,
                                   on_idle=self._on_idle, max_fps=s.max_fps or None,
                                   on_wait=self.notifier.watchdog)
                total.frames += summary.frames
                total.frames_with_faces += summary.frames_with_faces
                total.skipped += summary.skipped
                total.seconds += summary.seconds  # the loops' time: start-up and reloads would lower the fps
                total.stopped_by = summary.stopped_by
                if summary.stopped_by.startswith("--max-frames"):  # the limit as configured, not what was left
                    total.stopped_by = f"--max-frames {s.max_frames}"
                elif summary.stopped_by.startswith("--duration"):
                    total.stopped_by = f"--duration {s.duration:g}"
                if summary.stopped_by == "signal" and self.signals.name is None and self.signals.reload:
                    self.signals.reload = False
                    self.stop.clear()
                    self._reload()
                    continue
                if summary.stopped_by == "signal" and self.signals.name:
                    total.stopped_by = self.signals.name
                break
        finally:
            self.notifier.stopping()
            if self.mqtt is not None:
                extra.append(self._close_mqtt())
            self.close()
            self.signals.restore()
        return total, extra

    def _all_sinks(self) -> list:
        return self.sinks + [part for part in (self.mqtt, self.web) if part is not None]

    def _close_mqtt(self) -> str:
        self.mqtt.close(CLOSE_BUDGET)
        line = self.mqtt.summary()
        self.mqtt = None
        return line

    def _on_frame(self, result) -> None:
        self.notifier.watchdog()
        if self.web is not None:
            self.web.record(result)
        if self._idle_since is not None:
            self._idle_since = None
            self._idle_warned = False
            self.notifier.status(self.status_line())

    def _on_idle(self, exc: Exception) -> None:
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
        gap = now - self._idle_since
        name = self.source.name if self.source is not None else "the source"
        self.notifier.status(f"no frames from {name} for {int(gap // 5 * 5)} s; retrying")
        wd = self.notifier.watchdog_interval
        if wd and gap >= wd / 2 and not self._idle_warned:
            self._idle_warned = True
            log.warning("no frames from %s for %.1f s: systemd's watchdog restarts the service if none come "
                        "within %g s", name, gap, wd)

    def _reload(self) -> None:
        self.notifier.reloading()
        if self._reload_settings is None:
            log.warning("SIGHUP: no configuration to reload")
        else:
            try:
                new = self._reload_settings()
                changed = new.changed(self.settings)
                self.apply(new)
            except EdgeFerError as exc:
                if self.source is None:  # not even the previous source opens again: exit, systemd restarts us
                    raise
                log.error("reload failed, the running configuration stays: %s", exc)
            else:
                log.warning("configuration reloaded (changed: %s)", ", ".join(changed) or "nothing")
        self.notifier.ready(self.status_line())

    def close(self) -> None:
        """MQTT first (``offline`` within the budget), then the web view, outputs, and the source."""
        if self.mqtt is not None:
            self.mqtt.close(CLOSE_BUDGET)
            self.mqtt = None
        self._close_web()
        self._close_sinks()
        if self.source is not None:
            self.source.close()
            self.source = None
        self.notifier.close()

    def _close_web(self) -> None:
        if self.web is not None:
            self.web.close()
            self.web = None
            self._http = None

    def _close_sinks(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:  # closing one output must not keep the others open
                log.error("closing output %s failed: %r", type(sink).__name__, exc)
        self.sinks = []


# --- the parts ----------------------------------------------------------------------------------------------------

def open_source(s: Settings):
    """(source, still) for the settings; ``loop`` wraps a file source so it starts over at its end."""
    from .sources import ImageSource
    from .sources import open_source as _open

    i = s.input
    spec = i.camera if i.camera is not None else i.source
    if spec is None:
        from .bench import SAMPLE_IMAGE

        spec = str(SAMPLE_IMAGE)
        print(f"no --camera or --source given: running on the shipped sample {SAMPLE_IMAGE.name}", file=sys.stderr)
    from .detectors import DETECTORS

    need_color = bool(s.output.record or s.output.display or s.http.listen
                      or DETECTORS[s.detector.detector].wants_color)
    src = _open(spec, i.width, i.height, need_color=need_color)
    still = isinstance(src, ImageSource)
    if i.loop:
        if getattr(src, "live", False):
            src.close()
            raise EdgeFerError(f"{s.label('loop')}: looping needs a video or image file, not {src.name}")
        src = LoopingSource(lambda: _open(spec, i.width, i.height, need_color=need_color), first=src)
    return src, still


def make_sinks(s: Settings, source) -> list:
    from .outputs import ConsoleSink, DisplaySink, JsonlSink, RecordSink

    o = s.output
    sinks: list = []
    if o.output == "console":
        sinks.append(ConsoleSink())
    elif o.output == "jsonl":
        sinks.append(JsonlSink())
    if o.record:  # a file's frames are all processed, so its own rate; a camera's: the rate it is processed at
        live_fps = s.service.max_fps or 15.0
        sinks.append(RecordSink(o.record, fps=live_fps if getattr(source, "live", False) else
                                getattr(source, "fps", 0.0) or live_fps))
    if o.display:
        sinks.append(DisplaySink())
    return sinks


def run_facts(s: Settings, pipeline, source):
    """What the web view shows about this run: the model and detector that run, not only the configured ones."""
    from .build import detector_label
    from .web import RunFacts

    classifier = pipeline.classifier
    model = getattr(classifier, "model_path", None)
    return RunFacts(device_id=s.service.device_id, model=model.name if model is not None else type(classifier).__name__,
                    backend=classifier.backend, detector=detector_label(s.detector, pipeline.detector.key),
                    source=source.name, labels=tuple(classifier.labels))
