"""Helpers shared by the click entry points (rftrain, rfexport, rfrun, rfbench).

Library code raises RefusionError; entry points turn it into one clear message
and exit code 1 (click's usage errors exit 2). Nothing here imports torch.
"""
from __future__ import annotations

import functools
import importlib
import logging
from typing import Any, Callable

import click

from .errors import RefusionError


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn RefusionError (and Ctrl-C) into a one-line message and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RefusionError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            raise SystemExit(130) from None

    return wrapper


def setup_logging(verbose: int = 0) -> None:
    """Configure logging; only entry points call this."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


class SizeType(click.ParamType):
    """A frame size written ``HxW`` (rows x columns, e.g. 480x640) -> (H, W).

    Every refusion command writes sizes this way, as the tensor shapes (N, C, H, W)
    and the engine profiles do.
    """

    name = "HxW"

    def __init__(self, min_side: int = 1) -> None:
        self.min_side = min_side

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        try:
            h, w = (int(v) for v in str(value).lower().replace("*", "x").split("x"))
        except ValueError:
            self.fail(f"{value!r} is not a size like 480x640 (height x width)", param, ctx)
        if h < self.min_side or w < self.min_side:
            self.fail(f"{value!r}: height and width must be at least {self.min_side}", param, ctx)
        return (h, w)


def parse_size(text: str, min_side: int = 1) -> tuple[int, int]:
    """``"480x640"`` -> (480, 640); click.BadParameter when malformed."""
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
