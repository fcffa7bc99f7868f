"""DistributedDataParallel set-up from ``torchrun``'s environment (NCCL on GPU, Gloo on CPU)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from hepfm.errors import ConfigurationError


@dataclass
class DistContext:
    """This process's rank, the world size and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum a few numbers over all processes."""
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def rank() -> int:
    """This process's global rank under torchrun (0 otherwise), readable before :func:`setup`."""
    return int(os.environ.get("RANK", "0"))


def local_world() -> int:
    """Processes sharing this machine under torchrun (1 otherwise)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


_DEVICE = re.compile(r"(cpu|cuda|mps)(:\d{1,3})?")


def check_device(name: str) -> None:
    """Refuse a device name other than auto, cpu, cuda, cuda:N or mps, or one this machine does not have."""
    if name == "auto":
        return
    if not isinstance(name, str) or not _DEVICE.fullmatch(name) or name.startswith(("cpu:", "mps:")):
        raise ConfigurationError(f"device (--device) must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigurationError(f"device {name!r} was asked for, but no CUDA device is available")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ConfigurationError(f"device {name!r} was asked for, but this machine has "
                                     f"{torch.cuda.device_count()} CUDA device(s)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigurationError("device 'mps' was asked for, but no MPS device is available")


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> the local CUDA device when there is one, else the CPU; other names are checked first."""
    check_device(name)
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(name)


def setup(device: str = "auto") -> DistContext:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); otherwise a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), device=dev)


def teardown() -> None:
    """Leave the process group, if any."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
