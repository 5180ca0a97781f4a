"""Validation while training, from the evaluation side: the validator the trainer is handed.

Training may not import evaluation (the layer order in docs/architecture.md),
so :class:`SplitValidator` is built here and passed into the trainer, which
only knows the :class:`~hrseg.training.validation.Validator` protocol. It
scores exactly as ``hrseg eval`` does (full-resolution labels, one confusion
matrix for the split), so the val mIoU of ``best.pt`` in ``metrics.jsonl`` is
what ``hrseg eval RUN --checkpoint best.pt`` prints (with the same images).
Under torchrun each rank scores every world-size-th image and the confusion
matrices are summed: one result, the same on every rank.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from hrseg.data.dataset import open_split
from hrseg.errors import HrsegError
from hrseg.evaluation.evaluate import confusion_of, full_label_sizes
from hrseg.evaluation.metrics import ConfusionMatrix, iou_table
from hrseg.training import distributed as ddp
from hrseg.training.config import TrainConfig
from hrseg.training.distributed import DistInfo
from hrseg.training.trainer import TrainResult, train
from hrseg.training.validation import ValResult

CLASSES = 19


class SplitValidator:
    """Scores S on ``data.target``'s ``run.val_split`` (its first ``run.val_images`` images)."""

    def __init__(self, cfg: TrainConfig, batch_size: int = 2) -> None:
        d, r = cfg.data, cfg.run
        try:
            ds = open_split(d.data, d.target, r.val_split, fields=("image", "full_label", "name"))
        except HrsegError as exc:
            raise HrsegError(f"run.val_split (--val-every): {exc}") from None
        if not ds.manifest.has_full_labels:
            raise HrsegError(f"run.val_split: {d.target}/{r.val_split} has no full-resolution labels to "
                             "validate on (a test split?); use the val split")
        if r.val_images is not None and r.val_images < len(ds):
            ds = ds.subset(range(r.val_images))
        self.ds, self.split, self.batch_size = ds, f"{d.target}/{r.val_split}", batch_size
        self.sizes = full_label_sizes(ds)  # read once: the shards' metadata does not change during a run

    def __call__(self, segmenter: nn.Module, dist: DistInfo) -> ValResult:
        start = time.perf_counter()
        device = next(segmenter.parameters()).device
        mine = list(range(dist.rank, len(self.ds), dist.world_size))
        cm = ConfusionMatrix()
        if mine:
            cm = confusion_of(segmenter, self.ds.subset(mine), device, self.batch_size,
                              sizes=[self.sizes[i] for i in mine])
        total = ddp.all_reduce_sum(torch.from_numpy(cm.matrix), dist, device).numpy()
        cm = ConfusionMatrix(matrix=total.astype("int64"))
        return ValResult(miou=cm.miou(CLASSES), iou=iou_table(cm.iou(), CLASSES), split=self.split,
                         images=len(self.ds), seconds=time.perf_counter() - start)


def validator_for(cfg: TrainConfig) -> SplitValidator | None:
    """The validator ``cfg`` asks for (``run.val_every`` > 0), opened now so a missing split stops the run early."""
    return SplitValidator(cfg) if cfg.run.val_every > 0 else None


def train_with_validation(cfg: TrainConfig, **kwargs: Any) -> TrainResult:
    """:func:`hrseg.training.trainer.train` with the validator ``cfg`` asks for: what ``hrseg train`` runs."""
    return train(cfg, validator=validator_for(cfg.resolved()), **kwargs)

