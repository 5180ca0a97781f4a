"""Backbones against torchvision's published layouts: names, shapes, counts, strict loading.

The reference layouts below are written out from torchvision's VGG16 / ResNet50 / ResNet101
definitions independently of hrseg's modules, so a renamed or re-shaped layer in
hrseg fails here. Large tensors are stored expanded from one row (stride 0), so
a full-width file costs a few MB on disk instead of 553 MB while every key and shape is real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from hrseg.errors import HrsegError
from hrseg.models import IMAGENET_URLS, VGG16, ResNet50, build_segmenter, count_parameters
from hrseg.models.backbones import ResNet101
from hrseg.models.pretrained import fetch_state_dict, load_strict

VGG_CONVS = [(0, 3, 64), (2, 64, 64), (5, 64, 128), (7, 128, 128), (10, 128, 256), (12, 256, 256), (14, 256, 256),
             (17, 256, 512), (19, 512, 512), (21, 512, 512), (24, 512, 512), (26, 512, 512), (28, 512, 512)]



def vgg16_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for idx, cin, cout in VGG_CONVS:
        shapes[f"features.{idx}.weight"] = (cout, cin, 3, 3)
        shapes[f"features.{idx}.bias"] = (cout,)
    for idx, cin, cout in ((0, 25088, 4096), (3, 4096, 4096), (6, 4096, 1000)):
        shapes[f"classifier.{idx}.weight"] = (cout, cin)
        shapes[f"classifier.{idx}.bias"] = (cout,)
    return shapes


def _bn(prefix: str, c: int, shapes: dict[str, tuple[int, ...]], tracked: bool) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        shapes[f"{prefix}.{name}"] = (c,)
    if tracked:
        shapes[f"{prefix}.num_batches_tracked"] = ()


def resnet50_shapes(tracked: bool = False) -> dict[str, tuple[int, ...]]:
    """resnet50-19c8e357.pth predates num_batches_tracked: ``tracked=False`` is the real file's layout."""
    return resnet_shapes((3, 4, 6, 3), tracked)


def resnet101_shapes(tracked: bool = False) -> dict[str, tuple[int, ...]]:
    """torchvision's resnet101 (blocks 3, 4, 23, 3); its files exist with and without num_batches_tracked."""
    return resnet_shapes((3, 4, 23, 3), tracked)


def resnet_shapes(blocks_per_layer: tuple[int, int, int, int], tracked: bool) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}
    _bn("bn1", 64, shapes, tracked)
    inplanes = 64
    for layer, (planes, blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_layer), start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            shapes[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            _bn(f"{p}.bn1", planes, shapes, tracked)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            _bn(f"{p}.bn2", planes, shapes, tracked)
            shapes[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            _bn(f"{p}.bn3", planes * 4, shapes, tracked)
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                _bn(f"{p}.downsample.1", planes * 4, shapes, tracked)
            inplanes = planes * 4
    shapes["fc.weight"] = (1000, 2048)
    shapes["fc.bias"] = (1000,)
    return shapes


def fake_weights(shapes: dict[str, tuple[int, ...]], seed: int = 0, expand_over: int = 1_000_000) -> dict[str, Tensor]:
    """Random values per key; tensors over ``expand_over`` elements repeat one random last-dim row (stride-0 expand)."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) >= 2 and torch.Size(shape).numel() > expand_over:
            out[key] = torch.randn(shape[-1], generator=g).expand(shape)
        else:
            out[key] = torch.randn(shape, generator=g)
    return out


def n_params(shapes: dict[str, tuple[int, ...]]) -> int:
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return sum(torch.Size(s).numel() for k, s in shapes.items() if not k.endswith(skip))


def test_reference_layouts_have_torchvision_counts() -> None:
    assert n_params(vgg16_shapes()) == 138_357_544
    assert n_params(resnet50_shapes()) == 25_557_032
    assert n_params(resnet101_shapes()) == 44_549_160


def test_backbone_parameter_counts_equal_torchvision() -> None:
    with torch.device("meta"):
        assert count_parameters(VGG16()) == 138_357_544
        assert count_parameters(ResNet50()) == 25_557_032
        assert count_parameters(ResNet50(dilate=(False, True, True))) == 25_557_032
        assert count_parameters(ResNet101()) == 44_549_160
        assert count_parameters(ResNet101(dilate=(False, True, True), full_dilation=True)) == 44_549_160


def test_backbone_state_dicts_have_torchvision_names_and_shapes() -> None:
    with torch.device("meta"):
        vgg = {k: tuple(v.shape) for k, v in VGG16().state_dict().items()}
        resnet = {k: tuple(v.shape) for k, v in ResNet50().state_dict().items()}
        resnet101 = {k: tuple(v.shape) for k, v in ResNet101().state_dict().items()}
    assert vgg == vgg16_shapes()
    assert resnet == resnet50_shapes(tracked=True)
    assert resnet101 == resnet101_shapes(tracked=True)
    assert len(resnet101) == 626  # 104 batch norms x 5 + 104 convolutions + fc weight and bias


def test_dilation_styles_differ_only_in_the_first_block_of_a_dilated_layer() -> None:
    with torch.device("meta"):
        torchvision_style = ResNet101(dilate=(False, True, True))
        deeplab_style = ResNet101(dilate=(False, True, True), full_dilation=True)
        plain = ResNet101()
    assert [b.conv2.dilation[0] for b in torchvision_style.layer3][:2] == [1, 2]
    assert [b.conv2.dilation[0] for b in torchvision_style.layer4][:2] == [2, 4]
    assert {b.conv2.dilation[0] for b in deeplab_style.layer3} == {2}
    assert {b.conv2.dilation[0] for b in deeplab_style.layer4} == {4}
    assert deeplab_style.output_stride == torchvision_style.output_stride == 8 and plain.output_stride == 32
    assert plain.layer4[0].conv2.stride == (2, 2) and deeplab_style.layer4[0].conv2.stride == (1, 1)
    # v1.5: the stride sits in the 3x3 convolution, not the first 1x1 (Caffe's place)
    assert plain.layer3[0].conv1.stride == (1, 1) and plain.layer3[0].downsample[0].stride == (2, 2)


@pytest.mark.parametrize("tracked", [False, True])
def test_resnet101_file_with_torchvision_names_loads_strictly(tmp_path: Path, tracked: bool) -> None:
    state = fake_weights(resnet101_shapes(tracked=tracked), expand_over=100_000)
    path = tmp_path / "resnet101-63fe2227.pth"
    torch.save(state, path)
    assert path.stat().st_size < 10_000_000  # 171 MB without the stride-0 rows
    model = ResNet101()
    load_strict(model, fetch_state_dict("resnet101", path, 1.0), str(path))
    got = model.state_dict()
    for key in ("conv1.weight", "layer3.22.bn3.running_var", "layer3.22.conv2.weight", "layer4.2.conv3.weight",
                "layer2.0.downsample.1.bias", "fc.weight"):
        assert torch.equal(got[key], state[key]), key
    assert int(got["layer3.22.bn1.num_batches_tracked"]) == (7 if tracked else 0)


def test_resnet101_misnamed_or_resnet50_file_is_refused() -> None:
    with torch.device("meta"):  # shapes are checked before any value is read
        model = ResNet101()
        state = {k: torch.empty(s) for k, s in resnet101_shapes().items()}
        r50 = {k: torch.empty(s) for k, s in resnet50_shapes().items()}
    state["layer3.22.bn2.running_variance"] = state.pop("layer3.22.bn2.running_var")
    with pytest.raises(HrsegError) as info:
        load_strict(model, state, "r101.pth")
    assert str(info.value) == ("r101.pth: does not match ResNet101: 1 missing (layer3.22.bn2.running_var); "
                               "1 unexpected (layer3.22.bn2.running_variance)")
    with pytest.raises(HrsegError) as info:
        load_strict(model, r50, "r50.pth")
    # layer3.6 to layer3.22: 17 blocks x 15 keys (num_batches_tracked may be absent), and nothing else
    assert str(info.value).startswith("r50.pth: does not match ResNet101: 255 missing (layer3.10.bn1.bias, ")
    assert "unexpected" not in str(info.value) and "mis-shaped" not in str(info.value)


def test_resnet_file_without_num_batches_tracked_loads_strictly(tmp_path: Path) -> None:
    state = fake_weights(resnet50_shapes(tracked=False))
    path = tmp_path / "resnet50-19c8e357.pth"
    torch.save(state, path)
    model = ResNet50()
    load_strict(model, fetch_state_dict("resnet50", path, 1.0), str(path))
    got = model.state_dict()
    for key in ("conv1.weight", "layer3.5.bn2.running_var", "layer4.0.downsample.0.weight", "fc.bias"):
        assert torch.equal(got[key], state[key]), key


def test_resnet_file_with_num_batches_tracked_loads(tmp_path: Path) -> None:
    state = fake_weights(resnet50_shapes(tracked=True))
    model = ResNet50()
    load_strict(model, state, "x.pth")
    assert int(model.state_dict()["layer1.0.bn1.num_batches_tracked"]) == 7


def test_pspnet_loads_resnet_file_and_drops_fc(tmp_path: Path) -> None:
    state = fake_weights(resnet50_shapes())
    path = tmp_path / "r50.pth"
    torch.save(state, path)
    seg = build_segmenter("pspnet-r50", pretrained=str(path))
    assert torch.equal(seg.backbone.layer4[2].conv3.weight,
                       state["layer4.2.conv3.weight"])
    assert torch.equal(seg.backbone.bn1.running_mean, state["bn1.running_mean"])
    assert not hasattr(seg.backbone, "fc")
    assert seg.backbone.layer4[1].conv2.dilation == (4, 4)
    assert seg.backbone.layer4[0].conv2.dilation == (2, 2)
    assert seg.backbone.layer3[1].conv2.dilation == (2, 2)
    assert seg.backbone.layer3[0].conv2.stride == (1, 1)


def test_fcn_loads_vgg_file_and_reshapes_classifier_into_fc6_fc7(tmp_path: Path) -> None:
    state = fake_weights(vgg16_shapes())
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(state, path)
    assert path.stat().st_size < 20_000_000  # 553 MB without the stride-0 rows
    seg = build_segmenter("fcn8s-vgg16", pretrained=str(path))
    assert torch.equal(seg.features[28].weight, state["features.28.weight"])
    assert torch.equal(seg.features[0].bias, state["features.0.bias"])
    # fc6 applied to one 7x7 window equals the Linear layer on the flattened window
    window = torch.randn(1, 512, 7, 7, generator=torch.Generator().manual_seed(1))
    linear = window.flatten(1) @ state["classifier.0.weight"][:3].T + state["classifier.0.bias"][:3]
    conv = torch.nn.functional.conv2d(window, seg.fc6.weight[:3], seg.fc6.bias[:3])
    torch.testing.assert_close(conv.flatten(1), linear, rtol=1e-4, atol=1e-4)
    assert torch.equal(seg.fc7.weight[:, :, 0, 0], state["classifier.3.weight"])
    assert torch.equal(seg.fc7.bias, state["classifier.3.bias"])
    assert count_parameters(seg) == 138_357_544 - 4096 * 1000 - 1000 + (4096 + 512 + 256 + 3) * 19 + 2 * 19 * 19 * 16


def test_mis_shaped_missing_and_unexpected_keys_are_listed_in_one_error() -> None:
    state = fake_weights(resnet50_shapes())
    state["layer2.0.conv2.weight"] = torch.zeros(128, 128, 5, 5)
    del state["layer1.1.bn3.bias"]
    state["head.weight"] = torch.zeros(3)
    with pytest.raises(HrsegError) as info:
        load_strict(ResNet50(), state, "weights.pth")
    message = str(info.value)
    assert "\n" not in message and message.startswith("weights.pth:")
    assert "layer2.0.conv2.weight (128, 128, 5, 5) vs (128, 128, 3, 3)" in message
    assert "missing (layer1.1.bn3.bias)" in message
    assert "unexpected (head.weight)" in message


def test_vgg_file_into_resnet_error_is_truncated_listing() -> None:
    with pytest.raises(HrsegError, match=r"267 missing \(bn1.bias, .* and 259 more\); 32 unexpected"):
        load_strict(ResNet50(width=0.0625), fake_weights({k: (1,) for k in vgg16_shapes()}), "vgg.pth")


def test_pretrained_needs_full_width(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(HrsegError, match="--width 1.0"):
        build_segmenter("pspnet-r50", width=0.25, pretrained=str(path))


def test_bad_pretrained_files(tmp_path: Path) -> None:
    with pytest.raises(HrsegError, match="no such file"):
        build_segmenter("fcn8s-vgg16", width=1.0, pretrained=str(tmp_path / "missing.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(HrsegError, match="junk.pth: not a loadable weight file"):
        fetch_state_dict("vgg16", junk, 1.0)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(HrsegError, match="expected a state dict"):
        fetch_state_dict("vgg16", listing, 1.0)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"x": torch.zeros(1), "obj": Path("/")}, path)
    with pytest.raises(HrsegError, match="not a loadable weight file"):
        fetch_state_dict("resnet50", path, 1.0)


def test_imagenet_uses_hub_with_hash_check(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict]] = []

    def fake_hub(url: str, **kwargs: object) -> dict[str, Tensor]:
        calls.append((url, kwargs))
        return fake_weights(resnet50_shapes())

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_hub)
    seg = build_segmenter("pspnet-r50", pretrained="imagenet")
    url, kwargs = calls[0]
    assert url == "https://download.pytorch.org/models/resnet50-19c8e357.pth" == IMAGENET_URLS["resnet50"]
    assert kwargs["check_hash"] is True and kwargs["weights_only"] is True
    assert IMAGENET_URLS["vgg16"] == "https://download.pytorch.org/models/vgg16-397923af.pth"
    assert IMAGENET_URLS["resnet101"] == "https://download.pytorch.org/models/resnet101-63fe2227.pth"
    assert seg.backbone.conv1.weight.shape == (64, 3, 7, 7)


def test_imagenet_download_failure_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(url: str, **kwargs: object) -> None:
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(HrsegError, match=r"--pretrained imagenet: could not get https://download.pytorch.org/"
                                         r"models/vgg16-397923af.pth .*--pretrained PATH"):
        build_segmenter("fcn8s-vgg16", pretrained="imagenet")
