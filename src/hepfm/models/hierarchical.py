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

import json

import torch
from torch import nn

from hepfm.data.features import fit_scaling
from hepfm.errors import ConfigurationError, HepfmError
from hepfm.io.schema import CONSTITUENT_CLASSES, CONSTITUENT_FEATURES, FEATURES, constituent_counts, is_type
from hepfm.models.base import Backbone
from hepfm.models.layers import LATENT_DIM
from hepfm.models.registry import MODELS, create_model, register_model

N_OBJECT = len(FEATURES)
JET_BUCKETS = 4  # groups of count-sorted jets per batch, each padded to its own largest jet
MIN_BUCKET = 64  # jets per group at least (smaller groups cost more in calls than they save in padding)
N_CONSTITUENT = len(CONSTITUENT_FEATURES)


def jet_groups(n: torch.Tensor, buckets: int = JET_BUCKETS) -> list[tuple[torch.Tensor, int]]:
    """How a batch's jets with ``n`` [N] stored constituents are encoded: (jet indices, padded width) per group.

    One group at the batch's largest jet when ``buckets`` is 1 or there are few jets; else up to ``buckets``
    equal-sized groups of count-sorted jets, each padded to its own largest (at K = 32 almost every batch holds
    a jet at the cap, so one group costs ~0.8 padded slots per real constituent; the groups cut that to a
    fraction). Widths are read with one device-to-host copy.
    """
    groups = min(buckets, -(-len(n) // MIN_BUCKET))
    if groups <= 1:
        return [(torch.arange(len(n), device=n.device), max(int(n.max()), 1))]
    counts, order = torch.sort(n)
    parts = torch.tensor_split(order, groups)
    ends = torch.cumsum(torch.tensor([len(p) for p in parts]), 0) - 1
    widths = counts[ends.to(n.device)].tolist()
    return [(idx, max(int(w), 1)) for idx, w in zip(parts, widths, strict=True)]


@register_model
class HierarchicalModel(Backbone):
    """A jet backbone whose embeddings feed an event backbone; see the module docstring."""

    name = "hierarchical"
    inputs = "objects+constituents"

    def __init__(self, n_outputs: int = 1, event_model: str = "transformer", event_config: dict | None = None,
                 jet_model: str = "jet_transformer", jet_config: dict | None = None, max_constituents: int = 32):
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
        #: True: every slot's jet embedding at the full width K (:meth:`fixed_width_jet_extra`), for tracing.
        self.fixed_width = False
        #: The batch's jets are sorted by constituent count and encoded in up to this many groups, each at its
        #: own width (1: one group at the batch's largest jet); a runtime choice, not saved with the model.
        self.jet_buckets = JET_BUCKETS
        #: True: inputs carry each jet's jet-backbone embedding in place of its constituents
        #: (:meth:`with_jet_embeddings`); set by the trainer while the jet backbone is frozen, not saved.
        self.embedded_inputs = False
        self._jet_pretrained = False

    # Properties, not attributes: a module registered under two names would be saved twice.
    @property
    def scaling(self):
        return self.event.scaling

    @property
    def decoder(self):
        return self.event.decoder

    def _event_width(self) -> int:
        return self.event.object_width  # what the jet embeddings are added to

    def _check_width(self, x: torch.Tensor) -> None:
        k = self.max_constituents
        if x.shape[-1] != N_OBJECT + k * N_CONSTITUENT:
            raise HepfmError(f"the hierarchical model needs each object's {k} constituents appended to its row "
                             f"({N_OBJECT + k * N_CONSTITUENT} columns), got {x.shape[-1]} columns: use a store "
                             "that keeps its jets' constituents")

    @staticmethod
    def _constituent_mask(n: torch.Tensor, width: int) -> torch.Tensor:
        """[N, width] mask of jets with ``n`` [N] stored constituents; a jet without stored constituents keeps
        its first (zero) row, so no jet is an empty set."""
        slot = torch.arange(width, device=n.device)[None, :]
        return (slot < n[:, None]) | ((slot == 0) & (n == 0)[:, None])

    def jet_embeddings(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-slot jet mask [B, M], jet-backbone embeddings [N_jets, 64] of those slots, in order)."""
        self._check_width(x)
        is_jet = mask.bool() & is_type(x, "jet")
        constituents = x[is_jet][:, N_OBJECT:].reshape(-1, self.max_constituents, N_CONSTITUENT)
        if not len(constituents):  # a batch without jets (attention over zero sequences fails)
            return is_jet, x.new_zeros((0, LATENT_DIM))
        n = constituent_counts(constituents)
        groups = jet_groups(n, self.jet_buckets)
        if len(groups) == 1:
            return is_jet, self.jet.encode(constituents[:, :groups[0][1]], self._constituent_mask(n, groups[0][1]))
        parts = [self.jet.encode(constituents[idx, :width], self._constituent_mask(n[idx], width))
                 for idx, width in groups]
        order = torch.cat([idx for idx, _ in groups])
        return is_jet, torch.cat(parts)[torch.argsort(order)]

    def fixed_width_jet_extra(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The projected jet embeddings [B, M, width] of every slot (zero outside jets), with every slot's
        constituents at the full width K and masked: no shape depends on the values, so the graph can be
        traced (ONNX export); equal to :meth:`jet_embeddings`'s to float rounding, at more arithmetic."""
        self._check_width(x)
        b, m = mask.shape
        is_jet = mask.bool() & is_type(x, "jet")
        constituents = x[..., N_OBJECT:].reshape(b * m, self.max_constituents, N_CONSTITUENT)
        n = constituent_counts(constituents)
        embeddings = self.jet.encode(constituents, self._constituent_mask(n, self.max_constituents))
        projected = self.jet_projection(embeddings).reshape(b, m, -1).to(x.dtype)
        return torch.where(is_jet[..., None], projected, torch.zeros_like(projected))

    def jet_backbone_frozen(self) -> bool:
        """Whether no jet-backbone parameter trains (its embeddings are then a fixed function of each jet)."""
        return not any(p.requires_grad for p in self.jet.parameters())

    @torch.no_grad()
    def with_jet_embeddings(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Rows [B, M, 7 + 64]: each object's row with its jet-backbone embedding (zeros outside jets) in place
        of its constituents; :meth:`encode` reads them when :attr:`embedded_inputs` is set."""
        is_jet, embeddings = self.jet_embeddings(x, mask)
        out = x.new_zeros((*mask.shape, N_OBJECT + LATENT_DIM))
        out[..., :N_OBJECT] = x[..., :N_OBJECT]
        out[..., N_OBJECT:][is_jet] = embeddings.to(out.dtype)
        return out

    def _embedded_jets(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`jet_embeddings`' result read from rows made by :meth:`with_jet_embeddings`."""
        if x.shape[-1] != N_OBJECT + LATENT_DIM:
            raise HepfmError(f"embedded inputs need {N_OBJECT + LATENT_DIM} columns, got {x.shape[-1]}")
        is_jet = mask.bool() & is_type(x, "jet")
        return is_jet, x[..., N_OBJECT:][is_jet]

    def encode(self, x: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor | None = None) -> torch.Tensor:
        if self.fixed_width and not self.embedded_inputs:
            extra = self.fixed_width_jet_extra(x, mask)
        else:
            is_jet, embeddings = (self._embedded_jets if self.embedded_inputs else self.jet_embeddings)(x, mask)
            extra = x.new_zeros((*mask.shape, self._event_width()))
            extra[is_jet] = self.jet_projection(embeddings).to(extra.dtype)
        return self.event.encode(x[..., :N_OBJECT], mask, hidden, extra=extra)

    def reset_decoder(self) -> None:
        """Re-initialise the event decoder (the 'frozen' strategy's trainable part, beside the head)."""
        for m in self.event.decoder.modules():
            if hasattr(m, "reset_parameters") and m is not self.event.decoder:
                m.reset_parameters()

    # Backbone hooks.

    def load_jet_backbone(self, state: dict) -> None:
        """Take the jet backbone's weights and scaling from a jet-tagging model's ``state`` (its head left out)."""
        self.jet.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
        self._jet_pretrained = True

    def fit_scaling(self, train) -> None:
        """Fit the event backbone's scaling on the objects of ``train`` and, unless the jet backbone is a
        pretrained one (:meth:`load_jet_backbone`), the jet backbone's on the training jets' constituents."""
        self.scaling.set(*fit_scaling(train.x[..., :N_OBJECT].numpy(), train.n_objects.numpy()))
        if not self._jet_pretrained:
            from hepfm.models.jets import fit_constituent_scaling

            k = self.max_constituents
            rows = train.x[is_type(train.x, "jet")][:, N_OBJECT:].reshape(-1, k, N_CONSTITUENT)
            counts = constituent_counts(rows)
            self.jet.scaling.set(*fit_constituent_scaling(rows.numpy(), counts.numpy()))

    def parameter_groups(self, strategy: str, n_outputs: int, lr: float, backbone_lr: float,
                         frozen_part: str = "head") -> list[dict]:
        """The event part (event backbone, projection, head) always trains, at ``lr``; the jet backbone is
        frozen (``frozen``), trained at ``backbone_lr`` (``finetune``) or at ``lr`` (``scratch``).
        ``frozen_part`` does not apply (the event part is never frozen)."""
        if n_outputs != self.n_outputs:
            raise ConfigurationError(f"the hierarchical model was built with {self.n_outputs} outputs, not {n_outputs}")
        jet_ids = {id(p) for p in self.jet.parameters()}
        groups = [{"params": [p for p in self.parameters() if id(p) not in jet_ids], "lr": lr, "name": "event"}]
        if strategy == "frozen":
            for p in self.jet.parameters():
                p.requires_grad_(False)
        else:
            groups.append({"params": list(self.jet.parameters()), "name": "jet", "pretrained": strategy == "finetune",
                           "lr": backbone_lr if strategy == "finetune" else lr})
        return groups

    def frozen_rows(self):
        """With the jet backbone frozen: :meth:`with_jet_embeddings` (each jet's embedding computed once)."""
        return self.with_jet_embeddings if self.jet_backbone_frozen() else None

    def for_export(self) -> None:
        """Every slot's constituents at the full width K (:meth:`fixed_width_jet_extra`): no value-dependent shape."""
        self.fixed_width = True

    def trace_rows(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``x`` with plausible constituents (1 to K per row, zeros after) appended to every row."""
        b, m, _ = x.shape
        constituents = _trace_constituents(b * m, self.max_constituents, generator)
        return torch.cat([x, constituents.reshape(b, m, -1)], dim=-1)

    def export_metadata(self) -> dict[str, str]:
        """``max_constituents`` and ``constituent_features``, for the reader of the exported graph."""
        return {"max_constituents": str(self.max_constituents),
                "constituent_features": json.dumps(list(CONSTITUENT_FEATURES))}


def _trace_constituents(n_jets: int, k: int, g: torch.Generator) -> torch.Tensor:
    """Plausible constituents [n_jets, k, 6] of jets, between 1 and k of them per jet, zeros after."""
    n = torch.randint(1, k + 1, (n_jets,), generator=g)
    pt = 1 + 10 * torch.rand(n_jets, k, generator=g)
    deta, dphi = (0.2 * torch.rand(n_jets, k, generator=g) - 0.1 for _ in range(2))
    charge = torch.randint(-1, 2, (n_jets, k), generator=g).float()
    kind = torch.randint(1, len(CONSTITUENT_CLASSES), (n_jets, k), generator=g).float()
    rows = torch.stack([pt, deta, dphi, pt * torch.cosh(deta), charge, kind], dim=-1)
    return rows * (torch.arange(k)[None, :] < n[:, None])[..., None]
