"""Build segmenters by name, and describe every network (parameters, output shapes) for `hrseg models`.

Descriptions run the networks on the meta device: shapes come out of the real
forward code without allocating or computing anything, so even full width at
2048x1024 is instant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from hrseg.errors import HrsegError
from hrseg.models.backbones import VGG16, ResNet50
from hrseg.models.fcn import FCN8s
from hrseg.models.gan import Discriminator, Generator
from hrseg.models.pspnet import PSPNet
from hrseg.models.weighting import LEVELS, HierarchicalWeighting

SEGMENTERS: tuple[str, ...] = ("fcn8s-vgg16", "pspnet-r50")


def build_segmenter(
    name: str,
    num_classes: int = 19,
    width: float = 1.0,
    pretrained: str | Path = "none",
    aux: bool = False,
) -> FCN8s | PSPNet:
    """A segmentation network by its configuration name.

    ``pretrained`` is ``"none"``, ``"imagenet"`` (torchvision's file via torch.hub)
    or a path to a backbone state dict with torchvision's key names.
    """
    if name == "fcn8s-vgg16":
        if aux:
            raise HrsegError("--aux: the auxiliary head exists only for pspnet-r50, not fcn8s-vgg16")
        return FCN8s(num_classes=num_classes, width=width, pretrained=pretrained)
    if name == "pspnet-r50":
        return PSPNet(num_classes=num_classes, width=width, pretrained=pretrained, aux=aux)
    raise HrsegError(f"--model: unknown segmenter {name!r} (choose from {', '.join(SEGMENTERS)})")


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
        w_in = 3 if image_input else num_classes
        prediction = torch.empty(batch, w_in, img_h, img_w)
        labels = torch.zeros(batch, img_h, img_w, dtype=torch.long)

        def add(name: str, role: str, module: nn.Module, inputs: dict[str, Tensor], run: Callable[[], dict]) -> None:
            rows.append(ModelInfo(name, role, count_parameters(module), _shapes(inputs), _shapes(run())))

        vgg = VGG16(width).eval()
        add("VGG16", "backbone", vgg, {"image": image},
            lambda: dict(zip(("pool3", "pool4", "pool5"), vgg.forward_pools(image))) | {"logits": vgg(image)})
        resnet = ResNet50(width, dilate=(False, True, True)).eval()
        add("ResNet50", "backbone (dilated, stride 8)", resnet, {"image": image},
            lambda: dict(zip(("layer3", "layer4"), resnet.forward_layers(image))) | {"logits": resnet(image)})
        features: dict[int, Tensor] = {}
        for label, name, aux in (("FCN-8s", "fcn8s-vgg16", False), ("PSPNet", "pspnet-r50", False),
                                 ("PSPNet+aux", "pspnet-r50", True)):
            seg = build_segmenter(name, num_classes, width, "none", aux).eval()
            out = seg(image)
            features[seg.feature_stride] = out.features
            add(label, f"segmenter S ({name})", seg, {"image": image}, lambda out=out: out._asdict())
        for scheme in ("w1", "w19"):
            tag = "W^1" if scheme == "w1" else "W^19"
            for level in LEVELS:
                w = HierarchicalWeighting(scheme, w_in, num_classes, levels=(level,), width=width).eval()
                add(f"{tag} {level}", f"weighting {level} level", w, {"image" if image_input else "prediction": prediction},
                    lambda w=w, level=level: {"logits": w.level_logits(prediction)[level],
                                              "score": w(prediction, labels).scores[level]})
            w = HierarchicalWeighting(scheme, w_in, num_classes, width=width).eval()
            add(f"{tag} (all levels)", "hierarchical weighting", w, {"image" if image_input else "prediction": prediction},
                lambda w=w: {"weight": w(prediction, labels).weight})
        for stride, seg_name in ((32, "FCN-8s"), (8, "PSPNet")):
            feats = features[stride]
            g = Generator(feats.shape[1], stride, width).eval()
            add(f"G (stride {stride})", f"generator ({seg_name})", g, {"features": feats},
                lambda g=g, feats=feats: {"image": g(feats, size=(img_h, img_w))})
        d = Discriminator(num_classes, width).eval()
        add("D", "discriminator", d, {"image": image},
            lambda: dict(zip(("domain", "class"), d(image))))
    return rows
