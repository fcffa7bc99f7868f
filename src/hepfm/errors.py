"""User-facing errors: one line that names the input and the problem."""

from __future__ import annotations


class HepfmError(Exception):
    """An error caused by the user's input (file, option, setting); the CLI prints it as one line."""


class ConfigurationError(HepfmError, ValueError):
    """A bad setting passed to the library (unknown model, option, optimizer, strategy, task, device).

    It is a ValueError for Python callers and a HepfmError for the command line, so the CLI prints it as
    one line without catching ValueError in general: a ValueError from a bug keeps its traceback.
    """


class OverlapError(HepfmError):
    """Held-out events were in the pretrained model's training data; the API's ``allow_overlap`` (the CLI's
    ``--allow-overlap``, which the command line names) goes on anyway and marks the result."""
