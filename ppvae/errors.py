"""Errors that ppvae raises for problems a user can fix.

Every error carries a one-line message that says what is wrong and how to fix it.
The command line turns them into that line on stderr and a non-zero exit code,
never a traceback.
"""

from __future__ import annotations

__all__ = [
    "PPVAEError",
    "UsageError",
    "DataError",
    "CheckpointError",
    "TrainingError",
    "BackendUnavailableError",
    "unknown_name",
]


class PPVAEError(Exception):
    """Base class: a problem the user can fix, with a one-line message."""

    #: Exit code the command line uses for this error.
    exit_code = 1


class UsageError(PPVAEError, ValueError):
    """A bad option, setting or name (exit code 2, like click's usage errors)."""

    exit_code = 2


class DataError(PPVAEError, ValueError):
    """Data that is missing, corrupt, of the wrong shape or outside a likelihood's support."""

    exit_code = 1


class CheckpointError(PPVAEError):
    """A run folder or checkpoint that is missing, corrupt, unsafe or from another spec."""

    exit_code = 1


class TrainingError(PPVAEError, RuntimeError):
    """Training had to stop (for example a non-finite loss); the last good checkpoint is kept."""

    exit_code = 1


class BackendUnavailableError(PPVAEError, ImportError):
    """An optional backend is not installed; the message says which extra to install."""

    exit_code = 2


def unknown_name(what: str, name: str, valid) -> UsageError:
    """Build the error for an unknown name, listing the valid choices.

    Parameters
    ----------
    what : str
        What kind of name it is, e.g. ``"likelihood"``.
    name : str
        The name the user gave.
    valid : iterable of str
        The accepted names.
    """
    choices = ", ".join(sorted(valid)) or "(none registered)"
    return UsageError(f"unknown {what} {name!r}; valid {what} names: {choices}")
