"""Batch augmentation on tensors (random scale, crop, flip) and ImageNet normalisation.

Augmenting whole batches with one ``grid_sample`` call keeps the data loader
light (it only reads uint8 arrays) and lets the work run on whatever device
the batch is on. Random numbers come from a CPU ``torch.Generator`` so the
same seed gives the same crops on CPU and GPU. Scale, crop and flip are one
affine sampling grid per sample: images are sampled bilinearly, labels and
realism masks by nearest neighbour, and areas outside the source image are
padded with the mean colour (0 after normalisation) and the ignore label.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from hrseg.data.labels import IGNORE_INDEX

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    return mean, std


def normalize(image: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (B,3,H,W) or (3,H,W), 0..255 -> float32 in torchvision's normalised space."""
    squeeze = image.dim() == 3
    x = image.unsqueeze(0) if squeeze else image
    mean, std = _stats(x)
    out = (x.float() / 255.0 - mean) / std
    return out.squeeze(0) if squeeze else out


def denormalize(image: torch.Tensor) -> torch.Tensor:
    """Normalised float image -> float RGB in [0, 1] (clamped), for display."""
    squeeze = image.dim() == 3
    x = image.unsqueeze(0) if squeeze else image
    mean, std = _stats(x)
    out = (x.float() * std + mean).clamp_(0.0, 1.0)
    return out.squeeze(0) if squeeze else out


def _draw(
    batch: int, size: tuple[int, int], crop: tuple[int, int], scale: tuple[float, float], flip: bool,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample scale, integer crop offsets (in scaled pixels) and flip flags, drawn on the CPU."""
    w, h = size
    cw, ch = crop
    u = torch.rand(batch, 4, generator=generator, dtype=torch.float64)
    s = scale[0] + (scale[1] - scale[0]) * u[:, 0]

    def offset(extent: torch.Tensor, want: int, r: torch.Tensor) -> torch.Tensor:
        slack = torch.floor(extent - want)  # negative: the crop is larger, pad around the image
        lo = torch.minimum(slack, torch.zeros_like(slack))
        hi = torch.maximum(slack, torch.zeros_like(slack))
        return torch.minimum(lo + torch.floor(r * (hi - lo + 1)), hi)

    x0 = offset(w * s, cw, u[:, 1])
    y0 = offset(h * s, ch, u[:, 2])
    flips = (u[:, 3] < 0.5) if flip else torch.zeros(batch, dtype=torch.bool)
    return s, x0, y0, flips


def _grid(
    size: tuple[int, int], crop: tuple[int, int], s: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor,
    flips: torch.Tensor, device: torch.device,
) -> torch.Tensor:
    """Sampling grid (B, ch, cw, 2) in grid_sample's align_corners=False coordinates."""
    w, h = size
    cw, ch = crop
    j = torch.arange(cw, dtype=torch.float64)
    i = torch.arange(ch, dtype=torch.float64)
    jj = torch.where(flips[:, None], (cw - 1) - j[None, :], j[None, :])
    xs = (x0[:, None] + jj + 0.5) / s[:, None]  # pixel units of the original image
    ys = (y0[:, None] + i[None, :] + 0.5) / s[:, None]
    gx = (2.0 * xs / w - 1.0)[:, None, :].expand(-1, ch, -1)
    gy = (2.0 * ys / h - 1.0)[:, :, None].expand(-1, -1, cw)
    return torch.stack([gx, gy], dim=-1).to(device=device, dtype=torch.float32)


def _sample_nearest(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour sampling of an integer map (B,H,W), outside -> ignore label."""
    shifted = values.float().unsqueeze(1) + 1.0  # 0 marks "outside" after zero padding
    out = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    out = out.squeeze(1).round().long() - 1
    return torch.where(out < 0, torch.full_like(out, IGNORE_INDEX), out)


def augment_batch(
    batch: dict[str, Any],
    crop: tuple[int, int] | None = None,
    scale: tuple[float, float] | None = (0.75, 1.25),
    flip: bool = True,
    generator: torch.Generator | None = None,
) -> dict[str, Any]:
    """Randomly scale, crop (W, H) and flip a batch; normalise the images.

    In: ``{"image": uint8 (B,3,H,W), ["label": uint8 (B,H,W)], ["realism": uint8 (B,H,W)]}``
    (a float image is taken as already normalised). Out: the same keys on the
    same device, ``image`` float32 normalised, ``label`` int64, ``realism``
    uint8; other keys are passed through untouched. ``crop=None`` keeps the
    input size; ``scale=None`` and ``flip=False`` with no crop is only
    normalisation and the label cast.
    """
    image = batch["image"]
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"augment_batch expects images (B,3,H,W), got {tuple(image.shape)}")
    b, _, h, w = image.shape
    x = normalize(image) if image.dtype == torch.uint8 else image.float()
    crop_wh = (w, h) if crop is None else (int(crop[0]), int(crop[1]))
    scale_rng = (1.0, 1.0) if scale is None else (float(scale[0]), float(scale[1]))
    if scale_rng[0] <= 0 or scale_rng[1] < scale_rng[0]:
        raise ValueError(f"scale range must be 0 < lo <= hi, got {scale_rng}")
    out = dict(batch)
    identity = crop_wh == (w, h) and scale_rng == (1.0, 1.0) and not flip
    if identity:
        out["image"] = x
        if "label" in batch:
            out["label"] = batch["label"].long()
        return out
    s, x0, y0, flips = _draw(b, (w, h), crop_wh, scale_rng, flip, generator)
    grid = _grid((w, h), crop_wh, s, x0, y0, flips, image.device)
    out["image"] = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if "label" in batch:  # unlabelled target images come without one
        out["label"] = _sample_nearest(batch["label"], grid)
    if "realism" in batch and batch["realism"] is not None:
        out["realism"] = _sample_nearest(batch["realism"], grid).to(torch.uint8)
    return out
