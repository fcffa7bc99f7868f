"""hepfm: a pretrained foundation model toolkit for collider event classification.

The public API is kept small and imports lazily, so that ``import hepfm`` stays fast and does not
require the optional generator stack (Pythia 8, FastJet).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["EventStore", "__version__", "create_model", "list_models", "load"]


def load(path, device="cpu"):
    """Load a saved model folder (``model.safetensors`` + ``config.json``); its config is ``model.metadata``."""
    from hepfm.models.saving import load_model

    return load_model(path, device)


def __getattr__(name: str):
    if name == "EventStore":
        from hepfm.io.store import EventStore

        return EventStore
    if name in ("create_model", "list_models"):
        from hepfm.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'hepfm' has no attribute {name!r}")
