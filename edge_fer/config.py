"""Settings of ``edge-fer run``: one schema for the command line, the environment and a TOML file.

Precedence is command line > environment (``EDGE_FER_<OPTION>``) > config file > defaults.
Every ``run`` option has a key in the file: the option's long name with ``_`` for ``-``
(``--det-width`` is ``det_width``); the MQTT options live in a ``[mqtt]`` table without the
``mqtt_`` prefix (``--mqtt-host`` is ``host`` under ``[mqtt]``, ``EDGE_FER_MQTT_HOST`` in the
environment). Relative paths in a file are relative to the file's folder.

Secrets: the MQTT password comes from ``--mqtt-password-file``/``mqtt.password_file`` or the
``EDGE_FER_MQTT_PASSWORD`` environment variable, never from the file itself; it is kept in a
:class:`Secret` whose ``repr`` and ``str`` hide it, so it never reaches a log.

Every problem is one line naming the key where it came from (``config.toml: mqtt.port: ...``,
``EDGE_FER_DET_WIDTH: ...``, ``--max-fps: ...``). This module imports neither OpenCV nor the
interpreter, so ``edge-fer config check`` is quick.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import EdgeFerError

ENV_PREFIX = "EDGE_FER_"
CONFIG_ENV = "EDGE_FER_CONFIG"  # the config file, when --config is not given
DEFAULT_CONFIG = Path("/etc/edge-fer/config.toml")  # what the systemd unit passes; never read implicitly
TABLES = ("mqtt",)


class ConfigError(EdgeFerError):
    """One or more invalid settings; ``str()`` is the first problem, ``problems`` has them all."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        more = len(self.problems) - 1
        super().__init__(self.problems[0] + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""))


class Secret:
    """A string that does not show itself in logs, reprs or tracebacks' locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Opt:
    """One setting: its type, default, limits and where it may come from."""

    name: str                      # the click parameter name, e.g. "det_width", "mqtt_host"
    kind: str                      # int, float, str, bool, path, choice, count
    default: Any = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    short: str | None = None       # short CLI flag, e.g. "-s"
    in_file: bool = True           # False: never from the config file (secrets)
    on_cli: bool = True            # False: not a command-line option (secrets come from env or a file)

    @property
    def key(self) -> str:
        """The key in the TOML file: ``det_width`` or ``mqtt.host``."""
        for table in TABLES:
            if self.name.startswith(table + "_"):
                return f"{table}.{self.name[len(table) + 1:]}"
        return self.name

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def describe(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.kind == "choice":
            return "one of " + ", ".join(repr(c) if isinstance(c, str) else str(c) for c in self.choices)
        if self.kind in ("int", "float", "count"):
            noun = "an integer" if self.kind in ("int", "count") else "a number"
            if self.min is not None and self.max is not None:
                return f"{noun} from {_num(self.min)} to {_num(self.max)}"
            if self.min is not None:
                return f"{noun} >= {_num(self.min)}"
            return noun
        return {"bool": "true or false", "str": "a string", "path": "a file path (a string)"}[self.kind]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


# The schema: every `edge-fer run` option, in --help order. Defaults of None mean "not set"
# (derived later: port from TLS, topic from the device id, device id from the hostname).
OPTIONS: tuple[Opt, ...] = (
    Opt("config", "path", None, "TOML config file with any of these options (env: EDGE_FER_CONFIG)", in_file=False),
    # input
    Opt("camera", "int", None, "OpenCV camera index (e.g. 0 for /dev/video0)", min=0),
    Opt("source", "str", None, "picamera[:N], a video file, an image or folder of images, or an rtsp/http URL",
        short="-s"),
    Opt("width", "int", None, "camera capture width", min=1),
    Opt("height", "int", None, "camera capture height", min=1),
    Opt("loop", "bool", False, "start a video or image source over when it ends (soak tests, demos)"),
    # model
    Opt("model", "path", None, "TFLite model (default: the shipped one); its metadata JSON sits beside it",
        short="-m"),
    Opt("threads", "int", None, "interpreter threads (default: the runtime's)", min=1),
    Opt("edgetpu", "bool", False, "run on a Coral Edge TPU (libedgetpu.so.1)"),
    # detector and pipeline
    Opt("det_width", "int", 320, "detect faces on a frame downscaled to this width (0: full size)", min=0),
    Opt("min_neighbors", "int", 5, "Haar minNeighbors: higher gives fewer false faces", min=0),
    Opt("max_faces", "int", 0, "keep the N largest faces (0: all)", min=0),
    Opt("detect_every", "int", 3, "re-find tracked faces every N frames; they keep their box in between", min=1),
    Opt("full_detect_every", "int", 30, "search the whole frame for new faces every N frames", min=1),
    Opt("smoothing", "choice", "ema", "per-face smoothing of probabilities across frames",
        choices=("ema", "window", "none")),
    # outputs and limits
    Opt("output", "choice", "console", "console line, one JSON object per frame, or nothing", short="-o",
        choices=("console", "jsonl", "none")),
    Opt("display", "bool", False, "show a window with boxes and labels"),
    Opt("record", "path", None, "write an annotated MP4"),
    Opt("max_frames", "int", None, "stop after N frames", min=0),
    Opt("duration", "float", None, "stop after S seconds", min=0),
    Opt("max_fps", "float", None, "process at most N frames per second (saves CPU and heat; 0: no limit)", min=0),
    Opt("verbose", "count", 0, "-v info, -vv debug logs on stderr (in a file: 0, 1 or 2)", min=0, max=2, short="-v"),
    Opt("device_id", "str", None, "this device's name in MQTT topics and Home Assistant (default: the hostname)"),
    Opt("http", "str", None, "serve the web view on [HOST:]PORT"),
    Opt("http_token", "str", None, "token (environment only)", in_file=False, on_cli=False),
    Opt("http_insecure", "bool", False, "allow non-loopback without token"),
    Opt("http_fps", "float", 10.0, "jpeg fps cap", min=0.1),
    Opt("http_max_clients", "int", 4, "max stream clients", min=1),
    Opt("http_stall", "float", 10.0, "stall seconds", min=0.1),
    # MQTT
    Opt("mqtt_host", "str", None, "publish to this MQTT broker (default: no MQTT)"),
    Opt("mqtt_port", "int", None, "broker port (default: 1883, or 8883 with --mqtt-tls)", min=1, max=65535),
    Opt("mqtt_topic", "str", None, "topic prefix (default: edge-fer/<device-id>)"),
    Opt("mqtt_user", "str", None, "broker user name"),
    Opt("mqtt_password_file", "path", None,
        "file holding the broker password (or set EDGE_FER_MQTT_PASSWORD; never on the command line)"),
    Opt("mqtt_password", "str", None, "the broker password (environment only)", in_file=False, on_cli=False),
    Opt("mqtt_tls", "bool", False, "connect with TLS"),
    Opt("mqtt_ca", "path", None, "CA certificate file for TLS (default: the system's)"),
    Opt("mqtt_qos", "choice", 0, "QoS of state and faces messages (availability always uses 1)", choices=(0, 1)),
    Opt("mqtt_state_interval", "float", 5.0, "publish the state at least every S seconds (and on change)",
        min=0.2),
    Opt("mqtt_faces_interval", "float", 1.0,
        "publish per-frame faces at most every S seconds while faces are seen, and on change (0: every frame)",
        min=0),
    Opt("mqtt_discovery", "bool", True, "publish Home Assistant MQTT discovery"),
    Opt("mqtt_discovery_prefix", "str", "homeassistant", "Home Assistant discovery prefix"),
    Opt("mqtt_queue", "int", 100, "messages held while the broker is slow or away; the oldest are dropped",
        min=1, max=100000),
)
BY_NAME = {o.name: o for o in OPTIONS}
BY_KEY = {o.key: o for o in OPTIONS if o.in_file}
BY_ENV = {o.env: o for o in OPTIONS}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_TOPIC_BAD = re.compile(r"[+#\x00]")


class Settings(dict):
    """Resolved settings by option name, with ``origin[name]`` saying where each came from."""

    def __init__(self, values: Mapping[str, Any], origin: Mapping[str, str], config_path: Path | None = None):
        super().__init__(values)
        self.origin = dict(origin)
        self.config_path = config_path

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def label(self, name: str) -> str:
        """Where a value came from, as a user would name it: ``--det-width``, ``EDGE_FER_...``, ``file: key``."""
        return self.origin.get(name, BY_NAME[name].key)

    @property
    def mqtt_password_value(self) -> str | None:
        secret = self.get("mqtt_password")
        return secret.get() if isinstance(secret, Secret) else None

    def public(self) -> dict[str, Any]:
        """The settings with the password shown as ``***`` (for ``config check --show``)."""
        return {k: ("***" if isinstance(v, Secret) else v) for k, v in self.items()}


# --- checking one value ------------------------------------------------------------------------------------------

class _Bad(Exception):
    pass


def _check(opt: Opt, value: Any, *, from_text: bool, base: Path | None = None) -> Any:
    """The value, typed and range-checked; raises _Bad with what is wrong."""
    if from_text:  # the environment gives strings
        value = _parse_text(opt, value)
    kind = opt.kind
    if kind in ("int", "count"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(f"must be {opt.describe()}, got {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(f"must be {opt.describe()}, got {value!r}")
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise _Bad(f"must be a finite number, got {value!r}")
    elif kind == "bool":
        if not isinstance(value, bool):
            raise _Bad(f"must be true or false, got {value!r}")
    elif kind == "str":
        if not isinstance(value, str):
            raise _Bad(f"must be a string, got {value!r}")
        if not value.strip():
            raise _Bad("must not be empty")
    elif kind == "path":
        if isinstance(value, Path):
            value = value
        elif isinstance(value, str) and value.strip():
            value = Path(value).expanduser()
        else:
            raise _Bad(f"must be {opt.describe()}, got {value!r}")
        if base is not None and not value.is_absolute():
            value = base / value
    elif kind == "choice":
        if isinstance(value, bool) or value not in opt.choices:
            raise _Bad(f"must be {opt.describe()}, got {value!r}")
    if kind in ("int", "float", "count"):
        if opt.min is not None and value < opt.min or opt.max is not None and value > opt.max:
            raise _Bad(f"must be {opt.describe()}, got {_num(value)}")
    return value


def _parse_text(opt: Opt, text: str) -> Any:
    t = text.strip()
    if opt.kind in ("int", "count"):
        try:
            return int(t)
        except ValueError:
            raise _Bad(f"must be {opt.describe()}, got {text!r}") from None
    if opt.kind == "float":
        try:
            return float(t)
        except ValueError:
            raise _Bad(f"must be {opt.describe()}, got {text!r}") from None
    if opt.kind == "bool":
        if t.lower() in _TRUE:
            return True
        if t.lower() in _FALSE:
            return False
        raise _Bad(f"must be true or false (1/0, yes/no, on/off), got {text!r}")
    if opt.kind == "choice":
        for c in opt.choices:
            if str(c) == t:
                return c
        raise _Bad(f"must be {opt.describe()}, got {text!r}")
    return text


def _suggest(word: str, candidates: Iterable[str]) -> str:
    candidates = list(candidates)
    table, dot, rest = word.partition(".")
    if dot and table in TABLES and rest in candidates:
        return f" ('{rest}' belongs before the [{table}] table)"
    if "." not in word and word.startswith(tuple(t + "_" for t in TABLES)):
        table, _, rest = word.partition("_")
        if f"{table}.{rest}" in candidates:
            return f" (write it as '{rest} = ...' under [{table}])"
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


# --- the three sources ---------------------------------------------------------------------------------------------

def read_file(path: Path) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Values by option name from a TOML file, their origins, and the problems found."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            raise EdgeFerError("reading a config file needs Python 3.11+ (or 'pip install tomli')") from None
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"config file not found: {path}"]) from None
    except IsADirectoryError:
        raise ConfigError([f"config file {path} is a folder"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read config file {path}: {getattr(exc, 'strerror', None) or exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    base = path.resolve().parent
    flat: list[tuple[str, Any]] = []
    for key, value in data.items():
        if key in TABLES:
            if not isinstance(value, dict):
                problems.append(f"{path}: {key}: must be a table ([{key}]), got {value!r}")
                continue
            flat.extend((f"{key}.{k}", v) for k, v in value.items())
        elif isinstance(value, dict):
            problems.append(f"{path}: unknown table [{key}]{_suggest(key, TABLES)}")
        else:
            flat.append((key, value))
    for key, value in flat:
        opt = BY_KEY.get(key)
        if opt is None:
            if key == "mqtt.password":
                problems.append(f"{path}: mqtt.password: a password is not allowed in the config file; "
                                f"put it in a file named by mqtt.password_file, or in EDGE_FER_MQTT_PASSWORD")
            elif key == "config":
                problems.append(f"{path}: config: a config file cannot name another config file")
            else:
                problems.append(f"{path}: unknown key '{key}'{_suggest(key, BY_KEY)}")
            continue
        try:
            values[opt.name] = _check(opt, value, from_text=False, base=base)
            origin[opt.name] = f"{path}: {key}"
        except _Bad as exc:
            problems.append(f"{path}: {key}: {exc}")
    return values, origin, problems


def read_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Values from ``EDGE_FER_*`` variables; an empty variable counts as unset."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        text = environ[var]
        if var == CONFIG_ENV:
            continue
        opt = BY_ENV.get(var)
        if opt is None:
            problems.append(f"{var}: unknown setting in the environment{_suggest(var, BY_ENV)}")
            continue
        if text.strip() == "":
            continue
        try:
            value = _check(opt, text, from_text=True)
        except _Bad as exc:
            problems.append(f"{var}: {exc}")
            continue
        values[opt.name] = Secret(value) if opt.name in ("mqtt_password", "http_token") else value
        origin[opt.name] = var
    return values, origin, problems


def check_cli(cli: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """Range-check values given on the command line (click has typed them already)."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    for name, value in cli.items():
        opt = BY_NAME[name]
        try:
            values[name] = _check(opt, value, from_text=False)
        except _Bad as exc:
            problems.append(f"{opt.flag}: {exc}")
            continue
        origin[name] = opt.flag
    return values, origin, problems


def resolve(cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
            config: Path | None = None, *, read_secrets: bool = True) -> Settings:
    """Merge defaults < file < environment < command line, check the result, derive the rest.

    ``cli`` holds only the options given on the command line. The config file is ``config``,
    else ``cli['config']``, else ``$EDGE_FER_CONFIG``; no file is read implicitly.
    Raises :class:`ConfigError` listing every problem.
    """
    cli = dict(cli or {})
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    values = {o.name: o.default for o in OPTIONS}
    origin: dict[str, str] = {}
    path = config or cli.pop("config", None) or (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    cli.pop("config", None)
    if path is not None:
        v, o, p = read_file(Path(path))
        values.update(v)
        origin.update(o)
        problems += p
    v, o, p = read_env(environ)
    values.update(v)
    origin.update(o)
    problems += p
    v, o, p = check_cli(cli)
    values.update(v)
    origin.update(o)
    problems += p
    settings = Settings(values, origin, Path(path) if path is not None else None)
    if not problems:
        problems += _cross_check(settings, read_secrets)
    if problems:
        raise ConfigError(problems)
    return settings


def _rank(origin: str | None) -> int:
    """Precedence of an origin: command line 3, environment 2, file 1, default 0."""
    if origin is None:
        return 0
    if origin.startswith("--"):
        return 3
    if origin.startswith(ENV_PREFIX):
        return 2
    return 1


def _cross_check(s: Settings, read_secrets: bool) -> list[str]:
    problems = []
    if s["camera"] is not None and s["source"] is not None:
        a, b = s.label("camera"), s.label("source")
        file_a, _, key_a = a.rpartition(": ")
        file_b, _, key_b = b.rpartition(": ")
        if file_a and file_a == file_b:  # both in the same file
            problems.append(f"{file_a}: give either {key_a} or {key_b}, not both")
        else:
            problems.append(f"give either {a} or {b}, not both")
    # The password: the highest-precedence of the password file and EDGE_FER_MQTT_PASSWORD wins.
    pw_file, pw = s["mqtt_password_file"], s["mqtt_password"]
    if pw_file is not None and (pw is None or _rank(s.origin.get("mqtt_password_file")) > _rank(
            s.origin.get("mqtt_password"))):
        if read_secrets:
            try:
                text = Path(pw_file).read_text(encoding="utf-8")
            except OSError as exc:
                problems.append(f"{s.label('mqtt_password_file')}: cannot read {pw_file}: {exc.strerror or exc}")
            except UnicodeDecodeError:
                problems.append(f"{s.label('mqtt_password_file')}: {pw_file} is not a UTF-8 text file")
            else:
                password = text.rstrip("\r\n")
                if not password:
                    problems.append(f"{s.label('mqtt_password_file')}: {pw_file} is empty")
                s["mqtt_password"] = Secret(password)
                s.origin["mqtt_password"] = s.label("mqtt_password_file")
    if (pw_file is not None or pw is not None) and s["mqtt_user"] is None:
        which = s.label("mqtt_password_file") if pw_file is not None else s.label("mqtt_password")
        problems.append(f"{which}: a password needs a user name (mqtt.user, --mqtt-user or EDGE_FER_MQTT_USER)")
    if s["mqtt_ca"] is not None:
        if not s["mqtt_tls"]:
            problems.append(f"{s.label('mqtt_ca')}: a CA certificate needs TLS (mqtt.tls = true or --mqtt-tls)")
        elif not Path(s["mqtt_ca"]).is_file():
            problems.append(f"{s.label('mqtt_ca')}: CA certificate file not found: {s['mqtt_ca']}")
    for name in ("mqtt_topic", "mqtt_discovery_prefix"):
        topic = s[name]
        if topic is not None and (_TOPIC_BAD.search(topic) or topic.startswith("/") or topic.endswith("/")):
            problems.append(f"{s.label(name)}: must be a topic without '+', '#' or a leading/trailing '/', "
                            f"got {topic!r}")
    if s["device_id"] is not None and (_TOPIC_BAD.search(s["device_id"]) or "/" in s["device_id"]):
        problems.append(f"{s.label('device_id')}: must not contain '/', '+' or '#', got {s['device_id']!r}")
    if s["mqtt_host"] is not None and any(c.isspace() for c in s["mqtt_host"]):
        problems.append(f"{s.label('mqtt_host')}: must be a host name or address, got {s['mqtt_host']!r}")
    # derived values
    if s["device_id"] is None:
        s["device_id"] = default_device_id()
    if s["mqtt_port"] is None:
        s["mqtt_port"] = 8883 if s["mqtt_tls"] else 1883
    if s["mqtt_topic"] is None:
        s["mqtt_topic"] = f"edge-fer/{s['device_id']}"
    return problems


def default_device_id() -> str:
    """The hostname, made safe for an MQTT topic level."""
    name = socket.gethostname().split(".")[0] or "edge-fer"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def check_file(path: Path, *, read_secrets: bool = True) -> Settings:
    """Validate a config file on its own (file and defaults, no environment, no command line)."""
    return resolve({}, {}, Path(path), read_secrets=read_secrets)


def format_settings(settings: Settings) -> str:
    """``key = value  # origin`` lines, the password hidden."""
    lines = []
    for opt in OPTIONS:
        if opt.name == "config":
            continue
        value = settings.public().get(opt.name)
        shown = "(unset)" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
        where = settings.origin.get(opt.name, "default")
        lines.append(f"{opt.key:24s} = {shown:30s}  # {where}")
    return "\n".join(lines)
