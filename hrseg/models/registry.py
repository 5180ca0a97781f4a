"""The segmenter registry: name -> builder plus what the rest of hrseg needs to know about it.

A model file defines its network and registers one :class:`SegmenterSpec`;
config checks, ``--arch`` choices, report titles, ``hrseg models`` rows and the
generator's input all read the spec. Adding a backbone is one model file plus
its import in ``hrseg/models/__init__.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor, nn

from hrseg.errors import HrsegError
from hrseg.models.common import SegOutput
from hrseg.registry import Registry


@dataclass(frozen=True)
class SegmenterSpec:
    """One segmentation network as the rest of hrseg sees it."""

    name: str  # what --arch takes
    title: str  # the report's backbone column
    label: str  # the `hrseg models` row
    build: Callable[..., nn.Module]  # (num_classes, width, pretrained, aux) -> module returning SegOutput
    feature_stride: int  # of SegOutput.features: G up-samples from here
    backbone: str  # key of the ImageNet weight file in pretrained.IMAGENET_URLS
    backbone_label: str  # the `hrseg models` row of the bare backbone
    build_backbone: Callable[[float], nn.Module]  # width -> the backbone as the weight file names it (named_outputs())
    aux: bool = False  # has an auxiliary head (PSPNet)


SEGMENTERS: Registry[SegmenterSpec] = Registry("segmenter", "--arch")


def register_segmenter(spec: SegmenterSpec) -> SegmenterSpec:
    return SEGMENTERS.add(spec.name, spec)


def build_segmenter(
    name: str, num_classes: int = 19, width: float = 1.0, pretrained: str | Path = "none", aux: bool = False,
) -> nn.Module:
    """A segmentation network by its registered name.

    ``pretrained`` is ``"none"``, ``"imagenet"`` (torchvision's file via torch.hub)
    or a path to a backbone state dict with torchvision's key names.
    """
    spec = SEGMENTERS[name]
    if aux and not spec.aux:
        with_aux = ", ".join(s.name for s in SEGMENTERS.values() if s.aux)
        raise HrsegError(f"--aux: the auxiliary head exists only for {with_aux}, not {name}")
    return spec.build(num_classes=num_classes, width=width, pretrained=pretrained, aux=aux)


def logits_of(output: SegOutput | Tensor) -> Tensor:
    """The logits of a segmenter's output: every hrseg segmenter returns SegOutput (or a look-alike with
    ``.logits``), a bare model a tensor."""
    return output.logits if hasattr(output, "logits") else output
