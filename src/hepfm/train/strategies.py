"""Training strategies: which parameters train, at which learning rate.

* ``scratch``: a fresh model, every parameter at ``lr`` (1e-4).
* ``finetune``: a pretrained backbone with a new output Linear at ``lr`` (1e-4); the pretrained layers
  train at ``backbone_lr`` (1e-5), or, with a layer-wise decay, at rates falling from ``backbone_lr`` at the
  top layer towards the input (:func:`split_by_depth`).
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
#: TrainConfig settings that only fine-tuning uses (a study tunes them for fine-tuning strategies only).
FINETUNE_ONLY = ("layer_decay", "linear_probe")
DEFAULT_LR = defaults.LR
DEFAULT_BACKBONE_LR = defaults.BACKBONE_LR


def prepare(model: Backbone, strategy: str, n_outputs: int, lr: float = DEFAULT_LR,
            backbone_lr: float = DEFAULT_BACKBONE_LR, frozen_part: str = "head",
            layer_decay: float = 1.0) -> list[dict]:
    """Set up ``model`` for ``strategy`` (new head etc.) and return the optimiser's parameter groups.

    ``layer_decay`` < 1 (fine-tuning): the backbone's group is split by depth (:meth:`Backbone.depth_groups`),
    the top group at ``backbone_lr`` and each one below at ``layer_decay`` times the rate above it.
    """
    if strategy not in STRATEGIES:
        raise ConfigurationError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    check_learning_rate(lr, "lr")
    check_learning_rate(backbone_lr, "backbone_lr", allow_zero=True)
    groups = model.parameter_groups(strategy, n_outputs, lr, backbone_lr, frozen_part)
    if layer_decay == 1.0:
        return groups
    if strategy != "finetune":
        raise ConfigurationError(f"layer-wise rate decay applies to fine-tuning, not to the {strategy} strategy")
    return split_by_depth(model, groups, backbone_lr, layer_decay)


def check_recipe(strategy: str, layer_decay: float, linear_probe: bool) -> None:
    """Refuse fine-tuning recipe settings that do not apply to ``strategy`` (before anything is written)."""
    for name, used in (("layer_decay", layer_decay != 1.0), ("linear_probe", linear_probe)):
        if used and strategy != "finetune":
            raise ConfigurationError(f"{name} applies to the finetune strategy, not to {strategy}")


def split_by_depth(model: Backbone, groups: list[dict], backbone_lr: float, layer_decay: float) -> list[dict]:
    """``groups`` with the pretrained group (marked ``pretrained``) replaced by one group per depth of the model
    (:meth:`Backbone.depth_groups`), at decaying rates."""
    pretrained = [g for g in groups if g.get("pretrained")]
    if len(pretrained) != 1:
        raise ConfigurationError(f"{model.name}: layer-wise rate decay needs one pretrained parameter group, this "
                                 f"model trains {len(pretrained)}")
    members = {id(p) for p in pretrained[0]["params"]}
    depths = [[p for p in g if id(p) in members] for g in model.depth_groups()]
    depths = [g for g in depths if g]
    if sum(len(g) for g in depths) != len(members):
        raise ConfigurationError(f"{model.name}: its depth groups do not cover its pretrained parameters")
    if len(depths) < 2:
        raise ConfigurationError(f"{model.name}: its pretrained part has no layers to decay the rate across")
    top = len(depths) - 1
    name = pretrained[0].get("name", "pretrained")
    split = [{"params": g, "lr": backbone_lr * layer_decay ** (top - i), "name": f"{name}.depth{i}",
              "pretrained": True} for i, g in enumerate(depths)]
    return [g for g in groups if not g.get("pretrained")] + split
