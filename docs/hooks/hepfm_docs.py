"""MkDocs hooks of the hepfm site: the CLI reference generated from the typer app, and the result plots.

* The page holding the marker ``<!-- hepfm-cli-reference -->`` gets the command reference, generated from the
  typer application (``hepfm.cli.app``) by typer's own Markdown writer and laid out as tables by
  mkdocs-typer2's renderer. The plugin's ``::: mkdocs-typer2`` directive is not used: its native engine
  does not run on typer's vendored click, and its legacy engine's HTML is re-parsed as Markdown, so the
  ``[OPTIONS] [process]`` of a usage line reads as a broken cross-reference.
* The PNG plots committed under ``results/`` are added to the site under ``assets/results/``, so that the
  results pages show them without copies in ``docs/``.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files

CLI_MARKER = "<!-- hepfm-cli-reference -->"
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


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace the CLI marker with the generated command reference."""
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, _cli_markdown())
    return markdown


def on_files(files: Files, config) -> Files:
    """Add the committed result plots (``results/**/*.png``) to the site."""
    root = Path(config["config_file_path"]).parent / "results"
    for png in sorted(root.rglob("*.png")):
        rel = png.relative_to(root).as_posix()
        files.append(File.generated(config, f"{RESULTS_PREFIX}/{rel}", abs_src_path=str(png)))
    return files
