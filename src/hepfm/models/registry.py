"""Model registry: backbones by name, so configs and the command line name models by string."""

from __future__ import annotations

from hepfm.errors import ConfigurationError
from hepfm.models.base import Backbone
from hepfm.models.graphnet import GraphNet
from hepfm.models.hierarchical import HierarchicalModel
from hepfm.models.jets import DeepSets, JetTransformer
from hepfm.models.transformer import ObjectTransformer

MODELS: dict[str, type[Backbone]] = {GraphNet.name: GraphNet, ObjectTransformer.name: ObjectTransformer,
                                     JetTransformer.name: JetTransformer, DeepSets.name: DeepSets,
                                     HierarchicalModel.name: HierarchicalModel}


def create_model(name: str, n_outputs: int = 1, **config) -> Backbone:
    """Build a registered backbone with its output head: ``create_model("graphnet", n_outputs=12)``."""
    if name not in MODELS:
        raise ConfigurationError(f"unknown model {name!r}; choose from {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](n_outputs=n_outputs, **config)
    except TypeError as exc:  # an option the model does not take
        raise ConfigurationError(f"bad options for model {name!r}: {exc}") from None


def list_models(inputs: str | None = None) -> list[str]:
    """Registered model names (only those reading ``inputs`` when given: "objects", "constituents" or
    "objects+constituents")."""
    return sorted(k for k, v in MODELS.items() if inputs is None or v.inputs == inputs)


def check_inputs(name: str, inputs: str, what: str) -> None:
    """Refuse a model that reads other inputs than ``what`` needs (an event model for jets, or the reverse)."""
    if name in MODELS and MODELS[name].inputs != inputs:
        raise ConfigurationError(f"{what} needs a model of {inputs} ({', '.join(list_models(inputs))}); "
                                 f"{name!r} reads {MODELS[name].inputs}")
