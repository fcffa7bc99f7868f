"""A model applied to every event of a data set, batch by batch: the one scoring and encoding loop.

Training (validation, test metrics), the study (latents, scores) and inference (``hepfm predict``) all run
models through these functions, so they cannot differ in how batches are cut, trimmed or cast. Each batch is
trimmed to its largest multiplicity by :meth:`~hepfm.data.datasets.EventData.batch`; the model runs in eval
mode without gradients and its previous mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hepfm.data.datasets import EventData, pad_slots

#: Builds a batch's model inputs and targets from (event indices, x, mask, y): ``(args, y)``, the model
#: being called as ``call(*args)``. Without one the model gets ``(x, mask)`` and the targets are ``y``.
BatchInputs = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], tuple[tuple, torch.Tensor]]


def autocast(device: torch.device, bf16: bool):
    """bfloat16 autocast on ``device`` when ``bf16``, else a no-op context."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16)


@torch.no_grad()
def in_batches(model: nn.Module, call, data: EventData, batch_size: int, bf16: bool = False,
               inputs: BatchInputs | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs as float32, targets) of every event of ``data``, in order; ``call`` is ``model`` or one of its
    methods, and ``inputs`` (optional) prepares each batch, e.g. masks its events."""
    was_training = model.training
    model.eval()
    outs, ys = [], []
    for start in range(0, len(data), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(data)), device=data.x.device)
        x, mask, y = data.batch(idx)
        args, y = inputs(idx, x, mask, y) if inputs is not None else ((x, mask), y)
        with autocast(data.x.device, bf16):
            out = call(*args)
        outs.append(tuple(o.float() for o in out) if isinstance(out, tuple) else out.float())
        ys.append(y)
    model.train(was_training)
    if not outs:
        return torch.empty(0), data.y[:0]
    return _joined(outs, data), _joined(ys, data)


def _joined(parts: list, data: EventData):
    """Batches' outputs or targets in one: tensors concatenated; pairs (event, per-object outputs) and dicts of
    named targets part by part, per-object ones padded to the data's object slots."""
    width = data.x.shape[1]
    if isinstance(parts[0], tuple):
        events, objects = zip(*parts, strict=True)
        return torch.cat(events), torch.cat([nn.functional.pad(o, (0, 0, 0, width - o.shape[1])) for o in objects])
    if isinstance(parts[0], dict):
        return {k: torch.cat([pad_slots(p[k], width) if k in data.object_targets else p[k] for p in parts])
                for k in parts[0]}
    return torch.cat(parts)


def predict(model: nn.Module, data: EventData, batch_size: int = 8192, bf16: bool = False) -> torch.Tensor:
    """Model outputs for every event of ``data`` (float32, on the data's device), in order."""
    return in_batches(model, model, data, batch_size, bf16)[0]


def encode(model: nn.Module, data: EventData, batch_size: int = 8192) -> torch.Tensor:
    """The 64-d latent of every event of ``data``, in order."""
    model = getattr(model, "module", model)
    return in_batches(model, model.encode, data, batch_size, False)[0]
