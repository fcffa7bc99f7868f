"""Publishing a trained model under a name: its folder, config and a model card (``hepfm publish``).

A published model is what :mod:`hepfm.models.pretrained` finds by name: ``model.safetensors`` +
``config.json`` + ``MODEL_CARD.md`` in ``<dest>/<name>/``. The card is written from the run's own record
(architecture, training settings, held-out metrics, the data it saw) plus free-text notes (the exact
commands, generation time), so it cannot disagree with the weights it describes.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from hepfm.data.pretraining import PUBLISHABLE_TASKS
from hepfm.errors import HepfmError, disk_error
from hepfm.io.atomic import atomic_write_text
from hepfm.io.locking import exclusive_lock
from hepfm.models.pretrained import CARD, shipped_names
from hepfm.models.record import RunRecord, known
from hepfm.models.saving import CONFIG, WEIGHTS, read_config
from hepfm.names import check_name

LICENCE = "BSD-3-Clause (the weights, like hepfm itself)"

LIMITS = """\
- The events are Pythia 8 simulation passed through hepfm's own parametrised detector (resolutions and
  efficiencies after the ATLAS/CMS Delphes cards; no pileup, no underlying detector geometry). The model has
  never seen real collisions: applying it to CMS NanoAOD or Delphes events is a domain shift, which
  fine-tuning on the analysis's own events is meant to absorb.
- Loading checks the data schema (feature set, detector configuration): events simulated with another
  detector configuration are refused, naming what differs.
- The inputs are at most 20 reconstructed objects per event (pT, eta, phi, E, b-tag, charge, type).
- Intended use: the starting point of fine-tuning for event classification (`hepfm finetune --from NAME`),
  a frozen feature extractor, or the subject of representation studies (CKA). Its own 12-process or
  41-label outputs are a pretraining task, not a physics measurement.
"""


def _store_facts(config: dict) -> dict:
    """Generator facts from the first shard of the training store, when it is still on disk."""
    import h5py

    for item in config.get("pretraining_data") or []:
        path = Path(item.get("path", ""))
        if path.is_file():
            with h5py.File(path, "r") as f:
                return {k: str(f.attrs[k]) for k in ("generator", "generator_version", "base_seed") if k in f.attrs}
    return {}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _metrics_section(config: dict) -> list[str]:
    training = config.get("training", {})
    test, detail, names = training.get("test", {}), training.get("test_detail", {}), config.get("names", [])
    lines = ["## Held-out metrics", "",
             f"On {training.get('n_test', 0):,} test events that training and model selection never saw:", ""]
    lines += [f"- {k.replace('_', ' ')}: {v:.4f}" for k, v in test.items() if isinstance(v, float)]
    matrix = detail.get("confusion_matrix")
    if matrix:
        lines += ["", "Confusion matrix (rows: true process, columns: predicted; % of the row):", "",
                  "| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for name, row in zip(names, matrix, strict=True):
            total = max(sum(row), 1)
            lines.append(f"| **{name}** | " + " | ".join(_pct(c / total) for c in row) + " |")
    if detail.get("label_auc"):
        lines += ["", "| label | ROC AUC |", "| --- | --- |"]
        lines += [f"| {k} | {'-' if v is None else f'{v:.3f}'} |" for k, v in detail["label_auc"].items()]
        lines += ["", "| count label | exact-count accuracy |", "| --- | --- |"]
        lines += [f"| {k} | {v:.3f} |" for k, v in detail.get("count_accuracy", {}).items()]
    return lines


def model_card(config: dict, name: str, notes: str = "") -> str:
    """The markdown model card of a model's ``config`` (as :func:`~hepfm.models.saving.read_config` returns)."""
    arch, training = config["architecture"], config.get("training", {})
    settings, schema = training.get("config", {}), config.get("data_schema") or {}
    rows = Counter()
    for item in config.get("pretraining_data") or []:
        rows[item.get("process", "?")] += int(item.get("rows", 0))
    facts = _store_facts(config)
    seen = training.get("n_train", 0) * training.get("epochs_run", 0) + training.get("n_val", 0) * training.get(
        "epochs_run", 0)
    rate = seen / training["train_time_s"] if training.get("train_time_s") else 0.0
    options = ", ".join(f"{k}={v}" for k, v in sorted(arch.get("config", {}).items()))
    lines = [f"# {name}", "",
             f"A {arch['model']} backbone pretrained on the {config.get('task')} task over "
             f"{len(config.get('names', []))} {'processes' if config.get('task') == 'multiclass' else 'truth labels'} "
             f"with hepfm {config.get('hepfm_version', '?')}. Load it with `hepfm.load_pretrained({name!r})` or "
             f"fine-tune from it with `hepfm finetune --from {name}`.", "",
             "## Model", "",
             f"- architecture: `{arch['model']}` ({options}); {training.get('parameters', 0):,} parameters",
             f"- outputs: {arch['n_outputs']} ({', '.join(config.get('names', []))})",
             f"- inputs: {', '.join(schema.get('features', []))} per object (schema version "
             f"{schema.get('schema_version')})", "",
             "## Training data", "",
             f"- {sum(rows.values()):,} events: " + ", ".join(f"{p} {n:,}" for p, n in sorted(rows.items())),
             f"- split (seed {config.get('split_seed')}): {training.get('n_train', 0):,} training, "
             f"{training.get('n_val', 0):,} validation, {training.get('n_test', 0):,} test events",
             f"- generator: {facts.get('generator', 'Pythia 8')} {facts.get('generator_version', '')}".rstrip()
             + (f", base seed {facts['base_seed']}" if "base_seed" in facts else ""),
             f"- detector: hepfm's simulated detector, configuration hash `{schema.get('detector_hash')}`", "",
             "## Training", "",
             f"- optimiser {settings.get('optimizer')}, learning rate {config.get('lr')}, schedule "
             f"{settings.get('schedule')}, batch {settings.get('batch_size')}, "
             f"bf16 {bool(settings.get('bf16'))}, seed {settings.get('seed')}",
             f"- {training.get('epochs_run')} epochs (best {training.get('best_epoch')}, "
             f"{'stopped early' if training.get('stopped_early') else 'epoch cap reached'}; patience "
             f"{settings.get('patience')}), {training.get('train_time_s', 0) / 3600:.2f} h on "
             f"{training.get('world_size', 1)} process(es), {rate:,.0f} events/s (training + validation)", "",
             *_metrics_section(config), ""]
    if notes.strip():
        lines += ["## How it was made", "", notes.strip(), ""]
    lines += ["## Intended use and limits", "", LIMITS, "## Licence", "", LICENCE, ""]
    return "\n".join(lines)


def publish(run: str | Path, name: str, dest: str | Path, notes: str = "", overwrite: bool = False) -> Path:
    """Copy the model of ``run`` to ``dest/name`` with its config and a model card; the folder appears whole.

    Names are lower-case letters, digits and dashes (they are typed on command lines and are folder names),
    and not a shipped model's (the shipped one is found first, so the published one could never be loaded by
    name). With ``overwrite`` the new folder is built beside the old one and swapped in by renames: a failure
    at any point leaves the old model in place.
    """
    import os
    import re

    if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name):
        raise HepfmError(f"model name {name!r}: use lower-case letters, digits and dashes")
    check_name(name, "model name")  # the rule for every name that becomes a path (its length, too)
    if name in shipped_names():
        raise HepfmError(f"model name {name!r}: a model shipped with hepfm has this name, so the published one "
                         "could never be loaded by name; choose another")
    run, dest = Path(run), Path(dest)
    target = dest / name
    config = read_config(run)
    task = known(RunRecord.from_json(config, str(run / CONFIG)).task)
    if task not in PUBLISHABLE_TASKS:
        raise HepfmError(f"{run}: a {task} model; only pretrained (multiclass or multilabel) models "
                         "are published under a name")
    if not (run / WEIGHTS).is_file():
        raise HepfmError(f"{run / WEIGHTS}: missing (the run folder has no weights)")
    if target.exists() and not overwrite:
        raise HepfmError(f"{target}: already exists (overwrite it explicitly)")
    dest.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(dest, "folder of published models"):
        if target.exists() and not overwrite:  # published meanwhile by another process
            raise HepfmError(f"{target}: already exists (overwrite it explicitly)")
        # Hidden names in the same folder (the listing skips them), so the renames stay on one file system.
        staging = dest / f".{name}.partial"
        old = dest / f".{name}.old-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir()
            shutil.copyfile(run / WEIGHTS, staging / WEIGHTS)
            published = {**config, "name": name}
            atomic_write_text(staging / CONFIG, json.dumps(published, indent=1, sort_keys=True))
            atomic_write_text(staging / CARD, model_card(published, name, notes))
            if target.exists():
                target.rename(old)
                try:
                    staging.rename(target)
                except BaseException:
                    old.rename(target)  # put the old model back
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                staging.rename(target)
        except OSError as exc:
            raise disk_error(exc, target) or exc from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target
