"""Reading small text files that other people made (configurations, mappings) with a bound on their size,
and YAML from them without aliases."""

from __future__ import annotations

from pathlib import Path

import yaml

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


#: Largest configuration file read (a study configuration is a few kB).
MAX_YAML_BYTES = 1_000_000


class _SafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader without aliases: ``*name`` can expand a few hundred bytes into gigabytes (the "billion
    laughs"), and no hepfm configuration needs them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not supported in hepfm "
                                              "configurations; write the value out", mark)
        return super().compose_node(parent, index)


def safe_yaml(path: str | Path, what: str = "configuration"):
    """The parsed content of a hepfm YAML file: at most MAX_YAML_BYTES, no aliases, plain data only; a
    missing, oversized or malformed file is a one-line HepfmError naming it (with a bounded excerpt)."""
    path = Path(path)
    text = read_bounded_text(path, MAX_YAML_BYTES, what)
    try:
        return yaml.load(text, Loader=_SafeLoader)  # _SafeLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise HepfmError(f"{path}: not valid YAML ({show_text(str(exc))})") from None
    except RecursionError:
        raise HepfmError(f"{path}: nested too deeply; not a {what}") from None


def show_text(text: str, limit: int = 200) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
