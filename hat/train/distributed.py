"""Data-parallel training without DistributedDataParallel.

A SuperTransformer step uses a slice of most weights and skips whole layers, which DDP's
bucketed hooks handle badly (`find_unused_parameters`, or hangs). Instead gradients are
all-reduced by hand after accumulation: one flat buffer, where a parameter whose gradient is
None on some rank (layer skipped, or an empty shard) counts as zero there. `torchrun` sets
WORLD_SIZE/RANK/LOCAL_RANK; with WORLD_SIZE unset or 1 everything here is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_master(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_type: str) -> DistEnv:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    env = DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend=backend)
    return env


def shutdown(env: DistEnv) -> None:
    if env.enabled and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_grads(params: Sequence[torch.nn.Parameter], env: DistEnv) -> None:
    """Sum gradients over ranks in place; None on a rank is treated as zero, and a parameter
    with no gradient on ANY rank keeps grad None (so Adam skips it, as in one process)."""
    if not env.enabled or not params:
        return
    device = params[0].device
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=device)
    dist.all_reduce(present)
    used = [p for p, n in zip(params, present.tolist()) if n > 0]
    if not used:
        return
    flat = torch.cat([
        (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1).float() for p in used
    ])
    dist.all_reduce(flat)
    offset = 0
    for p in used:
        n = p.numel()
        g = flat[offset:offset + n].view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = g.clone()
        else:
            p.grad.copy_(g)
        offset += n


def all_reduce_sum(values: Sequence[float], env: DistEnv, device: torch.device) -> list[float]:
    """Sum a few scalars (losses, token counts) over ranks, in float64."""
    if not env.enabled:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_object(obj: Any, env: DistEnv) -> list[Any]:
    if not env.enabled:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()
