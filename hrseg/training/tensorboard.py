"""TensorBoard for a run, on request (``--tensorboard``): the logged values, and weight maps as pictures.

TensorBoard is an optional package, so it is never turned on by its mere
presence: a run asks for it, and a run that asks without the package installed
stops before it starts, with one line saying what to install. The weight-map
panel is the one ``hrseg visualize weights`` draws, computed on the source
batch the step just trained on, with the networks in eval mode and no running
statistic updated, so logging pictures never changes what is trained.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from hrseg.data.augment import denormalize
from hrseg.errors import HrsegError
from hrseg.evaluation.weighting import weight_maps
from hrseg.visualization.panels import weight_panel

MISSING = "--tensorboard: the tensorboard package is not installed (pip install tensorboard), or drop --tensorboard"


def summary_writer_class() -> Any:
    """torch's SummaryWriter; its import is what needs the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # type: ignore[attr-defined]
    except ImportError:
        raise HrsegError(MISSING) from None
    return SummaryWriter


def check_available() -> None:
    """Raise the one-line error now, before a run folder is touched, when the package is missing."""
    summary_writer_class()


class TensorBoardLog:
    """One run's event files under ``log_dir``."""

    def __init__(self, log_dir: str, image_every: int, weight_input: str = "pred") -> None:
        self.writer = summary_writer_class()(log_dir=log_dir)
        self.image_every = image_every
        self.weight_input = weight_input

    def scalars(self, values: dict[str, Any], iteration: int) -> None:
        for key, value in values.items():
            if key != "iter" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, iteration)

    def wants_image(self, iteration: int) -> bool:
        return iteration % self.image_every == 0

    @torch.no_grad()
    def weight_panel(self, segmenter: nn.Module, weighting: nn.Module, batch: dict[str, torch.Tensor],
                     iteration: int, title: str = "") -> np.ndarray:
        """Draw the first image of a training source batch with its level scores and combined weight.

        The whole batch goes through W (batch-normalised weights depend on the
        batch), as in training; the picture is what the source loss was
        weighted with up to the eval-mode networks.
        """
        images = (denormalize(batch["image"]) * 255.0).round().to(torch.uint8)
        labels = batch["label"]
        modes = [(m, m.training) for m in (segmenter, weighting)]
        for m, _ in modes:
            m.eval()
        try:
            maps = weight_maps(segmenter, weighting, images, labels, self.weight_input)
        finally:
            for m, training in modes:
                m.train(training)
        realism = batch.get("realism")
        panel = weight_panel(
            images[0].permute(1, 2, 0).cpu().numpy(), labels[0].cpu().numpy().astype(np.uint8),
            maps.prediction[0].cpu().numpy().astype(np.uint8),
            {k: v[0].float().cpu().numpy() for k, v in maps.levels.items()}, maps.weight[0].float().cpu().numpy(),
            realism=None if realism is None else realism[0].cpu().numpy(),
            title=title or f"source batch, iteration {iteration}",
        )
        self.writer.add_image("weights/source", panel, iteration, dataformats="HWC")
        return panel

    def close(self) -> None:
        self.writer.close()
