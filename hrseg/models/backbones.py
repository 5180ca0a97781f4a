"""VGG16, ResNet50 and ResNet101 written here with torchvision's module names and tensor shapes.

The names matter more than the code: torchvision's ImageNet files
(``vgg16-397923af.pth``, ``resnet50-19c8e357.pth``, ``resnet101-63fe2227.pth``) must load into these modules
by key, strictly. So the modules keep the ImageNet classifier / ``fc`` layers even
though segmentation drops them after loading, and layer indices inside
``features`` follow torchvision's ``nn.Sequential`` exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hrseg.models.common import check_width, scaled

# torchvision's "D" configuration; "M" is a 2x2 max pool.
VGG16_CONFIG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)
IMAGENET_CLASSES = 1000
#: torchvision's published ImageNet files, beside the modules they load into; the part of the file name
#: after the last '-' is the SHA-256 prefix torch.hub checks.
IMAGENET_URLS: dict[str, str] = {
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-19c8e357.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
}


class VGG16(nn.Module):
    """VGG16 without batch norm; ``features.N`` / ``classifier.{0,3,6}`` as in torchvision.

    Pool outputs sit at ``features`` indices 16 (pool3), 23 (pool4) and 30 (pool5);
    FCN-8s taps them through :meth:`forward_pools`.
    """

    POOL3, POOL4, POOL5 = 16, 23, 30

    def __init__(self, width: float = 1.0, num_classes: int = IMAGENET_CLASSES) -> None:
        super().__init__()
        self.width = check_width(width)
        layers: list[nn.Module] = []
        in_ch = 3
        for item in VGG16_CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out_ch = scaled(int(item), width)
                layers += [nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.out_channels = in_ch
        hidden = scaled(4096, width)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(in_ch * 7 * 7, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_pools(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return vgg_pools(self.features, x)

    def named_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """The maps segmenters tap, by name (for `hrseg models`)."""
        return dict(zip(("pool3", "pool4", "pool5"), self.forward_pools(x))) | {"logits": self(x)}

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def vgg_pools(features: nn.Sequential, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(pool3, pool4, pool5) of VGG16 ``features`` at strides 8, 16, 32: the FCN-8s taps."""
    pools: list[Tensor] = []
    for index, layer in enumerate(features):
        x = layer(x)
        if index in (VGG16.POOL3, VGG16.POOL4, VGG16.POOL5):
            pools.append(x)
    return pools[0], pools[1], pools[2]


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), torchvision's names."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(
            planes, planes, kernel_size=3, stride=stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + identity)


class ResNet(nn.Module):
    """ResNet v1.5 with torchvision's names, optionally dilated; subclasses set ``LAYERS``.

    ``dilate=(False, True, True)`` is torchvision's ``replace_stride_with_dilation``:
    layer3 and layer4 keep stride 1 and dilate by 2 and 4, so the output stride is 8.
    As in torchvision, the first block of a dilated layer still uses the previous
    dilation and only the following blocks use the new one; ``full_dilation=True``
    gives every block of a dilated layer its new dilation instead, as DeepLab-v2
    does. Dilation is not a weight, so both load the same files.
    """

    LAYERS: tuple[int, int, int, int]

    def __init__(
        self,
        width: float = 1.0,
        dilate: tuple[bool, bool, bool] = (False, False, False),
        num_classes: int = IMAGENET_CLASSES,
        full_dilation: bool = False,
    ) -> None:
        super().__init__()
        self.width = check_width(width)
        self.full_dilation = full_dilation
        self.inplanes = scaled(64, width)
        self.dilation = 1
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(scaled(64, width), self.LAYERS[0])
        self.layer2 = self._make_layer(scaled(128, width), self.LAYERS[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(scaled(256, width), self.LAYERS[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(scaled(512, width), self.LAYERS[3], stride=2, dilate=dilate[2])
        self.out_channels = self.inplanes
        self.layer3_channels = scaled(256, width) * Bottleneck.expansion
        self.output_stride = 32 // (2 ** sum(dilate))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(self.inplanes, num_classes)
        self._init_weights()

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        first_dilation = self.dilation if self.full_dilation else previous_dilation
        layers = [Bottleneck(self.inplanes, planes, stride, first_dilation, downsample)]
        self.inplanes = out
        layers += [Bottleneck(out, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_layers(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(layer3, layer4) outputs: the auxiliary head's input and the main feature map."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        c3 = self.layer3(x)
        return c3, self.layer4(c3)

    def named_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """The maps segmenters tap, by name (for `hrseg models`)."""
        return dict(zip(("layer3", "layer4"), self.forward_layers(x))) | {"logits": self(x)}

    def forward(self, x: Tensor) -> Tensor:
        _, x = self.forward_layers(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResNet50(ResNet):
    """ResNet50: Bottleneck blocks (3, 4, 6, 3), 25,557,032 parameters with ``fc``."""

    LAYERS = (3, 4, 6, 3)


class ResNet101(ResNet):
    """ResNet101: Bottleneck blocks (3, 4, 23, 3), 44,549,160 parameters with ``fc``."""

    LAYERS = (3, 4, 23, 3)
