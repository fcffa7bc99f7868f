"""ONNX export of a model, for inference outside Python (CMSSW, Athena, onnxruntime in a notebook).

The exported graph takes the store's raw rows and a mask, exactly as the PyTorch model does:

* input ``objects``: float32 [batch, n_objects, 7] — (pT, eta, phi, E, b-tag, charge, type) per object,
  ordered by type then pT, as in the event store; padding rows are ignored;
* input ``mask``: bool [batch, n_objects] — True for real objects;
* outputs ``logits`` [batch, n_outputs] and ``scores`` (softmax for multiclass, sigmoid for binary and
  multilabel flags, the value itself for multilabel counts).

A hierarchical model (:mod:`hepfm.models.hierarchical`) takes the rows with each object's K constituents
appended, ``objects`` [batch, n_objects, 7 + 6K] (:func:`hepfm.data.datasets.with_constituents`; zeros
beyond a jet's stored constituents and in non-jet rows), K being the model's ``max_constituents``. It is
traced with every row's jet embedding computed at the full width K and masked
(:meth:`~hepfm.models.hierarchical.HierarchicalModel.fixed_width_jet_extra`), as the PyTorch path's
batch-dependent width cannot be traced.

Both the batch size and the number of objects are free dimensions. Feature scaling is part of the
graph. The model's task, class names, inputs, hepfm version and data schema are stored as ONNX metadata
(and, for hierarchical models, ``max_constituents`` and ``constituent_features``).
Needs the ``[onnx]`` extra (onnx, onnxscript; onnxruntime to check the result).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from hepfm._version import __version__
from hepfm.errors import HepfmError
from hepfm.io.atomic import atomic_write
from hepfm.models.record import UNSET, known
from hepfm.physics.objects import FEATURES

#: Shapes the model is traced with; the exported dimensions stay free.
_TRACE_BATCH, _TRACE_OBJECTS = 4, 6


class _Scored(nn.Module):
    """model(objects, mask) -> (logits, scores)."""

    def __init__(self, model, task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, objects: torch.Tensor, mask: torch.Tensor):
        logits = self.model(objects, mask)
        return logits, self.task.score_table(logits)


def _score_columns(task) -> list[str]:
    from hepfm.train.tasks import MultiTask

    return task.event_score_columns() if isinstance(task, MultiTask) else list(task.names)


def _trace_inputs(model) -> tuple[torch.Tensor, torch.Tensor]:
    """A small batch of plausible events (jets and MET with varying multiplicity) to trace ``model`` with, as
    the model reads them (:meth:`~hepfm.models.base.Backbone.trace_rows`: a hierarchical model's rows carry
    their constituents)."""
    g = torch.Generator().manual_seed(0)
    n = torch.tensor([2, 3, 5, 6])
    mask = torch.arange(_TRACE_OBJECTS)[None] < n[:, None]
    pt = 30 + 50 * torch.rand(_TRACE_BATCH, _TRACE_OBJECTS, generator=g)
    eta = torch.rand(_TRACE_BATCH, _TRACE_OBJECTS, generator=g) * 4 - 2
    phi = torch.rand(_TRACE_BATCH, _TRACE_OBJECTS, generator=g) * 6 - 3
    x = torch.stack([pt, eta, phi, pt * torch.cosh(eta), torch.zeros_like(pt), torch.zeros_like(pt),
                     torch.ones_like(pt)], dim=-1)
    return model.trace_rows(x, g) * mask[..., None], mask


def opset_range() -> tuple[int, int]:
    """The ONNX opsets the installed exporter writes: from the torchlib operators' opset (lower ones are a
    conversion that may silently keep 18) to the newest torch and onnx both know."""
    import onnx

    try:
        from torch.onnx import _constants
        from torch.onnx._internal.exporter import _constants as _exporter

        low, high = _exporter.TORCHLIB_OPSET, _constants.ONNX_MAX_OPSET
    except (ImportError, AttributeError):  # private modules: a torch that moved them
        low, high = 18, 18
    return low, min(high, onnx.defs.onnx_opset_version())


def export_onnx(model_ref: str | Path, out: str | Path, opset: int = 18) -> Path:
    """Write the ONNX graph of a model folder or shipped model to ``out`` (atomically); returns the path.

    ``opset`` must be one the installed exporter writes (:func:`opset_range`); the written graph is checked
    to carry it, so a model is never written at another opset than asked for.
    """
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        raise HepfmError("ONNX export needs the onnx extra: pip install 'hepfm[onnx]'") from None
    from hepfm.models.pretrained import load, resolve
    from hepfm.models.saving import CONFIG
    from hepfm.train.tasks import saved_task

    out = Path(out)
    if out.suffix != ".onnx":
        raise HepfmError(f"{out}: the ONNX file name must end in .onnx")
    if not out.parent.is_dir():
        raise HepfmError(f"{out.parent}: output folder does not exist")
    low, high = opset_range()
    if isinstance(opset, bool) or not isinstance(opset, int) or not low <= opset <= high:
        raise HepfmError(f"--opset {opset}: the installed ONNX exporter writes opsets {low} to {high}")
    folder = resolve(model_ref)
    model = load(model_ref).eval()
    record = model.record
    if record.task is UNSET:
        raise HepfmError(f"{folder / CONFIG}: no task recorded (a model saved outside training cannot be exported)")
    try:
        task = saved_task(record.task, list(record.names), known(record.task_options, None))
    except ValueError as exc:
        raise HepfmError(f"{folder / CONFIG}: {exc}") from None
    model.for_export()  # e.g. the hierarchical model's batch-trimmed constituent width: untraceable
    wrapped = _Scored(model, task).eval()
    x, mask = _trace_inputs(model)
    batch, objects = torch.export.Dim("batch"), torch.export.Dim("n_objects", min=1, max=4096)
    with torch.no_grad():
        program = torch.onnx.export(
            wrapped, (x, mask), dynamo=True, opset_version=opset, input_names=["objects", "mask"],
            output_names=["logits", "scores"],
            dynamic_shapes={"objects": {0: batch, 1: objects}, "mask": {0: batch, 1: objects}}, verbose=False)
    proto = program.model_proto
    written = [entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")]
    if written != [opset]:
        raise HepfmError(f"--opset {opset}: the exporter wrote opset {written[0] if written else '?'} instead; "
                         f"nothing was written to {out}")
    meta = {"hepfm_version": __version__, "task": task.name, "classes": json.dumps(_score_columns(task)),
            "features": json.dumps(list(FEATURES)), "source": str(model_ref),
            "data_schema": json.dumps(known(record.data_schema, {})),
            "inputs": model.inputs, **model.export_metadata()}
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value

    def write(tmp: str) -> None:
        import onnx

        onnx.save_model(proto, tmp)

    return atomic_write(out, write)
