"""torch.distributed in one place: launch with ``torchrun --nproc_per_node=N -m sdeflow.cli
train ...`` (NCCL on GPUs, gloo on CPUs). Every rank draws the same global batch from the
same generator and keeps its own slice; DDP averages the gradients, so N ranks take exactly
the step one process would take on the whole batch. Only rank 0 writes files."""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "dist_info", "all_reduce_mean", "barrier",
           "shutdown_distributed", "process_group"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def dist_info() -> DistInfo:
    if _initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment (no-op without it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _initialized():
        if backend is None:
            backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return dist_info()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    if _initialized() and dist.get_world_size() > 1:
        x = x.detach().clone()
        dist.all_reduce(x)
        x /= dist.get_world_size()
    return x


def barrier() -> None:
    if _initialized() and dist.get_world_size() > 1:
        dist.barrier()


def shutdown_distributed(*, sync: bool = True) -> None:
    """Leave the process group: wait for every rank (``sync``), then destroy it. A rank that
    exits with its gloo/NCCL group still alive can abort (SIGABRT) while its peer is still
    closing the connection; torch asks for ``destroy_process_group()`` before exit. Without
    ``sync`` (an error on this rank) it only destroys, since the peers may never arrive."""
    if _initialized():
        if sync:
            barrier()
        dist.destroy_process_group()


@contextmanager
def process_group():
    """``with process_group() as info:`` join the group ``torchrun`` describes for the block
    (:func:`init_distributed`; ``info`` its :class:`DistInfo`) and, if the block joined it,
    leave it after (:func:`shutdown_distributed`, without waiting for the peers when the
    block raised). A group the caller set up stays the caller's."""
    joined = not _initialized()
    info = init_distributed()
    ok = False
    try:
        yield info
        ok = True
    finally:
        if joined:
            shutdown_distributed(sync=ok)
