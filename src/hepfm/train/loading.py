"""How a pretraining run holds its events: in memory or streamed from disk, decided once per run.

The data layer provides both sources (:func:`hepfm.data.datasets.pretraining_split`,
:func:`hepfm.data.streaming.stream_pretraining_split`) and the estimate of what holding the events costs
(:func:`hepfm.data.streaming.in_memory_bytes`); the run decides between them against the machine's budget and
records the decision in its folder (``stream.json``), so that a resumed run loads its events the same way.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from hepfm.data.datasets import multi_task_split, open_source, pretraining_split
from hepfm.data.streaming import in_memory_bytes, stream_pretraining_split
from hepfm.io.atomic import atomic_write_text
from hepfm.io.rundir import STREAM_PLAN

#: The loading plan of a run, in its folder.


def memory_budget(device) -> int:
    """Bytes the in-memory path may use: 25% of physical RAM and, on CUDA, at most 50% of free GPU memory."""
    budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    device = torch.device(device)
    if device.type == "cuda":
        budget = min(budget, torch.cuda.mem_get_info(device)[0] // 2)
    return int(budget)


def pretraining_data(data, task: str, split_seed: int, max_events: int | None, stream: bool | None, ctx,
                     run_dir: str | Path, resume: bool = False, heads=()):
    """Pretraining splits held in memory or streamed, the names, and the loading plan (saved in ``run_dir``).

    ``stream`` None decides: stream when :func:`~hepfm.data.streaming.in_memory_bytes` exceeds
    :func:`memory_budget`. The main process decides and writes the plan; a resumed run with no explicit
    choice reuses the saved plan, so an interruption never switches the data source. When streaming,
    validation and test events are capped per process so that they fit in the budget. ``heads``: the heads of
    a multi-task run (names per head, targets per head: :func:`~hepfm.data.datasets.multi_task_split`).
    """
    path = Path(run_dir) / STREAM_PLAN
    if ctx.is_main and not (resume and stream is None and path.exists()):
        need, per_event = in_memory_bytes(data, max_events)
        # Each torchrun process on this machine holds its own copy of the data: they share the budget.
        budget = memory_budget(ctx.device) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        store, processes = open_source(data)
        n_proc = len(processes or store.process_names)
        plan = {"stream": need > budget if stream is None else bool(stream), "auto": stream is None,
                "in_memory_bytes": need, "budget_bytes": budget,
                "max_eval_events": max(1, budget // per_event // (2 * n_proc))}
        atomic_write_text(path, json.dumps(plan))
    ctx.barrier()
    plan = json.loads(path.read_text())
    if not plan["stream"]:
        if heads:
            splits, names = multi_task_split(data, heads, split_seed, max_events=max_events)
        else:
            splits, names = pretraining_split(data, task, split_seed, max_events=max_events)
        return splits, names, plan
    train, held, names = stream_pretraining_split(data, task, split_seed, max_events=max_events,
                                                  max_eval_events=plan["max_eval_events"], heads=heads)
    return {"train": train, **held}, names, plan
