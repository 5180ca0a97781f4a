"""Segmentation and weighting-quality metrics, computed as docs/method.md ("Evaluation") describes.

One confusion matrix is accumulated over a whole split (never a mean of
per-image scores), so a class that is rare in most images is not swamped by
the images where it is absent. The IoU definition matches cityscapesScripts'
``evalPixelLevelSemanticLabeling``: pixels whose ground truth is ignored count
nowhere; a prediction outside the evaluated classes is a false negative of the
ground-truth class and a false positive of nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from hrseg.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, eval_classes

ArrayLike = np.ndarray | torch.Tensor


def _as_long_tensor(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return x.reshape(-1).long()


def confusion_matrix(pred: ArrayLike, target: ArrayLike, num_classes: int = NUM_CLASSES,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """(C, C+1) int64 counts: rows ground truth, columns prediction, last column "no class".

    The extra column keeps pixels predicted as something outside 0..C-1 (ignore,
    or a labelId the protocol does not evaluate) so they still count as misses.
    """
    p = _as_long_tensor(pred)
    t = _as_long_tensor(target).to(p.device)
    if p.numel() != t.numel():
        raise ValueError(f"prediction has {p.numel()} pixels, ground truth {t.numel()}")
    valid = (t >= 0) & (t < num_classes) & (t != ignore_index)
    p = p[valid]
    t = t[valid]
    p = torch.where((p >= 0) & (p < num_classes), p, torch.full_like(p, num_classes))
    counts = torch.bincount(t * (num_classes + 1) + p, minlength=num_classes * (num_classes + 1))
    return counts.reshape(num_classes, num_classes + 1).cpu().numpy().astype(np.int64)


@dataclass
class ConfusionMatrix:
    """A confusion matrix accumulated image by image over a split."""

    num_classes: int = NUM_CLASSES
    ignore_index: int = IGNORE_INDEX
    matrix: np.ndarray = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.matrix is None:
            self.matrix = np.zeros((self.num_classes, self.num_classes + 1), dtype=np.int64)
        elif self.matrix.shape == (self.num_classes, self.num_classes):
            self.matrix = np.concatenate([self.matrix, np.zeros((self.num_classes, 1), np.int64)], axis=1)
        if self.matrix.shape != (self.num_classes, self.num_classes + 1):
            raise ValueError(f"confusion matrix of shape {self.matrix.shape} does not fit {self.num_classes} classes")

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add one image (or batch); shapes must match exactly, as on the official server."""
        if tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"prediction shape {tuple(pred.shape)} != ground-truth shape {tuple(target.shape)}")
        self.matrix += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    @property
    def tp(self) -> np.ndarray:
        return np.diag(self.matrix[:, : self.num_classes]).copy()

    @property
    def fn(self) -> np.ndarray:
        return self.matrix.sum(axis=1) - self.tp

    @property
    def fp(self) -> np.ndarray:
        return self.matrix[:, : self.num_classes].sum(axis=0) - self.tp

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both prediction and ground truth."""
        return per_class_iou(self.matrix)

    def miou(self, classes: Sequence[int] | int = NUM_CLASSES) -> float:
        return mean_iou(self.iou(), classes)

    def pixel_accuracy(self) -> float:
        total = int(self.matrix.sum())
        return float(self.tp.sum()) / total if total else math.nan

    def to_dict(self) -> dict[str, list[list[int]]]:
        return {"confusion_matrix": self.matrix.tolist()}


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
    """IoU = tp / (tp + fp + fn) per class of a (C, C) or (C, C+1) matrix."""
    c = matrix.shape[0]
    tp = np.diag(matrix[:, :c]).astype(np.float64)
    fn = matrix.sum(axis=1) - tp
    fp = matrix[:, :c].sum(axis=0) - tp
    denom = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def mean_iou(iou: np.ndarray, classes: Sequence[int] | int = NUM_CLASSES) -> float:
    """NaN-aware mean over an evaluated subset (19, 16, 13 or an explicit list of trainIds)."""
    subset = eval_classes(classes) if isinstance(classes, int) else tuple(classes)
    values = np.asarray(iou, dtype=np.float64)[list(subset)]
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else math.nan


def iou_table(iou: np.ndarray, classes: Sequence[int] | int = NUM_CLASSES) -> dict[str, float | None]:
    """Class name -> IoU (None for NaN, so the dict is valid JSON)."""
    subset = eval_classes(classes) if isinstance(classes, int) else tuple(classes)
    return {CLASS_NAMES[c]: (None if math.isnan(iou[c]) else float(iou[c])) for c in subset}


def roc_auc(scores: ArrayLike, positives: ArrayLike) -> float:
    """Area under the ROC curve via the Mann-Whitney rank statistic.

    Tied scores get their average rank, which is what makes a constant scorer
    come out at exactly 0.5 (a weighting that collapsed to one value selects
    nothing). NaN when one of the two groups is empty.
    """
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    y = positives.detach().cpu().numpy() if isinstance(positives, torch.Tensor) else np.asarray(positives)
    s = s.reshape(-1).astype(np.float64)
    y = y.reshape(-1).astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # average rank (1-based) of each run of equal scores
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [s.size]])
    avg_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(avg_rank, ends - starts)
    rank_sum = ranks[y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class AucAccumulator:
    """Collects (score, is-positive) pairs image by image for one ROC AUC over a split.

    ``max_per_image`` caps memory on large splits by keeping a seeded random
    subset of each image's pixels; None keeps every pixel (exact AUC).
    """

    max_per_image: int | None = None
    seed: int = 0
    _scores: list[np.ndarray] = field(default_factory=list)
    _labels: list[np.ndarray] = field(default_factory=list)
    _rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def update(self, scores: ArrayLike, positives: ArrayLike, valid: ArrayLike | None = None) -> None:
        s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
        y = positives.detach().cpu().numpy() if isinstance(positives, torch.Tensor) else np.asarray(positives)
        s = s.reshape(-1).astype(np.float32)
        y = y.reshape(-1).astype(bool)
        if valid is not None:
            v = valid.detach().cpu().numpy() if isinstance(valid, torch.Tensor) else np.asarray(valid)
            keep = v.reshape(-1).astype(bool)
            s, y = s[keep], y[keep]
        if self.max_per_image is not None and s.size > self.max_per_image:
            idx = self._rng.choice(s.size, size=self.max_per_image, replace=False)
            s, y = s[idx], y[idx]
        self._scores.append(s)
        self._labels.append(y)

    def compute(self) -> float:
        if not self._scores:
            return math.nan
        return roc_auc(np.concatenate(self._scores), np.concatenate(self._labels))

    @property
    def count(self) -> int:
        return int(sum(s.size for s in self._scores))
