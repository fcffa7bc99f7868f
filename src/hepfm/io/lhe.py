"""Checks on Les Houches Event (LHE) files before they are handed to Pythia.

Pythia reads LHE files itself; these checks only make sure a missing, truncated or non-LHE file is
reported as one clear error instead of a crash or a silently short sample.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from hepfm.errors import HepfmError


def count_lhe_events(path: str | Path) -> int:
    """Validate an LHE file and return its number of events.

    Plain and gzip-compressed (``.lhe.gz``, which Pythia reads directly) files are accepted. Raises
    HepfmError naming the file when it is missing, unreadable, otherwise compressed, not LHE,
    truncated or holds no events.
    """
    path = Path(path)
    if not path.exists():
        raise HepfmError(f"{path}: no such LHE file")
    if not path.is_file():
        raise HepfmError(f"{path}: not a file")
    if path.suffix in (".bz2", ".xz", ".zst", ".zip"):
        raise HepfmError(f"{path}: only plain or gzip-compressed LHE files are supported; decompress it first")
    opener = gzip.open if path.suffix == ".gz" else open
    n_open = n_close = 0
    saw_header = saw_init = saw_end = False
    try:
        with opener(path, "rt", errors="replace") as f:
            for line in f:
                s = line.strip()
                if not s:
                    continue
                if s.startswith("<event"):
                    n_open += 1
                elif s.startswith("</event>"):
                    n_close += 1
                elif s.startswith("<LesHouchesEvents"):
                    saw_header = True
                elif s.startswith("<init"):
                    saw_init = True
                elif s.startswith("</LesHouchesEvents>"):
                    saw_end = True
                    break  # generators may append comments (POWHEG writes its random-number state)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise HepfmError(f"{path}: truncated or corrupt compressed LHE file ({exc})") from None
    except OSError as exc:
        raise HepfmError(f"{path}: cannot read LHE file ({exc.strerror or exc})") from None
    if not saw_header or not saw_init:
        raise HepfmError(f"{path}: not a Les Houches Event file (no <LesHouchesEvents> header and <init> block)")
    if n_open != n_close or not saw_end:
        raise HepfmError(
            f"{path}: truncated LHE file ({n_open} <event> tags, {n_close} </event> tags"
            f"{', no closing </LesHouchesEvents>' if not saw_end else ''})"
        )
    if n_close == 0:
        raise HepfmError(f"{path}: LHE file holds no events")
    return n_close
