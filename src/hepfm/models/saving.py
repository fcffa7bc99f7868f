"""Model folders: ``model.safetensors`` (weights and feature-scaling buffers) + ``config.json``.

``config.json`` describes the architecture (registry name, outputs, options), the task and its label
or class names, and the training provenance, so a model is rebuilt from its folder alone. Files are
written under temporary names and renamed, weights first and config last: a folder whose config.json
exists holds a complete model.

A model folder may come from anyone (``HEPFM_MODEL_PATH``, a shared disk), so :func:`load_model` allocates
nothing the weights file does not hold: the config's sizes are bounded, the model is built on the meta
device and its tensors' names and shapes are compared with the safetensors header (whose offsets must lie
in the file) before the model is built for real and the weights are read.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from hepfm._version import __version__
from hepfm.errors import HepfmError
from hepfm.io.atomic import atomic_write, atomic_write_text
from hepfm.io.rundir import CONFIG, WEIGHTS
from hepfm.models.base import Backbone
from hepfm.models.record import RunRecord
from hepfm.models.registry import MODELS, create_model

#: Bounds on a config.json's sizes, checked before any model is built (even on the meta device, a model of a
#: million layers takes minutes to build): outputs, any other size, and the options that count modules.
#: ``MAX_MODULES`` bounds the product of one config's counts (``n_blocks`` x ``depth``: Linear layers).
MAX_OUTPUTS = 1_000_000
MAX_SIZE = 1 << 24
MAX_COUNT = 256
MAX_MODULES = 4096
_COUNT_KEYS = ("layers", "n_blocks", "depth")
MAX_HEADER = 64 << 20  # bytes of safetensors header (JSON); the shipped models' is 15 kB
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
                "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


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
    if "task" in config and not (isinstance(config.get("names"), list)
                                 and all(isinstance(n, str) for n in config["names"])):
        raise HepfmError(f"{path}: unreadable model configuration ('names', the list of class or label names of "
                         f"its {config['task']!r} task, is missing or not a list of strings)")
    # An option missing from an older config.json means the architecture before the option existed.
    arch["config"] = {**MODELS[arch["model"]].saved_without, **arch["config"]}
    return config


def _check_sizes(options: dict, path: Path, where: str = "architecture") -> None:
    """Refuse sizes no model has before building anything (nested configs of a hierarchical model too)."""
    modules = 1
    for key, value in options.items():
        if isinstance(value, dict):
            _check_sizes(value, path, f"{where}.{key}")
        elif isinstance(value, int) and not isinstance(value, bool):
            bound = MAX_COUNT if key in _COUNT_KEYS else MAX_SIZE
            if not 0 <= value <= bound:
                raise HepfmError(f"{path}: {where}.{key} = {value} is out of range (0 to {bound:,})")
            modules *= value if key in _COUNT_KEYS else 1
    if modules > MAX_MODULES:
        counts = " x ".join(f"{k} {options[k]}" for k in _COUNT_KEYS if k in options)
        raise HepfmError(f"{path}: {where} builds too many layers ({counts} > {MAX_MODULES:,})")


def read_weights_header(path: str | Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of every tensor in a safetensors file, read from its header alone.

    The header's size is bounded and every tensor's byte range must lie in the file and match its shape, so
    what the header promises is what the file holds. A one-line HepfmError for anything else.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            head = f.read(8)
            if len(head) < 8:
                raise HepfmError(f"{path}: unreadable weights (not a safetensors file: {size} bytes)")
            n = struct.unpack("<Q", head)[0]
            if n > min(MAX_HEADER, size - 8):
                raise HepfmError(f"{path}: unreadable weights (not a safetensors file, or truncated: a header of "
                                 f"{n:,} bytes in a file of {size:,})")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise HepfmError(f"{path}: missing (the model folder has no weights)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HepfmError(f"{path}: unreadable weights (a header that is not JSON: {exc})") from None
    if not isinstance(header, dict):
        raise HepfmError(f"{path}: unreadable weights (the header is not a mapping)")
    data = size - 8 - n
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = (dtype in _DTYPE_BYTES and all(isinstance(d, int) and d >= 0 for d in shape)
                  and isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= data
                  and end - start == math.prod(shape) * _DTYPE_BYTES[dtype])
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise HepfmError(f"{path}: unreadable weights (tensor {str(name)[:80]!r} has a bad header entry, or "
                             "the file is truncated)")
        out[name] = (dtype, tuple(shape))
    return out


def _check_weights(model: Backbone, header: dict, folder: Path) -> None:
    """Refuse weights whose tensors are not exactly the (meta-built) model's, naming the first difference."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unexpected:
        raise HepfmError(f"{folder / WEIGHTS}: weights do not match the architecture in {CONFIG} "
                         f"(missing {missing[:3]}, unexpected {[k[:80] for k in unexpected[:3]]})")
    for key, shape in expected.items():
        if header[key][1] != shape:
            raise HepfmError(f"{folder / WEIGHTS}: weights do not match the architecture in {CONFIG} ({key} has "
                             f"shape {list(header[key][1])}, the architecture's is {list(shape)})")


def read_record(folder: str | Path) -> RunRecord:
    """The run record (:class:`~hepfm.models.record.RunRecord`) of a model folder's config.json; files written
    before the record read as version 0 with the same keys."""
    return RunRecord.from_json(read_config(folder), str(Path(folder) / CONFIG))


def load_model(folder: str | Path, device: str | torch.device = "cpu") -> Backbone:
    """Rebuild a model from its folder; its config dict is attached as ``model.metadata`` and its run record
    (:class:`~hepfm.models.record.RunRecord`) as ``model.record``.

    Nothing is allocated before the architecture in config.json is known to match the weights file.
    """
    folder = Path(folder)
    config = read_config(folder)
    arch = config["architecture"]
    n_outputs = arch["n_outputs"]
    if isinstance(n_outputs, bool) or not isinstance(n_outputs, int) or not 1 <= n_outputs <= MAX_OUTPUTS:
        raise HepfmError(f"{folder / CONFIG}: architecture.n_outputs must be a whole number from 1 to "
                         f"{MAX_OUTPUTS:,}, got {str(n_outputs)[:40]}")
    _check_sizes(arch["config"], folder / CONFIG, "architecture.config")
    header = read_weights_header(folder / WEIGHTS)
    try:
        with torch.device("meta"):
            skeleton = create_model(arch["model"], n_outputs, **arch["config"])
    except (ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise HepfmError(f"{folder / CONFIG}: {exc}") from None
    _check_weights(skeleton, header, folder)
    del skeleton
    model = create_model(arch["model"], n_outputs, **arch["config"])
    try:
        state = load_file(str(folder / WEIGHTS), device=str(device))
    except (OSError, SafetensorError) as exc:
        raise HepfmError(f"{folder / WEIGHTS}: unreadable weights ({exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise HepfmError(f"{folder / WEIGHTS}: weights do not match the architecture in {CONFIG} "
                         f"({str(exc).splitlines()[-1].strip()[:200]})") from None
    model.metadata = config
    model.record = RunRecord.from_json(config, str(folder / CONFIG))
    return model.to(device)
