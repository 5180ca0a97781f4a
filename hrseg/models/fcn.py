"""FCN-8s on VGG16 (Long et al.), the paper's first segmentation network.

Input sizes: the input is zero-padded at the bottom/right to a multiple of 32
(zero is the mean colour after normalisation), so every pooling stage halves
exactly and the pool3/pool4/pool5 maps align without the original's 100-pixel
padding and crop offsets; the logits are cropped back to the input size. fc6 is
a 7x7 convolution with padding 3, so even a 4x2 pool5 map (a 128x64 image) works.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrseg.models.backbones import VGG16, vgg_pools
from hrseg.models.common import SegOutput, check_width
from hrseg.models.pretrained import fetch_state_dict, load_strict
from hrseg.models.registry import SegmenterSpec, register_segmenter

FCN_STRIDE = 32


def bilinear_kernel(channels: int, kernel_size: int) -> Tensor:
    """Per-channel bilinear up-sampling weights for a ConvTranspose2d (no cross-channel mixing)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt1d = 1 - (og - center).abs() / factor
    filt = filt1d[:, None] * filt1d[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = filt
    return weight


def _upscore2(channels: int) -> nn.ConvTranspose2d:
    """Learned x2 up-sampling started as bilinear; kernel 4, stride 2, padding 1 doubles exactly."""
    layer = nn.ConvTranspose2d(channels, channels, kernel_size=4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_kernel(channels, 4))
    return layer


class FCN8s(nn.Module):
    """FCN-8s: VGG16 features, fc6/fc7 as convolutions, score layers, pool4 and pool3 skips.

    With ImageNet weights, fc6/fc7 start from the VGG classifier reshaped to
    convolutions (the reason the backbone keeps torchvision's classifier until
    loading is done); from scratch they get the same He init as the other
    convolutions. Score layers start at zero and the two x2 deconvolutions as
    bilinear, as in the original; the final x8 step is fixed bilinear
    interpolation (the original's upscore8 is a frozen bilinear deconvolution).
    ``features`` is pool5 (512*width channels, stride 32) of the padded input.
    """

    feature_stride = FCN_STRIDE

    def __init__(self, num_classes: int = 19, width: float = 1.0, pretrained: str | Path = "none") -> None:
        super().__init__()
        self.width = check_width(width)
        self.num_classes = num_classes
        state = fetch_state_dict("vgg16", pretrained, width)  # before building: bad files fail fast
        vgg = VGG16(width)
        if state is not None:
            load_strict(vgg, state, str(pretrained))
        self.features = vgg.features
        c5 = vgg.out_channels
        hidden = vgg.classifier[0].out_features
        c3 = vgg.features[VGG16.POOL3 - 2].out_channels
        c4 = vgg.features[VGG16.POOL4 - 2].out_channels
        self.fc6 = nn.Conv2d(c5, hidden, kernel_size=7, padding=3)
        self.fc7 = nn.Conv2d(hidden, hidden, kernel_size=1)
        if state is not None:
            with torch.no_grad():
                # Linear(C*7*7 -> hidden) flattens (C, 7, 7) row-major, so a view is the convolution
                self.fc6.weight.copy_(vgg.classifier[0].weight.view(hidden, c5, 7, 7))
                self.fc6.bias.copy_(vgg.classifier[0].bias)
                self.fc7.weight.copy_(vgg.classifier[3].weight.view(hidden, hidden, 1, 1))
                self.fc7.bias.copy_(vgg.classifier[3].bias)
        else:
            for layer in (self.fc6, self.fc7):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        self.relu = nn.ReLU(inplace=True)
        self.drop6 = nn.Dropout(0.5)
        self.drop7 = nn.Dropout(0.5)
        self.score_fr = nn.Conv2d(hidden, num_classes, kernel_size=1)
        self.score_pool4 = nn.Conv2d(c4, num_classes, kernel_size=1)
        self.score_pool3 = nn.Conv2d(c3, num_classes, kernel_size=1)
        for layer in (self.score_fr, self.score_pool4, self.score_pool3):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.upscore2 = _upscore2(num_classes)
        self.upscore_pool4 = _upscore2(num_classes)
        self.feature_channels = c5

    def forward(self, x: Tensor) -> SegOutput:
        height, width = x.shape[-2:]
        pad_h = -height % FCN_STRIDE
        pad_w = -width % FCN_STRIDE
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        pool3, pool4, pool5 = vgg_pools(self.features, x)
        h = self.drop6(self.relu(self.fc6(pool5)))
        h = self.drop7(self.relu(self.fc7(h)))
        h = self.upscore2(self.score_fr(h)) + self.score_pool4(pool4)
        h = self.upscore_pool4(h) + self.score_pool3(pool3)
        logits = F.interpolate(h, scale_factor=8, mode="bilinear", align_corners=False)
        return SegOutput(logits[..., :height, :width], pool5, None)


def _build(num_classes: int = 19, width: float = 1.0, pretrained: str | Path = "none", aux: bool = False) -> FCN8s:
    return FCN8s(num_classes=num_classes, width=width, pretrained=pretrained)


register_segmenter(SegmenterSpec(
    name="fcn8s-vgg16", title="FCN-8s / VGG16", label="FCN-8s", build=_build,
    feature_stride=FCN_STRIDE, backbone="vgg16", backbone_label="VGG16",
    build_backbone=VGG16,
))
