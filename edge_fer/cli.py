"""The ``edge-fer`` command: run, predict, eval, bench, info, config.

User mistakes (missing model, camera that does not open, unreadable file) end with one
``error: ...`` line on stderr and exit status 2; nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import logging
import sys
from functools import wraps
from pathlib import Path

import click

from . import __version__
from .errors import EdgeFerError

log = logging.getLogger("edge_fer")

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _friendly(func):
    """Turn EdgeFerError (and unreadable files) into one line on stderr and exit status 2."""

    @wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EdgeFerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except (BrokenPipeError, KeyboardInterrupt):
            sys.exit(130)

    return wrapper


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="edge-fer")
def main() -> None:
    """Real-time facial emotion recognition: Haar faces + a TFLite emotion model."""


def model_options(f):
    f = click.option("--model", "-m", type=click.Path(path_type=Path), default=None,
                     help="TFLite model (default: the shipped one); its metadata JSON sits beside it")(f)
    f = click.option("--threads", type=int, default=None, help="interpreter threads (default: the runtime's)")(f)
    f = click.option("--edgetpu", is_flag=True, help="run on a Coral Edge TPU (libedgetpu.so.1)")(f)
    return f


def detector_options(f):
    f = click.option("--det-width", type=int, default=320, show_default=True,
                     help="detect faces on a frame downscaled to this width (0: full size)")(f)
    f = click.option("--min-neighbors", type=int, default=5, show_default=True,
                     help="Haar minNeighbors: higher gives fewer false faces")(f)
    f = click.option("--max-faces", type=int, default=0, help="keep the N largest faces (0: all)")(f)
    return f


def _detector(det_width: int, min_neighbors: int, max_faces: int):
    from .detector import DetectorConfig, FaceDetector

    return FaceDetector(DetectorConfig(det_width=det_width, min_neighbors=min_neighbors, max_faces=max_faces))


def _classifier(model: Path | None, threads: int | None, edgetpu: bool):
    from .classifier import load_classifier

    return load_classifier(model, num_threads=threads, edgetpu=edgetpu)


def run_options(f):
    """The ``run`` options, generated from :data:`edge_fer.config.OPTIONS` (the file and env use the same schema).

    Every default is None here, so a value given on the command line is told apart from one
    that is not (and then comes from the environment, the config file or the schema's default).
    """
    from .config import OPTIONS

    for opt in reversed(OPTIONS):
        if not opt.on_cli:
            continue
        help_ = opt.help
        if opt.default is not None and opt.default is not False and opt.kind != "count":
            help_ += f"  [default: {str(opt.default).lower() if isinstance(opt.default, bool) else opt.default}]"
        short = [opt.short] if opt.short else []
        if opt.kind == "count":
            f = click.option(*short, opt.flag, opt.name, count=True, help=help_)(f)
        elif opt.kind == "bool":
            f = click.option(f"{opt.flag}/--no-{opt.flag[2:]}", *short, opt.name, default=None, help=help_)(f)
        else:
            kind = {"int": int, "float": float, "str": str, "path": click.Path(path_type=Path)}.get(opt.kind)
            if opt.kind == "choice":
                kind = click.Choice([str(c) for c in opt.choices])
            f = click.option(opt.flag, *short, opt.name, type=kind, default=None, help=help_)(f)
    return f


@main.command(context_settings=CONTEXT)
@run_options
@click.pass_context
@_friendly
def run(ctx, **params):
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
    from click.core import ParameterSource

    from .config import BY_NAME, resolve
    from .service import Service
    from .systemd import configure_logging

    given = {name: value for name, value in params.items()
             if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    for name, value in list(given.items()):
        if BY_NAME[name].kind == "choice" and isinstance(BY_NAME[name].default, int):
            given[name] = int(value)
    configure_logging(given.get("verbose", 0))
    settings = resolve(given)
    summary, extra = Service(settings, reload=lambda: resolve(given)).run()
    click.echo("edge-fer: " + "; ".join([summary.line(), *extra]), err=True)


@main.group("config", context_settings=CONTEXT)
def config_group() -> None:
    """Check a config file for `edge-fer run` (TOML; see systemd/config.example.toml)."""


@config_group.command("check", context_settings=CONTEXT)
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--env", "with_env", is_flag=True, help="apply the EDGE_FER_* environment too, as `run` would")
@click.option("--show", is_flag=True, help="print every setting and where its value comes from")
def config_check(file, with_env, show):
    """Validate FILE: every problem is one `error: ...` line naming the key; exit status 2 if any."""
    import os

    from .config import ConfigError, format_settings, resolve

    try:
        settings = resolve({}, os.environ if with_env else {}, file)
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
@model_options
@detector_options
@click.option("--json", "as_json", is_flag=True, help="one JSON object per image")
@click.option("--annotate", type=click.Path(path_type=Path), default=None,
              help="write annotated images (a file for one image, else a folder)")
@click.option("--plot", type=click.Path(path_type=Path), default=None,
              help="bar chart of the largest face's probabilities (a file for one image, else a folder)")
@_friendly
def predict(images, model, threads, edgetpu, det_width, min_neighbors, max_faces, as_json, annotate, plot):
    """Faces and emotion probabilities for each image."""
    import cv2

    from .evaluate import bar_chart
    from .outputs import annotate as draw
    from .pipeline import FrameResult, classify_image
    from .preprocess import to_gray

    classifier = _classifier(model, threads, edgetpu)
    detector = _detector(det_width, min_neighbors, max_faces)
    for target in (annotate, plot):
        if target is not None and len(images) > 1:
            target.mkdir(parents=True, exist_ok=True)
    for path in images:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise EdgeFerError(f"cannot read image {path}")
        faces = classify_image(classifier, detector, to_gray(image))
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
@model_options
@click.option("--json", "as_json", is_flag=True, help="print the metrics as JSON")
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="write the confusion matrix PNG")
@_friendly
def eval_(data, split, model, threads, edgetpu, as_json, plot):
    """Accuracy, macro-F1, per-class metrics and confusion matrix on labelled faces."""
    from .datasets import load_split
    from .evaluate import confusion_image, evaluate

    classifier = _classifier(model, threads, edgetpu)
    faces = load_split(data, split, classifier.input_size, classifier.labels)
    result = evaluate(classifier, faces)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(f"{data} [{split}] with {getattr(classifier, 'model_path', model)} ({classifier.backend})\n")
        click.echo(result.table())
    if plot is not None:
        _imwrite(plot, confusion_image(result))


@main.command(context_settings=CONTEXT)
@click.option("--camera", type=int, default=None, help="benchmark on a camera")
@click.option("--source", "-s", default=None, help="video, image folder or stream (default: synthetic frames)")
@click.option("--model", "-m", "models", multiple=True, type=click.Path(path_type=Path),
              help="model(s) to compare (repeatable; default: the shipped one)")
@click.option("--threads", "threads_list", multiple=True, type=int, help="thread counts to compare (repeatable)")
@click.option("--edgetpu", is_flag=True, help="run on a Coral Edge TPU")
@detector_options
@click.option("--detect-every", type=int, default=3, show_default=True)
@click.option("--full-detect-every", type=int, default=30, show_default=True)
@click.option("--frames", type=int, default=300, show_default=True, help="frames per configuration")
@click.option("--warmup", type=int, default=10, show_default=True, help="frames left out of the figures")
@click.option("--http", "http", default=None, metavar="[HOST:]PORT",
              help="also run each configuration with the web view serving here (its cost; connect a viewer to "
                   "measure one)")
@click.option("--json", "as_json", is_flag=True, help="print the results as JSON only")
@_friendly
def bench(camera, source, models, threads_list, edgetpu, det_width, min_neighbors, max_faces, detect_every,
          full_detect_every, frames, warmup, http, as_json):
    """Per-stage latency (p50/p90/p99) and end-to-end FPS; one row per model and thread count.

    With --http each configuration runs a second time with the web view on (a "+ web view" row):
    its per-frame work (the frame handed over, the metrics counted) is in the output stage.
    """
    from .bench import SyntheticSource, bench_one, decode_all, format_stages, format_table
    from .classifier import DEFAULT_MODEL
    from .pipeline import Pipeline
    from .runner import run_loop
    from .sources import open_source

    if camera is not None:
        src = open_source(camera)
    elif source is not None:
        src = open_source(source)
    else:
        src = SyntheticSource(frames + warmup)
    buffered = decode_all(src, frames + warmup)
    if not buffered.frames:
        raise EdgeFerError(f"no frames could be read from {buffered.name}")
    view_settings = _bench_view_settings(http) if http else None
    rows = []
    for model in models or (None,):
        for threads in threads_list or (None,):
            for view in (None, view_settings) if view_settings else (None,):
                def make_run(model=model, threads=threads, view=view):
                    classifier = _classifier(model, threads, edgetpu)
                    pipeline = Pipeline(classifier, _detector(det_width, min_neighbors, max_faces),
                                        detect_every=detect_every, full_detect_every=full_detect_every)
                    if view is None:
                        return classifier, lambda s: run_loop(s, pipeline, [], collect_timings=True, warmup=warmup)
                    return classifier, lambda s: _run_with_view(s, pipeline, classifier, view, warmup)

                label = Path(model).name if model else f"{DEFAULT_MODEL.name} (shipped)"
                rows.append(bench_one(make_run, buffered, label + (" + web view" if view else ""), threads, warmup))
    record = {"source": buffered.name, "frames": len(buffered.frames) - warmup, "detect_every": detect_every,
              "det_width": det_width, "rows": [r.to_dict() for r in rows]}
    if as_json:
        click.echo(json.dumps(record))
        return
    click.echo(f"source: {buffered.name}, {record['frames']} frames after {warmup} warm-up, "
               f"detect every {detect_every}, det width {det_width}\n")
    click.echo(format_table(rows))
    for row in rows:
        if row.status == "ok":
            click.echo("\n" + format_stages(row))
    click.echo("\n" + json.dumps(record, separators=(",", ":")))


def _bench_view_settings(listen: str):
    from .web import HttpSettings, parse_listen

    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise EdgeFerError(f"--http: {exc}") from None
    return HttpSettings(host=host, port=port, insecure=True)


def _run_with_view(source, pipeline, classifier, settings, warmup: int):
    """The bench loop with the web view on: the view is a sink, and counts each frame as ``run`` does."""
    import time

    from .runner import run_loop
    from .web import RunFacts, WebView

    view = WebView(settings)
    view.attach(RunFacts(device_id="bench", model=str(getattr(classifier, "model_path", "")), backend=classifier.backend,
                         detector="haar", source=source.name, labels=tuple(classifier.labels)), source, None)
    click.echo(f"bench: web view on {view.url} while this configuration runs", err=True)

    def record(result) -> None:  # run calls this from on_frame, after the timings: count it in the output stage
        t = time.perf_counter()
        view.record(result)
        spent = time.perf_counter() - t
        result.timings["output"] += spent
        result.timings["total"] += spent

    try:
        return run_loop(source, pipeline, [view], collect_timings=True, warmup=warmup, on_frame=record)
    finally:
        view.close()


@main.command(context_settings=CONTEXT)
@click.option("--model", "-m", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True)
@_friendly
def info(model, as_json):
    """Versions, interpreter backend, delegates, model metadata, cameras."""
    from .info import collect, format_info

    data = collect(model)
    click.echo(json.dumps(data, indent=2) if as_json else format_info(data))


if __name__ == "__main__":
    main()
