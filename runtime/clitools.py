"""Helpers shared by the click entry points (rftrain, rfexport, rfrun, rfbench).

Library code raises RefusionError; entry points turn it into one clear message
and exit code 1 (click's usage errors exit 2). Nothing here imports torch.
"""
from __future__ import annotations

import functools
import importlib
import logging
import os
import signal
import sys
from types import FrameType
from typing import Any, Callable

import click

from .errors import RefusionError
from .size import Size


#: click context settings of every refusion command: -h works as --help. Set on each rfbench subcommand too,
#: because click caches a command's help option from the first context it runs in (called on its own, a
#: subcommand would otherwise keep --help only).
HELP_SETTINGS = {"help_option_names": ["-h", "--help"]}


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn RefusionError, OSError (a path that cannot be read or written) and Ctrl-C/SIGTERM into a
    one-line message and a non-zero exit (1; interrupted: 128 + the signal number, 130 for Ctrl-C)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RefusionError as exc:
            raise click.ClickException(str(exc)) from None
        except BrokenPipeError:
            quiet_broken_pipe()
            raise SystemExit(STOP_SIGNALS.exit_code() if STOP_SIGNALS.received else 1) from None
        except OSError as exc:
            raise click.ClickException(describe_os_error(exc)) from None
        except KeyboardInterrupt:
            say("interrupted", err=True)
            raise SystemExit(STOP_SIGNALS.exit_code()) from None

    return wrapper


def describe_os_error(exc: OSError) -> str:
    """'cannot write runs/ivif: Read-only file system' style text for an OSError."""
    what = exc.strerror or str(exc) or type(exc).__name__
    name = exc.filename if exc.filename is not None else ""
    return f"{name}: {what}" if name else what


def quiet_broken_pipe() -> None:
    """stdout/stderr lead to a closed pipe (``| tee`` ended): send the rest of our output nowhere."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (OSError, ValueError, AttributeError):  # not a real file (e.g. a test runner's buffer)
            pass
    os.close(devnull)


def say(text: str, err: bool = False) -> None:
    """click.echo that survives a closed pipe (the rest of the output is dropped)."""
    try:
        click.echo(text, err=err)
    except BrokenPipeError:
        quiet_broken_pipe()


class StopSignals:
    """SIGINT and SIGTERM end a run the same way: the first raises KeyboardInterrupt in the main
    thread, so ``finally`` blocks finalise the outputs; a second one while that happens is ignored,
    a third ends the process at once. Installed by entry points only."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.count = 0

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.received is None:
            self.received = signum
            raise KeyboardInterrupt
        if self.count >= 3:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def exit_code(self) -> int:
        """128 + the signal number (130 for Ctrl-C, 143 for SIGTERM)."""
        return 128 + int(self.received or signal.SIGINT)

    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else "SIGINT"


#: The process-wide handler that entry points install.
STOP_SIGNALS = StopSignals()


def setup_logging(verbose: int = 0) -> None:
    """Configure logging; only entry points call this."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


class SizeType(click.ParamType):
    """A frame size written ``HxW`` (rows x columns, e.g. 480x640) -> :class:`~refusion.runtime.size.Size`.

    Every refusion command writes sizes this way, as the tensor shapes (N, C, H, W)
    and the engine profiles do.
    """

    name = "HxW"

    def __init__(self, min_side: int = 1, max_pixels: int | None = None) -> None:
        self.min_side = min_side
        self.max_pixels = max_pixels

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Size:
        if isinstance(value, tuple):
            return Size(*value)
        try:
            h, w = (int(v) for v in str(value).lower().replace("*", "x").split("x"))
        except ValueError:
            self.fail(f"{value!r} is not a size like 480x640 (height x width)", param, ctx)
        if h < self.min_side or w < self.min_side:
            self.fail(f"{value!r}: height and width must be at least {self.min_side}", param, ctx)
        if self.max_pixels is not None and h * w > self.max_pixels:
            self.fail(f"{value!r} is {h * w:,} pixels per frame; at most {self.max_pixels:,} are supported "
                      "(e.g. 4320x7680, 8K)", param, ctx)
        return Size(h, w)


def parse_size(text: str, min_side: int = 1) -> Size:
    """``"480x640"`` -> Size(h=480, w=640); click.BadParameter when malformed."""
    return SizeType(min_side).convert(text, None, None)


class LazyGroup(click.Group):
    """A click group whose subcommands live in modules imported only when used.

    ``lazy`` maps a command name to "module:attribute", so ``--help`` needs none of
    the heavy optional dependencies.
    """

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module, attr = self.lazy[name].split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except ImportError as exc:
                return _unavailable(name, exc)
        return super().get_command(ctx, name)


def _unavailable(name: str, exc: ImportError) -> click.Command:
    """A stand-in subcommand that explains why the real one cannot be imported."""

    def fail() -> None:
        raise click.ClickException(f"'{name}' is unavailable in this installation: {exc}")

    return click.Command(name, callback=fail, help=f"(unavailable: {exc})", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
