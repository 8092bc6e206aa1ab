"""Data-parallel training through torchrun: process-group setup and the rank facts the loop needs.

Launch with `torchrun --nproc_per_node N -m scratchlm.cli train ...`; torchrun sets RANK, LOCAL_RANK and
WORLD_SIZE. Without them the run is a single process and nothing here does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from scratchlm.device import resolve_device


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistInfo(), resolve_device(device)
    info = DistInfo(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0")), world_size)
    wanted = resolve_device(device)
    if wanted.type == "cuda":
        wanted = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(wanted)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if wanted.type == "cuda" else "gloo")
    return info, wanted


def shutdown_distributed(*, wait_for_all: bool = False) -> None:
    """Leave the process group. Exiting without this leaves gloo's threads running at interpreter exit,
    which can abort the process ("terminate called without an active exception") after a good run.
    wait_for_all: meet the other ranks first (after a successful run; never after a failure, which would
    leave the survivors waiting for a rank that is gone)."""
    if dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain single process (readable before the process group exists)."""
    return int(os.environ.get("RANK", "0")) == 0
