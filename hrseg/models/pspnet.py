"""PSPNet (Zhao et al.) on a dilated ResNet50, the paper's second segmentation network.

Output stride 8 (layer3/layer4 dilated 2/4), pyramid pooling with bins 1, 2, 3, 6,
a 512-channel bottleneck whose output is the feature map G reconstructs from, and
an optional auxiliary head on layer3. Every bilinear resize here uses
``align_corners=False`` (the convention the evaluation also states).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrseg.models.backbones import ResNet50
from hrseg.models.common import SegOutput, check_width, scaled
from hrseg.models.pretrained import fetch_state_dict, load_strict
from hrseg.models.registry import SegmenterSpec, register_segmenter

PSP_BINS: tuple[int, ...] = (1, 2, 3, 6)
PSP_STRIDE = 8


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


def pool_branch(in_ch: int, out_ch: int, bins: int) -> nn.Sequential:
    """Pool to bins x bins, then 1x1 conv + BN + ReLU.

    The 1x1 bin has one value per channel and image, so BatchNorm there would fail
    for a batch of one (one image per GPU under DDP) and be noise for small batches:
    that branch uses a conv bias instead of BatchNorm.
    """
    if bins == 1:
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1), nn.ReLU(inplace=True))
    return nn.Sequential(nn.AdaptiveAvgPool2d(bins), *conv_bn_relu(in_ch, out_ch, 1))


class PyramidPooling(nn.Module):
    """Average-pool to each bin size, reduce channels, resize back and concatenate with the input."""

    def __init__(self, in_ch: int, branch_ch: int, bins: tuple[int, ...] = PSP_BINS) -> None:
        super().__init__()
        self.stages = nn.ModuleList(pool_branch(in_ch, branch_ch, b) for b in bins)
        self.out_channels = in_ch + branch_ch * len(bins)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False) for stage in self.stages]
        return torch.cat([x, *pooled], dim=1)


class PSPNet(nn.Module):
    """Dilated ResNet50 -> pyramid pooling -> 512-channel bottleneck (G's input) -> 1x1 classifier.

    With ``aux=True`` the layer3 head's logits come back in ``SegOutput.aux`` in
    train and eval mode alike; the caller decides whether to use them (PSPNet
    weights them 0.4 in training). The ImageNet ``fc`` is dropped after loading
    so DDP sees no unused parameters.
    """

    feature_stride = PSP_STRIDE

    def __init__(
        self, num_classes: int = 19, width: float = 1.0, pretrained: str | Path = "none", aux: bool = False
    ) -> None:
        super().__init__()
        self.width = check_width(width)
        self.num_classes = num_classes
        state = fetch_state_dict("resnet50", pretrained, width)  # before building: bad files fail fast
        backbone = ResNet50(width, dilate=(False, True, True))
        if state is not None:
            load_strict(backbone, state, str(pretrained))
        del backbone.fc  # the ImageNet head is only there so the file loads strictly
        self.backbone = backbone
        c4 = backbone.out_channels
        self.ppm = PyramidPooling(c4, scaled(512, width))
        self.bottleneck = conv_bn_relu(self.ppm.out_channels, scaled(512, width), 3)
        self.classifier = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(scaled(512, width), num_classes, 1))
        self.aux_head: nn.Module | None = None
        if aux:
            self.aux_head = nn.Sequential(
                conv_bn_relu(backbone.layer3_channels, scaled(256, width), 3),
                nn.Dropout2d(0.1),
                nn.Conv2d(scaled(256, width), num_classes, 1),
            )
        self.feature_channels = scaled(512, width)

    def forward(self, x: Tensor) -> SegOutput:
        size = x.shape[-2:]
        c3, c4 = self.backbone.forward_layers(x)
        features = self.bottleneck(self.ppm(c4))
        logits = F.interpolate(self.classifier(features), size=size, mode="bilinear", align_corners=False)
        aux = None
        if self.aux_head is not None:
            aux = F.interpolate(self.aux_head(c3), size=size, mode="bilinear", align_corners=False)
        return SegOutput(logits, features, aux)


register_segmenter(SegmenterSpec(
    name="pspnet-r50", title="PSPNet / ResNet50", label="PSPNet", build=PSPNet,
    feature_stride=PSP_STRIDE, backbone="resnet50", backbone_label="ResNet50",
    build_backbone=lambda width: ResNet50(width, dilate=(False, True, True)),
    aux=True,
))
