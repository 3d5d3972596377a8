"""Where benchmark results go, and how they are written (shared by every ``rfbench`` command).

Results default to ``rfbench-results/`` in the current folder, never into the package's own
``benchmarks/results/`` (those are the committed, measured runs: pass ``--out benchmarks/results``
to add one on purpose). The folder is checked for writability before a benchmark starts; files are
written atomically, and an existing result is kept: the new one gets a numbered name
(``<stem>-2.json``) unless ``overwrite``.
"""
from __future__ import annotations

from pathlib import Path

from refusion.runtime.fsutil import atomic_write_text, check_writable

#: Default results folder, relative to the current folder.
DEFAULT_RESULTS_DIR = Path("rfbench-results")


def check_results_dir(out_dir: str | Path) -> Path:
    """OutputError unless ``out_dir`` can be created or written; creates nothing."""
    return check_writable(out_dir, "results folder", folder=True)


def free_stem(out_dir: Path, stem: str, suffixes: tuple[str, ...] = (".json", ".md")) -> str:
    """``stem``, or ``stem-2``, ``stem-3`` ... so that no file ``<stem><suffix>`` exists yet."""
    candidate, n = stem, 1
    while any((out_dir / f"{candidate}{s}").exists() for s in suffixes):
        n += 1
        candidate = f"{stem}-{n}"
    return candidate


def write_results(out_dir: str | Path, stem: str, json_text: str, markdown: str,
                  overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<out_dir>/<stem>.json`` and ``.md`` atomically; an existing pair is kept unless
    ``overwrite`` (the new files then get a numbered stem). Returns both paths."""
    d = Path(out_dir)
    stem = stem if overwrite else free_stem(d, stem)
    js, md = d / f"{stem}.json", d / f"{stem}.md"
    atomic_write_text(js, json_text)
    atomic_write_text(md, markdown)
    return js, md
