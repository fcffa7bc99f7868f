"""What every backbone shares: feature scaling buffers, a 64-d latent, a separate output head."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from hepfm.data.features import FeatureScaling
from hepfm.errors import ConfigurationError
from hepfm.models.layers import LATENT_DIM


class Backbone(nn.Module):
    """Base class: ``model(x, mask) -> outputs``, ``model.encode(x, mask) -> [B, 64]``.

    ``x`` holds the raw stored rows [B, M, 7] and ``mask`` [B, M] marks real objects. Subclasses set
    ``name`` (their registry key), build ``self.decoder`` (the last module before the latent) and
    implement :meth:`encode`. ``self.head`` is a plain Linear so fine-tuning can swap it.

    Masked-object pretraining: a backbone built with ``mask_token=True`` holds a learned dummy token
    (``self.mask_token``, one embedding vector) and takes ``hidden`` [B, M] (bool) marking the slots whose
    object was hidden (:mod:`hepfm.data.masking`): their embedding is replaced by the token.
    :meth:`drop_mask_token` removes it when a pretrained backbone is transferred to another task.
    """

    name = "backbone"
    #: What the model reads: "objects" (events, x [B, M, 7]) or "constituents" (jets, x [B, K, 6]).
    inputs = "objects"
    # Options added after models were first saved, with the value that reproduces the architecture those
    # models were saved with: a config.json without the key means this value, not the current default.
    saved_without: ClassVar[dict] = {}

    def __init__(self, n_outputs: int, config: dict):
        super().__init__()
        if n_outputs < 1:
            raise ConfigurationError(f"n_outputs must be positive, got {n_outputs}")
        self.config = dict(config)
        self.n_outputs = n_outputs
        self.scaling = FeatureScaling()
        self.head = nn.Linear(LATENT_DIM, n_outputs)

    def encode(self, x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encode(x, mask, hidden))

    def _init_mask_token(self, enabled: bool, dim: int) -> None:
        if not isinstance(enabled, bool):
            raise ConfigurationError(f"mask_token must be true or false, got {enabled!r}")
        # Unit-scale entries, like the LayerNorm-ed object embeddings it stands in for.
        self.mask_token = nn.Parameter(torch.randn(dim)) if enabled else None

    def _hide(self, h: torch.Tensor, hidden: torch.Tensor | None) -> torch.Tensor:
        """Object embeddings ``h`` [..., D] with the rows flagged in ``hidden`` [...] replaced by the token."""
        if hidden is None:
            return h
        if self.mask_token is None:
            raise ConfigurationError("this backbone has no mask token; build it with mask_token=true for the "
                                     "masked-object task")
        return torch.where(hidden[..., None], self.mask_token.to(h.dtype), h)

    def drop_mask_token(self) -> None:
        """Remove the masked task's dummy token (transfer to a task that never hides objects)."""
        if getattr(self, "mask_token", None) is not None:
            self.mask_token = None
            self.config.pop("mask_token", None)

    def replace_head(self, n_outputs: int) -> None:
        """A freshly initialised output Linear with ``n_outputs`` outputs (same device and dtype)."""
        old = self.head
        self.head = nn.Linear(LATENT_DIM, n_outputs).to(device=old.weight.device, dtype=old.weight.dtype)
        self.n_outputs = n_outputs

    def reset_decoder(self) -> None:
        """Re-initialise the decoder (the 'frozen' strategy's trainable part, beside the head)."""
        for m in self.decoder.modules():
            if hasattr(m, "reset_parameters") and m is not self.decoder:
                m.reset_parameters()

    def describe(self) -> dict:
        """Architecture description saved in config.json: registry name, outputs and constructor options."""
        return {"model": self.name, "n_outputs": self.n_outputs, "config": dict(self.config)}


def count_parameters(model: nn.Module) -> int:
    """Number of trainable and frozen parameters (buffers not included)."""
    return sum(p.numel() for p in model.parameters())
