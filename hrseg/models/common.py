"""Small pieces every network module shares: the segmenter output and channel scaling."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, NamedTuple

from torch import Tensor, nn

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


def check_width(width: float, option: str = "--width") -> float:
    """``width`` if positive; the error names the setting (``--width`` is S's; W's and G/D's are
    ``weighting.width``, ``gan.width``)."""
    if not (width > 0):
        raise HrsegError(f"{option}: must be a positive number, got {width!r}")
    return float(width)


@contextmanager
def eval_mode(*modules: object) -> Iterator[None]:
    """Every module (non-modules are passed over) in eval mode for the block, each submodule's mode restored after.

    Scoring, predicting and drawing must not move batch-norm statistics, and
    must hand a training network back exactly as it was (frozen layers included).
    """
    saved = [(m, m.training) for mod in modules if isinstance(mod, nn.Module) for m in mod.modules()]
    for mod in modules:
        if isinstance(mod, nn.Module):
            mod.eval()
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training
