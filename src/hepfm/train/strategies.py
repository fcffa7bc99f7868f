"""Training strategies: which parameters train, at which learning rate.

* ``scratch``: a fresh model, every parameter at ``lr`` (1e-4).
* ``finetune``: a pretrained backbone with a new output Linear at ``lr`` (1e-4); the pretrained layers
  train at ``backbone_lr`` (1e-5).
* ``frozen``: a pretrained backbone frozen; only a new output Linear (``frozen_part='head'``) or a
  re-initialised decoder plus a new output Linear (``frozen_part='decoder'``) train, at ``lr``.
"""

from __future__ import annotations

from hepfm.errors import ConfigurationError
from hepfm.models.base import Backbone
from hepfm.train import defaults
from hepfm.train.trainer import check_learning_rate

STRATEGIES = ("scratch", "finetune", "frozen")
DEFAULT_LR = defaults.LR
DEFAULT_BACKBONE_LR = defaults.BACKBONE_LR


def prepare(model: Backbone, strategy: str, n_outputs: int, lr: float = DEFAULT_LR,
            backbone_lr: float = DEFAULT_BACKBONE_LR, frozen_part: str = "head") -> list[dict]:
    """Set up ``model`` for ``strategy`` (new head etc.) and return the optimiser's parameter groups."""
    if strategy not in STRATEGIES:
        raise ConfigurationError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    check_learning_rate(lr, "lr")
    check_learning_rate(backbone_lr, "backbone_lr", allow_zero=True)
    if strategy == "scratch":
        if model.n_outputs != n_outputs:
            model.replace_head(n_outputs)
        return [{"params": list(model.parameters()), "lr": lr, "name": "all"}]
    model.replace_head(n_outputs)
    head = list(model.head.parameters())
    head_ids = {id(p) for p in head}
    if strategy == "finetune":
        rest = [p for p in model.parameters() if id(p) not in head_ids]
        return [{"params": head, "lr": lr, "name": "head"}, {"params": rest, "lr": backbone_lr, "name": "backbone"}]
    if frozen_part not in ("head", "decoder"):
        raise ConfigurationError(f"frozen_part must be 'head' or 'decoder', got {frozen_part!r}")
    trainable = head
    if frozen_part == "decoder":
        model.reset_decoder()
        trainable = head + list(model.decoder.parameters())
    train_ids = {id(p) for p in trainable}
    for p in model.parameters():
        p.requires_grad_(id(p) in train_ids)
    return [{"params": trainable, "lr": lr, "name": frozen_part}]
