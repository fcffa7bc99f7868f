"""Progress bars with event rates (rich), shared by every long-running command."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "- events/s", style="cyan")


class EventProgress:
    """A context-managed progress bar counting events, with events/s; a no-op when disabled."""

    def __init__(self, total: int, description: str, enabled: bool = True):
        self.enabled = enabled
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  _RateColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                                  disable=not enabled, transient=False)
        self._task = self._progress.add_task(description, total=total)

    def __enter__(self) -> EventProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def advance(self, n: int) -> None:
        """Count n more events."""
        self._progress.advance(self._task, n)
