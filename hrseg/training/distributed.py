"""torchrun / DistributedDataParallel helpers.

``torchrun --nproc_per_node=N -m hrseg train ...`` sets RANK/WORLD_SIZE/LOCAL_RANK;
without them everything here degrades to a single process. Under torchrun a
process group is joined even for one process, so ``--nproc_per_node=1`` runs
the same code as N (DDP, all-reduces over NCCL or gloo, SyncBatchNorm): a
one-GPU machine can check the multi-GPU path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False
    launched: bool = False  # started by torchrun (a process group exists, even for one process)
    backend: str = ""  # "nccl" | "gloo" when ``enabled``

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.launched or self.world_size > 1


def init_from_env(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA).

    A launch is recognised by WORLD_SIZE > 1, or by RANK and MASTER_ADDR, which
    torchrun sets even for a single process.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launched = world > 1 or ("RANK" in os.environ and "MASTER_ADDR" in os.environ)
    if not launched:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_initialized():
        return DistInfo(rank, world, local_rank, False, True, str(dist.get_backend()))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None or os.environ.get("GROUP_WORLD_SIZE", "1") != "1":
        # several torchrun agents count their restarts apart, so the count names no attempt they share:
        # there the agents' own store must not be shared across restarts (docs/research-loop.md)
        dist.init_process_group(backend=backend)
    else:
        # one torchrun agent keeps its store across restarts, holding the dead attempt's addresses, which gloo
        # would try (connection refused, or a hang until its timeout): each attempt gets keys of its own
        store, _, _ = next(dist.rendezvous("env://"))
        dist.init_process_group(backend=backend, store=dist.PrefixStore(f"hrseg/attempt_{attempt}", store),
                                rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, True, True, backend)


def shutdown(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(module: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP around the segmenter; a no-op in a single process."""
    if not info.enabled:
        return module
    ids = [device.index if device.index is not None else info.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=True)


def unwrap(module: nn.Module) -> nn.Module:
    """The plain module under DDP and/or torch.compile wrappers."""
    while True:
        if isinstance(module, nn.parallel.DistributedDataParallel):
            module = module.module
        elif hasattr(module, "_orig_mod"):
            module = module._orig_mod  # type: ignore[assignment]
        else:
            return module


def average_gradients(module: nn.Module, info: DistInfo) -> None:
    """All-reduce the gradients of an auxiliary network (W, G, D).

    These networks are trained through methods other than ``forward`` (e.g.
    ``classifier_loss``) and through several backward passes per step, which DDP's
    hooks do not follow; averaging explicitly keeps every rank's copy identical.
    """
    if not info.enabled:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= info.world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def average_buffers(module: nn.Module, info: DistInfo) -> None:
    """Average floating-point buffers (W's running mean weight) so every rank normalises alike."""
    if not info.enabled:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf /= info.world_size


def broadcast_module(module: nn.Module, info: DistInfo) -> None:
    """Start every rank from rank 0's parameters and buffers."""
    if not info.enabled:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` on every rank (e.g. RNG states for the checkpoint)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank (a decision only rank 0 may take, e.g. whether to resume)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / info.world_size


def all_reduce_sum(values: torch.Tensor, info: DistInfo, device: torch.device | str = "cpu") -> torch.Tensor:
    """The element-wise sum over the ranks (on ``device`` for the collective: NCCL needs the GPU), back on the CPU."""
    if not info.enabled:
        return values
    moved = values.to(device).clone()
    dist.all_reduce(moved)
    return moved.cpu()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()
