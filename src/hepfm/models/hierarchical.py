"""The hierarchical event model: jet constituents -> jet embeddings (a jet backbone) -> event backbone.

Input rows are the stored objects with each object's constituents appended, x [B, M, 7 + K * 6]
(:func:`hepfm.data.jets.with_constituents`; non-jet slots carry zeros), so the model keeps the
``model(x, mask)`` interface of every backbone and the trainer, the batching and the splits are those of
the event models. The jet slots' constituents go through the jet backbone (a :mod:`hepfm.models.jets`
model, usually pretrained on jet tagging), its 64-d embedding is projected by a Linear and added to
the jet's object embedding in the event backbone (GraphNet or ObjectTransformer); leptons, photons and
MET enter as objects, as in the event models. The jet backbone's own output head is dropped.
"""

from __future__ import annotations

import torch
from torch import nn

from hepfm.errors import ConfigurationError, HepfmError
from hepfm.io.schema import CONSTITUENT_FEATURES, FEATURE_INDEX, FEATURES, TYPE_CODES
from hepfm.models.base import Backbone
from hepfm.models.layers import LATENT_DIM

N_OBJECT = len(FEATURES)
N_CONSTITUENT = len(CONSTITUENT_FEATURES)
_CLASS = CONSTITUENT_FEATURES.index("class")


class HierarchicalModel(Backbone):
    """A jet backbone whose embeddings feed an event backbone; see the module docstring."""

    name = "hierarchical"
    inputs = "objects+constituents"

    def __init__(self, n_outputs: int = 1, event_model: str = "transformer", event_config: dict | None = None,
                 jet_model: str = "jet_transformer", jet_config: dict | None = None, max_constituents: int = 32):
        from hepfm.models.registry import MODELS, create_model  # the registry lists this model too

        super().__init__(n_outputs, dict(event_model=event_model, event_config=dict(event_config or {}),
                                         jet_model=jet_model, jet_config=dict(jet_config or {}),
                                         max_constituents=max_constituents))
        if MODELS.get(event_model) is None or MODELS[event_model].inputs != "objects" or event_model == self.name:
            raise ConfigurationError(f"event_model must be graphnet or transformer, got {event_model!r}")
        if MODELS.get(jet_model) is None or MODELS[jet_model].inputs != "constituents":
            raise ConfigurationError(f"jet_model must be a jet backbone (jet_transformer, deepsets), got {jet_model!r}")
        if max_constituents < 1:
            raise ConfigurationError(f"max_constituents must be positive, got {max_constituents}")
        del self.scaling  # the event backbone's scaling is this model's (see the property)
        self.event = create_model(event_model, n_outputs, **(event_config or {}))
        self.event.head = nn.Identity()
        self.jet = create_model(jet_model, 1, **(jet_config or {}))
        self.jet.head = nn.Identity()
        self.jet_projection = nn.Linear(LATENT_DIM, self._event_width())
        self.max_constituents = max_constituents

    # Properties, not attributes: a module registered under two names would be saved twice.
    @property
    def scaling(self):
        return self.event.scaling

    @property
    def decoder(self):
        return self.event.decoder

    def _event_width(self) -> int:
        return self.event.config.get("dim", LATENT_DIM)

    def jet_embeddings(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-slot jet mask [B, M], jet-backbone embeddings [N_jets, 64] of those slots, in order)."""
        k = self.max_constituents
        if x.shape[-1] != N_OBJECT + k * N_CONSTITUENT:
            raise HepfmError(f"the hierarchical model needs each object's {k} constituents appended to its row "
                             f"({N_OBJECT + k * N_CONSTITUENT} columns), got {x.shape[-1]} columns: use a store "
                             "generated with --constituents")
        is_jet = mask.bool() & (x[..., FEATURE_INDEX["type"]] == TYPE_CODES["jet"])
        constituents = x[is_jet][:, N_OBJECT:].reshape(-1, k, N_CONSTITUENT)
        n = (constituents[..., _CLASS] > 0).sum(dim=1)
        width = max(int(n.max()), 1) if len(n) else 1
        constituents = constituents[:, :width]
        jet_mask = torch.arange(width, device=x.device)[None, :] < n[:, None]
        jet_mask[:, 0] |= n == 0  # a jet without stored constituents still gets a (zero) row, never an empty set
        return is_jet, self.jet.encode(constituents, jet_mask)

    def encode(self, x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        is_jet, embeddings = self.jet_embeddings(x, mask)
        extra = x.new_zeros((*mask.shape, self._event_width()))
        extra[is_jet] = self.jet_projection(embeddings).to(extra.dtype)
        return self.event.encode(x[..., :N_OBJECT], mask, hidden, extra=extra)

    def reset_decoder(self) -> None:
        """Re-initialise the event decoder (the 'frozen' strategy's trainable part, beside the head)."""
        for m in self.event.decoder.modules():
            if hasattr(m, "reset_parameters") and m is not self.event.decoder:
                m.reset_parameters()
