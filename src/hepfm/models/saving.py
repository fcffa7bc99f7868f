"""Model folders: ``model.safetensors`` (weights and feature-scaling buffers) + ``config.json``.

``config.json`` describes the architecture (registry name, outputs, options), the task and its label
or class names, and the training provenance, so a model is rebuilt from its folder alone. Files are
written under temporary names and renamed, weights first and config last: a folder whose config.json
exists holds a complete model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hepfm import __version__
from hepfm.errors import HepfmError
from hepfm.io.atomic import atomic_write, atomic_write_text
from hepfm.models.base import Backbone
from hepfm.models.registry import MODELS, create_model

WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save_model(model: Backbone, folder: str | Path, metadata: dict | None = None) -> Path:
    """Save ``model`` into ``folder`` (created if needed) with ``metadata`` (task, labels, provenance)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    config = {"hepfm_version": __version__, "architecture": model.describe(), **(metadata or {})}
    atomic_write(folder / WEIGHTS, lambda tmp: save_file(state, tmp))
    atomic_write_text(folder / CONFIG, json.dumps(config, indent=1, sort_keys=True))
    return folder


def read_config(folder: str | Path) -> dict:
    """The config.json of a model folder, with a clear error when the folder holds no complete model.

    ``architecture.config`` is completed with the backbone's ``saved_without`` values, so a model saved
    before an option existed is rebuilt as the architecture it was trained as, not as today's default.
    """
    folder = Path(folder)
    path = folder / CONFIG
    if not folder.is_dir():
        raise HepfmError(f"{folder}: no such model folder")
    if not path.exists():
        raise HepfmError(f"{folder}: not a hepfm model folder (no {CONFIG}; is training still running?)")
    try:
        config = json.loads(path.read_text())
        arch = config["architecture"]
        arch["model"], arch["n_outputs"]
    except (ValueError, KeyError, TypeError) as exc:
        raise HepfmError(f"{path}: unreadable model configuration ({exc})") from None
    if arch["model"] not in MODELS:
        raise HepfmError(f"{path}: unknown model {arch['model']!r} (known: {', '.join(sorted(MODELS))})")
    if not isinstance(arch.setdefault("config", {}), dict):
        raise HepfmError(f"{path}: unreadable model configuration (architecture.config is not a mapping)")
    # An option missing from an older config.json means the architecture before the option existed.
    arch["config"] = {**MODELS[arch["model"]].saved_without, **arch["config"]}
    return config


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> Backbone:
    """Rebuild a model from its folder; its config dict is attached as ``model.metadata``."""
    folder = Path(folder)
    config = read_config(folder)
    arch = config["architecture"]
    try:
        model = create_model(arch["model"], arch["n_outputs"], **arch.get("config", {}))
    except ValueError as exc:
        raise HepfmError(f"{folder / CONFIG}: {exc}") from None
    try:
        state = load_file(str(folder / WEIGHTS), device=str(device))
    except (OSError, SafetensorError) as exc:
        raise HepfmError(f"{folder / WEIGHTS}: unreadable weights ({exc})") from None
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise HepfmError(f"{folder / WEIGHTS}: weights do not match the architecture in {CONFIG} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.metadata = config
    return model.to(device)
