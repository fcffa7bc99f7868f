"""What every backbone shares: feature scaling buffers, a 64-d latent, a separate output head, and the hooks
the trainer and the exporter call instead of asking which model they hold.

Hooks (each with the event backbones' behaviour here; a backbone overrides what it does differently):

* :meth:`Backbone.fit_scaling`: fit the feature scaling on the training data;
* :meth:`Backbone.parameter_groups`: set the model up for a training strategy (new head, frozen parts) and
  give the optimiser's parameter groups;
* :meth:`Backbone.depth_groups`: the parameters below the head by depth (layer-wise rate decay);
* :meth:`Backbone.frozen_rows`: what a frozen part computes, done once per event (the trainer's cache);
* :attr:`Backbone.compile_bucketed` / :attr:`Backbone.bucket_shapes`: compiled training at a few static shapes;
* :meth:`Backbone.for_export`, :meth:`Backbone.trace_rows`, :meth:`Backbone.export_metadata`: ONNX export;
* :meth:`Backbone.encode_objects` with :attr:`Backbone.object_width`: per-object embeddings beside the latent,
  read by a per-object output head (:meth:`Backbone.add_object_head`, multi-task pretraining).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import nn

from hepfm.data.features import FeatureScaling, fit_scaling
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
    #: Compiled training pads the inputs to a few shapes (:attr:`bucket_shapes`) and compiles for static
    #: shapes; otherwise ``torch.compile``'s defaults.
    compile_bucketed: ClassVar[bool] = False
    #: Set by the trainer while compiled (with :attr:`compile_bucketed`); not saved, outputs unchanged.
    bucket_shapes = False
    #: Set by the trainer while the model reads the rows of :meth:`frozen_rows` in place of its inputs.
    embedded_inputs = False
    #: Width of the per-object embeddings of :meth:`encode_objects`.
    object_width: int = LATENT_DIM

    def __init__(self, n_outputs: int, config: dict):
        super().__init__()
        if n_outputs < 1:
            raise ConfigurationError(f"n_outputs must be positive, got {n_outputs}")
        self.config = dict(config)
        self.n_outputs = n_outputs
        self.scaling = FeatureScaling()
        self.head = nn.Linear(LATENT_DIM, n_outputs)
        self.object_head: nn.Linear | None = None

    def encode(self, x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None):
        """The head's outputs [B, n_outputs]; with a per-object head (:meth:`add_object_head`) the pair
        (outputs [B, n_outputs], per-object outputs [B, M, n])."""
        if self.object_head is None:
            return self.head(self.encode(x, mask, hidden))
        latent, objects = self.encode_objects(x, mask, hidden)
        return self.head(latent), self.object_head(objects)

    def encode_objects(self, x: torch.Tensor, mask: torch.Tensor,
                       hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the latent [B, 64], each object's final embedding [B, M, :attr:`object_width`], zeros on padding)."""
        raise ConfigurationError(f"the {self.name} backbone gives no per-object outputs")

    def add_object_head(self, n_outputs: int) -> None:
        """A per-object output Linear of ``n_outputs`` (training only: :meth:`drop_object_head` removes it)."""
        if type(self).encode_objects is Backbone.encode_objects:
            raise ConfigurationError(f"the {self.name} backbone gives no per-object outputs, so it cannot train a "
                                     "per-object head")
        ref = self.head.weight
        self.object_head = nn.Linear(self.object_width, n_outputs).to(device=ref.device, dtype=ref.dtype)

    def drop_object_head(self) -> None:
        """Remove the per-object head (a saved model holds the backbone and its event-level head)."""
        self.object_head = None

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

    # Hooks (see the module docstring).

    def fit_scaling(self, train) -> None:
        """Fit the feature scaling on training data ``train`` (``x`` [N, M, 7] rows, ``n_objects`` [N])."""
        self.scaling.set(*fit_scaling(train.x.numpy(), train.n_objects.numpy()))

    def parameter_groups(self, strategy: str, n_outputs: int, lr: float, backbone_lr: float,
                         frozen_part: str = "head") -> list[dict]:
        """Set the model up for ``strategy`` and return the optimiser's named parameter groups.

        ``scratch``: every parameter at ``lr`` (a new head only when the width changes); ``finetune``: a new
        head at ``lr``, the rest at ``backbone_lr`` (the group marked ``pretrained``, which recipes such as
        layer-wise decay and the linear probe act on); ``frozen``: a new head (and, with ``frozen_part``
        "decoder", a re-initialised decoder) at ``lr``, the rest frozen.
        """
        if strategy == "scratch":
            if self.n_outputs != n_outputs:
                self.replace_head(n_outputs)
            return [{"params": list(self.parameters()), "lr": lr, "name": "all"}]
        self.replace_head(n_outputs)
        head = list(self.head.parameters())
        head_ids = {id(p) for p in head}
        if strategy == "finetune":
            rest = [p for p in self.parameters() if id(p) not in head_ids]
            return [{"params": head, "lr": lr, "name": "head"},
                    {"params": rest, "lr": backbone_lr, "name": "backbone", "pretrained": True}]
        if frozen_part not in ("head", "decoder"):
            raise ConfigurationError(f"frozen_part must be 'head' or 'decoder', got {frozen_part!r}")
        trainable = head
        if frozen_part == "decoder":
            self.reset_decoder()
            trainable = head + list(self.decoder.parameters())
        train_ids = {id(p) for p in trainable}
        for p in self.parameters():
            p.requires_grad_(id(p) in train_ids)
        return [{"params": trainable, "lr": lr, "name": frozen_part}]

    def depth_groups(self) -> list[list[nn.Parameter]]:
        """The parameters below the head by depth, input side first (layer-wise rate decay): the modules
        before the first block list as one group (the embeddings, with any mask token), one group per block,
        and the modules after the blocks (norm, decoder) as the last group."""
        head = {id(p) for p in self.head.parameters()}
        stem, blocks, tail = [p for _, p in self.named_parameters(recurse=False)], [], []
        for name, child in self.named_children():
            if name == "head":
                continue
            if isinstance(child, nn.ModuleList):
                blocks += [list(block.parameters()) for block in child]
            else:
                (tail if blocks else stem).extend(child.parameters())
        groups = [g for g in (stem, *blocks, tail) if g]
        assert {id(p) for g in groups for p in g} | head == {id(p) for p in self.parameters()}
        return groups

    def frozen_rows(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None:
        """A function (x, mask) -> rows giving, once per event, what a frozen part of this model computes; the
        model reads such rows in place of its inputs while :attr:`embedded_inputs` is set. None: no such part
        (a frozen backbone under a training head is cached by the trainer for every model)."""
        return None

    def for_export(self) -> None:
        """Switch to a forward pass whose shapes do not depend on the input values (ONNX tracing)."""

    def trace_rows(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Input rows to trace with, from plausible event rows ``x`` [B, M, 7] (drawing from ``generator``)."""
        return x

    def export_metadata(self) -> dict[str, str]:
        """Entries this model adds to an exported graph's metadata."""
        return {}

    def describe(self) -> dict:
        """Architecture description saved in config.json: registry name, outputs and constructor options."""
        return {"model": self.name, "n_outputs": self.n_outputs, "config": dict(self.config)}


def count_parameters(model: nn.Module) -> int:
    """Number of trainable and frozen parameters (buffers not included)."""
    return sum(p.numel() for p in model.parameters())
