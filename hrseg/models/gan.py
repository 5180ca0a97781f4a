"""Generator G (features -> image) and discriminator D (image -> domain and class maps); docs/method.md, "Networks".

G: two residual blocks at the feature width, then stride-2 ConvTranspose stages
(kernel 3, padding 1, output_padding 1, so each exactly doubles the size): five
for stride-32 features (FCN-8s pool5), the last three for stride-8 features
(PSPNet). For stride 8 the first used stage takes the 512-channel input directly
(512 -> 64 -> 32 -> 3) **[reconstructed]**. Up-sampling gives stride x the
feature size; when that differs from the requested image size (inputs that are
not multiples of the stride) the excess bottom/right rows are cropped, which
matches how FCN-8s pads the bottom/right; a shortfall is resized bilinearly.

Features wider than the paper's 512 channels (DeepLab-v2's 2048-channel layer4)
first pass a 1x1 Conv-IN-ReLU stem down to 512*width **[reconstructed]**: fed
straight in, G would cost about 3.4x DeepLab-v2's own forward pass.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from hrseg.errors import HrsegError
from hrseg.models.common import check_width, scaled

# output channels of the five up-sampling stages for stride 32
G_STAGES: tuple[int, ...] = (256, 128, 64, 32, 3)
D_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)
NUM_DOMAINS = 4  # 0 source-real, 1 source-fake, 2 target-real, 3 target-fake


class ResidualBlock(nn.Module):
    """Conv-IN-ReLU-Conv-IN plus the identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.InstanceNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.InstanceNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """Reconstructs the (normalised) input image from the segmenter's feature map.

    InstanceNorm needs more than one spatial element in training mode, so the
    feature map must be at least 1x2 (an FCN input of at least 32x64).
    """

    def __init__(self, in_channels: int = 512, stride: int = 32, width: float = 1.0) -> None:
        super().__init__()
        if stride not in (8, 32):
            raise HrsegError(f"generator stride: must be 8 or 32 (the segmenters' feature strides), got {stride}")
        check_width(width, "gan.width")
        self.stride = stride
        base = scaled(512, width)
        self.stem: nn.Module = nn.Identity()
        if in_channels > base:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, base, 1), nn.InstanceNorm2d(base), nn.ReLU(inplace=True))
            in_channels = base
        self.res = nn.Sequential(ResidualBlock(in_channels), ResidualBlock(in_channels))
        outs = [scaled(c, width) for c in G_STAGES[:-1]] + [3]
        outs = outs[-(stride.bit_length() - 1) :]
        layers: list[nn.Module] = []
        cin = in_channels
        for i, cout in enumerate(outs):
            layers.append(nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1))
            if i < len(outs) - 1:
                layers += [nn.InstanceNorm2d(cout), nn.ReLU(inplace=True)]
            cin = cout
        self.up = nn.Sequential(*layers)

    def forward(self, features: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """(B, C, h, w) features -> (B, 3, H, W) image; ``size`` defaults to stride x (h, w)."""
        x = self.up(self.res(self.stem(features)))
        if size is None:
            return x
        height, width = int(size[0]), int(size[1])
        if x.shape[-2] < height or x.shape[-1] < width:
            x = F.interpolate(
                x, size=(max(height, x.shape[-2]), max(width, x.shape[-1])), mode="bilinear", align_corners=False
            )
        return x[..., :height, :width]


class Discriminator(nn.Module):
    """Six Conv(k3 s2 p1)+LeakyReLU(0.2) stages (stride 64), then a 4-way domain head and a class head (3x3)."""

    def __init__(self, num_classes: int = 19, width: float = 1.0, in_channels: int = 3) -> None:
        super().__init__()
        check_width(width, "gan.width")
        layers: list[nn.Module] = []
        cin = in_channels
        for c in D_CHANNELS:
            cout = scaled(c, width)
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        self.body = nn.Sequential(*layers)
        self.domain_head = nn.Conv2d(cin, NUM_DOMAINS, 3, 1, 1)
        self.class_head = nn.Conv2d(cin, num_classes, 3, 1, 1)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        h = self.body(image)
        return self.domain_head(h), self.class_head(h)
