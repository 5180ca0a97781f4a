"""Validation while training: what the loop asks of a validator, and which snapshot is the best.

The loop does not know how a segmenter is scored (that is evaluation's job,
a layer above training): it is handed a :class:`Validator`, a callable that
scores S in eval mode on every rank and returns one :class:`ValResult`, the
same on every rank (``hrseg.evaluation.validation.SplitValidator`` shards the
images over the ranks and sums the confusion matrices). The loop decides
when to validate, keeps every random source untouched by it (so a run with
validation trains bit for bit the same weights as one without) and keeps
``best.pt`` by val mIoU; the best so far is part of the resumable state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import nn

from hrseg.training.config import TrainConfig
from hrseg.training.distributed import DistInfo


@dataclass
class ValResult:
    """One validation: mIoU (a fraction), per-class IoU, what was scored and how long it took."""

    miou: float
    iou: dict[str, float | None] = field(default_factory=dict)
    split: str = "val"
    images: int = 0
    seconds: float = 0.0

    def record(self, iteration: int, best: bool) -> dict[str, Any]:
        """The line metrics.jsonl gets (``kind: "val"``, beside the per-iteration training lines)."""
        return {"iter": iteration, "kind": "val", "val_split": self.split, "val_images": self.images,
                "val_miou": None if math.isnan(self.miou) else self.miou, "val_iou": self.iou,
                "val_seconds": self.seconds, "val_best": best}


class Validator(Protocol):
    """Scores a segmenter (already in eval mode); called on every rank, returns the same result on each."""

    def __call__(self, segmenter: nn.Module, dist: DistInfo) -> ValResult: ...


def validation_due(cfg: TrainConfig, iteration: int) -> bool:
    """Every ``run.val_every`` iterations and at the last one (so the final weights are always compared)."""
    every = cfg.run.val_every
    return every > 0 and (iteration % every == 0 or iteration == cfg.optim.iters)


def improves(result: ValResult, best: dict[str, Any] | None) -> bool:
    """Strictly better than the best so far (the earliest of equal scores stays best); NaN never is."""
    if math.isnan(result.miou):
        return False
    return best is None or result.miou > float(best["miou"])
