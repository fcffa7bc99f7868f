"""An exponential moving average (EMA) of a model's trainable weights (:attr:`TrainConfig.ema_decay`).

After every optimiser step each averaged parameter moves towards the model's: ``avg = decay * avg + (1 - decay) *
weight``, starting from the weights training starts with. The average is what a run is judged by and keeps:
every epoch's validation runs on the averaged weights (so early stopping and the restored best epoch are the
average's), and they are the weights the run saves. Its state is part of the checkpoint, so a resumed run
averages exactly as an uninterrupted one. Frozen parameters and buffers are not averaged (they do not change
by optimiser steps).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn


class WeightAverage:
    """The moving average of ``model``'s trainable parameters with ``decay`` per optimiser step."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        # named_parameters lists a shared (tied) parameter once: it is averaged once.
        self.params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        self.average = {name: p.detach().clone() for name, p in self.params.items()}

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the current weights (call after each optimiser step)."""
        # One fused call over all parameters: this runs after every optimiser step.
        torch._foreach_lerp_(list(self.average.values()), [p.detach() for p in self.params.values()],
                             1.0 - self.decay)

    @contextlib.contextmanager
    def in_model(self):
        """The averaged weights in the model for the block (evaluation, keeping the best), the trained ones after."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def _swap(self) -> None:
        for name, p in self.params.items():
            kept = p.detach().clone()
            p.copy_(self.average[name])
            self.average[name].copy_(kept)

    def state_dict(self) -> dict:
        """The average, for the checkpoint (on the CPU)."""
        return {"decay": self.decay, "average": {k: v.detach().cpu() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Resume the average from a checkpoint's :meth:`state_dict`."""
        for name, value in state["average"].items():
            self.average[name].copy_(value)
