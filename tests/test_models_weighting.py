"""Weighting networks: the METHOD.md tables, the per-level heads, W^19's class channel,
every combination / normalisation option, and the domain-classifier loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrseg.errors import HrsegError
from hrseg.models import LEVELS, WEIGHTING_NETWORKS, HierarchicalWeighting, count_parameters
from hrseg.models.weighting import w1_trunk, w19_trunk



class Fixed(nn.Module):
    """A stand-in trunk that returns chosen logits, so the heads and the combination can be checked exactly."""

    def __init__(self, logits: Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())

    def forward(self, inp: Tensor) -> Tensor:
        return self.logits


def paper_w(*args: object, **changes: object) -> HierarchicalWeighting:
    """W as the paper has it (three levels, product, no normalisation or balance, on S's prediction) unless told."""
    return HierarchicalWeighting(*args, **{"input": "pred", "combine": "product", "normalize": "none",
                                           "levels": LEVELS, "balance": "none", **changes})


def weight_of(w: HierarchicalWeighting, inp: Tensor, labels: Tensor) -> Tensor:
    with torch.no_grad():
        return w(inp, labels).weight


def with_fixed(w: HierarchicalWeighting, logits: dict[str, Tensor]) -> HierarchicalWeighting:
    for level, z in logits.items():
        w.trunks[level] = Fixed(z)
    return w


def conv_rows(trunk: nn.Module) -> list[tuple[int, int, int, int, int]]:
    return [
        (m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0])
        for m in trunk.modules()
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    ]


def test_w1_trunk_is_the_table() -> None:
    trunk = w1_trunk()
    assert conv_rows(trunk) == [(19, 64, 4, 2, 1), (64, 128, 4, 2, 1), (128, 256, 4, 2, 1),
                                (256, 512, 4, 2, 1), (512, 1, 4, 2, 1)]
    assert count_parameters(trunk) == 2_781_121
    assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in trunk.modules()) == 4
    assert count_parameters(w1_trunk(in_channels=3)) == 2_781_121 - 16 * 64 * 16


def test_w19_trunk_is_the_table() -> None:
    trunk = w19_trunk()
    assert conv_rows(trunk) == [(19, 64, 3, 2, 1), (64, 128, 3, 2, 1), (128, 128, 3, 1, 1), (128, 128, 3, 1, 1),
                                (128, 128, 3, 1, 1), (128, 19, 1, 1, 0)]
    assert isinstance(list(trunk.children())[-1], nn.ConvTranspose2d)
    norms = [m for m in trunk.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert len(norms) == 3 and not any(m.affine for m in norms)
    convs = sum(count_parameters(m) for m in trunk.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))
    assert convs == count_parameters(trunk) == 530_067


def test_each_level_has_its_own_trunk() -> None:
    w = paper_w("w1")
    assert count_parameters(w) == 3 * 2_781_121
    assert len({id(t) for t in w.trunks.values()}) == 3
    assert count_parameters(paper_w("w19", levels=("pixel", "image"))) == 2 * 530_067


@pytest.mark.parametrize("scheme,channels,native", [("w1", 1, (2, 4)), ("w19", 19, (16, 32))])
def test_level_shapes(scheme: str, channels: int, native: tuple[int, int]) -> None:
    torch.manual_seed(0)
    w = paper_w(scheme, width=0.125)
    inp = torch.randn(2, 19, 64, 128).softmax(1)
    labels = torch.randint(0, 19, (2, 96, 200))  # label resolution differs from the input's
    out = w(inp, labels)
    assert out.logits["pixel"].shape == out.logits["region"].shape == (2, channels, *native)
    assert out.logits["image"].shape == (2, channels, 1, 1)
    for level in ("pixel", "region", "image"):
        assert out.scores[level].shape == (2, 96, 200)
        assert ((out.scores[level] > 0) & (out.scores[level] < 1)).all()
    assert out.weight.shape == (2, 96, 200)


def test_image_input_ablation() -> None:
    w = paper_w("w1", in_channels=3, width=0.125)
    out = w(torch.randn(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.long))
    assert out.weight.shape == (1, 64, 64)


def test_region_cells_share_a_score_pixel_level_is_smooth_image_level_constant() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 1, 4, 8)
    w = with_fixed(paper_w("w1", width=0.125), {"pixel": z, "region": z, "image": z})
    labels = torch.zeros(2, 32, 64, dtype=torch.long)
    out = w(torch.zeros(2, 19, 32, 64), labels)
    region = out.scores["region"].view(2, 4, 8, 8, 8)
    assert torch.equal(region, region[:, :, :1, :, :1].expand_as(region))
    torch.testing.assert_close(region[:, :, 0, :, 0], torch.sigmoid(z[:, 0]))
    torch.testing.assert_close(out.scores["pixel"], torch.sigmoid(F.interpolate(z, size=(32, 64), mode="bilinear"))[:, 0])
    assert out.scores["pixel"][0, 3, :8].unique().numel() > 1
    for b in range(2):
        torch.testing.assert_close(out.scores["image"][b], torch.sigmoid(z[b].mean()).expand(32, 64))


def test_w19_reads_the_ground_truth_channel_at_every_level() -> None:
    classes = torch.arange(19, dtype=torch.float32) - 9.0  # channel k holds the logit k - 9
    z = classes.view(1, 19, 1, 1).expand(2, 19, 4, 4).contiguous()
    w = with_fixed(paper_w("w19", width=0.125),
                   {"pixel": z, "region": z, "image": z[:, :, :1, :1]})
    labels = torch.randint(0, 19, (2, 16, 16), generator=torch.Generator().manual_seed(0))
    labels[0, 0, :5] = 255
    out = w(torch.zeros(2, 19, 16, 16), labels)
    expected = torch.sigmoid(labels.float() - 9.0)
    expected[0, 0, :5] = torch.sigmoid(torch.tensor(-9.0))  # ignore pixels read channel 0
    for level in ("pixel", "region", "image"):
        torch.testing.assert_close(out.scores[level], expected)


def test_w19_picks_the_one_high_channel_only_where_it_is_the_class() -> None:
    z = torch.full((1, 19, 2, 2), -8.0)
    z[0, 5, 0, 0] = 8.0  # class 5 looks real in the top-left region only
    w = with_fixed(paper_w("w19", levels=("region",), width=0.125), {"region": z})
    labels = torch.full((1, 8, 8), 3, dtype=torch.long)
    labels[0, :2, :2] = 5   # class-5 pixels inside the top-left region
    labels[0, 6:, 6:] = 5   # class-5 pixels elsewhere
    score = w(torch.zeros(1, 19, 8, 8), labels).scores["region"][0]
    assert (score[:2, :2] > 0.99).all()
    assert (score[2:4, :4] < 0.01).all() and (score[6:, 6:] < 0.01).all()


def level_logits(seed: int = 0, shape: tuple[int, ...] = (2, 1, 4, 4)) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"pixel": torch.randn(shape, generator=g) * 2, "region": torch.randn(shape, generator=g) * 2,
            "image": torch.randn(shape[:2] + (1, 1), generator=g) * 2}


def per_pixel(z: dict[str, Tensor], size: tuple[int, int]) -> dict[str, Tensor]:
    return {
        "pixel": F.interpolate(z["pixel"], size=size, mode="bilinear")[:, 0],
        "region": F.interpolate(z["region"], size=size, mode="nearest")[:, 0],
        "image": z["image"][:, 0].expand(-1, *size),
    }


@pytest.mark.parametrize("combine", ["product", "mean", "ratio"])
def test_combinations(combine: str) -> None:
    z = level_logits()
    w = with_fixed(paper_w("w1", combine=combine, width=0.125), z)
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    weight = w(torch.zeros(2, 19, 16, 16), labels).weight
    p = per_pixel({k: v.double() for k, v in z.items()}, (16, 16))
    s = {k: torch.sigmoid(v) for k, v in p.items()}
    expected = {
        "product": s["pixel"] * s["region"] * s["image"],
        "mean": (s["pixel"] + s["region"] + s["image"]) / 3,
        "ratio": math.prod(v / (1 - v) for v in s.values()),
    }[combine]
    torch.testing.assert_close(weight, expected.float(), rtol=1e-5, atol=1e-6)


def test_single_level_weight_is_its_score() -> None:
    z = level_logits()
    w = with_fixed(paper_w("w1", levels=("region",), width=0.125), {"region": z["region"]})
    out = w(torch.zeros(2, 19, 16, 16), torch.zeros(2, 16, 16, dtype=torch.long))
    assert set(out.scores) == {"region"}
    torch.testing.assert_close(out.weight, out.scores["region"])


def test_batch_normalisation_gives_mean_one_over_valid_pixels() -> None:
    z = level_logits(1)
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[1, 8:] = 255
    plain = with_fixed(paper_w("w1", width=0.125), z)
    normed = with_fixed(paper_w("w1", normalize="batch", width=0.125), z)
    w0 = plain(torch.zeros(2, 19, 16, 16), labels).weight
    w1 = normed(torch.zeros(2, 19, 16, 16), labels).weight
    valid = labels != 255
    torch.testing.assert_close(w1[valid].mean(), torch.tensor(1.0))
    torch.testing.assert_close(w1, w0 / w0[valid].mean(), rtol=1e-5, atol=1e-6)
    assert abs(w1.detach().mean().item() - 1.0) > 1e-3  # ignore pixels were not counted


def test_running_normalisation_is_an_ema_buffer_updated_in_training_only() -> None:
    w = paper_w("w1", normalize="running", momentum=0.1, width=0.125)
    assert "running_log_mean" in w.state_dict()
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    means = []
    for seed in (1, 2):
        z = level_logits(seed)
        with_fixed(w, z)
        raw = math.prod(torch.sigmoid(v) for v in per_pixel(z, (16, 16)).values())
        means.append(float(raw.mean()))
        weight = weight_of(w, torch.zeros(2, 19, 16, 16), labels)
        ema = means[0] if seed == 1 else 0.9 * means[0] + 0.1 * means[1]
        assert float(w.running_log_mean.exp()) == pytest.approx(ema, rel=1e-5)
        torch.testing.assert_close(weight, raw / ema, rtol=1e-5, atol=1e-6)
    w.eval()
    before = float(w.running_log_mean.exp())
    with_fixed(w, level_logits(3))
    weight_of(w, torch.zeros(2, 19, 16, 16), labels)
    assert float(w.running_log_mean.exp()) == before and int(w.num_updates) == 2
    fresh = paper_w("w1", normalize="running", momentum=0.1, width=0.125)
    fresh.load_state_dict(w.state_dict(), strict=False)
    assert float(fresh.running_log_mean.exp()) == pytest.approx(before)


@pytest.mark.parametrize("combine", ["product", "ratio"])
def test_clamp_applies_after_normalisation(combine: str) -> None:
    z = level_logits(4)
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    free = with_fixed(paper_w("w1", combine=combine, normalize="batch", width=0.125), z)
    capped = with_fixed(paper_w("w1", combine=combine, normalize="batch", clamp=1.5, width=0.125), z)
    a = free(torch.zeros(2, 19, 16, 16), labels).weight
    b = capped(torch.zeros(2, 19, 16, 16), labels).weight
    assert a.max() > 1.5 and b.max() <= 1.5 + 1e-6
    torch.testing.assert_close(b, a.clamp(max=1.5))


def test_ratio_is_stable_for_extreme_logits() -> None:
    z = {"pixel": torch.full((1, 1, 2, 2), -150.0), "region": torch.full((1, 1, 2, 2), -120.0),
         "image": torch.full((1, 1, 1, 1), -90.0)}
    z["pixel"][0, 0, 0, 0] = -140.0
    w = with_fixed(paper_w("w1", combine="ratio", normalize="batch", width=0.125), z)
    weight = w(torch.zeros(1, 19, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long)).weight
    assert torch.isfinite(weight).all() and weight.max() > weight.min() > 0
    assert weight.detach().mean().item() == pytest.approx(1.0, rel=1e-4)
    z = {k: -v for k, v in z.items()}
    w = with_fixed(paper_w("w1", combine="ratio", width=0.125), z)
    assert torch.isfinite(w(torch.zeros(1, 19, 8, 8), torch.zeros(1, 8, 8, dtype=torch.long)).weight).all()


def test_weight_is_a_constant_the_logits_train() -> None:
    """The loss weight carries no gradient (METHOD §3); W trains through its level logits only."""
    w = paper_w("w19", width=0.125)
    inp, labels = torch.randn(1, 19, 32, 32), torch.zeros(1, 32, 32, dtype=torch.long)
    out = w(inp, labels)
    assert not out.weight.requires_grad
    assert all(z.requires_grad for z in out.logits.values())


def manual_bce(x: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, target))


def test_w1_classifier_loss_counts_valid_pixels_cells_and_images() -> None:
    z = level_logits(5, (3, 1, 2, 2))
    labels = torch.zeros(3, 8, 8, dtype=torch.long)
    labels[0, :4, :4] = 255  # one whole region cell ignored
    labels[0, 4, 4] = 255    # one pixel of another cell: that cell stays valid
    labels[2] = 255          # a whole image ignored
    w = with_fixed(paper_w("w1", width=0.125), z)
    loss = w.classifier_loss(torch.zeros(3, 19, 8, 8), labels, domain=1.0)
    valid = labels != 255
    cells = torch.tensor([[[False, True], [True, True]], [[True, True], [True, True]], [[False, False], [False, False]]])
    expected = (manual_bce(per_pixel(z, (8, 8))["pixel"][valid], 1.0)
                + manual_bce(z["region"][:, 0][cells], 1.0)
                + manual_bce(z["image"][:2, 0, 0, 0], 1.0))
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert w.trunks["region"].logits.grad[0, 0, 0, 0] == 0 and w.trunks["region"].logits.grad[0, 0, 1, 1] != 0


def test_w19_classifier_loss_reads_gt_channel_per_pixel_and_domain_flips() -> None:
    g = torch.Generator().manual_seed(6)
    z = {"pixel": torch.randn(2, 19, 2, 2, generator=g), "region": torch.randn(2, 19, 2, 2, generator=g),
         "image": torch.randn(2, 19, 1, 1, generator=g)}
    labels = torch.randint(0, 19, (2, 8, 8), generator=g)
    labels[1, :3] = 255
    w = with_fixed(paper_w("w19", width=0.125), z)
    valid = labels != 255
    idx = labels.clamp(max=18).unsqueeze(1)
    expected = 0
    for level, mode in (("pixel", "bilinear"), ("region", "nearest"), ("image", "nearest")):
        up = F.interpolate(z[level], size=(8, 8), mode=mode)
        expected = expected + manual_bce(up.gather(1, idx)[:, 0][valid], 0.0)
    loss = w.classifier_loss(torch.zeros(2, 19, 8, 8), labels, domain=0.0)
    torch.testing.assert_close(loss, expected)
    flipped = with_fixed(paper_w("w19", width=0.125), {k: -v for k, v in z.items()})
    torch.testing.assert_close(flipped.classifier_loss(torch.zeros(2, 19, 8, 8), labels, domain=1.0), loss)


def test_classifier_loss_reuses_forward_logits_and_survives_all_ignore() -> None:
    torch.manual_seed(0)
    w = paper_w("w1", width=0.125)
    inp, labels = torch.randn(2, 19, 64, 64), torch.randint(0, 19, (2, 64, 64))
    out = w(inp, labels)
    torch.testing.assert_close(w.classifier_loss(inp, labels, 0.0, logits=out.logits),
                               w.classifier_loss(inp, labels, 0.0))
    empty = w.classifier_loss(inp, torch.full((2, 64, 64), 255), 1.0)
    assert empty.item() == 0.0
    empty.backward()
    assert all(p.grad is not None for p in w.parameters())


def test_trained_classifiers_give_target_like_inputs_higher_weight() -> None:
    """The real trunks learn the domain task: after a few steps sharp "target" predictions outweigh flat ones."""
    torch.manual_seed(0)
    w = paper_w("w19", width=0.25)
    labels = torch.randint(0, 19, (4, 32, 32))
    target = F.one_hot(labels, 19).permute(0, 3, 1, 2).float() * 0.9 + 0.1 / 19
    source = torch.randn(4, 19, 32, 32).softmax(1)
    opt = torch.optim.Adam(w.parameters(), lr=1e-3)
    for _ in range(30):
        loss = w.classifier_loss(target, labels, 1.0) + w.classifier_loss(source, labels, 0.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert weight_of(w, target, labels).mean() > 2 * weight_of(w, source, labels).mean()


@pytest.mark.parametrize("kwargs,match", [
    ({"network": "w7"}, "--weight-network: unknown weighting network 'w7'"),
    ({"combine": "max"}, "--weight-combine: unknown weight combination 'max'"),
    ({"normalize": "l2"}, "--weight-normalize: unknown weight normalisation"),
    ({"levels": ("pixel", "scene")}, "weighting.levels: unknown level 'scene'"),
    ({"sharpen": 0.0}, "weighting.sharpen"),
    ({"levels": ()}, "at least one"),
    ({"clamp": 0.0}, "weighting.clamp"),
])
def test_bad_options_are_user_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(HrsegError, match=match):
        HierarchicalWeighting(**kwargs)


def test_w19_default_has_an_activation_after_each_instance_norm_and_the_literal_table_stays() -> None:
    assert {"w19", "w19-literal"} <= set(WEIGHTING_NETWORKS.names())
    for network, activations in (("w19", 5), ("w19-literal", 2)):
        trunk = paper_w(network, levels=("image",)).trunks["image"]
        layers = list(trunk.children())
        assert sum(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in layers) == activations
        after_norm = [layers[i + 1] for i, m in enumerate(layers) if isinstance(m, nn.InstanceNorm2d)]
        assert all(isinstance(m, nn.LeakyReLU) for m in after_norm) == (network == "w19")
        assert count_parameters(trunk) == 530_067


def test_w19_image_level_depends_on_its_input_the_literal_one_does_not() -> None:
    """The literal table ends in InstanceNorm + a linear 1x1 layer: its image level is the bias for every input."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 19, 32, 64, generator=g).softmax(1)
    b = (3 * torch.randn(2, 19, 32, 64, generator=g)).softmax(1)
    for network, depends in (("w19", True), ("w19-literal", False)):
        torch.manual_seed(0)
        w = paper_w(network, levels=("image",), width=0.25).eval()
        za, zb = w.level_logits(a)["image"], w.level_logits(b)["image"]
        bias = w.trunks["image"][-1].bias.view(1, -1, 1, 1)
        if depends:
            assert (za - zb).abs().max() > 1e-3
            assert (za[0] - za[1]).abs().max() > 1e-3  # also between the images of one batch
        else:
            torch.testing.assert_close(za, bias.expand_as(za), atol=1e-5, rtol=0)
            torch.testing.assert_close(zb, bias.expand_as(zb), atol=1e-5, rtol=0)


def test_soft_threshold_gives_near_binary_maps_on_a_toy_input() -> None:
    """Two groups of pixels per level, far apart in score: the weight is ~0 on one side, ~constant on the other."""
    g = torch.Generator().manual_seed(1)
    high = torch.zeros(2, 1, 8, 8, dtype=torch.bool)
    high[:, :, :, :4] = True  # left half scores high at every level
    z = torch.where(high, 2.0, -2.0) + 0.05 * torch.randn(2, 1, 8, 8, generator=g)
    w = with_fixed(paper_w("w1", levels=("pixel", "region"), combine="softthreshold",
                                         normalize="batch", steepness=5.0, width=0.125),
                   {"pixel": z, "region": z})
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    weight = w(torch.zeros(2, 19, 8, 8), labels).weight
    left, right = weight[:, :, :4], weight[:, :, 4:]
    assert right.max() < 0.02 * left.min()
    assert (left - 2.0).abs().max() < 0.05  # half the pixels carry the batch's mean weight of 1
    torch.testing.assert_close(weight.mean(), torch.tensor(1.0))
    soft = with_fixed(paper_w("w1", levels=("pixel", "region"), combine="product", normalize="batch",
                                            width=0.125), {"pixel": z, "region": z})
    plain = soft(torch.zeros(2, 19, 8, 8), labels).weight
    assert plain[:, :, 4:].min() > 0.01 * plain[:, :, :4].max()  # the product of sigmoids is far from binary


@pytest.mark.parametrize("combine", ["softthreshold", "softthreshold-sum"])
def test_soft_threshold_follows_the_scores(combine: str) -> None:
    """Shifting (or scaling) all logits changes nothing: the threshold is relative to the batch's scores."""
    z = level_logits(7)
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[0, :3] = 255

    def weight(shift: float, scale: float = 1.0) -> Tensor:
        moved = {k: scale * v + shift for k, v in z.items()}
        w = with_fixed(paper_w("w1", combine=combine, normalize="batch", width=0.125), moved)
        return w(torch.zeros(2, 19, 16, 16), labels).weight

    base = weight(0.0)
    for shift, scale in ((-6.0, 1.0), (4.0, 1.0), (-3.0, 2.5)):
        torch.testing.assert_close(weight(shift, scale), base, rtol=1e-3, atol=1e-4)
    assert base.max() > 3 * base.min()


def test_soft_threshold_of_the_sum_is_one_threshold_on_the_summed_logits() -> None:
    z = level_logits(11)
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    w = with_fixed(paper_w("w1", combine="softthreshold-sum", normalize="batch", steepness=2.0,
                                         width=0.125), z)
    weight = w(torch.zeros(2, 19, 16, 16), labels).weight
    total = sum(per_pixel(z, (16, 16)).values())
    u = (total - total.mean()) / total.std(unbiased=False)
    expected = torch.sigmoid(2.0 * u)
    torch.testing.assert_close(weight, expected / expected.mean(), rtol=1e-4, atol=1e-5)


def test_soft_threshold_is_per_class_for_w19() -> None:
    """Each class is judged against its own pixels: a class whose every score is low still has a selected half."""
    z = torch.zeros(1, 19, 8, 8)
    z[0, 3] = torch.linspace(-9.0, -8.0, 64).view(8, 8)  # class 3: all low, but ordered
    z[0, 5] = torch.linspace(5.0, 6.0, 64).view(8, 8)    # class 5: all high, same order
    labels = torch.full((1, 8, 8), 3, dtype=torch.long)
    labels[0, 4:] = 5
    w = with_fixed(paper_w("w19", levels=("pixel",), combine="softthreshold", normalize="batch",
                                         steepness=4.0, width=0.125), {"pixel": z})
    weight = w(torch.zeros(1, 19, 8, 8), labels).weight[0]
    cls3, cls5 = weight[:4].flatten(), weight[4:].flatten()
    assert cls3[-8:].mean() > 10 * cls3[:8].mean() and cls5[-8:].mean() > 10 * cls5[:8].mean()
    assert 0.5 < float(cls3.mean() / cls5.mean()) < 2.0  # not all of class 3 thrown away
    product = with_fixed(paper_w("w19", levels=("pixel",), normalize="batch", width=0.125),
                         {"pixel": z})(torch.zeros(1, 19, 8, 8), labels).weight[0]
    assert product[:4].mean() < 1e-3 * product[4:].mean()


def test_constant_scores_give_uniform_soft_threshold_weights() -> None:
    z = {k: torch.full_like(v, 2.5) for k, v in level_logits(8).items()}
    w = with_fixed(paper_w("w1", combine="softthreshold", normalize="batch", width=0.125), z)
    weight = w(torch.zeros(2, 19, 16, 16), torch.zeros(2, 16, 16, dtype=torch.long)).weight
    torch.testing.assert_close(weight, torch.ones_like(weight))


def test_warmup_then_ramp_from_uniform_to_full_weights_counted_by_training_calls() -> None:
    z = level_logits(9)
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    full = with_fixed(paper_w("w1", normalize="batch", width=0.125), z)
    target = full(torch.zeros(2, 19, 16, 16), labels, update_running=False).weight
    w = with_fixed(paper_w("w1", normalize="batch", warmup=2, ramp=4, width=0.125), z)
    seen = [w(torch.zeros(2, 19, 16, 16), labels).weight for _ in range(8)]  # training mode: one call per step
    assert [w.strength(t) for t in range(8)] == [0.0, 0.0, 0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    for t in (0, 1, 2):
        torch.testing.assert_close(seen[t], torch.ones_like(target))
    expected = target.pow(0.5)
    torch.testing.assert_close(seen[4], expected / expected.mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(seen[7], target, rtol=1e-5, atol=1e-6)
    w.eval()
    torch.testing.assert_close(w(torch.zeros(2, 19, 16, 16), labels).weight, target, rtol=1e-5, atol=1e-6)
    assert int(w.num_updates) == 8  # evaluation does not advance the schedule


def test_label_smoothing_moves_the_classifier_targets() -> None:
    z = level_logits(10, (2, 1, 2, 2))
    labels = torch.zeros(2, 8, 8, dtype=torch.long)
    plain = with_fixed(paper_w("w1", levels=("pixel",), width=0.125), {"pixel": z["pixel"]})
    smooth = with_fixed(paper_w("w1", levels=("pixel",), smoothing=0.1, width=0.125),
                        {"pixel": z["pixel"]})
    up = per_pixel(z, (8, 8))["pixel"]
    for domain, target in ((1.0, 0.9), (0.0, 0.1)):
        expected = F.binary_cross_entropy_with_logits(up, torch.full_like(up, target))
        torch.testing.assert_close(smooth.classifier_loss(torch.zeros(2, 19, 8, 8), labels, domain), expected)
        assert not torch.allclose(plain.classifier_loss(torch.zeros(2, 19, 8, 8), labels, domain), expected)


@pytest.mark.parametrize("kwargs,match", [
    ({"steepness": 0.0}, "weighting.steepness"),
    ({"smoothing": 0.5}, "weighting.smoothing"),
    ({"warmup": -1}, "weighting.warmup"),
])
def test_bad_selection_options_are_user_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(HrsegError, match=match):
        HierarchicalWeighting(**kwargs)


def test_one_set_of_defaults_and_checks_for_the_module_and_the_config() -> None:
    from dataclasses import fields

    from hrseg.models.weighting import INPUTS, NORMALIZATIONS, WeightingConfig
    from hrseg.training.build import build_weighting
    from hrseg.training.config import TrainConfig, override

    w = HierarchicalWeighting("w19")
    assert w.config == WeightingConfig(network="w19").filled()
    assert (w.config.levels, w.config.balance) == (("pixel", "region", "image", "agreement"), "class")
    assert (w.combine, w.normalize, w.in_channels) == ("softthreshold", "batch", INPUTS["image"].channels(19))
    cfg = override(TrainConfig(scheme="w19"), {"weighting.clamp": 2.5, "weighting.levels": ["pixel", "image"],
                                              "weighting.input": "pred+image"}).resolved()
    built = build_weighting(cfg)
    assert built.config == cfg.weighting and built.in_channels == 22 and tuple(built.trunks) == ("pixel", "image")
    for key, value in (("clamp", 0.0), ("sharpen", -1.0), ("steepness", math.inf), ("smoothing", 0.5),
                       ("ramp", -1), ("levels", ("pixel", "scene")), ("combine", "max"), ("input", "depth")):
        with pytest.raises(HrsegError) as from_module:
            HierarchicalWeighting("w1", **{key: value})
        with pytest.raises(HrsegError) as from_config:
            override(TrainConfig(scheme="w1"), {f"weighting.{key}": value}).validate()
        assert str(from_module.value) == str(from_config.value), key
    assert {f.name for f in fields(WeightingConfig)} >= {"network", "input", "combine", "normalize", "clamp"}
    assert list(NORMALIZATIONS) == ["none", "batch", "running"] and list(INPUTS) == ["pred", "image", "pred+image"]


def test_a_normalisation_is_a_registered_function() -> None:
    from hrseg.models.weighting import NORMALIZATIONS

    @NORMALIZATIONS.register("halved-test")
    def _halved(w: HierarchicalWeighting, log_w: Tensor, valid: Tensor, update: bool) -> Tensor:
        return log_w - math.log(2.0)

    try:
        z = {"pixel": torch.zeros(1, 1, 4, 4)}
        w = with_fixed(paper_w("w1", levels=("pixel",), normalize="halved-test"), z)
        weight = w(torch.zeros(1, 19, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)).weight
        torch.testing.assert_close(weight, torch.full((1, 4, 4), 0.25))  # sigmoid(0) = 0.5, halved
    finally:
        NORMALIZATIONS._entries.pop("halved-test")


def test_class_score_is_the_geometric_mean_of_the_class_channel_level_sigmoids() -> None:
    z = {"pixel": torch.randn(1, 19, 4, 4), "region": torch.randn(1, 19, 2, 2), "image": torch.randn(1, 19, 1, 1)}
    w = with_fixed(paper_w("w19", width=0.125), z)
    score = w.class_score(torch.zeros(1, 19, 4, 4), 7, (4, 4))
    per_level = w.pixel_logits(w.level_logits(torch.zeros(1, 19, 4, 4)), torch.full((1, 4, 4), 7))
    expected = torch.stack([torch.sigmoid(v) for v in per_level.values()]).prod(0) ** (1 / 3)
    torch.testing.assert_close(score, expected)
