"""Training checkpoints: model, optimiser, scheduler, RNG states, data position and history in one file.

Written atomically (temporary file, then rename), so a run killed while saving keeps its previous
checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path

import torch

from hepfm.errors import HepfmError
from hepfm.io.atomic import atomic_write

CHECKPOINT = "checkpoint.pt"


def save_checkpoint(folder: Path, state: dict) -> Path:
    """Write ``state`` to ``folder/checkpoint.pt`` atomically."""
    return atomic_write(Path(folder) / CHECKPOINT, lambda tmp: torch.save(state, tmp))


def load_checkpoint(folder: Path) -> dict | None:
    """The checkpoint in ``folder``, or None when there is none."""
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a damaged file
        raise HepfmError(f"{path}: unreadable checkpoint ({exc}); delete it to start over") from None


def remove_checkpoint(folder: Path) -> None:
    """Delete the checkpoint once the final model is saved."""
    (Path(folder) / CHECKPOINT).unlink(missing_ok=True)
