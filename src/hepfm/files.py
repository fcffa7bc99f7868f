"""Reading small text files that other people made (configurations) with a bound on their size."""

from __future__ import annotations

from pathlib import Path

from hepfm.errors import HepfmError


def read_bounded_text(path: str | Path, limit: int, what: str) -> str:
    """The UTF-8 text of ``path``, refused as one line if it is missing, unreadable, over ``limit`` bytes or
    not text: a hostile file cannot make hepfm read gigabytes to parse a configuration."""
    path = Path(path)
    if not path.is_file():
        raise HepfmError(f"{path}: no such {what} file")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise HepfmError(f"{path}: cannot read this {what} ({exc.strerror or exc})") from None
    if len(data) > limit:
        size = f"{limit // 1_000_000} MB" if limit >= 1_000_000 else f"{limit // 1000} kB"
        raise HepfmError(f"{path}: larger than {size}; not a {what}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise HepfmError(f"{path}: not a text (UTF-8) file") from None
