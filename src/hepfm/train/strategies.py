"""Training strategies: which parameters train, at which learning rate.

* ``scratch``: a fresh model, every parameter at ``lr`` (1e-4).
* ``finetune``: a pretrained backbone with a new output Linear at ``lr`` (1e-4); the pretrained layers
  train at ``backbone_lr`` (1e-5).
* ``frozen``: a pretrained backbone frozen; only a new output Linear (``frozen_part='head'``) or a
  re-initialised decoder plus a new output Linear (``frozen_part='decoder'``) train, at ``lr``.

Which parameters a strategy trains is the backbone's to say (:meth:`hepfm.models.base.Backbone.parameter_groups`:
the hierarchical model, for one, trains its event part at ``lr`` and its jet backbone by the strategy).
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
    return model.parameter_groups(strategy, n_outputs, lr, backbone_lr, frozen_part)
