"""Training checkpoints: model, optimiser, scheduler, RNG states, data position and history in one file.

Built in memory and written atomically (temporary file, then rename), so a run killed while saving keeps
its previous checkpoint intact and a full disk is reported as one line naming the file. A checkpoint holds
tensors and plain values only (numbers, strings, lists, dicts) and is read with ``weights_only=True``: a
file planted in a run folder cannot run code when the run is resumed.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import asdict, is_dataclass
from pathlib import Path, PurePath

import numpy as np
import torch

from hepfm.errors import HepfmError
from hepfm.io.atomic import atomic_write_bytes
from hepfm.io.rundir import CHECKPOINT


class BadCheckpointError(HepfmError):
    """A run folder's checkpoint.pt is not a readable hepfm checkpoint."""


def plain(value):
    """``value`` as tensors and plain Python values only (what ``torch.load(weights_only=True)`` accepts)."""
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain(v) for v in value]
        return tuple(items) if type(value) is tuple else items
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, PurePath):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return plain(asdict(value))
    if isinstance(value, torch.device):
        return str(value)
    raise TypeError(f"a checkpoint holds plain values only, not {type(value).__name__}")


def save_checkpoint(folder, state: dict):
    """Write ``state`` to ``folder/checkpoint.pt`` atomically (built in memory first)."""
    buffer = io.BytesIO()
    torch.save(plain(state), buffer)
    return atomic_write_bytes(Path(folder) / CHECKPOINT, buffer.getvalue())


def load_checkpoint(folder) -> dict | None:
    """The checkpoint in ``folder``, or None when there is none; a file that is not one is refused."""
    path = Path(folder) / CHECKPOINT
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "global" not in text.lower():  # torch names a refused object as a GLOBAL; anything else is damage
            detail = " ".join(text.split("WeightsUnpickler error:")[-1].split("Check the documentation")[0].split())
            raise BadCheckpointError(f"{path}: unreadable checkpoint ({detail[:200]}); delete it to start "
                                     "over") from None
        raise BadCheckpointError(f"{path}: not a hepfm checkpoint (it holds objects other than tensors and plain "
                                 "values, which could run code; it was not loaded); delete it to start over") from None
    except Exception as exc:  # torch raises many types for a damaged file
        message = " ".join(str(exc).split())[:300]
        raise BadCheckpointError(f"{path}: unreadable checkpoint ({message}); delete it to start over") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        raise BadCheckpointError(f"{path}: not a hepfm checkpoint (no training state); delete it to start over")
    return saved


def remove_checkpoint(folder) -> None:
    """Delete the checkpoint once the final model is saved."""
    (Path(folder) / CHECKPOINT).unlink(missing_ok=True)
