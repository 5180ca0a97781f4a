"""Cross-domain mixing (ClassMix, as DACS uses it) and the student's strong augmentation.

Self-training shows the student a *mixed* image: half of the classes present
in a source image are cut out of it, with their labels, and pasted onto an
unlabelled target image whose other pixels carry the teacher's pseudo-labels.
Both crops have the training crop size, so the paste is pixel-aligned and
every pasted pixel keeps the source weight it has in its own image (W's, the
oracle's mask, or 1). The student's input is then colour-jittered and blurred;
labels are untouched by that.

Every random draw comes from a CPU ``torch.Generator`` the run checkpoints, so
mixing is reproducible and resumes exactly.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from hrseg.data.augment import denormalize, normalize
from hrseg.data.labels import IGNORE_INDEX
from hrseg.registry import Registry


def classmix_mask(labels: Tensor, generator: torch.Generator) -> Tensor:
    """(B, H, W) bool: for each source label map, the pixels of a random half of its classes (rounded up).

    Ignored pixels are never pasted; a label map with no valid pixel pastes nothing.
    """
    masks = []
    for lab in labels:
        classes = torch.unique(lab)
        classes = classes[classes != IGNORE_INDEX]
        n = int(classes.numel())
        order = torch.randperm(n, generator=generator)[: (n + 1) // 2] if n else torch.zeros(0, dtype=torch.long)
        chosen = classes[order.to(classes.device)]
        masks.append(torch.isin(lab, chosen))
    return torch.stack(masks)


def _no_mix(labels: Tensor, generator: torch.Generator) -> Tensor:
    return torch.zeros_like(labels, dtype=torch.bool)


#: name -> (source labels (B, H, W), generator) -> paste mask (B, H, W); "none": the student sees the target alone
MIXES: Registry[Callable[[Tensor, torch.Generator], Tensor]] = Registry("mixing", "unlabelled.mix")
MIXES.add("classmix", classmix_mask)
MIXES.add("none", _no_mix)


def paste(mask: Tensor, source: Tensor, target: Tensor) -> Tensor:
    """``source`` where ``mask``, ``target`` elsewhere; images (B, C, H, W) or per-pixel maps (B, H, W)."""
    m = mask if source.dim() == mask.dim() else mask.unsqueeze(1)
    return torch.where(m, source, target)


def _gray(x: Tensor) -> Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def _rotate_hue(x: Tensor, turn: float) -> Tensor:
    """Rotate the chroma plane of YIQ by ``turn`` of a full circle (kornia's hue factor)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]],
                          dtype=x.dtype, device=x.device)
    c, s = math.cos(2 * math.pi * turn), math.sin(2 * math.pi * turn)
    rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=x.dtype, device=x.device)
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq
    return torch.einsum("ij,bjhw->bihw", m, x)


def colour_jitter(image: Tensor, strength: float, prob: float, generator: torch.Generator) -> Tensor:
    """Brightness, contrast, saturation and hue, each factor in [1 - s, 1 + s] (hue: ±s turns), per image.

    Works on normalised images (un-normalises, jitters in [0, 1], normalises
    back). Each image draws the same five numbers whether or not it is
    jittered, so the stream of random numbers does not depend on the outcome.
    """
    if strength <= 0:
        return image
    out = []
    for i in range(image.shape[0]):
        u = torch.rand(5, generator=generator, dtype=torch.float64).tolist()
        x = denormalize(image[i : i + 1])
        if u[0] < prob:
            b, c, s = (1 - strength + 2 * strength * v for v in u[1:4])
            x = (x * b).clamp(0, 1)
            x = ((x - _gray(x).mean()) * c + _gray(x).mean()).clamp(0, 1)
            x = ((x - _gray(x)) * s + _gray(x)).clamp(0, 1)
            x = _rotate_hue(x, strength * (2 * u[4] - 1)).clamp(0, 1)
            out.append(_renormalize(x))
        else:
            out.append(image[i : i + 1])
    return torch.cat(out)


def _renormalize(x01: Tensor) -> Tensor:
    """[0, 1] RGB -> the normalised input space (``normalize`` takes 0..255)."""
    return normalize(x01 * 255.0)


def gaussian_blur(image: Tensor, generator: torch.Generator, prob: float = 0.5) -> Tensor:
    """DACS's blur: with probability ``prob`` a Gaussian of sigma in [0.15, 1.15], kernel about 10 % of each side."""
    out = []
    _, _, h, w = image.shape
    for i in range(image.shape[0]):
        u = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        if u[0] >= prob:
            out.append(image[i : i + 1])
            continue
        sigma = 0.15 + u[1]
        x = image[i : i + 1]
        for dim, side in ((2, h), (3, w)):
            k = int(math.ceil(0.1 * side)) | 1  # odd
            if k < 3:
                continue
            t = torch.arange(k, dtype=x.dtype, device=x.device) - (k - 1) / 2
            g = torch.exp(-0.5 * (t / sigma) ** 2)
            g = g / g.sum()
            shape = (1, 1, k, 1) if dim == 2 else (1, 1, 1, k)
            pad = (0, 0, k // 2, k // 2) if dim == 2 else (k // 2, k // 2, 0, 0)
            x = F.conv2d(F.pad(x, pad, mode="replicate"), g.view(shape).expand(3, 1, *shape[2:]), groups=3)
        out.append(x)
    return torch.cat(out)


def strong_augment(image: Tensor, jitter: float, jitter_prob: float, blur: bool,
                   generator: torch.Generator) -> Tensor:
    """What the student sees of a mixed image: colour jitter, then blur (labels unchanged)."""
    x = colour_jitter(image, jitter, jitter_prob, generator)
    return gaussian_blur(x, generator) if blur else x
