"""Which device and which autocast dtype: the bottom layer every other one may use.

Training, evaluation, inference and visualisation all pick a device and a
mixed-precision dtype the same way, so the rule lives below all of them.
"""

from __future__ import annotations

import torch

from hrseg.errors import HrsegError


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; one line when unusable."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HrsegError(f"--device: not a device: {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HrsegError(f"--device {name}: CUDA is not available on this machine")
    return device


def autocast_dtype(device: torch.device) -> torch.dtype:
    """bf16 where the GPU has it (no loss scaling needed), else fp16."""
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def resolve_amp(device: torch.device, amp: bool | None) -> torch.dtype | None:
    """Autocast dtype for inference: on by default on CUDA; None (full precision) on the CPU or when off."""
    if amp is None:
        amp = device.type == "cuda"
    if not amp:
        return None
    if device.type != "cuda":
        raise HrsegError(f"--amp: mixed precision needs a CUDA device, not {device}")
    return autocast_dtype(device)
