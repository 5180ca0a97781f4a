"""Small pieces every network module shares: the segmenter output and channel scaling."""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

from hrseg.errors import HrsegError


class SegOutput(NamedTuple):
    """What a segmentation network returns.

    A NamedTuple (not a dataclass) so DDP, autocast and tracing see plain tuples.
    ``features`` is the map the generator G reconstructs the image from (``feature_channels`` wide).
    """

    logits: Tensor
    features: Tensor
    aux: Tensor | None = None


def scaled(channels: int, width: float) -> int:
    """Channel count under the width multiplier; never below one channel."""
    return max(1, int(round(channels * width)))


def check_width(width: float) -> float:
    if not (width > 0):
        raise HrsegError(f"--width: must be a positive number, got {width!r}")
    return float(width)
