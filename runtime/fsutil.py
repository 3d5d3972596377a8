"""Output files, one rule for all: checked before work starts, written atomically, mode from the umask.

- :func:`check_writable` is called by every command for every output before any slow work (opening a
  camera, loading an engine, training), so an unwritable path is one clear :class:`OutputError`
  instead of a traceback after the first frame.
- :func:`atomic_path` writes under a temporary name beside the target and renames it on success:
  a kill or an error never leaves a partial file under the final name.
- Files get the permissions an ordinary ``open()`` would give them (0666 minus the umask), not the
  0600 of :func:`tempfile.mkstemp`.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic swap (not thread-safe, but only read here)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permission bits of a new regular file under the current umask (e.g. 0644 for umask 022)."""
    return 0o666 & ~current_umask()


def check_writable(path: str | os.PathLike, what: str = "output", folder: bool = False) -> Path:
    """Raise OutputError unless ``path`` (a file, or a folder with ``folder``) can be created or replaced.

    Checks, leaving nothing behind: no parent is a regular file, the nearest existing folder
    allows writing (a read-only file system or missing permission is caught here; a file is
    created there and removed at once), and a file target is not a folder (and vice versa).
    Returns ``path`` as a Path.
    """
    target = Path(path)
    if target.exists():
        if folder and not target.is_dir():
            raise OutputError(f"cannot write {what} {target}: it exists and is not a folder")
        if not folder and target.is_dir():
            raise OutputError(f"cannot write {what} {target}: it is a folder")
        probe = target if folder else target.parent
    else:
        probe = target.parent
    probe = Path(os.path.abspath(probe))
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"cannot write {what} {target}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        reason = "read-only file system" if _read_only_fs(probe) else "no write permission"
        raise OutputError(f"cannot write {what} {target}: {probe} is not writable ({reason})")
    try:  # what access() cannot tell (pseudo file systems, ACLs, NFS root squash): try it
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".refusion-write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise OutputError(f"cannot write {what} {target}: {probe} is not writable ({exc.strerror})") from None
    return target


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):
        return False


def output_error(exc: OSError, target: str | os.PathLike, what: str = "output") -> OutputError:
    """An OutputError naming the target (not a temporary file) for a failed write."""
    reason = exc.strerror or type(exc).__name__
    return OutputError(f"cannot write {what} {target}: {reason}")


@contextmanager
def atomic_path(path: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    The temporary file is removed when the block raises (Ctrl-C included), so the
    previous file, if any, stays intact. Parent folders are created. The final file
    has the mode an ordinary ``open()`` gives (0666 minus the umask). An OSError while
    creating, renaming or writing is raised as OutputError naming ``path``.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise output_error(exc, target, what) from None
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise output_error(exc, target, what) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
