"""DeepLab-v2 on dilated ResNet-101: the segmenter contract, shapes, parameter counts, ImageNet loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor

from hrseg.errors import HrsegError
from hrseg.models import Generator, count_parameters
from hrseg.models.backbones import ResNet101
from hrseg.models.common import scaled
from hrseg.models.deeplabv2 import ASPP_RATES, DeepLabV2
from tests.test_models_backbones import fake_weights, resnet101_shapes

RESNET101_PARAMS = 44_549_160  # torchvision's count, fc included
FC_PARAMS = 2048 * 1000 + 1000
ASPP_PARAMS = 4 * (2048 * 19 * 3 * 3 + 19)
DEEPLAB_PARAMS = 43_901_068  # 19 classes


def test_parameter_counts_at_full_width() -> None:
    with torch.device("meta"):
        seg = DeepLabV2(num_classes=19)
        backbone_with_fc = ResNet101(dilate=(False, True, True), full_dilation=True)
    assert count_parameters(backbone_with_fc) == RESNET101_PARAMS
    assert count_parameters(seg.backbone) == RESNET101_PARAMS - FC_PARAMS == 42_500_160
    assert count_parameters(seg.classifier) == ASPP_PARAMS == 1_400_908
    assert count_parameters(seg) == RESNET101_PARAMS - FC_PARAMS + ASPP_PARAMS == DEEPLAB_PARAMS
    assert seg.feature_channels == 2048 and seg.feature_stride == 8 and not hasattr(seg.backbone, "fc")


def test_full_width_shapes_on_meta() -> None:
    with torch.device("meta"), torch.no_grad():
        seg = DeepLabV2().eval()
        out = seg(torch.empty(2, 3, 512, 1024))
    assert out.logits.shape == (2, 19, 512, 1024)
    assert out.features.shape == (2, 2048, 64, 128)
    assert out.aux is None


@pytest.mark.parametrize(
    ("width", "size"), [(0.0625, (65, 97)), (0.0625, (64, 128)), (0.125, (33, 47)), (0.03, (40, 24))]
)
def test_output_shapes_any_width_and_size(width: float, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    seg = DeepLabV2(num_classes=5, width=width)
    height, wide = size
    with torch.no_grad():
        out = seg.eval()(torch.randn(2, 3, height, wide))
    assert out.logits.shape == (2, 5, height, wide)
    assert seg.feature_channels == scaled(512, width) * 4
    assert out.features.shape == (2, seg.feature_channels, math.ceil(height / 8), math.ceil(wide / 8))
    assert torch.isfinite(out.logits).all()


def test_generator_reconstructs_from_the_features_at_the_input_size() -> None:
    torch.manual_seed(0)
    seg = DeepLabV2(width=0.0625)
    g = Generator(in_channels=seg.feature_channels, stride=seg.feature_stride, width=0.0625)
    image = torch.randn(1, 3, 65, 97)
    out = seg.train()(image)  # train mode at batch one: batch norm sees 9x13 positions per channel
    assert g(out.features, size=(65, 97)).shape == (1, 3, 65, 97)


def test_every_parameter_gets_a_gradient() -> None:
    """DDP without find_unused_parameters needs this: no ImageNet head or idle branch left behind."""
    torch.manual_seed(0)
    seg = DeepLabV2(num_classes=3, width=0.0625).train()
    seg(torch.randn(2, 3, 48, 40)).logits.square().mean().backward()
    idle = [name for name, p in seg.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert idle == []


def test_dilation_and_aspp_follow_deeplab_v2() -> None:
    with torch.device("meta"):
        seg = DeepLabV2()
    for layer, dilation in ((seg.backbone.layer3, 2), (seg.backbone.layer4, 4)):
        assert [b.conv2.dilation for b in layer] == [(dilation, dilation)] * len(layer)
        assert [b.conv2.stride for b in layer] == [(1, 1)] * len(layer)
    assert len(seg.backbone.layer3) == 23
    assert [c.dilation[0] for c in seg.classifier.branches] == list(ASPP_RATES) == [6, 12, 18, 24]
    assert [c.padding[0] for c in seg.classifier.branches] == [6, 12, 18, 24]
    assert all(c.in_channels == 2048 and c.out_channels == 19 and c.kernel_size == (3, 3)
               for c in seg.classifier.branches)


def test_aspp_sums_its_branches() -> None:
    torch.manual_seed(0)
    seg = DeepLabV2(num_classes=4, width=0.0625).eval()
    x = torch.randn(1, seg.feature_channels, 7, 9)
    with torch.no_grad():
        expected = sum(branch(x) for branch in seg.classifier.branches)
        torch.testing.assert_close(seg.classifier(x), expected)


def test_logits_are_the_aspp_output_resized_bilinearly() -> None:
    torch.manual_seed(0)
    seg = DeepLabV2(num_classes=4, width=0.0625).eval()
    image = torch.randn(1, 3, 61, 83)
    with torch.no_grad():
        out = seg(image)
        coarse = seg.classifier(out.features)
    expected = torch.nn.functional.interpolate(coarse, size=(61, 83), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.logits, expected)


@pytest.fixture(scope="module")
def resnet101_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Tensor]]:
    """torchvision's resnet101 layout (no num_batches_tracked, like the older files), cheap on disk."""
    state = fake_weights(resnet101_shapes(tracked=False), seed=3, expand_over=100_000)
    path = tmp_path_factory.mktemp("weights") / "resnet101-63fe2227.pth"
    torch.save(state, path)
    return path, state


def test_loads_torchvision_resnet101_file_strictly(resnet101_file: tuple[Path, dict[str, Tensor]]) -> None:
    path, state = resnet101_file
    seg = DeepLabV2(pretrained=str(path))
    got = seg.backbone.state_dict()
    assert {k for k in got if not k.endswith("num_batches_tracked")} == set(state) - {"fc.weight", "fc.bias"}
    for key in state:
        if not key.startswith("fc."):
            assert torch.equal(got[key], state[key]), key
    assert count_parameters(seg) == DEEPLAB_PARAMS


def test_imagenet_goes_through_the_hub_with_the_hash_checked(
    monkeypatch: pytest.MonkeyPatch, resnet101_file: tuple[Path, dict[str, Tensor]]
) -> None:
    _, state = resnet101_file
    calls: list[tuple[str, dict[str, object]]] = []

    def fake_hub(url: str, **kwargs: object) -> dict[str, Tensor]:
        calls.append((url, kwargs))
        return dict(state)

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_hub)
    seg = DeepLabV2(pretrained="imagenet")
    url, kwargs = calls[0]
    assert url == "https://download.pytorch.org/models/resnet101-63fe2227.pth"
    assert kwargs["check_hash"] is True and kwargs["weights_only"] is True
    assert torch.equal(seg.backbone.layer3[22].conv3.weight, state["layer3.22.conv3.weight"])


def test_wrong_files_and_widths_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "partial.pth"  # the blocks layer3.2 and layer3.20-22 left out
    torch.save({k: torch.zeros(1) for k in resnet101_shapes() if not k.startswith("layer3.2")}, path)
    with pytest.raises(HrsegError, match=r"partial.pth: does not match ResNet101: 60 missing \(layer3.2.bn1.bias"):
        DeepLabV2(pretrained=str(path))
    with pytest.raises(HrsegError, match="--width 1.0"):
        DeepLabV2(width=0.5, pretrained=str(path))
    with pytest.raises(HrsegError, match="--width: must be a positive number"):
        DeepLabV2(width=0)
