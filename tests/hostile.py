"""Shared checks for the hostile-input tests (tests/test_hostile_*.py): each case runs ``hepfm`` as a user
would and asserts the contract of docs/safety.md — exit code 2, one line naming the file and the problem,
no traceback, and nothing left behind in the folders the case watches."""

from __future__ import annotations

from pathlib import Path

from cli_runner import hepfm


def snapshot(*roots: Path) -> dict[str, int]:
    """Every file under ``roots`` (hidden lock files aside) with its size: compare before and after a case."""
    files = {}
    for root in roots:
        root = Path(root)
        if root.is_file():
            files[str(root)] = root.stat().st_size
        elif root.is_dir():
            for p in root.rglob("*"):
                if p.is_file() and not p.name.startswith(".hepfm.lock"):
                    files[str(p)] = p.stat().st_size
    return files


def refused(args, *fragments, watch=(), code=2, cwd=None, env=None):
    """Run ``hepfm ARGS``; assert exit ``code``, one stderr line holding every fragment, no traceback, and the
    folders in ``watch`` exactly as before. Returns the completed process."""
    before = snapshot(*watch)
    r = hepfm(*args, cwd=cwd, env=env)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-4000:])
    assert "Traceback" not in r.stderr, r.stderr[-4000:]
    assert len(lines) == 1, r.stderr[-4000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    after = snapshot(*watch)
    assert after == before, {"added or changed": sorted(set(after.items()) - set(before.items())),
                             "removed": sorted(set(before) - set(after))}
    return r
