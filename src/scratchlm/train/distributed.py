"""Data-parallel training through torchrun: process-group setup and the rank facts the loop needs.

Launch with `torchrun --nproc_per_node N -m scratchlm.cli train ...`; torchrun sets RANK, LOCAL_RANK and
WORLD_SIZE. Without them the run is a single process and nothing here does anything.

Failures are reported once: a failure every rank meets (a bad data path) or one rank meets while setting up
(`all_ranks_agree`) is reported by rank 0 alone, and the other ranks raise `ReportedElsewhere`, which the
CLI turns into its exit status without a message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from scratchlm.device import resolve_device
from scratchlm.errors import EXIT_INTERNAL, RankFailedError, ReportedElsewhere, ScratchLMError
from scratchlm.train.state import capture_rng_state

T = TypeVar("T")


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


@contextmanager
def reported_by_local_rank_zero() -> Iterator[None]:
    """A ScratchLMError raised inside is reported by each node's local rank 0 alone (the others exit with its
    status, quietly): for work done before the process group exists, which every rank of a node does alike."""
    try:
        yield
    except ScratchLMError as exc:
        if int(os.environ.get("LOCAL_RANK", "0")) != 0:
            raise ReportedElsewhere(exc.exit_code) from None
        raise


def all_ranks_agree(info: DistInfo, fn: Callable[[], T]) -> T:
    """Run `fn` on every rank and fail on all of them if it failed on any, with one report.

    Without this a rank that fails alone leaves the others waiting in their next collective until torchrun
    kills them, and a failure every rank meets prints one line per process. Rank 0 reports (its own error,
    or the first failing rank's ScratchLMError, named by rank); the others raise ReportedElsewhere. A
    non-ScratchLMError (a bug) on a rank other than 0 is raised there, with its traceback under --debug.
    """
    if not info.enabled:
        return fn()
    error: BaseException | None = None
    try:
        result = fn()
    except Exception as exc:
        error = exc
    mine = None if error is None else (error.exit_code if isinstance(error, ScratchLMError) else None, str(error))
    found: list[tuple[int | None, str] | None] = [None] * info.world_size
    dist.all_gather_object(found, mine)
    failed = [rank for rank, item in enumerate(found) if item is not None]
    if not failed:
        return result
    reporter = 0 if 0 in failed else failed[0]
    code, message = found[reporter]  # type: ignore[misc]
    if reporter != 0 and code is not None:  # another rank's ScratchLMError: rank 0 says it, naming the rank
        reporter = 0
    status = code if code is not None else EXIT_INTERNAL
    if info.rank != reporter:
        raise ReportedElsewhere(status)
    if error is not None:
        raise error
    raise RankFailedError(f"rank {failed[0]} of {info.world_size}: {message}", status)


def is_peer_loss(exc: BaseException) -> bool:
    """Whether `exc` is a collective that failed because another rank died, hung or lost its connection."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        marker in text for marker in ("gloo", "Gloo", "NCCL", "Connection reset", "Connection closed by peer")
    )


def rng_states_of_every_rank(info: DistInfo) -> list[dict[str, Any]]:
    """Every rank's RNG state, in rank order (a collective under torchrun: every rank calls it), so a
    checkpoint written by rank 0 resumes each rank's dropout stream where it was."""
    mine = capture_rng_state()
    if not info.enabled:
        return [mine]
    states: list[Any] = [None] * info.world_size
    dist.all_gather_object(states, mine)
    return states
