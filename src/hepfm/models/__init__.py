"""Backbones (GraphNet, ObjectTransformer), their registry, and saving/loading model folders."""

from hepfm.models.base import Backbone, count_parameters
from hepfm.models.graphnet import GraphNet
from hepfm.models.registry import MODELS, create_model, list_models
from hepfm.models.transformer import ObjectTransformer

__all__ = ["MODELS", "Backbone", "GraphNet", "ObjectTransformer", "count_parameters", "create_model", "list_models"]
