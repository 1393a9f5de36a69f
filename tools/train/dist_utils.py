"""Data-parallel training under torchrun: one process per core (gloo) or per GPU (nccl).

`torchrun --nproc_per_node N tools/train/train.py ...` sets RANK / WORLD_SIZE / LOCAL_RANK; without them
the trainer runs as one process. Every rank sees the same global batch order and trains on its share of
each batch (windows rank, rank + N, ...); DistributedDataParallel averages the gradients, so N processes
take the same optimiser steps as one process with the whole batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, device_arg: str | None) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        want_cuda = device_arg == "cuda" or (device_arg is None and torch.cuda.is_available())
        if want_cuda:
            device = torch.device("cuda", local) if world > 1 else torch.device("cuda")
        else:
            device = torch.device(device_arg or "cpu")
        if world > 1 and not dist.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend)
        return cls(rank, world, local, device)

    def shard(self, items: list) -> list:
        """This rank's share of a global batch."""
        return items[self.rank::self.world]

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (in place, returned)."""
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def max(self, t: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        """Rank 0's value everywhere."""
        if self.enabled:
            dist.broadcast(t, 0)
        return t

    def barrier(self):
        if self.enabled:
            dist.barrier()

    def close(self):
        """Leave the process group together: without the barrier a rank that finished first tore its gloo
        threads down while rank 0 was still writing the checkpoint, and once in six test runs that rank
        aborted at exit ("terminate called without an active exception")."""
        if self.enabled and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
