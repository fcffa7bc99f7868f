"""User-facing errors: one line that names the input and the problem."""

from __future__ import annotations

import errno
import re


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


_OS_PROBLEMS = {
    errno.ENOSPC: "no space left on the device holding {path}",
    errno.EDQUOT: "disk quota exceeded on the device holding {path}",
    errno.EROFS: "{path} is on a read-only file system",
    errno.EACCES: "permission denied: {path}",
    errno.EPERM: "operation not permitted: {path}",
}
_H5_ERRNO = re.compile(r"errno = (\d+)")


def os_error_message(exc: BaseException) -> str | None:
    """One line for an environment failure (disk full, read-only, no permission), or None for anything else.

    Recognises plain OSErrors and h5py's, which carry the C errno only inside their message.
    """
    if not isinstance(exc, OSError):
        return None
    code = exc.errno
    if code is None:
        found = _H5_ERRNO.search(str(exc))
        code = int(found.group(1)) if found else None
    if code not in _OS_PROBLEMS:
        return None
    path = exc.filename or exc.filename2 or "the output"
    return _OS_PROBLEMS[code].format(path=path)


def disk_error(exc: BaseException, path) -> HepfmError | None:
    """A HepfmError naming ``path`` for an environment failure while writing it, or None (see os_error_message)."""
    if not isinstance(exc, OSError):
        return None
    if exc.filename is None:
        exc = OSError(exc.errno, exc.strerror, str(path)) if exc.errno else exc
    message = os_error_message(exc)
    if message and "the output" in message:
        message = message.replace("the output", str(path))
    return HepfmError(message) if message else None
