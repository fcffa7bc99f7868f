"""Signal handling shared by the CLI and worker processes."""

from __future__ import annotations

import signal


def interrupt_on_sigterm() -> None:
    """Turn SIGTERM (batch-system time limits, pool shutdown) into KeyboardInterrupt, so that cleanup runs."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)
