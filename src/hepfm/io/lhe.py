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
    # The counts the file declares (NPRUP process lines in <init>, NUP particle lines per event) are checked
    # against the lines that are there: Pythia sizes its arrays by them, so an inflated count is a memory bomb.
    state, need, have, event_line = None, 0, 0, 0
    try:
        with opener(path, "rt", errors="replace") as f:
            for number, line in enumerate(f, 1):
                s = line.strip()
                if not s:
                    continue
                if state == "init":
                    if _is_tag(s, "/init"):
                        if need is None or have < need:
                            _short(path, number, "<init>", need, have, "process lines (NPRUP)")
                        state = None
                    elif need is None and not s.startswith(("<", "#")):
                        need = _count(path, number, s, 10, 9, "NPRUP", "the <init> block's first line")
                    elif need is not None and have < need and not s.startswith(("<", "#")):
                        if len(s.split()) < 4:
                            raise HepfmError(f"{path}: line {number}: a process line of <init> needs 4 numbers "
                                             "(XSECUP XERRUP XMAXUP LPRUP)")
                        have += 1
                    continue
                if state == "event":
                    if _is_tag(s, "/event"):
                        if need is None or have < need:
                            _short(path, event_line, "<event>", need, have, "particle lines (NUP)")
                        n_close += 1
                        state = None
                    elif need is None and not s.startswith(("<", "#")):
                        need = _count(path, number, s, 6, 0, "NUP", "an event's first line")
                    elif need is not None and not s.startswith(("<", "#")):
                        have += 1
                    continue
                if _is_tag(s, "event"):
                    n_open += 1
                    state, need, have, event_line = "event", None, 0, number
                elif _is_tag(s, "/event"):
                    n_close += 1
                elif _is_tag(s, "LesHouchesEvents"):
                    saw_header = True
                elif _is_tag(s, "init"):
                    saw_init = True
                    state, need, have = "init", None, 0
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


def _is_tag(line: str, name: str) -> bool:
    """True when ``line`` starts with the tag ``<name`` (not a longer tag such as ``<initrwgt>``)."""
    rest = line[len(name) + 1:]
    return line.startswith("<" + name) and (not rest or rest[0] in "> \t/")


def _count(path: Path, number: int, line: str, fields: int, at: int, name: str, what: str) -> int:
    """The count ``name`` at position ``at`` of a line of ``fields`` numbers, refused unless a plain integer >= 0."""
    parts = line.split()
    try:
        value = int(parts[at])
    except (IndexError, ValueError):
        value = None
    if len(parts) < fields or value is None or value < 0:
        raise HepfmError(f"{path}: line {number}: {what} needs {fields} numbers with an integer {name}, got "
                         f"{line[:80]!r}; not a valid LHE file")
    return value


def _short(path: Path, number: int, block: str, need, have: int, what: str) -> None:
    if need is None:
        raise HepfmError(f"{path}: line {number}: the {block} block is empty; not a valid LHE file")
    raise HepfmError(f"{path}: line {number}: the {block} block declares {need:,} {what} but holds {have}; "
                     "truncated or not a valid LHE file")
