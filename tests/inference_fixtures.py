"""Toy segmenters and tiny images for the inference tests (no training, no weights to download)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from hrseg.data.augment import IMAGENET_MEAN, IMAGENET_STD
from hrseg.data.labels import NUM_CLASSES, PALETTE
from hrseg.models.common import SegOutput


class PaletteModel(nn.Module):
    """Nearest palette colour as a 1x1 convolution: a pixel painted in class c's colour scores c highest.

    -|x - mu_c|^2 = 2 mu_c.x - |mu_c|^2 - |x|^2, and the last term is the same
    for every class, so a linear layer per pixel is an exact nearest-colour rule
    (in normalised space). Translation-equivariant and flip-symmetric.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, plain: bool = False) -> None:
        super().__init__()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3)
        std = torch.tensor(IMAGENET_STD).view(1, 3)
        mu = (torch.from_numpy(PALETTE[:num_classes].astype(np.float32)) / 255.0 - mean) / std
        self.conv = nn.Conv2d(3, num_classes, kernel_size=1)
        with torch.no_grad():
            self.conv.weight.copy_((2 * mu).view(num_classes, 3, 1, 1))
            self.conv.bias.copy_(-(mu**2).sum(dim=1))
        self.plain = plain
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> SegOutput | torch.Tensor:
        self.seen.append(tuple(x.shape))
        logits = self.conv(x)
        return logits if self.plain else SegOutput(logits, x[:, :1])


class ContextModel(nn.Module):
    """Neither translation-equivariant nor flip-symmetric: a 3x3 convolution plus a global-average term."""

    def __init__(self, num_classes: int = 5, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, num_classes, kernel_size=3, padding=1)
        self.glob = nn.Linear(3, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x: torch.Tensor) -> SegOutput:
        ctx = self.glob(x.mean(dim=(2, 3)))[:, :, None, None]
        return SegOutput(self.conv(x) + ctx, x)


def painted_image(train_ids: np.ndarray) -> np.ndarray:
    """RGB uint8 image whose pixels are the palette colours of ``train_ids``."""
    return np.ascontiguousarray(PALETTE[train_ids])


def block_ids(h: int, w: int, seed: int = 0, block: int = 8) -> np.ndarray:
    """A blocky trainId map (H, W) with blocks of ``block`` pixels, every class possible."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, NUM_CLASSES, size=(-(-h // block), -(-w // block))).astype(np.uint8)
    return np.kron(small, np.ones((block, block), np.uint8))[:h, :w]


def write_image(path: Path, rgb: np.ndarray) -> Path:
    """Writes an RGB array in the format the suffix names (PNG, JPEG, BMP, TIFF, WebP)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_WEBP_QUALITY, 101] if path.suffix.lower() == ".webp" else []  # >100: lossless
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1]), params)
    return path


def write_video(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    """RGB frames -> an mp4v video, the way a user's camera file would arrive."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened()
    for f in frames:
        writer.write(np.ascontiguousarray(f[:, :, ::-1]))
    writer.release()
    return path
