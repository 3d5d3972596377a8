"""The one progress protocol: how library code (a run, an export, an engine build, a benchmark, training)
tells a person what it is doing, without printing anything itself.

A long call takes a :class:`Progress` and calls, in this order:

- ``start(total, done, label)`` once the amount of work is known: ``total`` units (frames,
  steps; None when unknown), ``done`` of them already done (a resumed run), ``label`` a
  short description (e.g. "ir+vis -> onnxruntime");
- ``step(info)`` after each unit: ``info`` holds what the step measured; the key
  ``"postfix"`` (str), when present, is the one-line status shown beside a progress bar;
- ``message(text)`` for a line meant to be read; a warning starts with :data:`WARNING`
  (see :func:`warning`);
- ``close()`` at the end, also after an error.

:class:`Progress` does nothing (the library default), :class:`LogProgress` sends messages to
``logging``, :class:`CallbackProgress` hands them to a function, :class:`TqdmProgress` is the console bar.
CLIs choose one; library code only calls the four methods.
"""
from __future__ import annotations

import logging
import sys
from typing import Any, Callable, Mapping

import click

#: A message that starts with this is a warning.
WARNING = "warning: "


def warning(text: str) -> str:
    """``text`` marked as a warning for :meth:`Progress.message`."""
    return WARNING + text


class Progress:
    """Receives progress; every method does nothing. Subclass and override what you show."""

    def start(self, total: int | None, done: int = 0, label: str = "") -> None:
        """The work starts: ``total`` units (None = unknown), ``done`` of them already done."""

    def step(self, info: Mapping[str, Any]) -> None:
        """One unit done; ``info`` is what it measured (``"postfix"``: a status line)."""

    def message(self, text: str) -> None:
        """A line for the user; a warning starts with :data:`WARNING`."""

    def close(self) -> None:
        """The work ended (normally or not); safe to call twice."""


class LogProgress(Progress):
    """Messages to ``logging`` (warnings at WARNING, the rest at INFO); no bar."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("refusion")

    def message(self, text: str) -> None:
        if text.startswith(WARNING):
            self.log.warning(text[len(WARNING):])
        else:
            self.log.info(text)


class CallbackProgress(Progress):
    """Messages handed to a function (``click.echo``, ``list.append`` ...); no bar."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say

    def message(self, text: str) -> None:
        self.say(text)


class TqdmProgress(Progress):
    """A tqdm bar and messages on stderr; ``quiet`` keeps only warnings.

    A closed stderr (``| tee`` gone after Ctrl-C) silences it, nothing more: the work goes on.
    """

    def __init__(self, quiet: bool = False, unit: str = "frame", leave: bool = True, delay: float = 0.0) -> None:
        self.quiet, self.unit = quiet, unit
        self.leave, self.delay = leave, delay  # keep the bar when done; show it only after this many seconds
        self.bar: Any = None
        self.broken = False

    def start(self, total: int | None, done: int = 0, label: str = "") -> None:
        from tqdm import tqdm

        self._guard(lambda: setattr(self, "bar", tqdm(
            total=total, initial=done, unit=self.unit, desc=label, file=sys.stderr, disable=self.quiet,
            dynamic_ncols=True, leave=self.leave, delay=self.delay)))

    def step(self, info: Mapping[str, Any]) -> None:
        if self.bar is None:
            return
        postfix = info.get("postfix")
        if postfix is not None:
            # the postfix on every step: tqdm redraws at its own pace, and a slow CPU run
            # (1-2 s per frame) shows its real rate instead of the first frame's empty one
            self.bar.set_postfix_str(str(postfix).strip(), refresh=False)
        self._guard(lambda: self.bar.update(1))

    def message(self, text: str) -> None:
        if self.quiet and not text.startswith(WARNING):
            return
        if self.bar is not None and not self.quiet:
            self._guard(lambda: self.bar.write(text, file=sys.stderr))
        else:
            self._guard(lambda: click.echo(text, err=True))

    def close(self) -> None:
        if self.bar is not None:
            bar, self.bar = self.bar, None
            self._guard(bar.close)

    def _guard(self, action: Callable[[], Any]) -> None:
        if self.broken:
            return
        try:
            action()
        except OSError:  # stderr is a closed pipe: keep running, say nothing more
            self.broken = True
            if self.bar is not None:
                self.bar.disable = True
