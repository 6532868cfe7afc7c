"""Settings of every ``edge-fer`` command: one schema for the command line, the environment and a TOML file.

The schema is :class:`Settings`, a set of typed sections (:class:`InputSettings`,
:class:`ClassifierSettings`, :class:`DetectorSettings`, :class:`TrackingSettings`, ...), each a
frozen dataclass whose fields are declared with :func:`setting` (default, help, limits). Everything
else is built from it: the options of ``run``, ``predict``, ``bench``, ``eval`` and ``info``
(``edge_fer.cli.settings_options``; each command picks the sections it uses), the ``EDGE_FER_*``
variables and the keys of the file.

Names follow the section's ``TABLE``. A field of a section without a table is a top-level key:
``DetectorSettings.det_width`` is ``--det-width``, ``EDGE_FER_DET_WIDTH`` and ``det_width``. A field
of a section with a table carries the table's name: ``MqttSettings.host`` is ``--mqtt-host``,
``EDGE_FER_MQTT_HOST`` and ``host`` under ``[mqtt]``. Relative paths in a file are relative to the
file's folder, and so is a ``source`` that is a file or folder (not a camera index, ``picamera[:N]`` or
a URL).

To add a setting, add a field to its section, e.g. in :class:`DetectorSettings`
``detector: str = setting("haar", "face detector", choices=("haar", "yunet"))``; its type (``int``,
``float``, ``str``, ``bool``, ``Path``, optionally ``| None``) says how it is parsed and checked, and
every command that takes the section gets the option. Use it where the part is built
(:mod:`edge_fer.build` for the classifier, detector and pipeline). To add a section (e.g. ``[http]``),
write a frozen dataclass with ``TABLE: ClassVar[str | None] = "http"`` and :func:`setting` fields, add
it to :class:`Settings` as ``http: HttpSettings = section(HttpSettings)``, and add ``"http"`` to the
``settings_options(...)`` of the commands that use it (``run``). Checks that involve more than one
value go in :func:`_cross_check`. Either way, document the new key in ``systemd/config.example.toml``
(a test checks that every key is there).

Precedence is command line > environment > config file > defaults, kept as each value's layer
(:data:`DEFAULT` < :data:`FILE` < :data:`ENV` < :data:`CLI`) while resolving.

Secrets: the MQTT password comes from ``--mqtt-password-file``/``mqtt.password_file`` or the
``EDGE_FER_MQTT_PASSWORD`` environment variable, never from the file itself; it is kept in a
:class:`Secret` whose ``repr`` and ``str`` hide it, so it never reaches a log. The web view's token
(``http.token_file``, ``EDGE_FER_HTTP_TOKEN``) is handled the same way.

Every problem is one line naming the key where it came from (``config.toml: mqtt.port: ...``,
``EDGE_FER_DET_WIDTH: ...``, ``--max-fps: ...``). This module imports neither OpenCV nor the
interpreter, so ``edge-fer config check`` is quick.
"""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import os
import re
import socket
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Collection, Iterable, Mapping

from .errors import EdgeFerError

ENV_PREFIX = "EDGE_FER_"
DETECTOR_KEYS = ("haar", "blazeface", "blazeface-full")  # edge_fer.detectors.DETECTORS (a test keeps them equal)
CONFIG_ENV = "EDGE_FER_CONFIG"  # the config file, when --config is not given
DEFAULT, FILE, ENV, CLI = range(4)  # the layers a value comes from, in rising precedence


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


# --- declaring settings ----------------------------------------------------------------------------------------

_SPEC = "edge_fer.setting"


def setting(default: Any = None, help: str = "", *, min: float | None = None, max: float | None = None,
            choices: Iterable[Any] = (), short: str | None = None, count: bool = False, in_file: bool = True,
            on_cli: bool = True, param: str | None = None) -> Any:
    """A section field that is a setting. ``None`` as default means "not set" (some are derived later:
    the MQTT port from TLS, the topic from the device id, the device id from the hostname).

    ``count``: a repeatable flag (``-vv``); ``in_file=False``: never from the config file (secrets);
    ``on_cli=False``: not a command-line option (secrets come from the environment or a file);
    ``param``: the name on the command line and in the environment when it is not ``<table>_<name>``
    (``http.listen`` is ``--http`` and ``EDGE_FER_HTTP``: the switch of its section).
    """
    spec = {"help": help, "min": min, "max": max, "choices": tuple(choices), "short": short, "count": count,
            "in_file": in_file, "on_cli": on_cli, "alias": param}
    return field(default=default, metadata={_SPEC: spec})


def section(cls: type) -> Any:
    """A field of :class:`Settings` holding one section (its defaults until resolved)."""
    return field(default_factory=cls)


@dataclass(frozen=True)
class Setting:
    """One setting of the schema, with the names it has on the command line, in the environment and the file."""

    section: str                   # the Settings field holding its section, e.g. "mqtt"
    name: str                      # the field in the section, e.g. "host"
    table: str | None              # the file table of its section, e.g. "mqtt"; None: top level
    kind: str                      # int, float, str, bool, path, choice, count
    default: Any = None
    help: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    short: str | None = None       # short CLI flag, e.g. "-s"
    in_file: bool = True
    on_cli: bool = True
    secret: bool = False           # kept in a Secret
    alias: str | None = None       # the parameter name, when not the table's and the field's

    @property
    def param(self) -> str:
        """The click parameter name: ``det_width``, ``mqtt_host``, ``http`` (for ``http.listen``)."""
        if self.alias:
            return self.alias
        return f"{self.table}_{self.name}" if self.table else self.name

    @property
    def key(self) -> str:
        """The key in the TOML file: ``det_width`` or ``mqtt.host``."""
        return f"{self.table}.{self.name}" if self.table else self.name

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.param.upper()

    @property
    def flag(self) -> str:
        return "--" + self.param.replace("_", "-")

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


# --- the sections ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class InputSettings:
    """Where frames come from: a camera index or a source (picamera, file, folder, stream)."""

    TABLE: ClassVar[str | None] = None
    camera: int | None = setting(None, "OpenCV camera index (e.g. 0 for /dev/video0)", min=0)
    source: str | None = setting(None, "picamera[:N], a video file, an image or folder of images, or an rtsp/http "
                                       "URL", short="-s")
    width: int | None = setting(None, "camera capture width", min=1)
    height: int | None = setting(None, "camera capture height", min=1)
    loop: bool = setting(False, "start a video or image source over when it ends (soak tests, demos)")


@dataclass(frozen=True)
class ClassifierSettings:
    """The emotion model and how it runs."""

    TABLE: ClassVar[str | None] = None
    model: Path | None = setting(None, "TFLite model (default: the shipped one); its metadata JSON sits beside it",
                                 short="-m")
    threads: int | None = setting(None, "interpreter threads (default: the runtime's)", min=1)
    edgetpu: bool = setting(False, "run on a Coral Edge TPU (libedgetpu.so.1)")


@dataclass(frozen=True)
class DetectorSettings:
    """Face detection on one frame (what ``predict`` needs too)."""

    TABLE: ClassVar[str | None] = None
    detector: str = setting("blazeface-full", "face detector: MediaPipe's BlazeFace full-range (faces up to about "
                                              "5 m) or short-range (about 2 m), or OpenCV's Haar cascade",
                            choices=DETECTOR_KEYS)
    detector_model: Path | None = setting(None, "BlazeFace .tflite file (default: the cached MediaPipe model; "
                                                "`edge-fer models fetch`)")
    min_score: float = setting(0.5, "BlazeFace: lowest face score kept (lower: more faces, more false ones)",
                               min=0, max=1)
    det_width: int = setting(320, "Haar: detect faces on a frame downscaled to this width (0: full size)", min=0)
    min_neighbors: int = setting(5, "Haar minNeighbors: higher gives fewer false faces", min=0)
    max_faces: int = setting(0, "keep the N largest faces (0: all)", min=0)
    align: bool = setting(True, "turn each face upright by its eyes before classifying (detectors that find eyes)")


@dataclass(frozen=True)
class TrackingSettings:
    """Across frames: how often detection runs between tracked frames, and how probabilities are smoothed."""

    TABLE: ClassVar[str | None] = None
    detect_every: int = setting(3, "re-find tracked faces every N frames; they keep their box in between", min=1)
    full_detect_every: int = setting(30, "search the whole frame for new faces every N frames", min=1)
    smoothing: str = setting("ema", "per-face smoothing of probabilities across frames",
                             choices=("ema", "window", "none"))


@dataclass(frozen=True)
class OutputSettings:
    """What each frame's result goes to, besides MQTT."""

    TABLE: ClassVar[str | None] = None
    output: str = setting("console", "console line, one JSON object per frame, or nothing", short="-o",
                          choices=("console", "jsonl", "none"))
    display: bool = setting(False, "show a window with boxes and labels")
    record: Path | None = setting(None, "write an annotated MP4")


@dataclass(frozen=True)
class ServiceSettings:
    """Limits, logging and the device's name: how ``run`` behaves as a long-running service."""

    TABLE: ClassVar[str | None] = None
    max_frames: int | None = setting(None, "stop after N frames", min=0)
    duration: float | None = setting(None, "stop after S seconds", min=0)
    max_fps: float | None = setting(None, "process at most N frames per second (saves CPU and heat; 0: no limit)",
                                    min=0)
    verbose: int = setting(0, "-v info, -vv debug logs on stderr (in a file: 0, 1 or 2)", min=0, max=2, short="-v",
                           count=True)
    device_id: str | None = setting(None, "this device's name in MQTT topics and Home Assistant (default: the "
                                          "hostname)")


@dataclass(frozen=True)
class MqttSettings:
    """The MQTT broker and what is published to it (see :mod:`edge_fer.mqtt`)."""

    TABLE: ClassVar[str | None] = "mqtt"
    host: str | None = setting(None, "publish to this MQTT broker (default: no MQTT)")
    port: int | None = setting(None, "broker port (default: 1883, or 8883 with --mqtt-tls)", min=1, max=65535)
    topic: str | None = setting(None, "topic prefix (default: edge-fer/<device-id>)")
    user: str | None = setting(None, "broker user name")
    password_file: Path | None = setting(None, "file holding the broker password (or set EDGE_FER_MQTT_PASSWORD; "
                                               "never on the command line)")
    password: Secret | None = setting(None, "the broker password (environment only)", in_file=False, on_cli=False)
    tls: bool = setting(False, "connect with TLS")
    ca: Path | None = setting(None, "CA certificate file for TLS (default: the system's)")
    qos: int = setting(0, "QoS of state and faces messages (availability always uses 1)", choices=(0, 1))
    state_interval: float = setting(5.0, "publish the state at least every S seconds (and on change)", min=0.2)
    faces_interval: float = setting(1.0, "publish per-frame faces at most every S seconds while faces are seen, "
                                         "and on change (0: every frame)", min=0)
    discovery: bool = setting(True, "publish Home Assistant MQTT discovery")
    discovery_prefix: str = setting("homeassistant", "Home Assistant discovery prefix")
    queue: int = setting(100, "messages held while the broker is slow or away; the oldest are dropped",
                         min=1, max=100000)


@dataclass(frozen=True)
class HttpSettings:
    """The web view of ``run`` (see :mod:`edge_fer.web`): where it listens, what it allows, what it sends."""

    TABLE: ClassVar[str | None] = "http"
    listen: str | None = setting(None, "serve the web view, metrics and health on [HOST:]PORT (a bare PORT listens "
                                       "on 127.0.0.1 only; default: off)", param="http")
    token_file: Path | None = setting(None, "file holding the token the web view asks for (or set "
                                            "EDGE_FER_HTTP_TOKEN; never on the command line)")
    token: Secret | None = setting(None, "the web view's token (environment only)", in_file=False, on_cli=False)
    insecure: bool = setting(False, "let --http listen beyond this machine without a token (a trusted network, "
                                    "or a proxy that authenticates)")
    fps: float = setting(10.0, "annotated JPEGs per second at most, for all viewers together", min=0.5, max=60)
    max_clients: int = setting(4, "stream clients at once (and as many event clients); the next gets 503",
                               min=1, max=100)
    stall: float = setting(10.0, "/healthz answers 503 after S seconds without a frame", min=0.5)

    @property
    def host(self) -> str:
        return parse_listen(self.listen or "")[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen or "")[1]

    @property
    def address(self) -> str:
        """``host:port`` (``[v6]:port``), as a user would type it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def exposure(self) -> str | None:
        """Why the view must not listen like this (beyond this machine without a token or ``insecure``), or None."""
        return exposure(self.listen or "", self.token is not None, self.insecure)


@dataclass(frozen=True)
class Settings:
    """All settings, by section (``s.detector.det_width``); ``origin[key]`` says where each value came from."""

    input: InputSettings = section(InputSettings)
    classifier: ClassifierSettings = section(ClassifierSettings)
    detector: DetectorSettings = section(DetectorSettings)
    tracking: TrackingSettings = section(TrackingSettings)
    output: OutputSettings = section(OutputSettings)
    service: ServiceSettings = section(ServiceSettings)
    mqtt: MqttSettings = section(MqttSettings)
    http: HttpSettings = section(HttpSettings)
    origin: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def get(self, key: str) -> Any:
        """A value by its file key (``det_width``, ``mqtt.host``)."""
        s = KEYS[key]
        return getattr(getattr(self, s.section), s.name)

    def label(self, key: str) -> str:
        """Where a value came from, as a user would name it: ``--det-width``, ``EDGE_FER_...``, ``file: key``."""
        return self.origin.get(key, key)

    def changed(self, other: Settings) -> list[str]:
        """The keys whose values differ from ``other``'s."""
        return [s.key for s in SCHEMA if self.get(s.key) != other.get(s.key)]


# --- the schema, built from the sections ---------------------------------------------------------------------------

_KINDS = {int: "int", float: "float", str: "str", bool: "bool", Path: "path", Secret: "str"}


def _base_type(section_cls: type, name: str) -> type:
    """A field's type without ``| None``."""
    hint = typing.get_type_hints(section_cls)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _build_schema() -> tuple[Setting, ...]:
    out = []
    for sf in fields(Settings):
        cls = sf.default_factory
        if not (dataclasses.is_dataclass(cls) and hasattr(cls, "TABLE")):
            continue
        for f in fields(cls):
            spec = dict(f.metadata[_SPEC])
            base = _base_type(cls, f.name)
            if base not in _KINDS:
                raise TypeError(f"{cls.__name__}.{f.name}: a setting must be int, float, str, bool or Path")
            kind = "count" if spec.pop("count") else "choice" if spec["choices"] else _KINDS[base]
            out.append(Setting(sf.name, f.name, cls.TABLE, kind, f.default, secret=base is Secret, **spec))
    keys = [s.key for s in out]
    if len(set(keys)) != len(keys):
        raise TypeError(f"two settings share a key: {sorted(k for k in keys if keys.count(k) > 1)}")
    return tuple(out)


SCHEMA: tuple[Setting, ...] = _build_schema()
SECTIONS: dict[str, type] = {s.section: type(getattr(Settings(), s.section)) for s in SCHEMA}
TABLES: tuple[str, ...] = tuple(dict.fromkeys(s.table for s in SCHEMA if s.table))
KEYS = {s.key: s for s in SCHEMA}
BY_KEY = {s.key: s for s in SCHEMA if s.in_file}   # the keys allowed in the file
BY_PARAM = {s.param: s for s in SCHEMA}
BY_ENV = {s.env: s for s in SCHEMA}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_TOPIC_BAD = re.compile(r"[+#\x00]")


# --- checking one value ------------------------------------------------------------------------------------------

class _Bad(Exception):
    pass


def _check(opt: Setting, value: Any, *, from_text: bool, base: Path | None = None) -> Any:
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
        if isinstance(value, str) and value.strip():
            value = Path(value).expanduser()
        elif not isinstance(value, Path):
            raise _Bad(f"must be {opt.describe()}, got {value!r}")
        if base is not None and not value.is_absolute():
            value = base / value
    elif kind == "choice":
        if isinstance(value, bool) or value not in opt.choices:
            raise _Bad(f"must be {opt.describe()}, got {value!r}")
    if kind in ("int", "float", "count"):
        if opt.min is not None and value < opt.min or opt.max is not None and value > opt.max:
            raise _Bad(f"must be {opt.describe()}, got {_num(value)}")
    return Secret(value) if opt.secret else value


def _parse_text(opt: Setting, text: str) -> Any:
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


# --- the three sources: each gives values and origins by key, and the problems found -----------------------------

Layer = tuple[dict[str, Any], dict[str, str], list[str]]


def read_file(path: Path) -> Layer:
    """Values by key from a TOML file, their origins, and the problems found."""
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
            if key in KEYS:  # a secret
                problems.append(f"{path}: {key}: a {KEYS[key].name} is not allowed in the config file; "
                                f"put it in a file named by {key}_file, or in {KEYS[key].env}")
            elif key == "config":
                problems.append(f"{path}: config: a config file cannot name another config file")
            else:
                problems.append(f"{path}: unknown key '{key}'{_suggest(key, BY_KEY)}")
            continue
        try:
            values[key] = _check(opt, value, from_text=False, base=base)
            if key == "source" and _is_local_path(values[key]):  # a file or folder, not a camera or a URL
                values[key] = str(base / Path(values[key]).expanduser())
            origin[key] = f"{path}: {key}"
        except _Bad as exc:
            problems.append(f"{path}: {key}: {exc}")
    return values, origin, problems


def _is_local_path(source: str) -> bool:
    """Whether a ``source`` names a file or folder: not a camera index, ``picamera[:N]`` or a URL
    (as :func:`edge_fer.sources.open_source` tells them apart)."""
    return not (source.isascii() and source.isdigit() or source == "picamera" or source.startswith("picamera:")
                or "://" in source)


def read_env(environ: Mapping[str, str]) -> Layer:
    """Values from ``EDGE_FER_*`` variables; an empty variable counts as unset."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX) or var == CONFIG_ENV:
            continue
        opt = BY_ENV.get(var)
        if opt is None:
            problems.append(f"{var}: unknown setting in the environment{_suggest(var, BY_ENV)}")
            continue
        text = environ[var]
        if text.strip() == "":
            continue
        try:
            values[opt.key] = _check(opt, text, from_text=True)
        except _Bad as exc:
            problems.append(f"{var}: {exc}")
            continue
        origin[opt.key] = var
    return values, origin, problems


def check_cli(cli: Mapping[str, Any]) -> Layer:
    """Range-check values given on the command line, by click parameter name (click has typed them already)."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    for param, value in cli.items():
        opt = BY_PARAM[param]
        try:
            values[opt.key] = _check(opt, value, from_text=False)
        except _Bad as exc:
            problems.append(f"{opt.flag}: {exc}")
            continue
        origin[opt.key] = opt.flag
    return values, origin, problems


def resolve(cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
            config: Path | None = None, *, read_secrets: bool | Collection[str] = True,
            web_view: bool = True) -> Settings:
    """Merge defaults < file < environment < command line, check the result, derive the rest.

    ``cli`` holds only the options given on the command line, by click parameter name (``mqtt_host``).
    The config file is ``config``, else ``cli['config']``, else ``$EDGE_FER_CONFIG``; no file is read
    implicitly. ``read_secrets`` says which secret files are read: all (``True``), none (``False``:
    commands that publish nothing and serve nothing), or those of the keys given (``("http.token",)``:
    ``bench``, which may serve the web view but publishes nothing). The web view's token is read only
    when ``http.listen`` is set. ``web_view=False``: the command never serves the web view (``predict``,
    ``eval``, ``info``), so a listen address beyond this machine without a token is not refused there:
    they read the service's own file, whose token may sit in the unit's environment.
    Raises :class:`ConfigError` listing every problem.
    """
    cli = dict(cli or {})
    secrets = {s.key for s in SCHEMA if s.secret}
    wanted = secrets if read_secrets is True else set(read_secrets or ())
    if not wanted <= secrets:
        raise ValueError(f"read_secrets: not secrets: {sorted(wanted - secrets)}")
    given_file = cli.pop("config", None)
    environ = os.environ if environ is None else environ
    path = config or given_file or (Path(environ[CONFIG_ENV]) if environ.get(CONFIG_ENV) else None)
    values = {s.key: s.default for s in SCHEMA}
    origin: dict[str, str] = {}
    layer = dict.fromkeys(values, DEFAULT)
    problems: list[str] = []
    sources = [(FILE, read_file(Path(path)))] if path is not None else []
    sources += [(ENV, read_env(environ)), (CLI, check_cli(cli))]
    for rank, (v, o, p) in sources:
        values.update(v)
        origin.update(o)
        layer.update(dict.fromkeys(v, rank))
        problems += p
    if not problems:
        problems += _cross_check(values, origin, layer, Path(path) if path is not None else None, wanted, web_view)
    if problems:
        raise ConfigError(problems)
    parts = {name: cls(**{s.name: values[s.key] for s in SCHEMA if s.section == name})
             for name, cls in SECTIONS.items()}
    return Settings(**parts, origin=origin)


def _cross_check(values: dict[str, Any], origin: dict[str, str], layer: dict[str, int], path: Path | None,
                 read_secrets: set[str], web_view: bool) -> list[str]:
    """Checks that involve several values, and the values derived from others; updates ``values``."""
    def label(key: str) -> str:
        return origin.get(key, key)

    problems = []
    if values["camera"] is not None and values["source"] is not None:
        if layer["camera"] == layer["source"] == FILE:
            problems.append(f"{path}: give either camera or source, not both")
        else:
            problems.append(f"give either {label('camera')} or {label('source')}, not both")
    # The password and the token: the higher-precedence of the file and the environment variable wins.
    # The token matters only while the web view is on: with it off, its file is left unread.
    for key in ("mqtt.password", "http.token"):
        if key in read_secrets and (key != "http.token" or values["http.listen"] is not None):
            problems += _read_secret(key, values, origin, layer)
    pw_file, pw = values["mqtt.password_file"], values["mqtt.password"]
    if (pw_file is not None or pw is not None) and values["mqtt.user"] is None:
        which = label("mqtt.password_file") if pw_file is not None else label("mqtt.password")
        problems.append(f"{which}: a password needs a user name (mqtt.user, --mqtt-user or EDGE_FER_MQTT_USER)")
    if values["mqtt.ca"] is not None:
        if not values["mqtt.tls"]:
            problems.append(f"{label('mqtt.ca')}: a CA certificate needs TLS (mqtt.tls = true or --mqtt-tls)")
        elif not Path(values["mqtt.ca"]).is_file():
            problems.append(f"{label('mqtt.ca')}: CA certificate file not found: {values['mqtt.ca']}")
    for key in ("mqtt.topic", "mqtt.discovery_prefix"):
        topic = values[key]
        if topic is not None and (_TOPIC_BAD.search(topic) or topic.startswith("/") or topic.endswith("/")):
            problems.append(f"{label(key)}: must be a topic without '+', '#' or a leading/trailing '/', "
                            f"got {topic!r}")
    device_id = values["device_id"]
    if device_id is not None and (_TOPIC_BAD.search(device_id) or "/" in device_id):
        problems.append(f"{label('device_id')}: must not contain '/', '+' or '#', got {device_id!r}")
    host = values["mqtt.host"]
    if host is not None and any(c.isspace() for c in host):
        problems.append(f"{label('mqtt.host')}: must be a host name or address, got {host!r}")
    listen = values["http.listen"]
    if listen is not None:
        try:
            parse_listen(listen)
        except ValueError as exc:
            problems.append(f"{label('http.listen')}: {exc}")
        else:
            token = values["http.token"] is not None or values["http.token_file"] is not None
            problem = exposure(listen, token, values["http.insecure"])
            if problem and web_view:  # only a command that serves the view can expose it
                problems.append(f"{label('http.listen')}: {problem}")
    # derived values
    if values["device_id"] is None:
        values["device_id"] = default_device_id()
    if values["mqtt.port"] is None:
        values["mqtt.port"] = 8883 if values["mqtt.tls"] else 1883
    if values["mqtt.topic"] is None:
        values["mqtt.topic"] = f"edge-fer/{values['device_id']}"
    return problems


def _read_secret(key: str, values: dict[str, Any], origin: dict[str, str], layer: dict[str, int]) -> list[str]:
    """Read ``<key>_file`` into ``key`` (a :class:`Secret`) unless the variable for ``key`` has precedence."""
    file_key = key + "_file"
    path, value = values[file_key], values[key]
    if path is None or (value is not None and layer[file_key] <= layer[key]):
        return []
    where = origin.get(file_key, file_key)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return [f"{where}: cannot read {path}: {exc.strerror or exc}"]
    except UnicodeDecodeError:
        return [f"{where}: {path} is not a UTF-8 text file"]
    secret = text.rstrip("\r\n")
    values[key] = Secret(secret)
    origin[key] = where
    return [f"{where}: {path} is empty"] if not secret else []


def parse_listen(text: str) -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> (host, port); a bare port listens on 127.0.0.1 only."""
    t = text.strip()
    host, port = "127.0.0.1", t
    if t.startswith("["):
        end = t.find("]")
        if end < 0 or t[end + 1:end + 2] != ":":
            raise ValueError(f"must be PORT, HOST:PORT or [IPv6]:PORT, got {text!r}")
        host, port = t[1:end], t[end + 2:]
    elif ":" in t:
        host, _, port = t.rpartition(":")
        if not host or ":" in host:
            raise ValueError(f"must be PORT, HOST:PORT or [IPv6]:PORT, got {text!r}")
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"must be PORT, HOST:PORT or [IPv6]:PORT with a port from 0 to 65535, got {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only: ``localhost`` or a loopback address (a host name may be anything)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure(listen: str, token: bool, insecure: bool) -> str | None:
    """The one line that refuses a web view beyond this machine without a token or ``insecure``, or None."""
    host, port = parse_listen(listen)
    if is_loopback(host) or token or insecure:
        return None
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (f"the web view would listen on {address}, beyond this machine, without a token: set one "
            f"(http.token_file or EDGE_FER_HTTP_TOKEN) or allow it explicitly with --http-insecure")


def default_device_id() -> str:
    """The hostname, made safe for an MQTT topic level."""
    name = socket.gethostname().split(".")[0] or "edge-fer"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def format_settings(settings: Settings) -> str:
    """``key = value  # origin`` lines, the password hidden."""
    lines = []
    for s in SCHEMA:
        value = settings.get(s.key)
        if value is None:
            shown = "(unset)"
        elif isinstance(value, Secret):
            shown = "***"
        else:
            shown = str(value).lower() if isinstance(value, bool) else str(value)
        lines.append(f"{s.key:24s} = {shown:30s}  # {settings.origin.get(s.key, 'default')}")
    return "\n".join(lines)
