"""Shared fixtures: a small generated event store (Pythia) used by the physics tests."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

#: Events per process for the physics tests: enough for the assertions to hold by many standard
#: deviations, small enough for CI (about 40 s on two cores). Seeds are fixed, so results are exact.
PHYSICS_SAMPLE = {"zjets": 1500, "wjets": 400, "tth_yy": 400, "tth": 300, "ggf_h": 300, "wh": 1500, "zh": 1500}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real input files not found at {SHARED_DATA}")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="session")
def physics_store(tmp_path_factory) -> Path:
    pytest.importorskip("pythia8mc")
    from hepfm.io.generate import catalog_source, generate

    out = tmp_path_factory.mktemp("physics") / "store"
    by_size: dict[int, list[str]] = {}
    for name, n in PHYSICS_SAMPLE.items():
        by_size.setdefault(n, []).append(name)
    for n, names in by_size.items():
        generate([catalog_source(p) for p in names], out, events=n, seed=2024, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def physics_objects(physics_store):
    from hepfm.io.store import EventStore

    store = EventStore(physics_store)
    return {name: store.arrays(processes=[name])["objects"] for name in store.process_names}


@pytest.fixture
def one_thread():
    """One CPU thread: multi-threaded kernels may add floats in a different order from run to run (~1e-7
    relative); with one thread the arithmetic is fixed, so runs can be compared bit for bit."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
