"""The documentation: the site builds without a broken link or reference, its tested examples run, the README
stays short and points at files that exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = re.compile(r"<!-- tested -->\n```python\n(.*?)\n```", re.S)
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _env() -> dict[str, str]:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", PYTHONWARNINGS="ignore::DeprecationWarning")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


@pytest.fixture(scope="module")
def example_runs(tmp_path_factory):
    """The examples of docs/extending.md marked as tested, started at once, each in a fresh interpreter and an
    empty folder; the site build runs meanwhile (both mostly wait for imports)."""
    examples = EXAMPLE.findall((ROOT / "docs" / "extending.md").read_text())
    runs = []
    for i, code in enumerate(examples):
        folder = tmp_path_factory.mktemp(f"example-{i}")
        runs.append((code, subprocess.Popen([sys.executable, "-c", code], cwd=folder, env=_env(), text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)))
    yield runs
    for _, run in runs:
        if run.poll() is None:
            run.kill()


def test_site_builds_strict(tmp_path, example_runs):
    site = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # The generated pages are there and hold what they are generated from.
    cli = (site / "reference" / "cli" / "index.html").read_text()
    for command in ("hepfm generate", "hepfm finetune", "hepfm predict", "hepfm study", "--backbone-lr"):
        assert command in cli, command
    api = (site / "reference" / "api" / "io" / "index.html").read_text()
    assert "EventStore" in api and "write_shard" in api
    provenance = (site / "results" / "provenance" / "index.html").read_text()
    assert "foundation/table1-1e4-p10" in provenance and "study-hierarchical/shift" in provenance
    plots = sorted((ROOT / "results").rglob("*.png"))
    assert plots and all((site / "assets" / "results" / p.relative_to(ROOT / "results")).is_file() for p in plots)


def test_extending_examples_run(example_runs):
    """Every example of docs/extending.md marked as tested runs without an error."""
    assert len(example_runs) >= 3
    for code, run in example_runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, f"example failed:\n{code[:400]}\n...\n{err[-3000:]}"


def test_readme_is_short_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "python -m pytest" in text
    for target in MARKDOWN_LINK.findall(text):
        if target.startswith(("http://", "https://", "#")):
            continue
        assert (ROOT / target.split("#")[0]).exists(), target


def _provenance_blocks(index: str) -> dict[str, str]:
    """The blocks of results/README.md: the folder each one is about (its bold heading) -> its text."""
    blocks: dict[str, str] = {}
    for part in re.split(r"^(?=\*\*`)", index, flags=re.M)[1:]:
        blocks[re.match(r"\*\*`([^`]+?)/?`", part).group(1)] = part
    return blocks


def test_every_result_folder_has_a_provenance_block():
    """Each folder under results/ has its own block (command, config, machine, commits, date), or is named in the
    block of the folder that holds it."""
    blocks = _provenance_blocks((ROOT / "results" / "README.md").read_text())
    for name, text in blocks.items():
        assert (ROOT / "results" / name).is_dir(), f"results/README.md describes a missing folder {name}"
        for field in ("* command:", "* config:", "* machine:", "* commit", "* date:"):
            assert field in text, f"the block of {name} has no {field!r} line"
    for folder in sorted(p for p in (ROOT / "results").rglob("*") if p.is_dir()):
        rel = folder.relative_to(ROOT / "results").as_posix()
        if rel in blocks:
            continue
        parent = max((b for b in blocks if rel.startswith(b + "/")), key=len, default=None)
        assert parent is not None, f"results/{rel} is in no block of results/README.md"
        inner = rel[len(parent) + 1:]
        # `tree/**` names a machine-written tree (a record of runs) as a whole: everything below it is covered
        ancestors = ["/".join(inner.split("/")[:i]) for i in range(1, inner.count("/") + 2)]
        named = f"`{inner}/`" in blocks[parent] or any(f"`{a}/**`" in blocks[parent] for a in ancestors)
        assert named, f"results/{rel} is not named in the block of results/{parent}"
