"""Building what a run trains: networks, optimisers, LR schedules, device and precision.

Pure functions of a (resolved) TrainConfig, so training, resuming and loading a
run for inference build exactly the same modules.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from hrseg.console import console
from hrseg.device import autocast_dtype
from hrseg.errors import HrsegError
from hrseg.models import Discriminator, Generator, HierarchicalWeighting, build_segmenter
from hrseg.models.batchnorm import apply_bn_mode
from hrseg.training.config import TrainConfig
from hrseg.training.schemes import SCHEMES, phase_at


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Training's autocast dtype (``run.amp``): the device's (:func:`hrseg.device.autocast_dtype`); never on the CPU."""
    if not cfg.run.amp or device.type != "cuda":
        return None
    return autocast_dtype(device)


def build_segmenter_of(cfg: TrainConfig, pretrained: str | None = None) -> nn.Module:
    m = cfg.model
    return build_segmenter(m.arch, num_classes=m.num_classes, width=m.width,
                           pretrained=m.pretrained if pretrained is None else pretrained, aux=m.aux)


def apply_bn(cfg: TrainConfig, seg: nn.Module, warn: bool = True) -> nn.Module:
    """``seg`` with ``model.bn`` applied; call after ``.to(device)`` and before building optimisers.

    ``frozen`` freezes the backbone only: its batch norms hold ImageNet statistics,
    while a head's (PSPNet's pyramid and bottleneck) start untrained and must learn
    theirs. ``sync`` converts every batch norm of S, and needs torchrun's process
    group (a one-line error without it).
    """
    mode = cfg.model.bn
    if mode == "frozen":
        backbone = getattr(seg, "backbone", None)
        if not isinstance(backbone, nn.Module):
            raise HrsegError(f"--bn frozen: {cfg.model.arch} has no ImageNet backbone to freeze; use --bn train")
        if warn and cfg.model.pretrained == "none":
            console.print(f"[yellow]--bn frozen with --pretrained none (width {cfg.model.width:g}): batch norm is "
                          "frozen at mean 0 / variance 1, i.e. the backbone trains unnormalised[/]")
        seg.backbone = apply_bn_mode(backbone, "frozen")
        return seg
    return apply_bn_mode(seg, mode)


def build_weighting(cfg: TrainConfig) -> HierarchicalWeighting:
    w = cfg.weighting
    if w.network is None:
        raise HrsegError(f"scheme {cfg.scheme!r} has no weighting network (weighting.network is unset)")
    return HierarchicalWeighting(w, num_classes=cfg.model.num_classes)


def build_networks(cfg: TrainConfig) -> dict[str, nn.Module]:
    """S, and W / G / D where the scheme uses them (on the CPU, freshly initialised)."""
    seg = build_segmenter_of(cfg)
    nets: dict[str, nn.Module] = {"segmenter": seg}
    if SCHEMES[cfg.scheme].weighting is not None:
        nets["weighting"] = build_weighting(cfg)
    if cfg.gan.enabled:
        nets["generator"] = Generator(in_channels=seg.feature_channels, stride=seg.feature_stride, width=cfg.gan.width)
        nets["discriminator"] = Discriminator(num_classes=cfg.model.num_classes, width=cfg.gan.width)
    return nets


def weighting_param_groups(cfg: TrainConfig, w: nn.Module) -> list[dict]:
    """W's domain classifiers at ``weighting.lr``; the agreement level's class classifier at ``weighting.agreement_lr``."""
    trunks = getattr(w, "trunks", {})
    agree = list(trunks["agreement"].parameters()) if "agreement" in trunks else []
    ids = {id(p) for p in agree}
    groups: list[dict] = [{"params": [p for p in w.parameters() if id(p) not in ids]}]
    if agree:
        groups.append({"params": agree, "lr": cfg.weighting.agreement_lr})
    return groups


def poly_factor(cfg: TrainConfig) -> Callable[[int], float]:
    """The poly LR factor at a step; it restarts at each phase switch (finetune's target phase)
    and at each of ``optim.restarts`` (a run extended with a warm restart)."""
    power = cfg.optim.poly_power

    def factor(step: int) -> float:
        _, (start, end) = phase_at(cfg, min(step, cfg.optim.iters - 1))
        start = max([start, *(r for r in cfg.optim.restarts if r <= step)])
        return max(0.0, 1.0 - (step - start) / max(1, end - start)) ** power

    return factor


def build_optimizers(cfg: TrainConfig, nets: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
    """SGD for S (the paper's FCN/PSPNet recipe); Adam for W, G and D (their GAN-style recipes)."""
    opts: dict[str, torch.optim.Optimizer] = {
        "segmenter": torch.optim.SGD(
            nets["segmenter"].parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
        )
    }
    if "weighting" in nets:
        opts["weighting"] = torch.optim.Adam(weighting_param_groups(cfg, nets["weighting"]), lr=cfg.weighting.lr,
                                             betas=tuple(cfg.weighting.betas))
    for name in ("generator", "discriminator"):
        if name in nets:
            opts[name] = torch.optim.Adam(nets[name].parameters(), lr=cfg.gan.lr, betas=tuple(cfg.gan.betas))
    return opts


def build_schedulers(cfg: TrainConfig, opts: dict[str, torch.optim.Optimizer]) -> dict[str, torch.optim.lr_scheduler.LambdaLR]:
    return {k: torch.optim.lr_scheduler.LambdaLR(o, poly_factor(cfg)) for k, o in opts.items()}
