"""Errors raised at nmflowgan's boundaries.

Every error a user can cause derives from :class:`NmflowganError`, names the offending value or file and
says what was expected, so that the CLI can print it as one line instead of a traceback.
"""

from __future__ import annotations


class NmflowganError(Exception):
    """Base class of every error nmflowgan raises on purpose."""


class BadInputError(NmflowganError, ValueError):
    """An argument, image or condition that cannot be used (unknown camera, ISO out of range, ...)."""


class DataError(NmflowganError, ValueError):
    """A data set that cannot be read: missing partner file, mismatched sizes, bad folder name, ..."""


class CheckpointError(NmflowganError, ValueError):
    """A checkpoint that is missing, truncated, corrupt, of another kind, or from another preset."""


class OutputExistsError(NmflowganError, FileExistsError):
    """An output that already exists and would be overwritten without ``--overwrite``."""


class TrainingError(NmflowganError, RuntimeError):
    """Training cannot go on (a non-finite loss, a resume that does not fit its checkpoint, ...)."""


class RunLockedError(NmflowganError, RuntimeError):
    """A run folder that another process is writing (its lock file names the holder)."""
