"""One exception root for everything refusion raises on purpose.

CLI entry points turn these into one clear message and a non-zero exit; anything
else escaping is a bug.
"""
from __future__ import annotations


class RefusionError(Exception):
    """Base of every error that refusion raises for bad input or environment."""


class ImageReadError(RefusionError):
    """An image file is missing, unreadable, corrupt or of an unsupported type."""


class CheckpointError(RefusionError):
    """A model file is not a checkpoint we understand, or does not fit the network."""


class DataError(RefusionError):
    """A data folder is missing, empty, or its pairs do not match."""


class MissingDependencyError(RefusionError):
    """An optional dependency is needed for the requested feature."""


class EngineError(RefusionError):
    """A model engine cannot be built, loaded, or run on this machine."""


class SourceError(RefusionError):
    """A camera, video or folder source cannot be opened or stopped delivering."""


class SizeError(RefusionError):
    """Frame or image sizes are out of range or do not match."""


class OutputError(RefusionError):
    """An output cannot be written (exists without --overwrite, not writable, unsupported type, writer failure)."""
