"""Atomic file writes: write to a temporary name in the same folder, then rename over the target.

Every output hepfm produces (shards, manifests, model weights and configs, checkpoints, histories,
study results, plots) goes through here, so an interrupted run never leaves a half-written file under
its final name. A write that fails because the disk is full, read-only or not writable raises a one-line
:class:`~hepfm.errors.HepfmError` naming the file, never a library's traceback.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from hepfm.errors import HepfmError, disk_error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Call ``write(tmp_path)`` and rename the result to ``path``; the temporary file is removed on failure."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise (disk_error(exc, path) or exc) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; a shared store or model must be readable
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        error = disk_error(exc, path)
        if error is not None:
            raise error from None
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically.

    Libraries that write through C (torch.save, h5py) report a full disk with misleading errors or even
    crash; building the file in memory and writing its bytes here gives a plain, well-reported OSError.
    """

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())

    return atomic_write(path, write)


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete temporary files that an interrupted :func:`atomic_write` of ``path`` left (``NAME.*.tmp``)."""
    path = Path(path)
    for stale in path.parent.glob(path.name + ".*.tmp"):
        stale.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def prepare_output_folder(out: Path) -> bool:
    """Create the output folder ``out`` (returns whether this call created it); a file in its place or an
    unwritable folder is a one-line HepfmError, and a folder this call created is removed again then."""
    if out.exists() and not out.is_dir():
        raise HepfmError(f"{out}: exists and is not a folder")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HepfmError(f"{out}: cannot create output folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise HepfmError(f"{out}: output folder is not writable")
    return created
