"""The weight-map picture TensorBoard shows while a run trains.

Training sits below visualisation, so it cannot draw this itself: the caller
(``hrseg train``) passes :func:`weight_picture` to ``train()``, and training
calls it every ``--tensorboard-every`` iterations.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hrseg.data.augment import denormalize
from hrseg.evaluation.weighting import weight_maps
from hrseg.models.common import eval_mode
from hrseg.visualization.panels import weight_panel


@torch.no_grad()
def weight_picture(segmenter: nn.Module, weighting: nn.Module, batch: dict[str, torch.Tensor],
                   weight_input: str, title: str) -> np.ndarray:
    """The first image of a training source batch with its level scores and combined weight (H, W, 3 uint8).

    The whole batch goes through W (batch-normalised weights depend on the
    batch), as in training, with the networks in eval mode and no running
    statistic updated, so drawing never changes what is trained.
    """
    images = (denormalize(batch["image"]) * 255.0).round().to(torch.uint8)
    labels = batch["label"]
    with eval_mode(segmenter, weighting):
        maps = weight_maps(segmenter, weighting, images, labels, weight_input)
    realism = batch.get("realism")
    return weight_panel(
        images[0].permute(1, 2, 0).cpu().numpy(), labels[0].cpu().numpy().astype(np.uint8),
        maps.prediction[0].cpu().numpy().astype(np.uint8),
        {k: v[0].float().cpu().numpy() for k, v in maps.levels.items()}, maps.weight[0].float().cpu().numpy(),
        realism=None if realism is None else realism[0].cpu().numpy(), title=title,
    )
