"""The one progress protocol (start, step, message, close) and its implementations."""
from __future__ import annotations

import io
import logging
import sys

from refusion.runtime.progress import WARNING, CallbackProgress, LogProgress, Progress, TqdmProgress, warning


def test_base_does_nothing_and_warnings_are_marked() -> None:
    p = Progress()
    p.start(None)
    p.start(10, 3, "label")
    p.step({"postfix": "x"})
    p.message("hello")
    p.close()
    p.close()
    assert warning("disk full") == WARNING + "disk full" == "warning: disk full"


def test_callback_and_log(caplog) -> None:
    got: list[str] = []
    CallbackProgress(got.append).message("one")
    assert got == ["one"]
    with caplog.at_level(logging.INFO, logger="refusion"):
        LogProgress().message("info line")
        LogProgress().message(warning("careful"))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.INFO, "info line"),
                                                                   (logging.WARNING, "careful")]


def test_tqdm_bar_resumes_shows_postfix_and_quiet_keeps_warnings(monkeypatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    bar = TqdmProgress(unit="step")
    bar.start(10, 4, "train")
    bar.step({"postfix": " loss 0.5 "})
    assert bar.bar.n == 5 and "loss 0.5" in str(bar.bar.postfix)
    bar.close()
    bar.close()
    quiet = TqdmProgress(quiet=True)
    quiet.message("chatter")
    quiet.message(warning("kept"))
    assert "chatter" not in err.getvalue() and "warning: kept" in err.getvalue()


def test_closed_stderr_silences_the_bar(monkeypatch) -> None:
    class Closed(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError("reader gone")

    monkeypatch.setattr(sys, "stderr", Closed())
    bar = TqdmProgress()
    bar.start(3)
    bar.step({})
    bar.message(warning("lost"))
    bar.close()
    assert bar.broken
