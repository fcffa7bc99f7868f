"""Models by name or by folder: the pretrained models shipped inside the package, and their data schema.

A shipped model is a model folder (``model.safetensors`` + ``config.json`` + ``MODEL_CARD.md``) under
``hepfm/models/weights/<name>/``; no network is needed. Everywhere a run folder is accepted, a shipped
model's name is accepted too (:func:`resolve`).

A model remembers the data it was trained on (:func:`data_schema`: schema version, feature columns,
detector configuration and its hash). :func:`schema_differences` compares that with a store, so that a
model pretrained on one detector is not silently applied to events of another.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import torch

from hepfm.errors import HepfmError
from hepfm.io.schema import same_inputs
from hepfm.models.record import known
from hepfm.models.saving import CONFIG, load_model, read_record

CARD = "MODEL_CARD.md"


def weights_dir() -> Path:
    """The folder that holds the shipped models."""
    return Path(str(resources.files("hepfm.models") / "weights"))


def search_path() -> list[Path]:
    """Folders searched for models by name: the package's own, then those of ``HEPFM_MODEL_PATH``
    (colon-separated; e.g. a site-wide folder of models on a cluster)."""
    extra = [Path(p) for p in os.environ.get("HEPFM_MODEL_PATH", "").split(os.pathsep) if p]
    return [weights_dir(), *extra]


def available() -> dict[str, Path]:
    """Models by name: name -> folder (sub-folders with a config.json); the package's own come first."""
    found: dict[str, Path] = {}
    for root in search_path():
        try:
            entries = sorted(root.iterdir()) if root.is_dir() else []
        except OSError:  # an unreadable folder on the path hides its models, not everyone else's
            entries = []
        for p in entries:
            # hidden: a model being published (``.NAME.partial``) or the folder's lock
            if not p.name.startswith(".") and (p / CONFIG).is_file():
                found.setdefault(p.name, p)
    return found


def shipped_names() -> set[str]:
    """Names of the models inside the package (a model published under one of them could never be loaded)."""
    root = weights_dir()
    return {p.name for p in root.iterdir() if (p / CONFIG).is_file()} if root.is_dir() else set()


def resolve(ref: str | Path) -> Path:
    """The model folder of a run folder path or a shipped model name; a clear error for neither."""
    path = Path(ref)
    shipped = available()
    if path.is_dir() and ((path / CONFIG).is_file() or str(ref) not in shipped):
        return path  # a folder (read_config names what is wrong with it), unless a name is meant
    if str(ref) in shipped:
        return shipped[str(ref)]
    names = ", ".join(shipped) or "none in this installation"
    raise HepfmError(f"{ref}: no such model folder, and no shipped model of that name (shipped: {names})")


def load(ref: str | Path, device: str | torch.device = "cpu"):
    """A model from a run folder or a shipped model name (``hepfm.load_pretrained``)."""
    model = load_model(resolve(ref), device=device)
    model.metadata.setdefault("source", str(ref))
    return model


def describe_shipped() -> list[dict]:
    """One summary per model found by name: name, folder, task, classes, architecture and held-out metrics.

    A folder that cannot be read is listed with its one-line problem under ``error`` (and nothing else), so
    one broken folder on ``HEPFM_MODEL_PATH`` does not hide the others.
    """
    rows = []
    for name, folder in available().items():
        try:
            record = read_record(folder)
            training = known(record.training)
            test = training.get("test", {}) if isinstance(training, dict) else {}
            rows.append({"name": name, "folder": str(folder), "task": known(record.task),
                         "classes": list(known(record.names) or []), "model": record.model,
                         "test": test if isinstance(test, dict) else {},
                         "card": str(folder / CARD) if (folder / CARD).exists() else None, "error": None})
        except (HepfmError, OSError) as exc:
            rows.append({"name": name, "folder": str(folder), "task": None, "classes": [], "model": None,
                         "test": {}, "card": None, "error": str(exc)})
    return rows


def detector_hash(detector: dict) -> str:
    """A short, order-independent hash of a detector configuration."""
    return hashlib.sha256(json.dumps(detector, sort_keys=True).encode()).hexdigest()[:16]


def data_schema(store) -> dict:
    """What a model trained on ``store`` (an EventStore) expects of its inputs."""
    attrs = store.attrs()
    detector = attrs.get("detector") or {}
    return {"schema_version": attrs.get("schema_version"), "features": list(attrs.get("features") or []),
            "detector": detector, "detector_hash": detector_hash(detector),
            "data_kind": attrs.get("data_kind", "simulated")}


def schema_differences(config: dict, store) -> list[str]:
    """How the inputs of ``store`` differ from those the model of ``config`` was trained on ([] if alike)."""
    trained = config.get("data_schema")
    if not trained:
        return []  # a model saved before schemas were recorded: nothing to compare
    here = data_schema(store)
    out = []
    if not same_inputs(trained["schema_version"], here["schema_version"]):
        out.append(f"schema version {here['schema_version']} (model: {trained['schema_version']})")
    if trained["features"] != here["features"]:
        out.append(f"features {here['features']} (model: {trained['features']})")
    if trained["detector_hash"] != here["detector_hash"] and here["data_kind"] != "real":
        keys = sorted(set(trained["detector"]) | set(here["detector"]))
        changed = [k for k in keys if trained["detector"].get(k) != here["detector"].get(k)]
        out.append("detector configuration differs in " + ", ".join(
            f"{k} ({here['detector'].get(k)!r}, model: {trained['detector'].get(k)!r})" for k in changed[:5])
            + (f" and {len(changed) - 5} more" if len(changed) > 5 else ""))
    return out
