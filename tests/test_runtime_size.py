"""The one frame-size type: Size(h, w), written HxW, handed to OpenCV as (W, H) only through ``.cv``."""
from __future__ import annotations

import click
import numpy as np
import pytest

from refusion.runtime.clitools import parse_size
from refusion.runtime.pipeline import RunConfig
from refusion.runtime.size import Size


def test_order_text_and_opencv_order() -> None:
    s = Size(480, 640)
    assert (s.h, s.w) == (480, 640) and tuple(s) == (480, 640)
    assert str(s) == "480x640" and s.cv == (640, 480)
    assert Size.of(np.zeros((12, 34, 3), np.uint8)) == Size(12, 34)


def test_cli_text_parses_to_size() -> None:
    s = parse_size("240x320")
    assert isinstance(s, Size) and s == Size(240, 320)
    with pytest.raises(click.BadParameter):
        parse_size("320by240")


def test_configs_hold_sizes_in_h_w_order() -> None:
    config = RunConfig(a="demo:ir", b="demo:vis", size=(240, 320), infer_size=Size(120, 160))
    assert config.size == Size(240, 320) and isinstance(config.size, Size) and config.infer_size.w == 160
