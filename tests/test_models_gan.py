"""Generator G and discriminator D: the METHOD.md tables, exact output sizes, head shapes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hrseg.errors import HrsegError
from hrseg.models import Discriminator, Generator, build_segmenter, count_parameters



def conv_params(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + cout


def test_generator_parameter_counts_follow_the_table() -> None:
    res = 4 * conv_params(512, 512)
    with torch.device("meta"):
        g32 = Generator(512, stride=32)
        g8 = Generator(512, stride=8)
    stages32 = [(512, 256), (256, 128), (128, 64), (64, 32), (32, 3)]
    assert count_parameters(g32) == res + sum(conv_params(a, b) for a, b in stages32)
    assert count_parameters(g8) == res + sum(conv_params(a, b) for a, b in [(512, 64), (64, 32), (32, 3)])
    ups = [m for m in g32.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.stride[0], m.padding[0], m.output_padding[0]) for m in ups] == [(2, 1, 1)] * 5


def test_discriminator_parameter_count_follows_the_table() -> None:
    chans = [3, 64, 128, 256, 512, 1024, 2048]
    body = sum(conv_params(a, b) for a, b in zip(chans[:-1], chans[1:]))
    with torch.device("meta"):
        d = Discriminator(num_classes=19)
    assert count_parameters(d) == body + conv_params(2048, 4) + conv_params(2048, 19) == 25_570_967
    slopes = {m.negative_slope for m in d.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.2}


@pytest.mark.parametrize("name", ["fcn8s-vgg16", "pspnet-r50"])
@pytest.mark.parametrize("size", [(64, 128), (65, 97), (96, 70)])
def test_generator_reconstructs_exactly_the_input_size(name: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    seg = build_segmenter(name, width=0.0625).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        features = seg(x).features
    g = Generator(seg.feature_channels, seg.feature_stride, width=0.0625).train()
    out = g(features, size=size)
    assert out.shape == x.shape
    full = g(features)
    assert full.shape[-2:] == (features.shape[-2] * seg.feature_stride, features.shape[-1] * seg.feature_stride)
    torch.testing.assert_close(out, full[..., : size[0], : size[1]])  # crop, not resize
    (out - x).abs().mean().backward()
    assert all(p.grad is not None for p in g.parameters())


def test_generator_resizes_when_the_features_fall_short() -> None:
    g = Generator(16, stride=8, width=0.0625)
    assert g(torch.randn(1, 16, 3, 4), size=(30, 20)).shape == (1, 3, 30, 20)


def test_generator_rejects_other_strides() -> None:
    with pytest.raises(HrsegError, match="generator stride"):
        Generator(512, stride=16)


@pytest.mark.parametrize("size", [(128, 256), (65, 97)])
def test_discriminator_heads(size: tuple[int, int]) -> None:
    d = Discriminator(num_classes=19, width=0.0625)
    domain, cls = d(torch.randn(3, 3, *size))
    h, w = size
    for _ in range(6):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    assert domain.shape == (3, 4, h, w)
    assert cls.shape == (3, 19, h, w)
