"""MkDocs hooks of the hepfm site: the CLI reference generated from the typer app, and the result plots.

* The page holding the marker ``<!-- hepfm-cli-reference -->`` gets the command reference, generated from the
  typer application (``hepfm.cli.app``) by typer's own Markdown writer and laid out as tables by
  mkdocs-typer2's renderer. The plugin's ``::: mkdocs-typer2`` directive is not used: its native engine
  does not run on typer's vendored click, and its legacy engine's HTML is re-parsed as Markdown, so the
  ``[OPTIONS] [process]`` of a usage line reads as a broken cross-reference.
* A page holding ``<!-- hepfm-api: PACKAGE -->`` gets the API reference of every public module of
  ``hepfm.PACKAGE`` (mkdocstrings), listed from the source tree when the site is built.
* The PNG plots committed under ``results/`` are added to the site under ``assets/results/``, so that the
  results pages show them without copies in ``docs/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

CLI_MARKER = "<!-- hepfm-cli-reference -->"
API_MARKER = re.compile(r"<!-- hepfm-api: ([a-z_]+) -->")
RESULTS_PREFIX = "assets/results"


def _cli_markdown() -> str:
    import typer
    from mkdocs_typer2.pretty import parse_markdown_to_tree, tree_to_markdown
    from typer.cli import get_docs_for_click

    from hepfm.cli import app

    command = typer.main.get_command(app)
    raw = get_docs_for_click(obj=command, ctx=typer.Context(command), name="hepfm")
    text = tree_to_markdown(parse_markdown_to_tree(raw))
    # The page has its own title, and its table of contents lists the commands only: the per-command
    # Usage / Arguments / Options / Commands headings become bold labels, "Subcommands" the section of commands,
    # and a group's own subcommands one level below the group.
    out = []
    for line in text.splitlines()[1:] if text.startswith("# ") else text.splitlines():
        match = re.match(r"(#+)\s+(.*)$", line)
        if match is None:
            out.append(line)
            continue
        level, title = len(match.group(1)), match.group(2).strip()
        if title in _LABELS:
            out.append(f"**{title}**\n")
        elif title == "Subcommands":
            if level == 2:
                out.append("## The commands")
        else:
            out.append(f"{'#' * min(level, 4)} {title}")
    return "\n".join(out)


_LABELS = ("Usage", "Arguments", "Options", "Commands")


def _api_markdown(package: str, src: Path) -> str:
    """mkdocstrings blocks for every public module of ``hepfm.<package>``, found on disk at build time, so that a
    module added, renamed or removed changes the page without an edit; the package itself contributes only its
    docstring (its re-exports are documented where they are defined)."""
    folder = src / "hepfm" / package
    modules = sorted(p.stem if p.is_file() else p.name for p in folder.iterdir()
                     if not p.name.startswith("_") and (p.suffix == ".py" or (p / "__init__.py").is_file()))
    blocks = [f"::: hepfm.{package}\n    options:\n      members: false\n      show_root_heading: false\n"]
    blocks += [f"::: hepfm.{package}.{name}\n" for name in modules]
    return "\n".join(blocks)


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace the CLI marker with the generated command reference, an API marker with its package's modules."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, _cli_markdown())
    src = Path(config["config_file_path"]).parent / "src"
    return API_MARKER.sub(lambda m: _api_markdown(m.group(1), src), markdown)


def on_files(files: Files, config) -> Files:
    """Add the committed result plots (``results/**/*.png``) to the site."""
    root = Path(config["config_file_path"]).parent / "results"
    for png in sorted(root.rglob("*.png")):
        rel = png.relative_to(root).as_posix()
        files.append(File.generated(config, f"{RESULTS_PREFIX}/{rel}", abs_src_path=str(png)))
    return files
