"""One real training step's source weights beside evaluation's recomputation of them (shared by two test files)."""

from __future__ import annotations

import copy

import pytest
import torch

import hrseg.evaluation.weighting as eval_weighting
from hrseg.evaluation.weighting import weight_maps
from hrseg.training import losses
from hrseg.training.config import TrainConfig
from hrseg.training.schemes import plan
from hrseg.training.trainer import Trainer


def trained_and_evaluated_weights(cfg: TrainConfig, monkeypatch: pytest.MonkeyPatch
                                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(evaluation's weight, the weight the source loss got, valid-pixel mask) for the first step of ``cfg``.

    The networks run in eval mode (no dropout), so evaluation's S sees exactly
    what training's S saw; the weights are scored with the state the step used.
    """
    trainer = Trainer(cfg)
    try:
        for net in trainer.nets.values():
            net.eval()
        seg, weighting = trainer.nets["segmenter"], trainer.nets["weighting"]
        before = copy.deepcopy(seg), copy.deepcopy(weighting)  # the step updates both
        seen: dict[str, torch.Tensor] = {}
        forward, real_loss = seg.forward, losses.weighted_source_loss

        def recording_forward(x: torch.Tensor) -> object:
            seen.setdefault("images", x.detach().clone())
            return forward(x)

        def recording_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
            assert weight is not None
            seen.setdefault("labels", labels.clone())
            seen.setdefault("weight", weight.detach().float().clone())
            return real_loss(logits, labels, weight)

        monkeypatch.setattr(seg, "forward", recording_forward)
        monkeypatch.setattr(losses, "weighted_source_loss", recording_loss)
        trainer.step(plan(cfg, 0))
    finally:
        trainer.close()
    monkeypatch.undo()
    # the recorded images are normalised already: evaluation's own normalisation must leave them as they are
    monkeypatch.setattr(eval_weighting, "normalize", lambda x: x)
    n_s = cfg.data.batch_size
    maps = weight_maps(before[0], before[1], seen["images"][:n_s], seen["labels"], cfg.weighting.input)
    return maps.weight, seen["weight"], seen["labels"] != 255
