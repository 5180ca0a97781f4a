"""DeepLab-v2 on a dilated ResNet-101, the segmenter of the domain-adaptation literature.

The GTA->Cityscapes tables of AdaptSegNet, ADVENT, CLAN, DACS and ProDA use this
network: ResNet-101 at output stride 8 (layer3 dilated by 2, layer4 by 4) and
the "ASPP-L" classifier of DeepLab-v2, four 3x3 convolutions with dilation 6,
12, 18 and 24 that go from layer4's 2048 channels straight to class scores and
are summed. Logits are resized bilinearly (``align_corners=False``, the
convention the evaluation states) to the input size, so any input size works.

Differences from the DA repositories' network, all deliberate:

- **Stride placement.** Their ResNet is the Caffe one (stride 2 in the first
  1x1 convolution of a bottleneck); ours keeps torchvision's v1.5 layout (stride
  in the 3x3) and its parameter names, so torchvision's ResNet-101 ImageNet file
  loads strictly by key. The DA repos start from a converted Caffe checkpoint
  (MS-COCO-pretrained) instead; ours starts from ImageNet, like our other segmenters.
- **Dilation of the first block.** As in DeepLab-v2, every block of layer3 and
  layer4 is dilated (torchvision's ``replace_stride_with_dilation`` leaves the
  first block of each at the previous dilation); this changes no weight.
- **Max pool.** torchvision's (no ``ceil_mode``): an input that is a multiple of
  8 gives features of exactly 1/8 its size, which the generator relies on.
- **Batch norm.** The DA repos freeze it; here that is ``--bn frozen``
  (:mod:`hrseg.models.batchnorm`), chosen by the trainer, not by the network.

The feature map the generator G reconstructs from is layer4's output (2048*width
channels, stride 8): the map the ASPP classifier reads, as PSPNet's G input is
the map its classifier reads **[reconstructed]**. The segmenter adds nothing for
G (a projection used only by G would sit idle, and break DDP, when the GAN is
off). At full width these are four times PSPNet's 512 channels, which makes G's
residual blocks 16 times as costly; reducing the channels is G's business.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from hrseg.models.backbones import ResNet101
from hrseg.models.common import SegOutput, check_width
from hrseg.models.pretrained import fetch_state_dict, load_strict
from hrseg.models.registry import SegmenterSpec, register_segmenter

ASPP_RATES: tuple[int, ...] = (6, 12, 18, 24)
DEEPLAB_STRIDE = 8


class ASPPClassifier(nn.Module):
    """DeepLab-v2's ASPP-L: parallel dilated 3x3 convolutions to class scores, summed.

    Each branch has its own bias, as in DeepLab-v2 (four biases summed are one
    bias in effect, but the parameter count matches the literature's network).
    Weights start at N(0, 0.01) and biases at zero, so the first logits are near
    zero whatever layer4 produces.
    """

    def __init__(self, in_channels: int, num_classes: int, rates: tuple[int, ...] = ASPP_RATES) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=rate, dilation=rate) for rate in rates
        )
        for conv in self.branches:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out


class DeepLabV2(nn.Module):
    """Dilated ResNet-101 (stride 8) -> ASPP-L classifier -> bilinear resize to the input.

    ``features`` in the output is layer4's map (``feature_channels`` = 2048*width,
    ``feature_stride`` = 8), G's input. There is no auxiliary head (``aux`` is
    always None). The ImageNet ``fc`` is dropped after loading so DDP sees no
    unused parameters.
    """

    feature_stride = DEEPLAB_STRIDE

    def __init__(self, num_classes: int = 19, width: float = 1.0, pretrained: str | Path = "none") -> None:
        super().__init__()
        self.width = check_width(width)
        self.num_classes = num_classes
        state = fetch_state_dict("resnet101", pretrained, width)  # before building: bad files fail fast
        backbone = ResNet101(width, dilate=(False, True, True), full_dilation=True)
        if state is not None:
            load_strict(backbone, state, str(pretrained))
        del backbone.fc  # the ImageNet head is only there so the file loads strictly
        self.backbone = backbone
        self.classifier = ASPPClassifier(backbone.out_channels, num_classes)
        self.feature_channels = backbone.out_channels

    def forward(self, x: Tensor) -> SegOutput:
        size = x.shape[-2:]
        _, features = self.backbone.forward_layers(x)
        logits = F.interpolate(self.classifier(features), size=size, mode="bilinear", align_corners=False)
        return SegOutput(logits, features, None)


def _build(num_classes: int = 19, width: float = 1.0, pretrained: str | Path = "none", aux: bool = False) -> DeepLabV2:
    return DeepLabV2(num_classes=num_classes, width=width, pretrained=pretrained)


register_segmenter(SegmenterSpec(
    name="deeplabv2-r101", title="DeepLab-v2 / ResNet101", label="DeepLabv2-R101", build=_build,
    feature_stride=DEEPLAB_STRIDE, backbone="resnet101", backbone_label="ResNet101",
    build_backbone=lambda width: ResNet101(width, dilate=(False, True, True), full_dilation=True),
))
