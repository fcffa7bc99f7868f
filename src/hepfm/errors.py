"""User-facing errors: one line that names the input and the problem."""

from __future__ import annotations


class HepfmError(Exception):
    """An error caused by the user's input (file, option, setting); the CLI prints it as one line."""
