"""Running ``hepfm`` as a user would (a subprocess) and checking its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")  # the checkout under test, not an installed copy


def hepfm(*args, cwd=None, launcher=None, inherit_env=False, env=None):
    """Run ``python -m hepfm ARGS`` (or under ``launcher``, e.g. torchrun) and capture its output; ``env``
    adds variables."""
    cmd = (launcher or [sys.executable, "-m"]) + ["hepfm", *map(str, args)]
    extra = env or {}
    env = {**os.environ, "COLUMNS": "200"} if inherit_env else {"COLUMNS": "200", "PATH": "/usr/bin:/bin"}
    if "OMP_WAIT_POLICY" in os.environ:  # set by conftest.py under pytest-xdist: a setting of the machine, kept
        env.setdefault("OMP_WAIT_POLICY", os.environ["OMP_WAIT_POLICY"])
    env.update(extra)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


def one_line_error(r, *fragments):
    """Assert exit code 2 and a single stderr line containing every fragment."""
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [line for line in r.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]
