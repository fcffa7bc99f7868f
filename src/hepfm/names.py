"""The one rule for every name that becomes a path: labels, processes, study tasks and strategies, model names."""

from __future__ import annotations

import re

from hepfm.errors import ConfigurationError

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def check_name(value, what: str = "name", source: str | None = None) -> str:
    """Return ``value`` if it is a safe path component, else raise a one-line error.

    Safe: 1–128 letters, digits, ``_``, ``-`` or ``.``, and not ``.`` or ``..`` (no path separators, no
    spaces), so a name can never place a file outside the folder it belongs to.
    """
    where = f"{source}: " if source else ""
    if not isinstance(value, str):
        raise ConfigurationError(f"{where}{what} must be a string, got {type(value).__name__}")
    if not _NAME.fullmatch(value) or value in (".", ".."):
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise ConfigurationError(f"{where}{what} {shown!r} is not a valid name: use 1-128 letters, digits, "
                                 "'_', '-' or '.' (no path separators or spaces, not '.' or '..')")
    return value
