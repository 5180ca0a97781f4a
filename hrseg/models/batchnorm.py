"""Batch-norm modes for small per-GPU batches: ``train`` (plain), ``frozen`` and ``sync``.

With two crops per GPU, plain BatchNorm estimates its statistics from two
images; the domain-adaptation literature either freezes batch norm at its
ImageNet values (ADVENT, AdaptSegNet) or synchronises it across GPUs.

- ``frozen``: every BatchNorm2d becomes a :class:`FrozenBatchNorm2d`, which
  normalises with the stored running statistics and affine values in train and
  eval mode alike and never changes them. They are buffers, not parameters, so
  no optimiser, gradient toggle or DDP reducer can move them; the state-dict
  keys stay those of BatchNorm2d (``num_batches_tracked`` included), so
  checkpoints and ImageNet files load the same in every mode.
- ``sync``: in training mode under torch.distributed, the mean and variance
  are those of the whole global batch, not of each rank's share. A network on a
  GPU gets PyTorch's ``torch.nn.SyncBatchNorm``; PyTorch refuses CPU tensors
  there (and DDP refuses CPU modules holding one), so a network on the CPU
  (gloo: the tests, CPU runs) gets :class:`CpuSyncBatchNorm2d`, which
  all-reduces the statistics itself.

Apply a mode after loading pretrained weights and moving the network to its
device, and before building the optimiser and the DDP wrapper: the layers are
replaced, though sync keeps the same parameter tensors.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from hrseg.errors import HrsegError

BN_MODES: tuple[str, ...] = ("train", "frozen", "sync")


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine values, stored as buffers under BatchNorm2d's names.

    ``train()`` leaves it in eval mode: a frozen layer behaves the same whatever
    mode its network is in.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.training = False

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> FrozenBatchNorm2d:
        if bn.running_mean is None or bn.running_var is None:
            raise HrsegError(f"--bn frozen: {bn!r} keeps no running statistics to freeze")
        frozen = cls(bn.num_features, bn.eps)
        with torch.no_grad():
            like = bn.running_mean
            frozen.to(device=like.device, dtype=like.dtype)
            if bn.affine:
                frozen.weight.copy_(bn.weight)
                frozen.bias.copy_(bn.bias)
            frozen.running_mean.copy_(bn.running_mean)
            frozen.running_var.copy_(bn.running_var)
            if bn.num_batches_tracked is not None:
                frozen.num_batches_tracked.copy_(bn.num_batches_tracked)
        return frozen

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        # training=False: normalise with the stored statistics and leave them alone
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


class _SumAcrossRanks(torch.autograd.Function):
    """All-reduce (sum) whose backward is also a sum across ranks.

    Every rank's loss depends on the global statistics, so the gradient reaching a
    rank's local sums is the sum of all ranks' gradients with respect to them.
    """

    @staticmethod
    def forward(ctx: Any, tensor: Tensor, group: Any) -> Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class CpuSyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch across CPU ranks (gloo).

    PyTorch's SyncBatchNorm refuses CPU tensors, and DDP refuses a CPU module that
    contains one, so this is a BatchNorm2d subclass. It computes the global mean
    first and then the global variance around it (two all-reduces, no
    cancellation), normalises with the biased variance and updates the running
    variance with the unbiased one, as BatchNorm does. Ranks may hold batches of
    different sizes. Outside training or torch.distributed it is plain BatchNorm2d.
    """

    def __init__(self, *args: Any, process_group: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d, process_group: Any = None) -> CpuSyncBatchNorm2d:
        sync = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, process_group=process_group)
        return _adopt(sync, bn)

    def _group(self) -> Any:
        return self.process_group if self.process_group is not None else dist.group.WORLD

    def forward(self, input: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        if dist.get_world_size(self._group()) == 1:
            return super().forward(input)
        if input.device.type != "cpu":
            raise RuntimeError(
                f"CpuSyncBatchNorm2d got a tensor on {input.device}: apply_bn_mode(..., 'sync') must run after "
                "the network is moved to its device, so that CUDA gets PyTorch's SyncBatchNorm"
            )
        self._check_input_dim(input)
        return self._sync_forward(input)

    def _sync_forward(self, input: Tensor) -> Tensor:
        group = self._group()
        x = input.float()  # statistics in float32 even under CPU autocast
        dims = (0, 2, 3)
        channels = x.shape[1]
        local_count = x.numel() // channels
        stacked = torch.cat([x.sum(dims), x.new_full((1,), float(local_count))])
        totals = _SumAcrossRanks.apply(stacked, group)
        count = totals[-1]
        mean = totals[:channels] / count
        centred = x - mean.view(1, -1, 1, 1)
        var = _SumAcrossRanks.apply((centred * centred).sum(dims), group) / count
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
                if self.momentum is None:
                    factor = 1.0 / float(self.num_batches_tracked)  # type: ignore[arg-type]
                else:
                    factor = self.momentum
                n = float(count)
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return y.to(input.dtype)


def _torch_sync(bn: nn.BatchNorm2d, process_group: Any) -> nn.SyncBatchNorm:
    sync = nn.SyncBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, process_group)
    return _adopt(sync, bn)


_Norm = TypeVar("_Norm", bound=nn.Module)


def _adopt(new: _Norm, bn: nn.BatchNorm2d) -> _Norm:
    """``new`` with ``bn``'s own parameter and buffer tensors (an optimiser built before still sees them)."""
    if bn.affine:
        new.weight = bn.weight
        new.bias = bn.bias
    new.running_mean = bn.running_mean
    new.running_var = bn.running_var
    new.num_batches_tracked = bn.num_batches_tracked
    new.train(bn.training)
    return new


def _replace(module: nn.Module, make: Callable[[nn.BatchNorm2d], nn.Module]) -> nn.Module:
    """Depth-first replacement of every plain BatchNorm2d; frozen and synchronised layers stay."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CpuSyncBatchNorm2d):
        return make(module)
    for name, child in module.named_children():
        new = _replace(child, make)
        if new is not child:
            setattr(module, name, new)
    return module


def count_batchnorm(module: nn.Module) -> int:
    """BatchNorm2d layers of any kind (plain, frozen, synchronised) inside ``module``."""
    return sum(isinstance(m, (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d)) for m in module.modules())


def apply_bn_mode(module: nn.Module, mode: str, process_group: Any = None) -> nn.Module:
    """``module`` with its BatchNorm2d layers set to ``mode``; use the returned module.

    ``train`` changes nothing. ``frozen`` and ``sync`` replace the layers in place
    (the root itself, if it is a BatchNorm2d, is returned new). A network without
    batch norm is refused for those modes, since asking for them is a mistake.
    ``sync`` needs an initialised torch.distributed process group (torchrun) and
    picks the implementation by the device the layers are on now, so call it
    after ``.to(device)``; ``process_group`` limits synchronisation to a sub-group.
    """
    if mode not in BN_MODES:
        raise HrsegError(f"--bn: unknown mode {mode!r} (choose from {', '.join(BN_MODES)})")
    if mode == "train":
        return module
    if count_batchnorm(module) == 0:
        raise HrsegError(f"--bn {mode}: {type(module).__name__} has no batch-norm layers; use --bn train")
    if mode == "sync" and not (dist.is_available() and dist.is_initialized()):
        raise HrsegError(
            "--bn sync: synchronised batch norm needs a torch.distributed process group "
            "(launch with torchrun --nproc_per_node=N); in one process use --bn train or --bn frozen"
        )
    if mode == "frozen":
        return _replace(module, FrozenBatchNorm2d.from_batchnorm)
    if _device_of_batchnorm(module).type == "cpu":
        return _replace(module, lambda bn: CpuSyncBatchNorm2d.from_batchnorm(bn, process_group))
    return _replace(module, lambda bn: _torch_sync(bn, process_group))


def _device_of_batchnorm(module: nn.Module) -> torch.device:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            for tensor in (*m.parameters(recurse=False), *m.buffers(recurse=False)):
                return tensor.device
    return torch.device("cpu")


def backbone_has_batchnorm(arch: str) -> bool:
    """Whether the segmenter's ImageNet backbone holds batch norm (asked of a 1/16-width copy: ~20 ms)."""
    from hrseg.models.registry import SEGMENTERS

    return _backbone_has_batchnorm(SEGMENTERS.check(arch))


@functools.cache
def _backbone_has_batchnorm(arch: str) -> bool:
    from hrseg.models.registry import SEGMENTERS

    return count_batchnorm(SEGMENTERS[arch].build_backbone(0.0625)) > 0


def check_bn_setting(arch: str, bn: str, pretrained: str, width: float) -> None:
    """Batch-norm modes need batch norm; frozen needs statistics worth freezing (errors name config keys).

    ``frozen`` on a full-width network without a weight file would freeze mean 0 /
    variance 1, i.e. train a deep ResNet with no normalisation at all: refused.
    A reduced width has no ImageNet weights to load, so there the mode can only be
    exercised for its mechanics (tests, benchmarks); the trainer warns instead.
    """
    if bn not in BN_MODES:
        raise HrsegError(f"model.bn: must be one of {', '.join(BN_MODES)}, got {bn!r}")
    if bn == "train":
        return
    if not backbone_has_batchnorm(arch):
        raise HrsegError(f"model.bn {bn}: {arch} has no batch-norm layers; use model.bn train")
    if bn == "frozen" and pretrained == "none" and width == 1.0:
        raise HrsegError("model.bn frozen: needs model.pretrained imagenet or a weight file (with model.pretrained "
                         "none the frozen layers keep mean 0 / variance 1: no normalisation); from scratch use "
                         "model.bn train or model.bn sync")
