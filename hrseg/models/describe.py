"""Describe every network (parameters, output shapes) for `hrseg models`.

Descriptions run the networks on the meta device: shapes come out of the real
forward code without allocating or computing anything, so even full width at
2048x1024 is instant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from hrseg.errors import HrsegError
from hrseg.models.gan import Discriminator, Generator
from hrseg.models.registry import SEGMENTERS, build_segmenter
from hrseg.models.weighting import LEVELS, WEIGHTING_NETWORKS, HierarchicalWeighting, input_channels

__all__ = ["ModelInfo", "build_segmenter", "count_parameters", "describe_models"]


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass
class ModelInfo:
    """One row of `hrseg models`: a network, its parameter count, its input and output shapes."""

    name: str
    role: str
    params: int
    input: dict[str, list[int]]
    output: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _shapes(named: dict[str, Tensor | None]) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in named.items() if v is not None}


def describe_models(
    input_size: tuple[int, int] = (1024, 512),
    width: float = 1.0,
    num_classes: int = 19,
    batch: int = 1,
    image_input: bool = False,
) -> list[ModelInfo]:
    """Every network of the method with its parameter count and output shapes for a W x H input.

    ``image_input`` describes the weighting networks of the "W^1 (Image)" ablation
    (RGB input) instead of the ones on the 19-channel prediction.
    """
    img_w, img_h = input_size
    if img_w < 64 or img_h < 64:
        raise HrsegError(f"--input-size: {img_w}x{img_h} is too small; the networks need at least 64x64")
    rows: list[ModelInfo] = []
    with torch.device("meta"), torch.no_grad():
        image = torch.empty(batch, 3, img_h, img_w)
        w_input = "image" if image_input else "pred"
        w_in = input_channels(w_input, num_classes)
        # shapes only: a combination without batch statistics, which the meta device has no values for
        shapes_only = {"input": w_input, "combine": "product", "normalize": "none", "width": width}
        prediction = torch.empty(batch, w_in, img_h, img_w)
        labels = torch.zeros(batch, img_h, img_w, dtype=torch.long)

        def add(name: str, role: str, module: nn.Module, inputs: dict[str, Tensor], run: Callable[[], dict]) -> None:
            rows.append(ModelInfo(name, role, count_parameters(module), _shapes(inputs), _shapes(run())))

        features: dict[tuple[int, int], Tensor] = {}
        described: set[str] = set()
        for spec in SEGMENTERS.values():
            if spec.backbone_label not in described:
                described.add(spec.backbone_label)
                net = spec.build_backbone(width).eval()
                add(spec.backbone_label, f"backbone of {spec.label} (stride {spec.feature_stride})", net,
                    {"image": image}, lambda net=net: net.named_outputs(image))
            for aux in (False, True) if spec.aux else (False,):
                seg = build_segmenter(spec.name, num_classes, width, "none", aux).eval()
                out = seg(image)
                features.setdefault((spec.feature_stride, int(out.features.shape[1])), out.features)
                add(spec.label + ("+aux" if aux else ""), f"segmenter S ({spec.name})", seg, {"image": image},
                    lambda out=out: out._asdict())
        for network in WEIGHTING_NETWORKS:
            tag = "W^" + network[1:]
            for level in LEVELS:
                w = HierarchicalWeighting(network, w_in, num_classes, levels=(level,), **shapes_only).eval()
                add(f"{tag} {level}", f"weighting {level} level", w, {"image" if image_input else "prediction": prediction},
                    lambda w=w, level=level: {"logits": w.level_logits(prediction)[level],
                                              "score": w(prediction, labels).scores[level]})
            w = HierarchicalWeighting(network, w_in, num_classes, **shapes_only).eval()
            add(f"{tag} (all levels)", "hierarchical weighting", w, {"image" if image_input else "prediction": prediction},
                lambda w=w: {"weight": w(prediction, labels).weight})
        seen: set[int] = set()
        for (stride, channels), feats in sorted(features.items(), key=lambda kv: -kv[0][0]):
            users = ", ".join(s.label for s in SEGMENTERS.values() if s.feature_stride == stride)
            name = f"G (stride {stride})" if stride not in seen else f"G (stride {stride}, {channels} channels)"
            seen.add(stride)
            g = Generator(channels, stride, width).eval()
            add(name, f"generator ({users})", g, {"features": feats},
                lambda g=g, feats=feats: {"image": g(feats, size=(img_h, img_w))})
        d = Discriminator(num_classes, width).eval()
        add("D", "discriminator", d, {"image": image},
            lambda: dict(zip(("domain", "class"), d(image))))
    return rows
