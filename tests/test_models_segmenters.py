"""FCN-8s and PSPNet at small widths: shapes for any input size, features for G, trainability."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hrseg.errors import HrsegError
from hrseg.models import SegOutput, build_segmenter
from hrseg.models.fcn import bilinear_kernel

SIZES = [(64, 128), (65, 97), (33, 47), (128, 64)]



@pytest.fixture(scope="module")
def fcn() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_segmenter("fcn8s-vgg16", width=0.0625).eval()


@pytest.fixture(scope="module")
def psp() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_segmenter("pspnet-r50", width=0.0625, aux=True).eval()


@pytest.mark.parametrize("size", SIZES)
def test_fcn_shapes(fcn: torch.nn.Module, size: tuple[int, int]) -> None:
    h, w = size
    with torch.no_grad():
        out = fcn(torch.randn(2, 3, h, w))
    assert isinstance(out, SegOutput) and out.aux is None
    assert out.logits.shape == (2, 19, h, w)
    assert fcn.feature_channels == 32 and fcn.feature_stride == 32
    assert out.features.shape == (2, 32, math.ceil(h / 32), math.ceil(w / 32))


@pytest.mark.parametrize("size", SIZES)
def test_pspnet_shapes(psp: torch.nn.Module, size: tuple[int, int]) -> None:
    h, w = size
    with torch.no_grad():
        out = psp(torch.randn(2, 3, h, w))
    assert out.logits.shape == (2, 19, h, w)
    assert out.aux is not None and out.aux.shape == (2, 19, h, w)
    assert psp.feature_channels == 32 and psp.feature_stride == 8
    assert out.features.shape == (2, 32, math.ceil(h / 8), math.ceil(w / 8))


def test_pspnet_without_aux_returns_none() -> None:
    seg = build_segmenter("pspnet-r50", width=0.0625, num_classes=7).eval()
    with torch.no_grad():
        out = seg(torch.randn(1, 3, 64, 64))
    assert out.aux is None and out.logits.shape == (1, 7, 64, 64)


def test_fcn_padding_is_bottom_right_zeros() -> None:
    """An odd-sized input scores like its zero-padded multiple of 32, cropped: no shift, no resize."""
    torch.manual_seed(1)
    fcn = build_segmenter("fcn8s-vgg16", width=0.0625).eval()
    for layer in (fcn.score_fr, fcn.score_pool4, fcn.score_pool3):
        torch.nn.init.normal_(layer.weight, std=0.1)
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        odd = fcn(x)
        padded = fcn(F.pad(x, (0, 26, 0, 19)))
    assert padded.logits.shape[-2:] == (64, 96)
    torch.testing.assert_close(odd.logits, padded.logits[..., :45, :70])
    torch.testing.assert_close(odd.features, padded.features)
    assert odd.logits.abs().max() > 0


def test_bilinear_kernel_upsamples_a_constant_to_a_constant() -> None:
    weight = bilinear_kernel(3, 4)
    y = F.conv_transpose2d(torch.ones(1, 3, 5, 5), weight, stride=2, padding=1)
    assert y.shape == (1, 3, 10, 10)
    torch.testing.assert_close(y[..., 1:-1, 1:-1], torch.ones(1, 3, 8, 8))
    assert weight[0, 1].abs().sum() == 0  # channels do not mix


@pytest.mark.parametrize("name", ["fcn8s-vgg16", "pspnet-r50"])
def test_segmenter_learns_a_tiny_batch(name: str) -> None:
    """Gradients reach the whole network: a few Adam steps fit a two-class layout."""
    torch.manual_seed(0)
    seg = build_segmenter(name, width=0.0625, num_classes=3).train()
    x = torch.randn(2, 3, 32, 32)
    y = torch.zeros(2, 32, 32, dtype=torch.long)
    y[:, :, 16:] = 2
    y[:, :4] = 255
    opt = torch.optim.Adam(seg.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = F.cross_entropy(seg(x).logits, y, ignore_index=255)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first_conv = seg.features[0] if name == "fcn8s-vgg16" else seg.backbone.conv1
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    assert losses[-1] < 0.5 * losses[0], losses


def test_unknown_segmenter_and_aux_on_fcn_are_user_errors() -> None:
    with pytest.raises(HrsegError, match="--arch: unknown segmenter 'unet'"):
        build_segmenter("unet")
    with pytest.raises(HrsegError, match="--aux"):
        build_segmenter("fcn8s-vgg16", width=0.0625, aux=True)
    with pytest.raises(HrsegError, match="--width"):
        build_segmenter("fcn8s-vgg16", width=-1.0)


def test_seed_fixes_initialisation() -> None:
    torch.manual_seed(3)
    a = build_segmenter("pspnet-r50", width=0.0625).state_dict()
    torch.manual_seed(3)
    b = build_segmenter("pspnet-r50", width=0.0625).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pspnet_head_layout_at_full_width() -> None:
    with torch.device("meta"):
        seg = build_segmenter("pspnet-r50", aux=True)
    pools = [m.output_size for m in seg.ppm.modules() if isinstance(m, torch.nn.AdaptiveAvgPool2d)]
    assert pools == [1, 2, 3, 6]
    assert seg.bottleneck[0].in_channels == 2048 + 4 * 512
    assert seg.bottleneck[0].out_channels == seg.feature_channels == 512
    assert seg.aux_head[0][0].in_channels == 1024  # layer3
    assert seg.backbone.output_stride == 8


def test_fcn_layout_at_full_width() -> None:
    with torch.device("meta"):
        seg = build_segmenter("fcn8s-vgg16")
    assert (seg.fc6.in_channels, seg.fc6.out_channels, seg.fc6.kernel_size) == (512, 4096, (7, 7))
    assert (seg.fc7.in_channels, seg.fc7.out_channels, seg.fc7.kernel_size) == (4096, 4096, (1, 1))
    assert (seg.score_pool4.in_channels, seg.score_pool3.in_channels) == (512, 256)
    assert seg.feature_channels == 512
