"""The ``hepfm`` command line: one module per group of commands, each a thin typed function over the library.

Library functions raise :class:`~hepfm.errors.HepfmError` for bad input; :func:`main` turns it into a
one-line message and exit code 2. So does an environment failure (disk full, read-only folder, no
permission: an OSError with that errno), and an interrupt (Ctrl-C, SIGTERM) prints one line and exits 130.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import sys

from rich.console import Console
from rich.markup import escape

from hepfm.cli.app import app
from hepfm.errors import HepfmError, OverlapError, os_error_message
from hepfm.interrupts import interrupt_on_sigterm

# Importing a module registers its commands; ``hepfm --help`` lists them in this order.
for _module in ("generation", "convert", "training", "study", "inference"):
    importlib.import_module(f"hepfm.cli.{_module}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the typer app and turns HepfmError into a one-line message and exit code 2."""
    interrupt_on_sigterm()
    try:
        app(args=argv, prog_name="hepfm")
    except HepfmError as exc:
        message = f"{exc}; on the command line: --allow-overlap" if isinstance(exc, OverlapError) else str(exc)
        _fail(message)
    except OSError as exc:
        message = os_error_message(exc)
        if message is None:
            raise
        _fail(message)
    except KeyboardInterrupt:
        Console(stderr=True).print("hepfm: interrupted; partial outputs were removed, rerun the command to resume",
                                   highlight=False, soft_wrap=True)
        sys.exit(130)


def _fail(message: str) -> None:
    # One line: a message quoting a file's content is bounded, so a hostile file cannot flood the terminal.
    message = " ".join(message.split())
    if len(message) > 2000:
        message = message[:1997] + "..."
    Console(stderr=True).print(f"[bold red]hepfm: error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
