"""hepfm: a pretrained foundation model toolkit for collider event classification.

The public API is kept small and imports lazily, so that ``import hepfm`` stays fast and does not
require the optional generator stack (Pythia 8, FastJet).
"""

from __future__ import annotations

from hepfm._version import __version__

__all__ = ["EventStore", "__version__", "create_model", "list_models", "load", "load_pretrained"]


def load(path, device="cpu"):
    """Load a model folder (``model.safetensors`` + ``config.json``) or a shipped model by name; its config
    is ``model.metadata``."""
    from hepfm.models.pretrained import load as load_any

    return load_any(path, device)


def load_pretrained(name, device="cpu"):
    """A pretrained model shipped with hepfm, by name (``hepfm models`` lists them); no network needed."""
    from hepfm.models.pretrained import load as load_any

    return load_any(name, device)


def __getattr__(name: str):
    if name == "EventStore":
        from hepfm.io.store import EventStore

        return EventStore
    if name in ("create_model", "list_models"):
        from hepfm.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'hepfm' has no attribute {name!r}")
