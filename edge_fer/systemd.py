"""The systemd side of the service: sd_notify (READY, STATUS, WATCHDOG, ...) and journal-friendly logs.

Implemented over the ``$NOTIFY_SOCKET`` datagram socket (a path, or ``@name`` for an abstract
socket), so no extra package is needed; outside systemd every call is a cheap no-op.

The watchdog is fed from the vision loop's per-frame callback, and while a ``max_fps`` cap
makes the loop sleep after a processed frame, so it is fed only while frames are actually
processed: a camera that stops delivering (or a hung loop) stops the
feeding, and after ``WatchdogSec=`` systemd kills and (``Restart=on-failure``) restarts the
service. Short camera glitches (reconnected by the source's retry/backoff within that time)
do not restart anything.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """Send sd_notify messages; ``enabled`` is False (and every call a no-op) outside systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.address: str | None = None
        self._sock: socket.socket | None = None
        self._failed = False
        addr = env.get("NOTIFY_SOCKET", "")
        if addr.startswith("@"):
            self.address = "\0" + addr[1:]  # abstract namespace
        elif addr.startswith("/"):
            self.address = addr
        elif addr:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path: systemd notifications are off", addr)
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.watchdog_interval: float | None = None  # seconds, from WATCHDOG_USEC
        usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
        if usec and (not pid or pid.strip() == str(os.getpid())):
            try:
                self.watchdog_interval = int(usec) / 1e6 if int(usec) > 0 else None
            except ValueError:
                log.warning("WATCHDOG_USEC=%r is not a number: the watchdog is not fed", usec)
        self._last_feed = 0.0
        self._status = ""

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields in one datagram; a failure is logged once and never raised."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode("utf-8", "replace"), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("cannot notify systemd on %s: %s", self.address.replace("\0", "@"), exc)
                self._failed = True
            return False
        if self._failed:
            log.info("systemd notifications work again")
            self._failed = False
        return True

    def ready(self, status: str = "") -> bool:
        fields = ["READY=1"] + ([f"STATUS={status}"] if status else [])
        self._status = status or self._status
        return self.send(*fields, f"MAINPID={os.getpid()}")

    def status(self, text: str) -> bool:
        """Set the line ``systemctl status`` shows; repeated texts are not re-sent."""
        if text == self._status:
            return False
        self._status = text
        return self.send(f"STATUS={text}")

    def reloading(self) -> bool:
        self._status = "reloading the configuration"
        return self.send("RELOADING=1", f"STATUS={self._status}")

    def stopping(self) -> bool:
        self._status = "stopping"
        return self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self, now: float | None = None) -> bool:
        """Feed the watchdog, at most three times per ``WatchdogSec`` (call it as often as you like)."""
        if self.watchdog_interval is None or self._sock is None:
            return False
        now = time.monotonic() if now is None else now
        if now - self._last_feed < self.watchdog_interval / 3:
            return False
        self._last_feed = now
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


# Syslog priorities for journald's "<N>" line prefix (SyslogLevelPrefix=yes is systemd's default).
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """``<4>edge_fer.mqtt: message``: journald stores the level and adds its own timestamp."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prio = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 4)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def under_journal(environ: Mapping[str, str] | None = None) -> bool:
    """Whether stderr is connected to the journal (systemd sets ``JOURNAL_STREAM=dev:inode``)."""
    env = os.environ if environ is None else environ
    stream = env.get("JOURNAL_STREAM", "")
    if not stream or ":" not in stream:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
        dev, ino = stream.split(":", 1)
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):
        return False


def configure_logging(verbose: int) -> None:
    """Log to stderr: timestamps on a terminal, syslog-priority prefixes under the journal."""
    level = logging.WARNING - 10 * min(max(verbose, 0), 2)
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_edge_fer", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._edge_fer = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setStream(sys.stderr)  # the current stderr (tests swap it)
    handler.setFormatter(JournalFormatter() if under_journal() else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.setLevel(level)
