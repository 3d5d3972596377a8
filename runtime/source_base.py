"""The base of every frame source: a reader thread, a bounded queue or a newest-frame slot, and :class:`Frame`.

Every source has a reader thread. A *live* source (camera, URL, GStreamer) keeps
only its newest frame: if the consumer is slower, older frames are overwritten and
counted as dropped, so latency stays bounded and memory flat. A *file* source
(video, folder, glob, the demo) delivers every frame through a small bounded queue:
the reader waits for the consumer, nothing is lost.

Frames are uint8 (H, W, 3) BGR as OpenCV delivers them (grey images become 3
equal channels). URLs and GStreamer strings may carry credentials: every label,
log line and error goes through :func:`mask_credentials`. The concrete sources and
the spec parser live in :mod:`.sources`, the demo sequence in :mod:`.demo`; both build on this.
"""
from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from .colour import to_bgr
from .errors import ImageReadError, SourceError

#: Seconds to wait before each reconnection attempt of a live source that stopped delivering.
RECONNECT_DELAYS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
#: A live source that delivers nothing for this long is reported as stalled.
STALL_TIMEOUT_S = 10.0

_CRED_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<cred>[^/@\s]+)@")
_CRED_PARAM_RE = re.compile(r"(?i)\b(user-id|user-pw|user|password|passwd|pwd|token|key)=([^\s!&]+)")


def mask_credentials(text: str) -> str:
    """Hide ``user:password@`` in URLs and ``user-pw=...``-style properties.

    >>> mask_credentials("rtsp://admin:secret@10.0.0.2/stream")
    'rtsp://***@10.0.0.2/stream'
    """
    text = _CRED_RE.sub(lambda m: f"{m.group('scheme')}***@", str(text))
    return _CRED_PARAM_RE.sub(lambda m: f"{m.group(1)}=***", text)


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    image: uint8 (H, W, 3) BGR, or None when this frame failed to decode (``error`` says why).
    index: 0-based sequence number in the source (counts every captured frame).
    t: ``time.monotonic()`` seconds at capture (live), or when handed to the consumer (files).
    name: file stem for folders, else the zero-padded index.
    """

    image: np.ndarray | None
    index: int
    t: float
    name: str
    error: str = ""


_END = object()


class Source:
    """Base class: a reader thread filling a bounded queue (files) or a newest-frame slot (live).

    Subclasses implement ``_open`` (raise SourceError when it cannot start), ``_grab``
    (next image, None at the end / on a failed read, or raise ImageReadError for a frame
    that failed to decode), ``_release`` and, for live sources, ``_reopen``.
    """

    live = False

    def __init__(self, label: str, role: str = "", queue_size: int = 4) -> None:
        self.label = mask_credentials(label)
        self.role = role
        self.fps: float | None = None  # frames per second the source reports, if any
        self.length: int | None = None  # number of frames when known (files)
        self.reconnect_delays: Sequence[float] = RECONNECT_DELAYS
        self.stall_timeout = STALL_TIMEOUT_S
        self.produced = 0  # frames captured by the reader
        self.delivered = 0  # frames handed to the consumer
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self._slot: Frame | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._ended = False
        self._reconnecting = False  # the reader is in its back-off loop (bounded by reconnect_delays)
        self._error: BaseException | None = None
        self._warnings: list[str] = []
        self._thread: threading.Thread | None = None

    # -- subclass hooks -------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _grab(self) -> np.ndarray | None:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def _reopen(self) -> bool:
        return False

    def _name(self, index: int) -> str:
        return f"{index:06d}"

    # -- public API -----------------------------------------------------------
    @property
    def dropped(self) -> int:
        """Frames captured but never handed to the consumer (live sources only)."""
        return max(0, self.produced - self.delivered) if self.live else 0

    def start(self) -> "Source":
        """Open the source (errors raise here, in the caller's thread) and start the reader."""
        self._open()
        self._thread = threading.Thread(target=self._run, name=f"source-{self.role or self.label}", daemon=True)
        self._thread.start()
        return self

    def pop_warnings(self) -> list[str]:
        out, self._warnings = self._warnings, []
        return out

    def warn(self, text: str) -> None:
        self._warnings.append(mask_credentials(text))

    def read(self, after: int = -1, timeout: float | None = None) -> Frame | None:
        """The next frame (files) or the newest frame with index > ``after`` (live).

        Returns None at the end of the stream. Raises the reader's SourceError, or
        SourceError when a live source delivers nothing for ``stall_timeout`` seconds.
        """
        if self.live:
            return self._read_live(after, self.stall_timeout if timeout is None else timeout)
        return self._read_file()

    def close(self) -> None:
        """Stop the reader and release the device/file; safe to call twice."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        # unblock a reader waiting on a full queue
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=3.0)
            if thread.is_alive():  # blocked inside a driver call: releasing now could crash it
                return
        self._release()

    def __enter__(self) -> "Source":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reader thread --------------------------------------------------------
    def _run(self) -> None:
        try:
            if self.live:
                self._run_live()
            else:
                self._run_file()
        except BaseException as exc:  # handed to the consumer's thread
            self._error = exc
            self._finish()

    def _finish(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()
        if not self.live:
            self._put(_END)

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run_file(self) -> None:
        index = 0
        while not self._stop.is_set():
            error = ""
            try:
                img = self._grab()
            except ImageReadError as exc:
                img, error = None, str(exc)
            else:
                if img is None:
                    break
                img = _as_bgr(img)
            frame = Frame(img, index, time.monotonic(), self._name(index), error)
            self.produced += 1
            index += 1
            if not self._put(frame):
                return
        self._finish()

    def _run_live(self) -> None:
        index = 0
        while not self._stop.is_set():
            img = self._grab()
            if img is None:
                if not self._reconnect():
                    return
                continue
            frame = Frame(_as_bgr(img), index, time.monotonic(), self._name(index))
            index += 1
            with self._cond:
                self._slot = frame
                self.produced += 1
                self._cond.notify_all()
        self._finish()

    def _reconnect(self) -> bool:
        """Retry with back-off; on giving up, record a SourceError and end the stream."""
        self._reconnecting = True
        try:
            return self._reconnect_loop()
        finally:
            self._reconnecting = False

    def _reconnect_loop(self) -> bool:
        waited = 0.0
        for attempt, delay in enumerate(self.reconnect_delays, 1):
            self.warn(f"{self._what()} stopped delivering frames; reconnecting in {delay:g} s "
                      f"(attempt {attempt} of {len(self.reconnect_delays)})")
            if self._stop.wait(delay):
                return False
            waited += delay
            try:
                if self._reopen():
                    self.warn(f"{self._what()} reconnected")
                    return True
            except SourceError:
                continue
        self._error = SourceError(
            f"{self._what()} stopped delivering frames and did not come back after "
            f"{len(self.reconnect_delays)} reconnection attempts over {waited:g} s"
        )
        self._finish()
        return False

    def _what(self) -> str:
        return f"source {self.role} ({self.label})" if self.role else f"source {self.label}"

    # -- consumer side --------------------------------------------------------
    def _raise_error(self) -> None:
        if self._error is not None:
            err = self._error
            if isinstance(err, SourceError):
                raise SourceError(mask_credentials(str(err)))
            raise SourceError(f"{self._what()} failed: {mask_credentials(str(err)) or type(err).__name__}")

    def _read_file(self) -> Frame | None:
        while True:
            try:
                item = self._queue.get(timeout=0.1)
                break
            except queue.Empty:
                if self._thread is None or not self._thread.is_alive():
                    self._raise_error()
                    if self._queue.empty():
                        return None
        if item is _END:
            self._raise_error()
            return None
        self.delivered += 1
        # a file frame's clock starts when it leaves the read-ahead queue: its latency is our
        # processing time, not how long the reader happened to be ahead
        return replace(item, t=time.monotonic())  # type: ignore[arg-type]

    def _read_live(self, after: int, timeout: float) -> Frame | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                frame = self._slot
                if frame is not None and frame.index > after:
                    self.delivered += 1
                    return frame
                if self._ended or self._stop.is_set():
                    self._raise_error()
                    return None
                if self._reconnecting:  # bounded by the back-off schedule, not by the stall timeout
                    deadline = time.monotonic() + timeout
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceError(f"{self._what()} delivered no frame for {timeout:g} s")
                self._cond.wait(min(left, 0.5))


def _as_bgr(img: np.ndarray) -> np.ndarray:
    if img.dtype != np.uint8:
        raise ImageReadError(f"frame has pixel type {img.dtype}; expected 8-bit")
    return np.ascontiguousarray(to_bgr(img))
