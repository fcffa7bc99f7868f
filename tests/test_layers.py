"""The package layers (``[tool.importlinter]`` in pyproject.toml) hold, and a broken layer is caught.

The first test lints the package itself. The others lint a copy of it with one violating import added,
through the same contracts, to show that each kind of violation fails the check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hepfm

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"
PACKAGE = Path(hepfm.__file__).parent

# The contracts of pyproject.toml, checked by import-linter's own entry point in a fresh interpreter (there
# ``hepfm`` is the package found on PYTHONPATH: this one, or a copy); the exit status is 0 when all are kept.
_LINT = ("import sys; from importlinter.cli import lint_imports; "
         "sys.exit(lint_imports(config_filename=sys.argv[1], no_cache=True, no_logo=True))")


def _lint(src: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-c", _LINT, str(config)], cwd=config.parent, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_package_keeps_every_contract():
    result = _lint(PACKAGE.parent, CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout, result.stdout


def _lint_copy(tmp_path: Path, edits: dict[str, str]) -> subprocess.CompletedProcess:
    """The contracts checked on a copy of the package with ``edits`` (path inside the package -> line appended;
    a new path is a new module)."""
    src = tmp_path / "src"
    shutil.copytree(PACKAGE, src / "hepfm", ignore=shutil.ignore_patterns("__pycache__", "weights", "slha"))
    for relative, line in edits.items():
        path = src / "hepfm" / relative
        path.write_text((path.read_text() if path.exists() else "") + f"\n{line}\n")
    shutil.copy(CONFIG, tmp_path / "pyproject.toml")
    return _lint(src, tmp_path / "pyproject.toml")


def test_an_unchanged_copy_passes(tmp_path):
    result = _lint_copy(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize(("edits", "expected"), [
    ({"physics/kinematics.py": "from hepfm.cli import app"},
     "hepfm.physics is not allowed to import hepfm.cli"),
    ({"io/lhe.py": "from hepfm.train import trainer"},
     "hepfm.io is not allowed to import hepfm.train"),
    ({"data/datasets.py": "from hepfm.data import streaming"},
     "No cycles are allowed in hepfm.data"),
    ({"inference/predict.py": "from hepfm.train.trainer import evaluate"},
     "hepfm.inference is not allowed to import hepfm.train"),
    ({"models/saving.py": "from hepfm import __version__"},
     "hepfm.models.saving is not allowed to import hepfm"),
    ({"unplaced.py": "from hepfm import errors"},
     "hepfm.unplaced"),
], ids=["lower-imports-higher", "io-imports-train", "cycle", "inference-imports-trainer", "version-from-root",
        "module-in-no-layer"])
def test_an_injected_violation_fails_the_check(tmp_path, edits, expected):
    result = _lint_copy(tmp_path, edits)
    assert result.returncode != 0, result.stdout
    assert expected in " ".join(result.stdout.split()), result.stdout + result.stderr
