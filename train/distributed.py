"""Where a run executes: the device, and data-parallel ranks (torchrun) with one all-reduce per gradient set."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch

from refusion.runtime.errors import RefusionError


@dataclass
class DistInfo:
    """This process's rank among ``world`` data-parallel processes (1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, dist: DistInfo | None = None) -> torch.device:
    """auto | cpu | cuda | cuda:N -> a torch device; under torchrun, ``cuda`` is the local rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RefusionError("--device cuda requested, but torch sees no CUDA GPU (use --device cpu)")
        if name == "cuda" and dist is not None and dist.world > 1:
            local = int(os.environ.get("LOCAL_RANK", dist.rank))
            return torch.device("cuda", local % torch.cuda.device_count())
    elif name != "cpu":
        raise RefusionError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    return torch.device(name)


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group (NCCL on GPUs, gloo on the CPU); DistInfo() when not under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as tdist

    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    tdist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(tdist.get_rank(), tdist.get_world_size())


def all_reduce_mean(world: int) -> Callable[[list[torch.Tensor]], None]:
    """Average a list of gradient tensors across ranks with ONE all-reduce of a flat bucket."""
    import torch.distributed as tdist

    def reduce(tensors: list[torch.Tensor]) -> None:
        if not tensors:
            return
        flat = torch.cat([t.reshape(-1) for t in tensors])
        tdist.all_reduce(flat, op=tdist.ReduceOp.SUM)
        flat.div_(world)
        offset = 0
        for t in tensors:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()

    return reduce


def broadcast_parameters(*modules: torch.nn.Module) -> None:
    """Give every rank rank 0's initial weights."""
    import torch.distributed as tdist

    for m in modules:
        for t in m.parameters():
            tdist.broadcast(t.data, 0)
