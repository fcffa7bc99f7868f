"""Exclusive locks on the folders hepfm writes (stores, run folders, study folders).

A second writer into the same folder is refused at once with a message naming the holder (process id and
host), instead of both writing and one being silently lost or the two mixing. The lock is an OS-level file
lock (``filelock``), so a writer that dies releases it; the hidden lock file is removed on release by the
process that made it.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from hepfm.errors import HepfmError

LOCK = ".hepfm.lock"
HOLDER = ".hepfm.lock.holder"


_LOCKS: dict[tuple[int, str], FileLock] = {}  # one lock object per folder and process: re-entrant, as flock is per file


class FolderLockedError(HepfmError):
    """Another process is writing into the same folder."""


def _holder(folder: Path) -> str:
    try:
        info = json.loads((folder / HOLDER).read_text())
        return f"process {int(info['pid'])} on host {str(info['host'])[:100]}"
    except Exception:  # the holder file is advisory; a lock without it still refuses
        return "another process"


@contextmanager
def exclusive_lock(folder: str | Path, what: str = "folder") -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (which must exist) for the duration of the block.

    Re-entrant within one process (a run that locks a folder may call code that locks it again).
    """
    folder = Path(folder)
    key = str((folder / LOCK).resolve())
    created = not (folder / LOCK).exists()
    lock = _LOCKS.get((os.getpid(), key))
    if lock is None:  # keyed by process too: a forked worker must not reuse its parent's lock object
        lock = _LOCKS[(os.getpid(), key)] = FileLock(key, timeout=0, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        raise FolderLockedError(f"{folder}: this {what} is being written by {_holder(folder)}; wait for it to "
                                "finish or choose another output folder") from None
    except OSError as exc:
        raise HepfmError(f"{folder}: cannot lock this {what} for writing ({exc.strerror or exc})") from None
    first = lock.lock_counter == 1
    try:
        if first:
            try:
                (folder / HOLDER).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
            except OSError:
                pass  # a full disk is reported by the write that needs the space
        yield
    finally:
        if first:
            (folder / HOLDER).unlink(missing_ok=True)
        lock.release()
        if first and created:
            # The folder is left as this process found it. A contender that opened the file just before
            # this unlink fails its non-blocking attempt or wins an orphaned lock; only a third writer in
            # that same instant could then pass too, a window of microseconds.
            Path(key).unlink(missing_ok=True)
