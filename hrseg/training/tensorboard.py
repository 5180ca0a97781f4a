"""TensorBoard for a run, on request (``--tensorboard``): the logged values, and weight maps as pictures.

TensorBoard is an optional package, so it is never turned on by its mere
presence: a run asks for it, and a run that asks without the package installed
stops before it starts, with one line saying what to install. The weight-map
picture is drawn by a callback the caller passes in (visualisation sits above
training): ``hrseg train`` passes the panel ``hrseg visualize weights`` draws.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from hrseg.errors import HrsegError

#: (segmenter, weighting, source batch, weighting input, title) -> an (H, W, 3) uint8 picture;
#: ``hrseg.visualization.tensorboard.weight_picture`` is the one ``hrseg train`` passes
WeightPicture = Callable[[nn.Module, nn.Module, dict[str, torch.Tensor], str, str], np.ndarray]

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

    def __init__(self, log_dir: str, image_every: int, weight_input: str = "pred",
                 picture: WeightPicture | None = None) -> None:
        self.writer = summary_writer_class()(log_dir=log_dir)
        self.image_every = image_every
        self.weight_input = weight_input
        self.picture = picture

    def scalars(self, values: dict[str, Any], iteration: int) -> None:
        for key, value in values.items():
            if key != "iter" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, iteration)

    def wants_image(self, iteration: int) -> bool:
        return self.picture is not None and iteration % self.image_every == 0

    def weight_panel(self, segmenter: nn.Module, weighting: nn.Module, batch: dict[str, torch.Tensor],
                     iteration: int, title: str = "") -> np.ndarray | None:
        """The picture of the source batch just trained on, drawn by the ``picture`` callback (none: nothing)."""
        if self.picture is None:
            return None
        panel = self.picture(segmenter, weighting, batch, self.weight_input,
                             title or f"source batch, iteration {iteration}")
        self.writer.add_image("weights/source", panel, iteration, dataformats="HWC")
        return panel

    def close(self) -> None:
        self.writer.close()
