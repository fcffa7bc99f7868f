"""The masked-object task's batches: one object per event hidden behind a dummy, its class as the target.

Self-supervised pretraining on unlabelled events (the KEK study on CMS Open Data): when a batch is made, one
real object of every event is chosen uniformly and its stored row is zeroed (kinematics, b-tag, charge
and type: nothing of it reaches the model, not even through the pair features of the transformer or
the edges of the graph network); a boolean ``hidden`` [B, M] tells the backbone which slot holds the
dummy, and the backbone puts its learned dummy token there in place of the object's embedding. The
target is the hidden object's class (:data:`OBJECT_CLASSES`: jets split by b-tag, as the seed's b-jet
and light jet), optionally with its kinematics for a regression head.

* Events with fewer than :data:`MIN_OBJECTS` (2) objects are never masked: hiding the only object leaves
  nothing to predict from. They get the target :data:`IGNORE` (no loss, not counted in the accuracy).
* The choice is a function of uniform numbers ``u`` [B] given by the caller (seeded per batch by the
  trainer, per event and fixed for evaluation), so masks are reproducible and a resumed run masks
  exactly as an uninterrupted one; everything is vectorised tensor code on the batch's device.
* Objects are stored ordered by type, so the slot index would reveal the type; both backbones are
  permutation invariant (no positional input), so it does not.
"""

from __future__ import annotations

import torch

from hepfm.io.schema import ENERGY, ETA, PHI, PT, TYPE, TYPE_CODES, b_tagged

#: Every class the task knows, in output order; a store uses the subset :func:`object_classes` gives.
OBJECT_CLASSES: tuple[str, ...] = ("light_jet", "b_jet", "electron", "muon", "photon", "tau", "met")
MIN_OBJECTS = 2
IGNORE = -100  # target of events that are not masked (cross entropy's ignore_index)
#: Regression targets of the hidden object, in order (log pT, eta and log E standardised with the model's
#: feature scaling; phi as its cosine and sine, so that the target is continuous).
KINEMATIC_TARGETS: tuple[str, ...] = ("log_pt", "eta", "cos_phi", "sin_phi", "log_energy")
_MIN_LOG = 1e-3

# Code of an object's class: its type code, or B_JET_CODE for a b-tagged jet.
_B_JET_CODE = len(TYPE_CODES)
_CLASS_CODES = {"light_jet": TYPE_CODES["jet"], "b_jet": _B_JET_CODE, "electron": TYPE_CODES["electron"],
                "muon": TYPE_CODES["muon"], "photon": TYPE_CODES["photon"], "tau": TYPE_CODES["tau"],
                "met": TYPE_CODES["met"]}


def object_classes(detector: dict | None, type_codes_seen=()) -> list[str]:
    """The classes of a store: every schema class, with ``tau`` only where the store can hold taus.

    A store holds taus when its detector configuration has tau tagging on (generated, or converted with
    ``tau_tagging``), or when taus are among ``type_codes_seen`` (a sample of its objects' type codes).
    """
    taus = bool((detector or {}).get("tau_tagging")) or TYPE_CODES["tau"] in {int(t) for t in type_codes_seen}
    return [c for c in OBJECT_CLASSES if c != "tau" or taus]


def class_table(classes: list[str], device=None) -> torch.Tensor:
    """Lookup [len(TYPE_CODES) + 1]: object class code -> index in ``classes`` (IGNORE for absent classes)."""
    unknown = set(classes) - set(OBJECT_CLASSES)
    if unknown:
        raise ValueError(f"unknown object class(es) {sorted(unknown)}; known: {', '.join(OBJECT_CLASSES)}")
    table = torch.full((_B_JET_CODE + 1,), IGNORE, dtype=torch.long)
    for i, name in enumerate(classes):
        table[_CLASS_CODES[name]] = i
    return table.to(device)


def object_class(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Class index of every stored row of ``x`` [..., 7] (IGNORE for padding and absent classes)."""
    code = x[..., TYPE].long().clamp(0, _B_JET_CODE - 1)
    code = torch.where((code == TYPE_CODES["jet"]) & b_tagged(x), _B_JET_CODE, code)
    return table.to(x.device)[code]


def kinematic_targets(rows: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """[B, 7] stored rows -> [B, 5] regression targets (:data:`KINEMATIC_TARGETS`); ``mean``/``std`` are the
    model's feature scaling of (log pT, eta, phi, log E)."""
    log_pt = (rows[:, PT].clamp_min(_MIN_LOG).log() - mean[0]) / std[0]
    eta = (rows[:, ETA] - mean[1]) / std[1]
    log_e = (rows[:, ENERGY].clamp_min(_MIN_LOG).log() - mean[3]) / std[3]
    return torch.stack([log_pt, eta, rows[:, PHI].cos(), rows[:, PHI].sin(), log_e], dim=1)


def choose_slots(mask: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(slot [B], masked [B]): the ``floor(u n)``-th real object of each event, for events with >= 2 objects."""
    n = mask.sum(dim=1)
    rank = (u.to(torch.float64) * n.to(torch.float64)).floor().long().clamp_max((n - 1).clamp_min(0))
    hit = mask & (mask.long().cumsum(dim=1) == (rank + 1)[:, None])
    return hit.long().argmax(dim=1), n >= MIN_OBJECTS


def mask_objects(x: torch.Tensor, mask: torch.Tensor, u: torch.Tensor, table: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hide one object per event (see the module docstring).

    Returns (x with the hidden rows zeroed, ``hidden`` [B, M] bool, targets [B, 6] float32: the class
    index, or IGNORE for events not masked, then the :data:`KINEMATIC_TARGETS` of the hidden object).
    """
    slot, masked = choose_slots(mask, u)
    rows = torch.arange(x.shape[0], device=x.device)
    picked = x[rows, slot]
    hidden = torch.zeros_like(mask)
    hidden[rows, slot] = masked
    target = torch.where(masked, object_class(picked, table), IGNORE)
    kin = kinematic_targets(picked.float(), mean.to(x.device), std.to(x.device))
    x = x.masked_fill(hidden[..., None], 0.0)
    return x, hidden, torch.cat([target[:, None].to(torch.float32), kin.to(torch.float32)], dim=1)
