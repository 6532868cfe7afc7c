"""Config file, environment and command line: precedence, every kind of error, secrets, the shipped example."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_fer.cli import main
from edge_fer.config import BY_KEY, SCHEMA, ConfigError, Secret, resolve

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "systemd" / "config.example.toml"
SAMPLE = ROOT / "edge_fer" / "samples" / "astronaut.jpg"


@pytest.fixture
def cli(monkeypatch):
    for var in list(__import__("os").environ):
        if var.startswith("EDGE_FER_"):
            monkeypatch.delenv(var)
    return CliRunner()


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --- precedence ----------------------------------------------------------------------------------------------------

def jsonl_frames(result) -> int:
    return sum(1 for line in result.stdout.splitlines() if line.startswith("{"))


def test_precedence_cli_over_env_over_file_over_defaults(tmp_path, cli):
    cfg = write(tmp_path, f'source = "{SAMPLE}"\nloop = true\noutput = "jsonl"\nmax_frames = 7\n')
    run = ["run", "--config", str(cfg)]
    r = cli.invoke(main, run)
    assert r.exit_code == 0, r.output
    assert jsonl_frames(r) == 7                                            # file over defaults
    r = cli.invoke(main, run, env={"EDGE_FER_MAX_FRAMES": "5"})
    assert jsonl_frames(r) == 5                                            # env over file
    r = cli.invoke(main, run + ["--max-frames", "2"], env={"EDGE_FER_MAX_FRAMES": "5"})
    assert jsonl_frames(r) == 2                                            # command line over env
    r = cli.invoke(main, run + ["--no-loop"], env={"EDGE_FER_LOOP": "1"})
    assert jsonl_frames(r) == 1                                            # a CLI "false" beats env "true"
    r = cli.invoke(main, ["run", "--max-frames", "3"], env={"EDGE_FER_CONFIG": str(cfg)})
    assert jsonl_frames(r) == 3 and r.exit_code == 0                       # the file named by EDGE_FER_CONFIG
    r = cli.invoke(main, ["run", "--source", str(SAMPLE), "--output", "jsonl"])
    assert jsonl_frames(r) == 1                                            # defaults: no loop, no limit


def test_resolve_layers_and_origins(tmp_path):
    cfg = write(tmp_path, "det_width = 160\nmin_neighbors = 3\n[mqtt]\nhost = \"file-host\"\nport = 1884\n")
    s = resolve({"det_width": 640}, {"EDGE_FER_MIN_NEIGHBORS": "4", "EDGE_FER_MQTT_PORT": ""}, cfg)
    assert s.detector.det_width == 640 and s.origin["det_width"] == "--det-width"
    assert s.detector.min_neighbors == 4 and s.origin["min_neighbors"] == "EDGE_FER_MIN_NEIGHBORS"
    assert s.mqtt.host == "file-host" and s.origin["mqtt.host"] == f"{cfg}: mqtt.host"
    assert s.mqtt.port == 1884, "an empty variable counts as unset"
    assert s.detector.max_faces == 0 and "max_faces" not in s.origin
    assert s.mqtt.topic == f"edge-fer/{s.service.device_id}" and s.service.device_id
    assert resolve({}, {"EDGE_FER_MQTT_TLS": "yes"}, None).mqtt.port == 8883


def test_relative_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "pw").write_text("hunter2\n")
    cfg = write(tmp_path / "etc", 'model = "models/m.tflite"\n[mqtt]\nuser = "u"\npassword_file = "pw"\n')
    s = resolve({}, {}, cfg)
    assert s.classifier.model == tmp_path / "etc" / "models" / "m.tflite"
    assert s.mqtt.password == Secret("hunter2"), "one trailing newline is not part of the password"


def test_a_relative_source_file_is_relative_to_the_file_and_cameras_and_urls_are_kept(tmp_path, cli):
    etc = tmp_path / "etc"
    (etc / "clips").mkdir(parents=True)
    for source, expected in [("clips/a.mp4", str(etc / "clips" / "a.mp4")), ("frames", str(etc / "frames")),
                             ("../b.jpg", str(etc / ".." / "b.jpg")), (str(SAMPLE), str(SAMPLE)),
                             ("~/c.mp4", str(Path("~/c.mp4").expanduser())),
                             ("picamera", "picamera"), ("picamera:1", "picamera:1"), ("0", "0"), ("2", "2"),
                             ("rtsp://cam.local:8554/live", "rtsp://cam.local:8554/live"),
                             ("http://cam.local/video.mjpg", "http://cam.local/video.mjpg")]:
        s = resolve({}, {}, write(etc, f"source = {json.dumps(source)}\n"))
        assert s.input.source == expected, source
    # only the file's value: the command line and the environment are relative to the working folder, as typed
    cfg = write(etc, 'source = "clips/a.mp4"\n')
    assert resolve({"source": "x.mp4"}, {}, cfg).input.source == "x.mp4"
    assert resolve({}, {"EDGE_FER_SOURCE": "y.mp4"}, cfg).input.source == "y.mp4"
    # end to end: run finds the photo beside the file, whatever the working folder
    (etc / "photo.jpg").write_bytes(SAMPLE.read_bytes())
    cfg = write(etc, 'source = "photo.jpg"\noutput = "jsonl"\n')
    with cli.isolated_filesystem(temp_dir=tmp_path):
        r = cli.invoke(main, ["run", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert jsonl_frames(r) == 1


# --- errors: one line naming the key ---------------------------------------------------------------------------------

FILE_ERRORS = [
    ("det_widht = 3\n", "unknown key 'det_widht' (did you mean 'det_width'?)"),
    ("[mqtt]\nhots = \"x\"\n", "unknown key 'mqtt.hots' (did you mean 'mqtt.host'?)"),
    ("mqtt_host = \"x\"\n", "unknown key 'mqtt_host' (write it as 'host = ...' under [mqtt])"),
    ("[camera]\nindex = 0\n", "unknown table [camera]"),
    ("mqtt = 3\n", "mqtt: must be a table ([mqtt])"),
    ("config = \"other.toml\"\n", "config: a config file cannot name another config file"),
    ("det_width = \"big\"\n", "det_width: must be an integer >= 0, got 'big'"),
    ("max_faces = true\n", "max_faces: must be an integer >= 0, got True"),
    ("det_width = -1\n", "det_width: must be an integer >= 0, got -1"),
    ("detect_every = 0\n", "detect_every: must be an integer >= 1, got 0"),
    ("threads = 2.5\n", "threads: must be an integer >= 1, got 2.5"),
    ("duration = \"1h\"\n", "duration: must be a number >= 0, got '1h'"),
    ("verbose = 3\n", "verbose: must be an integer from 0 to 2, got 3"),
    ("output = \"xml\"\n", "output: must be one of 'console', 'jsonl', 'none', got 'xml'"),
    ("smoothing = 1\n", "smoothing: must be one of 'ema', 'window', 'none', got 1"),
    ("loop = \"yes\"\n", "loop: must be true or false, got 'yes'"),
    ("source = \"\"\n", "source: must not be empty"),
    ("source = 0\n", "source: must be a string, got 0"),
    ("model = 5\n", "model: must be a file path (a string), got 5"),
    ("[mqtt]\nport = 70000\n", "mqtt.port: must be an integer from 1 to 65535, got 70000"),
    ("[mqtt]\nqos = 2\n", "mqtt.qos: must be one of 0, 1, got 2"),
    ("[mqtt]\nstate_interval = 0.1\n", "mqtt.state_interval: must be a number >= 0.2, got 0.1"),
    ("[mqtt]\nqueue = 0\n", "mqtt.queue: must be an integer from 1 to 100000, got 0"),
    ("[mqtt]\ndiscovery = 1\n", "mqtt.discovery: must be true or false, got 1"),
    ("[mqtt]\npassword = \"hunter2\"\n", "mqtt.password: a password is not allowed in the config file"),
    ("[mqtt]\nuser = \"u\"\npassword_file = \"missing-pw\"\n", "mqtt.password_file: cannot read"),
    ("[mqtt]\npassword_file = \"pw\"\n", "mqtt.password_file: a password needs a user name"),
    ("[mqtt]\nca = \"ca.pem\"\n", "mqtt.ca: a CA certificate needs TLS"),
    ("[mqtt]\ntls = true\nca = \"missing.pem\"\n", "mqtt.ca: CA certificate file not found"),
    ("[mqtt]\ntopic = \"a/#\"\n", "mqtt.topic: must be a topic without '+', '#'"),
    ("[mqtt]\ntopic = \"a/b/\"\n", "mqtt.topic: must be a topic without '+', '#' or a leading/trailing '/'"),
    ("[mqtt]\nhost = \"a b\"\n", "mqtt.host: must be a host name or address"),
    ("device_id = \"a/b\"\n", "device_id: must not contain '/', '+' or '#'"),
    ("camera = 0\nsource = \"x.mp4\"\n", "config.toml: give either camera or source, not both"),
    ("det_width = \n", "not valid TOML"),
]


@pytest.mark.parametrize("text,expected", FILE_ERRORS, ids=[e[1][:40] for e in FILE_ERRORS])
def test_config_check_reports_each_error_on_one_line(tmp_path, cli, text, expected):
    (tmp_path / "pw").write_text("secret\n")
    cfg = write(tmp_path, text)
    r = cli.invoke(main, ["config", "check", str(cfg)])
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and expected in lines[0], lines[0]
    assert "Traceback" not in r.output
    if "password" in text:
        assert "hunter2" not in r.stderr


def test_config_check_lists_every_problem(tmp_path, cli):
    cfg = write(tmp_path, 'det_width = -1\nbogus = 1\n[mqtt]\nport = 0\n')
    r = cli.invoke(main, ["config", "check", str(cfg)])
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert any("det_width" in ln for ln in lines) and any("bogus" in ln for ln in lines) \
        and any("mqtt.port" in ln for ln in lines)


def test_missing_and_unreadable_files(tmp_path, cli):
    r = cli.invoke(main, ["config", "check", str(tmp_path / "nope.toml")])
    assert r.exit_code == 2 and r.stderr.strip() == f"error: config file not found: {tmp_path / 'nope.toml'}"
    r = cli.invoke(main, ["run", "--config", str(tmp_path)])
    assert r.exit_code == 2 and r.stderr.strip() == f"error: config file {tmp_path} is a folder"


@pytest.mark.parametrize("env,expected", [
    ({"EDGE_FER_DET_WIDTH": "abc"}, "error: EDGE_FER_DET_WIDTH: must be an integer >= 0, got 'abc'"),
    ({"EDGE_FER_MQTT_HOTS": "x"}, "error: EDGE_FER_MQTT_HOTS: unknown setting in the environment "
                                  "(did you mean 'EDGE_FER_MQTT_HOST'?)"),
    ({"EDGE_FER_LOOP": "maybe"}, "error: EDGE_FER_LOOP: must be true or false (1/0, yes/no, on/off), got 'maybe'"),
    ({"EDGE_FER_MQTT_QOS": "2"}, "error: EDGE_FER_MQTT_QOS: must be one of 0, 1, got '2'"),
    ({"EDGE_FER_MQTT_PASSWORD": "pw"}, "error: EDGE_FER_MQTT_PASSWORD: a password needs a user name"),
    ({"EDGE_FER_CAMERA": "0", "EDGE_FER_SOURCE": "x.mp4"},
     "error: give either EDGE_FER_CAMERA or EDGE_FER_SOURCE, not both"),
])
def test_environment_errors_name_the_variable(cli, env, expected):
    r = cli.invoke(main, ["run", "--max-frames", "1"], env=env)
    assert r.exit_code == 2
    assert r.stderr.strip().startswith(expected) and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "pw" not in r.stderr.replace("password", "")


@pytest.mark.parametrize("args,expected", [
    (["--det-width", "-5"], "error: --det-width: must be an integer >= 0, got -5"),
    (["--mqtt-port", "0"], "error: --mqtt-port: must be an integer from 1 to 65535, got 0"),
    (["--mqtt-state-interval", "0"], "error: --mqtt-state-interval: must be a number >= 0.2, got 0"),
    (["--camera", "0", "--source", "x.mp4"], "error: give either --camera or --source, not both"),
    (["--mqtt-ca", "ca.pem"], "error: --mqtt-ca: a CA certificate needs TLS"),
    (["--mqtt-password-file", "/nonexistent/pw", "--mqtt-user", "u"],
     "error: --mqtt-password-file: cannot read /nonexistent/pw: No such file or directory"),
    (["--source", "camera-that-is-not-there.mp4"], "error: source not found: camera-that-is-not-there.mp4"),
    (["--camera", "7", "--loop"], "error: camera 7 does not open"),
])
def test_command_line_errors(cli, args, expected):
    r = cli.invoke(main, ["run", *args])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().splitlines()[-1].startswith(expected), r.stderr


def test_a_file_error_names_file_and_key_in_run(tmp_path, cli):
    cfg = write(tmp_path, "[mqtt]\nport = \"x\"\n")
    r = cli.invoke(main, ["run", "--config", str(cfg)])
    assert r.exit_code == 2
    assert r.stderr.strip() == f"error: {cfg}: mqtt.port: must be an integer from 1 to 65535, got 'x'"


# --- secrets ---------------------------------------------------------------------------------------------------------

def test_password_never_shown(tmp_path, cli):
    (tmp_path / "pw").write_text("hunter2\n")
    cfg = write(tmp_path, '[mqtt]\nhost = "h"\nuser = "u"\npassword_file = "pw"\n')
    r = cli.invoke(main, ["config", "check", str(cfg), "--show"])
    assert r.exit_code == 0, r.output
    assert "hunter2" not in r.output
    assert re.search(r"^mqtt\.password\s+= \*\*\*", r.stdout, re.M)
    s = resolve({}, {}, cfg)
    assert "hunter2" not in repr(s) and "hunter2" not in str(s)
    assert s.mqtt.password.get() == "hunter2"
    # the environment beats the file for the password too
    s = resolve({}, {"EDGE_FER_MQTT_PASSWORD": "from-env"}, cfg)
    assert s.mqtt.password.get() == "from-env"
    s = resolve({"mqtt_password_file": tmp_path / "pw"}, {"EDGE_FER_MQTT_PASSWORD": "from-env"}, cfg)
    assert s.mqtt.password.get() == "hunter2"


def test_config_check_with_env_and_show(tmp_path, cli):
    cfg = write(tmp_path, "det_width = 160\n")
    r = cli.invoke(main, ["config", "check", str(cfg), "--env", "--show"], env={"EDGE_FER_DET_WIDTH": "200"})
    assert r.exit_code == 0 and r.stdout.startswith(f"{cfg}: ok")
    assert re.search(r"^det_width\s+= 200\s+# EDGE_FER_DET_WIDTH$", r.stdout, re.M), r.stdout
    r = cli.invoke(main, ["config", "check", str(cfg), "--show"], env={"EDGE_FER_DET_WIDTH": "200"})
    assert re.search(rf"^det_width\s+= 160\s+# {re.escape(str(cfg))}: det_width$", r.stdout, re.M), r.stdout


def test_config_check_leaves_the_web_view_s_token_to_the_environment_unless_given_it(tmp_path, cli):
    """The documented LAN set-up keeps the token in the unit's environment file: the file alone checks ok, and
    with --env the environment must hold the token."""
    cfg = write(tmp_path, '[http]\nlisten = "0.0.0.0:8080"\n')
    assert cli.invoke(main, ["config", "check", str(cfg)]).exit_code == 0
    r = cli.invoke(main, ["config", "check", str(cfg), "--env"], env={"EDGE_FER_HTTP_TOKEN": ""})
    assert r.exit_code == 2 and "would listen on 0.0.0.0:8080" in r.stderr
    r = cli.invoke(main, ["config", "check", str(cfg), "--env"], env={"EDGE_FER_HTTP_TOKEN": "s3cret-token-1"})
    assert r.exit_code == 0, r.output


def test_the_web_view_exposure_and_its_token_matter_only_to_commands_that_serve_it(tmp_path):
    """The service's file listens beyond this machine with the token in the unit's environment, which a shell lacks."""
    cfg = write(tmp_path, '[http]\nlisten = "0.0.0.0:8080"\n')
    with pytest.raises(ConfigError, match="http.listen: the web view would listen on 0.0.0.0:8080"):
        resolve({}, {}, cfg)                                          # run (and config check --env): refused
    s = resolve({}, {}, cfg, read_secrets=False, web_view=False)     # predict, eval, info: not their concern
    assert s.http.listen == "0.0.0.0:8080" and s.http.token is None
    with pytest.raises(ConfigError, match="--http: must be PORT"):  # a malformed address is still an error
        resolve({"http": "a:b:1"}, {}, None, read_secrets=False, web_view=False)
    # bench reads the web view's token (its view needs it) and leaves the MQTT password unread
    (tmp_path / "token").write_text("s3cret\n")
    cfg = write(tmp_path, '[http]\nlisten = "0.0.0.0:8080"\ntoken_file = "token"\n'
                          '[mqtt]\nhost = "h"\nuser = "u"\npassword_file = "root-only"\n')
    s = resolve({}, {}, cfg, read_secrets=("http.token",))
    assert s.http.token == Secret("s3cret") and s.http.exposure() is None and s.mqtt.password is None
    with pytest.raises(ConfigError, match="mqtt.password_file: cannot read"):
        resolve({}, {}, cfg)
    with pytest.raises(ValueError):
        resolve({}, {}, None, read_secrets=("mqtt.host",))
    # with the view off, its token file is left unread
    cfg = write(tmp_path, '[http]\ntoken_file = "root-only"\n')
    assert resolve({}, {}, cfg).http.token is None
    with pytest.raises(ConfigError, match="http.token_file: cannot read"):
        resolve({"http": "8080"}, {}, cfg)


# --- the shipped example -----------------------------------------------------------------------------------------------

def test_example_config_is_valid_and_documents_every_key(cli):
    r = cli.invoke(main, ["config", "check", str(EXAMPLE)])
    assert r.exit_code == 0, r.output
    parts = re.split(r"^\[(\w+)\]\n", EXAMPLE.read_text(), flags=re.M)
    tables = {"": parts[0], **dict(zip(parts[1::2], parts[2::2]))}  # the top level and each [table]'s text
    for key in BY_KEY:
        table, _, name = key.rpartition(".")
        assert table in tables, f"[{table}] is not in {EXAMPLE.name}"
        assert re.search(rf"^#? ?{re.escape(name)} = ", tables[table], re.M), f"{key} is not in {EXAMPLE.name}"
    # and every commented default matches the schema's default
    for opt in SCHEMA:
        if not opt.in_file or opt.default in (None,) or opt.kind == "count":
            continue
        table, _, name = opt.key.rpartition(".")
        section = tables[table]
        m = re.search(rf"^# {re.escape(name)} = (\S+)", section, re.M)
        if m:
            assert json.loads(m.group(1)) == opt.default, (opt.key, m.group(1))


def test_config_error_is_an_edge_fer_error():
    with pytest.raises(ConfigError) as info:
        resolve({"det_width": -1, "max_faces": -1}, {}, None)
    assert len(info.value.problems) == 2 and "(and 1 more problem)" in str(info.value)


# --- every command: options from the one schema, the same layers -------------------------------------------------------

COMMAND_SECTIONS = {"run": ("input", "classifier", "detector", "tracking", "output", "service", "mqtt", "http"),
                    "predict": ("classifier", "detector"), "eval": ("classifier", "detector"),
                    "bench": ("input.camera", "input.source", "classifier", "detector", "tracking", "http.listen"),
                    "info": ("classifier.model",)}


@pytest.mark.parametrize("command,sections", COMMAND_SECTIONS.items())
def test_every_command_takes_its_settings_options_from_the_schema(command, sections):
    params = {p.name for p in main.commands[command].params if isinstance(p, __import__("click").Option)}
    wanted = {s.param for s in SCHEMA if s.on_cli and (s.section in sections or f"{s.section}.{s.name}" in sections)}
    assert wanted <= params and "config" in params
    others = {s.param for s in SCHEMA} - wanted
    assert not params & others, f"{command} declares settings it does not use: {params & others}"


def test_predict_and_bench_resolve_settings_like_run(tmp_path, cli):
    r = cli.invoke(main, ["predict", str(SAMPLE), "--det-width", "-1"])
    assert r.exit_code == 2 and r.stderr.strip() == "error: --det-width: must be an integer >= 0, got -1"
    r = cli.invoke(main, ["predict", str(SAMPLE)], env={"EDGE_FER_MIN_NEIGHBORS": "x"})
    assert r.exit_code == 2 and r.stderr.strip() == "error: EDGE_FER_MIN_NEIGHBORS: must be an integer >= 0, got 'x'"
    r = cli.invoke(main, ["bench", "--threads", "1", "--threads", "0"])
    assert r.exit_code == 2 and r.stderr.strip() == "error: --threads: must be an integer >= 1, got 0"
    cfg = write(tmp_path, "det_width = 160\ndetect_every = 4\n")
    bench = ["bench", "--frames", "3", "--warmup", "1", "--json", "--config", str(cfg)]
    record = json.loads(cli.invoke(main, bench).stdout)
    assert (record["det_width"], record["detect_every"]) == (160, 4)                 # file over defaults
    record = json.loads(cli.invoke(main, bench, env={"EDGE_FER_DETECT_EVERY": "5"}).stdout)
    assert (record["det_width"], record["detect_every"]) == (160, 5)                 # env over file
    record = json.loads(cli.invoke(main, bench + ["--detect-every", "2"], env={"EDGE_FER_DETECT_EVERY": "5"}).stdout)
    assert record["detect_every"] == 2                                               # command line over env


def test_reload_diff_and_sections_compare_by_value(tmp_path):
    a = resolve({"det_width": 160}, {})
    b = resolve({"det_width": 200, "mqtt_host": "h"}, {})
    assert a.classifier == b.classifier and a.detector != b.detector
    assert b.changed(a) == ["det_width", "mqtt.host"]
