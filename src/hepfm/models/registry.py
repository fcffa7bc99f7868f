"""Model registry: backbones by name, so configs and the command line name models by string.

Backbones register themselves with the :func:`register_model` class decorator; this module imports no
model. Looking a name up in ``MODELS`` first imports the modules of the built-in backbones
(:data:`BUILTIN_MODULES`), so every lookup sees them whichever module was imported first.

Besides the backbones (``MODELS``), named configurations (``PRESETS``) give a backbone at a given size: a
preset builds its backbone with the preset's options (options given with it override them), and the saved
model records the backbone and its full options, so it reloads without the preset.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, TypeVar

from hepfm.errors import ConfigurationError

if TYPE_CHECKING:
    from hepfm.models.base import Backbone

#: Modules whose backbones every lookup sees (imported on the first lookup, not when this module loads).
BUILTIN_MODULES = ("hepfm.models.graphnet", "hepfm.models.transformer", "hepfm.models.jets",
                   "hepfm.models.hierarchical")

B = TypeVar("B", bound="type[Backbone]")


class _ModelTable(dict):
    """name -> backbone class; every read first makes sure the built-in backbones are registered."""

    _loaded = False

    def _load(self) -> None:
        if not _ModelTable._loaded:
            _ModelTable._loaded = True  # before importing: the modules register into this table as they load
            for module in BUILTIN_MODULES:
                importlib.import_module(module)

    def add(self, cls) -> None:
        dict.__setitem__(self, cls.name, cls)

    def __getitem__(self, key):
        self._load()
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self._load()
        return super().__contains__(key)

    def __iter__(self):
        self._load()
        return super().__iter__()

    def __len__(self) -> int:
        self._load()
        return super().__len__()

    def get(self, key, default=None):
        self._load()
        return super().get(key, default)

    def keys(self):
        self._load()
        return super().keys()

    def values(self):
        self._load()
        return super().values()

    def items(self):
        self._load()
        return super().items()


MODELS: dict[str, type[Backbone]] = _ModelTable()


def register_model(cls: B) -> B:
    """Class decorator: register a backbone under its ``name`` (refusing a name taken by another class)."""
    taken = dict.get(MODELS, cls.name)
    if taken is not None and taken is not cls:
        raise ConfigurationError(f"model name {cls.name!r} is taken by {taken.__module__}.{taken.__qualname__}")
    MODELS.add(cls)
    return cls


#: Named configurations: name -> (backbone, options). ``transformer-kek``: the ObjectTransformer at the size
#: of the KEK study's ~11M-parameter transformer encoder (self-supervised pretraining on CMS Open Data):
#: 10.8M parameters with 7 outputs.
PRESETS: dict[str, tuple[str, dict]] = {
    "transformer-kek": ("transformer", {"dim": 384, "heads": 8, "layers": 6}),
}


def create_model(name: str, n_outputs: int = 1, **config) -> Backbone:
    """Build a registered backbone or named configuration with its output head: ``create_model("graphnet", 12)``."""
    if name in PRESETS:
        name, preset = PRESETS[name]
        config = {**preset, **config}
    if name not in MODELS:
        raise ConfigurationError(f"unknown model {name!r}; choose from {', '.join(model_names())}")
    _check_sizes(name, config)
    try:
        return MODELS[name](n_outputs=n_outputs, **config)
    except TypeError as exc:  # an option the model does not take
        raise ConfigurationError(f"bad options for model {name!r}: {exc}") from None


def _check_sizes(name: str, config: dict) -> None:
    """Refuse a size option (n_blocks, dim, layers, ...) outside 1..4096 or a dropout outside [0, 1)."""
    for key, value in config.items():
        if isinstance(value, dict):
            _check_sizes(name, value)
        elif key == "dropout" and not (isinstance(value, (int, float)) and 0 <= value < 1):
            raise ConfigurationError(f"bad options for model {name!r}: dropout must be in [0, 1), got {value!r}")
        elif isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= 4096:
            raise ConfigurationError(f"bad options for model {name!r}: {key} must be between 1 and 4096, "
                                     f"got {value}")


def list_models(inputs: str | None = None) -> list[str]:
    """Registered backbones (each a different architecture; see :func:`model_names` for the presets too), only
    those reading ``inputs`` when given: "objects", "constituents" or "objects+constituents"."""
    return sorted(k for k, v in MODELS.items() if inputs is None or v.inputs == inputs)


def model_names() -> list[str]:
    """Every name :func:`create_model` takes: the backbones and the named configurations."""
    return sorted(MODELS) + sorted(PRESETS)


def check_inputs(name: str, inputs: str, what: str) -> None:
    """Refuse a model that reads other inputs than ``what`` needs (an event model for jets, or the reverse)."""
    if name in MODELS and MODELS[name].inputs != inputs:
        raise ConfigurationError(f"{what} needs a model of {inputs} ({', '.join(list_models(inputs))}); "
                                 f"{name!r} reads {MODELS[name].inputs}")
