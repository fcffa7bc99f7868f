"""Shared fixtures: toy event stores (hepfm.testing, no Pythia) built once per session and shared read-only, and a
small generated event store (Pythia) used by the physics tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hepfm.testing import toy_store

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Workers (python -m pytest -n 2) share the cores: OpenMP threads that spin-wait then collapse whenever the
    # other worker holds a core (benchmarks/throughput.py measured 113 against 629 training events/s); waiting
    # passively changes no result. Set before torch loads, inherited by the hepfm subprocesses.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

#: Events per process for the physics tests: enough for the assertions to hold by many standard
#: deviations, small enough for CI (about 40 s on two cores). Seeds are fixed, so results are exact.
PHYSICS_SAMPLE = {"zjets": 1500, "wjets": 400, "tth_yy": 400, "tth": 300, "ggf_h": 300, "wh": 1500, "zh": 1500}


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real input files not found at {SHARED_DATA}")
    return SHARED_DATA.resolve()


#: The toy store a test module gets as ``store``, unless it sets ``TOY_STORE`` (``toy_store``'s keyword arguments).
DEFAULT_TOY_STORE = {"n_per_class": 300}
#: The generation seed of ``downstream``: other events of the same two classes.
DOWNSTREAM_SEED = 100


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (lock files aside) with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.name.startswith(".hepfm.lock")}


@pytest.fixture(scope="session")
def toy_stores(tmp_path_factory):
    """``toy_stores(**settings)``: the toy store of those ``toy_store`` settings, written once per session and
    shared by every test that asks for it, so tests must only read it (checked when the session ends)."""
    made: dict[tuple, tuple[Path, dict]] = {}

    def get(**settings) -> Path:
        key = tuple(sorted(settings.items()))
        if key not in made:
            root = toy_store(tmp_path_factory.mktemp("toy") / "store", **settings)
            made[key] = root, _listing(root)
        return made[key][0]

    yield get
    for settings, (root, written) in made.items():
        assert _listing(root) == written, f"a test changed the shared toy store {dict(settings)} at {root}"


def _module_settings(request) -> dict:
    return getattr(request.module, "TOY_STORE", DEFAULT_TOY_STORE)


@pytest.fixture(scope="module")
def store(request, toy_stores) -> Path:
    """The module's two-class toy store ('soft', 'hard'): ``TOY_STORE`` or ``DEFAULT_TOY_STORE``. Read-only."""
    return toy_stores(**_module_settings(request))


@pytest.fixture(scope="module")
def downstream(request, toy_stores) -> Path:
    """Other events of ``store``'s classes and size (another generation seed), e.g. for fine-tuning a model
    pretrained on ``store``. Read-only."""
    return toy_stores(**{**_module_settings(request), "seed": DOWNSTREAM_SEED})


def _generate_physics_store(out: Path) -> None:
    from hepfm.io.generate import catalog_source, generate

    by_size: dict[int, list[str]] = {}
    for name, n in PHYSICS_SAMPLE.items():
        by_size.setdefault(n, []).append(name)
    for n, names in by_size.items():
        generate([catalog_source(p) for p in names], out, events=n, seed=2024, workers=2, progress=False)


@pytest.fixture(scope="session")
def physics_store(tmp_path_factory) -> Path:
    """The physics tests' generated store (read-only). Under pytest-xdist the workers share one copy: the
    first to ask generates it, the others wait for it (generation is the suite's most expensive fixture)."""
    pytest.importorskip("pythia8mc")
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # not under xdist
        out = tmp_path_factory.mktemp("physics") / "store"
        _generate_physics_store(out)
        return out
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # this run's folder, common to its workers
    out, done = shared / "physics" / "store", shared / "physics" / "complete"
    with FileLock(str(shared / "physics.lock")):
        if not done.exists():
            _generate_physics_store(out)
            done.touch()
    return out


@pytest.fixture(scope="session")
def physics_objects(physics_store):
    from hepfm.io.store import EventStore

    store = EventStore(physics_store)
    return {name: store.arrays(processes=[name])["objects"] for name in store.process_names}


@pytest.fixture(scope="module")
def pretrained(request, store, tmp_path_factory) -> Path:
    """A multiclass GraphNet (shared blocks) pretrained on the module's toy ``store`` for ``PRETRAIN_EPOCHS``
    epochs (default 1), seed 1. Read-only."""
    from hepfm.train.trainer import TrainConfig
    from hepfm.train.workflows import pretrain

    out = tmp_path_factory.mktemp("runs") / "pre"
    pretrain(store, out, "multiclass", model_config={"share_blocks": True}, lr=1e-3,
             cfg=TrainConfig(epochs=getattr(request.module, "PRETRAIN_EPOCHS", 1), seed=1, batch_size=64,
                             progress=False, tensorboard=False))
    return out


@pytest.fixture
def one_thread():
    """One CPU thread: multi-threaded kernels may add floats in a different order from run to run (~1e-7
    relative); with one thread the arithmetic is fixed, so runs can be compared bit for bit."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
