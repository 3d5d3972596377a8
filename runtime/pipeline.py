"""The real-time pipeline: source a, source b -> pair -> align -> backend -> sinks, each stage timed.

:func:`run` is the library entry point (``rfrun`` and the latency benchmark call it).
:class:`Fuser` is the per-frame core for callers that bring their own frames: it
feeds the output-normalisation state through the colour graph as the export
contract says (``minmax``: alpha 0 every frame; ``ema``: alpha 0 on the first frame,
then the smoothing factor with the previous ``norm_state_out``; ``none``: (0, 1, 1)).

With ``RunConfig.infer_size`` the network runs at that smaller size
(:class:`~refusion.runtime.upsample.LowResFusion`): the downscale of both sources is
timed in the ``align`` stage, the network in ``infer``, and the host colour work after
it (luma upsampling, full-resolution Eq. 15 chroma, YCrCb -> BGR) in an extra ``post``
stage that only such runs report.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .align import AlignConfig, Aligner
from .backends import Backend, open_backend
from .errors import EngineError, ImageReadError, OutputError, SizeError
from .fsutil import check_writable
from .progress import LogProgress, Progress, warning
from .size import Size
from .sinks import FolderSink, ImageSink, Sink, VideoSink, WindowSink, compose, output_kind
from .sources import (
    RECONNECT_DELAYS,
    STALL_TIMEOUT_S,
    Frame,
    ImageSequenceSource,
    Pairer,
    Source,
    open_source,
    pair_by_name,
    pair_by_order,
)
from .stats import STAGES, FpsMeter, RunSummary, StageTimes, write_json
from .upsample import DEFAULT_INTERPOLATION, LowResFusion, check_infer_size

log = logging.getLogger(__name__)

NORMALISATIONS = ("auto", "minmax", "ema", "none")
PAIRINGS = ("name", "order")
#: Source option names per task (``rfrun --ir/--vis`` ...), to spot a model run on another task's sources.
ROLE_OPTIONS: dict[str, tuple[str, str]] = {
    "ivif": ("ir", "vis"), "mfif": ("near", "far"), "meif": ("under", "over"), "mif": ("func", "mri"),
}
DEFAULT_EMA_ALPHA = 0.9
#: The bundled models, one per task (``<task>.colour.onnx``, our own trained models); runs without --model use
#: the one of the task given by --task or by the source options (--func/--mri ...), IVIF by default (and --demo).
MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_TASK = "ivif"


def bundled_model(task: str) -> Path:
    """Path of the bundled colour ONNX of ``task`` (it may be missing from an install)."""
    return MODELS_DIR / f"{task}.colour.onnx"


DEFAULT_MODEL = bundled_model(DEFAULT_TASK)


def task_of_sources(given: tuple[str, str] | None) -> str | None:
    """The task whose source options were typed (("func", "mri") -> "mif"); None for --a/--b or none."""
    for task, names in ROLE_OPTIONS.items():
        if given is not None and tuple(given) == names:
            return task
    return None


def resolve_model(model: str | Path | None, task: str | None = None) -> Path:
    """``model`` as given, or the bundled model of ``task`` (None: IVIF); EngineError when that is missing."""
    if model is not None:
        return Path(model)
    task = task or DEFAULT_TASK
    path = bundled_model(task)
    if not path.is_file():
        raise EngineError(
            f"the bundled {task} model {path.name} is missing from this install ({MODELS_DIR}); "
            "pass --model MODEL.colour.onnx (rfexport writes one from a checkpoint)"
        )
    return path


class Fuser:
    """Fuses pairs through a backend, carrying the output-normalisation state between frames.

    normalisation: "minmax" (per frame, the authors' stills), "ema" (min/max smoothed over
    frames with factor ``alpha``; for video) or "none" (sigmoid output x255).
    """

    def __init__(self, backend: Backend, normalisation: str = "ema", alpha: float = DEFAULT_EMA_ALPHA) -> None:
        if normalisation not in ("minmax", "ema", "none"):
            raise ValueError(f"normalisation must be minmax, ema or none, not {normalisation!r}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"the EMA smoothing factor must be in [0, 1), got {alpha}")
        self.backend = backend
        self.normalisation = normalisation
        self.alpha = float(alpha)
        self.state = np.zeros(3, np.float32)
        self.reset()

    def reset(self) -> None:
        """Forget the smoothed range (the next frame is normalised on its own)."""
        self.state = np.array([0.0, 1.0, 1.0] if self.normalisation == "none" else [0.0, 0.0, 0.0], np.float32)

    def __call__(self, a: np.ndarray, b: np.ndarray, copy: bool = True) -> np.ndarray:
        """a, b: uint8 (H, W, 3) BGR, same size -> fused uint8 (H, W, 3) BGR.

        ``copy=False`` returns the backend's buffer, valid until the next call.
        """
        fused, state_out = self.backend.infer(a, b, self.state)
        if self.normalisation == "ema":
            self.state = np.array([state_out[0], state_out[1], self.alpha], np.float32)
        return fused.copy() if copy else fused


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; the CLI builds it from options."""

    a: str  # source a (e.g. IR): camN, video, folder, glob, URL, GStreamer string, demo:ir
    b: str  # source b (e.g. visible)
    model: Path | None = None  # colour ONNX or TensorRT plan; None = the bundled model of the run's task
    backend: str = "auto"  # auto, tensorrt, ort, ort-cuda, ort-cpu
    trust_engine_code: bool = False  # allow host code in version-compatible TensorRT plans
    outputs: tuple[Path, ...] = ()  # video file(s), image folder(s), or one image for a still pair
    show: bool = False  # an OpenCV window (q / Esc stops)
    view: str = "fused"  # "fused" or "side-by-side" (a | b | fused) for window and video
    overlay: bool = False  # FPS / latency text on shown and written frames
    normalisation: str = "auto"  # auto: minmax for still images, ema for video, cameras and video output
    ema_alpha: float | None = None  # None: the model card's, else 0.9
    size: Size | None = None  # resize both sources to this
    infer_size: Size | None = None  # the network runs at this size; the output keeps the frame size
    infer_interpolation: str = DEFAULT_INTERPOLATION  # luma upsampling with infer_size: "linear" or "cubic"
    homography: Path | None = None  # JSON from `rfrun calibrate`, warps b onto a
    no_resize: bool = False  # sources of different sizes are an error instead of a resize
    max_skew_ms: float = 50.0  # live pairs further apart in capture time are not fused
    max_frames: int | None = None  # stop after this many fused frames
    fps: float | None = None  # output video frame rate; None = the source's, else 25
    overwrite: bool = False  # replace existing outputs
    stats_json: Path | None = None  # write the summary as JSON here
    reconnect_delays: tuple[float, ...] = RECONNECT_DELAYS  # back-off of a live source that drops out
    stall_timeout_s: float = STALL_TIMEOUT_S  # a live source silent this long is an error
    pair_by: str = "name"  # image folders/globs: pair by file "name" (default) or by sorted "order"
    source_options: tuple[str, str] | None = None  # option names the user gave the sources with, e.g. ("func", "mri")
    task: str | None = None  # --task: the task whose bundled model runs (None: from source_options, else ivif)

    @property
    def model_task(self) -> str:
        """The task of the bundled model this run uses when no model is given."""
        return self.task or task_of_sources(self.source_options) or DEFAULT_TASK

    def __post_init__(self) -> None:
        for name in ("size", "infer_size"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Size(*getattr(self, name)))


@dataclass
class _RunState:
    frames: int = 0
    skipped: int = 0
    decode_errors: list[str] = field(default_factory=list)
    stopped_by: str = "end"
    size: list[int] | None = None
    warnings: list[str] = field(default_factory=list)


def _make_sinks(config: RunConfig) -> list[Sink]:
    sinks: list[Sink] = []
    for out in config.outputs:
        kind = output_kind(out)
        if kind == "video":
            sinks.append(VideoSink(out, fps=config.fps or 25.0, overwrite=config.overwrite))
        elif kind == "image":
            sinks.append(ImageSink(out, overwrite=config.overwrite))
        else:
            sinks.append(FolderSink(out, overwrite=config.overwrite))
    if config.show:
        sinks.append(WindowSink())
    return sinks


def _choose_normalisation(config: RunConfig, a: Source, b: Source, card: dict) -> tuple[str, float]:
    alpha = config.ema_alpha if config.ema_alpha is not None else float(card.get("ema_alpha", DEFAULT_EMA_ALPHA))
    if config.normalisation != "auto":
        return config.normalisation, alpha
    stills = all(isinstance(s, ImageSequenceSource) for s in (a, b))
    video_out = config.show or any(output_kind(o) == "video" for o in config.outputs)
    if stills and not video_out:
        return str(card.get("normalisation", "minmax")), alpha
    return str(card.get("video_normalisation", "ema")), alpha


def open_sources(config: RunConfig, warn) -> tuple[Source, Source]:
    """Build both sources from the config (not started); pairs image folders by name."""
    if config.pair_by not in PAIRINGS:
        raise ValueError(f"pair_by must be one of {PAIRINGS}, not {config.pair_by!r}")
    a, b = open_source(config.a, "a"), open_source(config.b, "b")
    if isinstance(a, ImageSequenceSource) and isinstance(b, ImageSequenceSource):
        # Folders and globs pair by file name, even with one file each (a.png and b.png are no pair);
        # two named files are a pair whatever their names.
        if config.pair_by == "order" or not (a.listed or b.listed):
            texts = pair_by_order(a, b)
        else:
            texts = pair_by_name(a, b)
        for text in texts:
            warn(text)
    return a, b


def check_outputs(config: RunConfig) -> None:
    """OutputError for any output of ``config`` that cannot be written; nothing is created."""
    for out in config.outputs:
        kind = output_kind(out)
        check_writable(out, {"video": "video", "image": "image"}.get(kind, "image folder"), folder=kind == "folder")
    if config.stats_json is not None:
        check_writable(config.stats_json, "--stats-json")


def check_task_roles(card_task: str | None, card_sources: Sequence[str], given: tuple[str, str] | None,
                     task: str | None = None) -> str:
    """A warning when the model's task is not the one asked for (--task) or the one whose source options
    were typed (else "")."""
    if not card_task:
        return ""
    checks = [(task, f"--task {task}")] if task else []
    typed = task_of_sources(given)
    if typed:
        checks.append((typed, f"the sources were given as --{given[0]}/--{given[1]}"))
    for asked, how in checks:
        if asked != card_task:
            want = ROLE_OPTIONS.get(card_task)
            hint = f" (its options are --{want[0]}/--{want[1]})" if want else ""
            return (f"the model was trained for {card_task} ({' + '.join(card_sources)}){hint}, but {how} "
                    f"({asked}): the result is unlikely to be useful; pass a {asked} model with --model")
    return ""


def run(
    config: RunConfig,
    progress: Progress | None = None,
    *,
    backend: Backend | None = None,
    sources: tuple[Source, Source] | None = None,
) -> RunSummary:
    """Run the pipeline until a source ends, ``max_frames``, the window is closed, or Ctrl-C.

    ``backend`` / ``sources`` may be passed in already built (tests, benchmarks); the
    run opens/starts them if needed and closes them at the end. Ctrl-C ends the run
    cleanly (``stopped_by == "interrupt"``): outputs are finalised with the frames so
    far. Raises RefusionError subclasses for bad input, after closing every output.
    ``progress`` (default: messages to logging) gets ``start`` with the frame count when known,
    a ``step`` per fused frame (``{"frames": n, "postfix": overlay line}``), messages, ``close``.
    """
    rep = progress or LogProgress(log)
    st = _RunState()

    def warn(text: str) -> None:
        st.warnings.append(text)
        rep.message(warning(text))

    a, b = sources if sources is not None else open_sources(config, warn)
    total = _configure_sources(config, a, b)
    _check_request(config, total)  # an unwritable output fails now, not after the first inference
    aligner, low, times = _stages(config, warn)
    sinks: list[Sink] = _make_sinks(config)  # checks outputs (exists, type) before anything is opened
    started: list[Source] = []
    own_backend = backend is None
    be = backend
    t_start = time.perf_counter()
    try:
        model = resolve_model(config.model, config.model_task) if be is None else None
        for s in (a, b):  # sources first: a missing camera is reported before a slow engine load
            s.start()
            started.append(s)
        if be is None:
            be = open_backend(model, config.backend, config.trust_engine_code)
        elif not getattr(be, "_open", True):
            be.open()
        _announce_backend(config, be, rep, warn)
        _set_video_fps(config, sinks, a, b)
        fuser = Fuser(be, *_choose_normalisation(config, a, b, be.card))
        loop = _FrameLoop(config, a, b, be, fuser, aligner, low, sinks, times, st, rep, warn, total)
        rep.start(total, 0, f"{loop.labels[0]}+{loop.labels[1]} -> {be.name}")
        t_start = time.perf_counter()
        loop.run()
    finally:
        elapsed = time.perf_counter() - t_start
        try:  # outputs first: a progress display that cannot write (a closed pipe) must not cost the video
            _close_all(sinks, started, be if own_backend else None)
        finally:
            _finish_quietly(rep)
    summary = _summary(st, a, b, be, fuser, sinks, times, elapsed)
    if config.stats_json:
        write_json(config.stats_json, summary.to_json())
    return summary


def _configure_sources(config: RunConfig, a: Source, b: Source) -> int | None:
    """Give both sources the run's reconnect and stall settings; the number of frames to fuse when known."""
    for s in (a, b):
        s.reconnect_delays = config.reconnect_delays
        s.stall_timeout = config.stall_timeout_s
    lengths = [s.length for s in (a, b) if s.length is not None]
    total = min(lengths) if len(lengths) == 2 else None
    if config.max_frames:
        total = min(total, config.max_frames) if total else config.max_frames
    return total


def _check_request(config: RunConfig, total: int | None) -> None:
    """OutputError / ValueError for a request that cannot work, before anything is opened."""
    for out in config.outputs:
        if output_kind(out) == "image" and (total is None or total > 1):
            raise OutputError(
                f"--out {out} holds one image, but the sources deliver {'a stream' if total is None else f'{total} frames'}; "
                "give a folder or a video file"
            )
    if config.view not in ("fused", "side-by-side"):
        raise ValueError(f"view must be fused or side-by-side, not {config.view!r}")
    check_outputs(config)


def _stages(config: RunConfig, warn) -> tuple[Aligner, LowResFusion | None, StageTimes]:
    """The aligner, the low-resolution stage (``infer_size``) and the stage clocks of one run."""
    aligner = Aligner(AlignConfig(config.size, config.homography, config.no_resize), warn)
    low = LowResFusion(config.infer_size, config.infer_interpolation) if config.infer_size else None
    if low is not None:
        check_infer_size(low.size)  # too small: fail before opening sources and the engine
    return aligner, low, StageTimes(STAGES if low is None else STAGES[:3] + ("post",) + STAGES[3:])


def _announce_backend(config: RunConfig, be: Backend, rep: Progress, warn) -> None:
    """The backend's warnings, a model trained for another task than the sources', and what runs."""
    for text in be.warnings:
        warn(text)
    mismatch = check_task_roles(be.card.get("task"), be.sources, config.source_options, config.task)
    if mismatch:
        warn(mismatch)
    rep.message(f"backend: {be.describe()}; model {be.model}")


def _set_video_fps(config: RunConfig, sinks: Sequence[Sink], a: Source, b: Source) -> None:
    """Video outputs take the sources' frame rate unless ``config.fps`` is given."""
    for sink in sinks:
        if isinstance(sink, VideoSink) and config.fps is None:
            sink.fps = a.fps or b.fps or sink.fps


class _FrameLoop:
    """The per-frame loop of :func:`run`: pair -> align -> infer (-> post) -> sinks, each stage timed."""

    def __init__(self, config: RunConfig, a: Source, b: Source, be: Backend, fuser: Fuser, aligner: Aligner,
                 low: LowResFusion | None, sinks: Sequence[Sink], times: StageTimes, st: _RunState, rep: Progress,
                 warn, total: int | None) -> None:
        self.config, self.a, self.b, self.be, self.fuser = config, a, b, be, fuser
        self.aligner, self.low, self.sinks, self.times = aligner, low, sinks, times
        self.st, self.rep, self.warn, self.total = st, rep, warn, total
        self.labels = be.sources if len(be.sources) == 2 else ("a", "b")
        self.pairer = Pairer(a, b, config.max_skew_ms / 1e3)
        self.meter = FpsMeter()
        self.checked: Size | None = None
        self.use_low = False  # infer_size set and smaller than the frames

    def run(self) -> None:
        """Fuse until the end, a stop, or Ctrl-C (which ends the run cleanly)."""
        try:
            while self._step():
                pass
        except KeyboardInterrupt:
            self.st.stopped_by = "interrupt"
        self.st.skipped += self.pairer.skipped
        if self.pairer.end_note and self.st.stopped_by == "end":
            self.warn(self.pairer.end_note)

    def _step(self) -> bool:
        """One pair through every stage; False when the run ends."""
        t0 = time.perf_counter()
        pair = self.pairer.next()
        for s in (self.a, self.b):
            for text in s.pop_warnings():
                self.warn(text)
        if pair is None:
            return False
        fa, fb = pair
        if fa.image is None or fb.image is None:
            self._skip(fa if fa.image is None else fb)
            return True
        t1 = time.perf_counter()
        img_a, img_b = self.aligner(fa.image, fb.image)
        self._check_size(Size.of(img_a))
        net_a, net_b = self.low.prepare(img_a, img_b) if self.use_low else (img_a, img_b)
        t2 = time.perf_counter()
        fused = self.fuser(net_a, net_b, copy=False)
        t3 = time.perf_counter()
        if self.use_low:
            fused = self.low.finish(fused, net_a, net_b, img_a, img_b)
        t_post = time.perf_counter()
        text = self._overlay_text(t_post, t3 - t2)
        frame_out = compose(fused, img_a, img_b, self.config.view, self.labels, text if self.config.overlay else "")
        for sink in self.sinks:
            sink.write(frame_out, fa.name)
        t4 = time.perf_counter()
        self.st.frames += 1
        self._record((t0, t1, t2, t3, t_post, t4), min(fa.t, fb.t))
        self.rep.step({"frames": self.st.frames, "postfix": text})
        return not self._stop()

    def _skip(self, bad: Frame) -> None:
        if self.total == 1:  # a still pair: nothing left to fuse, one message is enough
            raise ImageReadError(f"no frame could be fused: {bad.error}")
        self.warn(f"skipped frame {bad.name}: {bad.error}")
        self.st.skipped += 1
        self.st.decode_errors.append(bad.error)

    def _check_size(self, hw: Size) -> None:
        if hw != self.checked:
            self.use_low = _check_sizes(self.be, self.low, hw, self.rep, self.warn)
            self.checked = hw
            self.st.size = list(hw)

    def _overlay_text(self, now: float, infer_s: float) -> str:
        fps_now = self.meter.tick(now)
        rate = f"{fps_now:5.2f} FPS" if fps_now < 10 else f"{fps_now:5.1f} FPS"
        return (
            f"{rate if self.meter.ready else '  -- FPS'}  latency {self.times.last('latency') * 1e3:4.0f} ms  "
            f"infer {infer_s * 1e3:4.0f} ms"
        )

    def _record(self, marks: tuple[float, ...], captured: float) -> None:
        """Stage times from the clock marks (t0 pair, t1 align, t2 infer, t3 post, t_post sink, t4 end)."""
        t0, t1, t2, t3, t_post, t4 = marks
        self.times.add("capture", t1 - t0)
        self.times.add("align", t2 - t1)
        self.times.add("infer", t3 - t2)
        if self.low is not None:
            self.times.add("post", t_post - t3)
        self.times.add("sink", t4 - t_post)
        self.times.add("latency", time.monotonic() - captured)

    def _stop(self) -> bool:
        if any(s.stop_requested for s in self.sinks):
            self.st.stopped_by = "window"
            return True
        if self.config.max_frames and self.st.frames >= self.config.max_frames:
            self.st.stopped_by = "max-frames"
            return True
        return False


def _summary(st: _RunState, a: Source, b: Source, be: Backend | None, fuser: Fuser, sinks: Sequence[Sink],
             times: StageTimes, elapsed: float) -> RunSummary:
    """The run's summary; ImageReadError when every frame failed to decode."""
    if st.frames == 0 and st.decode_errors:
        raise ImageReadError(
            f"no frame could be fused: {st.decode_errors[0]}"
            + (f" (and {len(st.decode_errors) - 1} more)" if len(st.decode_errors) > 1 else "")
        )
    return RunSummary(
        frames=st.frames,
        dropped=max(a.dropped, b.dropped),
        dropped_per_source={"a": a.dropped, "b": b.dropped},
        skipped=st.skipped,
        elapsed_s=round(elapsed, 4),
        fps=round(st.frames / elapsed, 3) if elapsed > 0 else 0.0,
        stages_ms=times.summary_ms(),
        backend=be.describe() if be is not None else "",
        model=str(be.model) if be is not None else "",
        size=st.size,
        normalisation=fuser.normalisation,
        sources={"a": a.label, "b": b.label},
        outputs=[o for s in sinks for o in s.outputs],
        stopped_by=st.stopped_by,
        warnings=st.warnings,
    )


def _check_sizes(be: Backend, low: LowResFusion | None, hw: Size, rep: Progress, warn) -> bool:
    """Check a new frame size against the model and ``infer_size``; True = run at the lower size."""
    if low is None:
        be.check_size(*hw)
        return False
    check_infer_size(low.size, hw)
    h, w = low.size
    try:
        be.check_size(h, w)
    except SizeError as exc:
        raise SizeError(f"--infer-size {h}x{w}: {exc}") from None
    if (h, w) == tuple(hw):
        rep.message(f"--infer-size {h}x{w} equals the frame size: the network runs at full resolution")
        return False
    if abs((w / h) / (hw[1] / hw[0]) - 1.0) > 0.01:
        warn(f"--infer-size {h}x{w} has another aspect ratio than the {hw[0]}x{hw[1]} frames: the network sees "
             "them stretched")
    rep.message(f"network runs at {h}x{w}; fused luma upsampled ({low.interpolation}) to {hw[0]}x{hw[1]}")
    return True


def _finish_quietly(rep: Progress) -> None:
    """Close the progress; a closed stderr (``| tee`` gone after Ctrl-C) is no reason to fail the run."""
    try:
        rep.close()
    except OSError:
        pass


def _close_all(sinks: Sequence[Sink], sources: Sequence[Source], backend: Backend | None) -> None:
    """Close sinks first (finalise outputs), then sources and the backend; never raise twice."""
    first: BaseException | None = None
    for closer in [s.close for s in sinks] + [s.close for s in sources] + ([backend.close] if backend else []):
        try:
            closer()
        except BaseException as exc:  # keep closing the rest; report the first failure
            first = first or exc
    if first is not None:
        raise first

