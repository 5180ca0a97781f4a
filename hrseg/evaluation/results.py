"""What an evaluation returns: plain dataclasses that print as tables and save as JSON."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hrseg.data.labels import CLASS_NAMES
from hrseg.evaluation.metrics import ConfusionMatrix, iou_table

ALIGN_CORNERS = False  # logits -> full label resolution: bilinear, align_corners=False (pixel-centre aligned)


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


@dataclass
class EvalReport:
    """Segmentation quality on one split (docs/method.md, "Evaluation")."""

    dataset: str
    split: str
    classes: int
    num_images: int
    miou: float
    pixel_accuracy: float
    iou: dict[str, float | None]
    confusion_matrix: list[list[int]]
    run: str | None = None
    checkpoint: str | None = None
    iteration: int | None = None  # the scored checkpoint's iteration
    predictions: str | None = None
    source: str = "model"  # "model" (a run evaluated) or "folder" (PNG predictions scored)
    align_corners: bool = ALIGN_CORNERS

    @classmethod
    def from_confusion(cls, cm: ConfusionMatrix, *, dataset: str, split: str, classes: int,
                       num_images: int, **extra: Any) -> "EvalReport":
        iou = cm.iou()
        return cls(
            dataset=dataset, split=split, classes=classes, num_images=num_images,
            miou=cm.miou(classes), pixel_accuracy=cm.pixel_accuracy(),
            iou=iou_table(iou, classes), confusion_matrix=cm.matrix.tolist(), **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "segmentation",
            "run": self.run,
            "checkpoint": self.checkpoint,
            "iteration": self.iteration,
            "dataset": self.dataset,
            "split": self.split,
            "classes": self.classes,
            "num_images": self.num_images,
            "miou": _num(self.miou),
            "pixel_accuracy": _num(self.pixel_accuracy),
            "iou": self.iou,
            "upsampling": {"mode": "bilinear", "align_corners": self.align_corners},
            "predictions": self.predictions,
            "source": self.source,
            "confusion_matrix": self.confusion_matrix,
            "confusion_matrix_axes": {
                "rows": "ground-truth trainId 0..18",
                "columns": "predicted trainId 0..18, then 'none of them'",
                "class_names": list(CLASS_NAMES),
            },
        }


@dataclass
class LevelQuality:
    """How well one weight map separates realistic from deviating source pixels."""

    auc: float
    mean_realistic: float
    mean_deviating: float

    def to_dict(self) -> dict[str, float | None]:
        return {"auc": _num(self.auc), "mean_realistic": _num(self.mean_realistic),
                "mean_deviating": _num(self.mean_deviating)}


@dataclass
class ClassQuality:
    """How the weights rank realistic against deviating pixels *within* one source class.

    Within a class a per-class prior ranks nothing, so ``auc`` (combined weight)
    and ``level_auc`` (each level's score) are what W adds beyond "trucks look
    real"; NaN where the class has only one kind of pixel.
    """

    share: float  # the class's share of the known source pixels
    realistic_share: float
    auc: float
    mean_realistic: float
    mean_deviating: float
    level_auc: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"share": self.share, "realistic_share": self.realistic_share, "auc": _num(self.auc),
                "mean_weight_realistic": _num(self.mean_realistic), "mean_weight_deviating": _num(self.mean_deviating),
                "levels": {k: _num(v) for k, v in self.level_auc.items()}}


def within_class_mean(per_class: dict[str, ClassQuality], level: str | None = None) -> float:
    """Within-class AUC averaged over classes by pixel share (of the combined weight, or of one level)."""
    pairs = [(q.share, q.auc if level is None else q.level_auc.get(level, math.nan)) for q in per_class.values()]
    pairs = [(s, a) for s, a in pairs if not math.isnan(a)]
    total = sum(s for s, _ in pairs)
    return sum(s * a for s, a in pairs) / total if total else math.nan


@dataclass
class WeightingReport:
    """Weighting quality against the realism mask (procedural scenes only)."""

    dataset: str
    split: str
    scheme: str
    num_images: int
    realistic_pixels: int
    deviating_pixels: int
    combined: LevelQuality
    levels: dict[str, LevelQuality] = field(default_factory=dict)
    per_class: dict[str, ClassQuality] = field(default_factory=dict)  # by class name
    run: str | None = None
    checkpoint: str | None = None
    iteration: int | None = None

    @property
    def within_class_auc(self) -> float:
        return within_class_mean(self.per_class)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "weighting",
            "run": self.run,
            "checkpoint": self.checkpoint,
            "iteration": self.iteration,
            "dataset": self.dataset,
            "split": self.split,
            "scheme": self.scheme,
            "num_images": self.num_images,
            "realistic_pixels": self.realistic_pixels,
            "deviating_pixels": self.deviating_pixels,
            "mean_weight_realistic": _num(self.combined.mean_realistic),
            "mean_weight_deviating": _num(self.combined.mean_deviating),
            "auc": _num(self.combined.auc),
            "levels": {k: v.to_dict() for k, v in self.levels.items()},
            "within_class_auc": _num(self.within_class_auc),
            "within_class_auc_levels": {k: _num(within_class_mean(self.per_class, k)) for k in self.levels},
            "per_class": {k: v.to_dict() for k, v in self.per_class.items()},
        }

