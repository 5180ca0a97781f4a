"""METHOD §3 loss terms on random tensors: weighting limits, ignore handling, the W classifier."""

from __future__ import annotations

import pytest
import torch

from hrseg.models import HierarchicalWeighting
from hrseg.training import losses


def _batch(seed: int, b: int = 2, h: int = 16, w: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, 19, h, w, generator=g)
    labels = torch.randint(0, 19, (b, h, w), generator=g)
    labels[:, :3] = 255  # some ignored pixels
    return logits, labels


def _tiny_segmenter() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 19, 1))


def _grads(loss: torch.Tensor, net: torch.nn.Module) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(net.parameters())))


def test_all_ones_weight_is_joint_training_and_all_zero_is_target_only() -> None:
    net = _tiny_segmenter()
    g = torch.Generator().manual_seed(1)
    xs, xt = torch.randn(2, 3, 12, 16, generator=g), torch.randn(2, 3, 12, 16, generator=g)
    ys = torch.randint(0, 19, (2, 12, 16), generator=g)
    yt = torch.randint(0, 19, (2, 12, 16), generator=g)
    ys[0, :4] = 255

    def objective(weight: torch.Tensor | None, use_source: bool = True) -> torch.Tensor:
        out = net(torch.cat([xs, xt]))
        total = losses.target_loss(out[2:], yt)
        if use_source:
            total = total + losses.weighted_source_loss(out[:2], ys, weight)
        return total

    ones, zeros = torch.ones(2, 12, 16), torch.zeros(2, 12, 16)
    joint, weighted_ones = objective(None), objective(ones)
    assert torch.equal(joint, weighted_ones)
    for a, b in zip(_grads(objective(None), net), _grads(objective(ones), net)):
        assert torch.equal(a, b)
    target_only, weighted_zero = objective(None, use_source=False), objective(zeros)
    torch.testing.assert_close(weighted_zero, target_only, rtol=0, atol=1e-7)
    for a, b in zip(_grads(objective(None, use_source=False), net), _grads(objective(zeros), net)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    # and the weight matters in between: half the weight is not the joint loss
    assert not torch.allclose(objective(0.5 * ones), joint)


def test_weighted_source_loss_normalises_by_valid_pixels_and_detaches_the_weight() -> None:
    logits, labels = _batch(2)
    weight = torch.rand(labels.shape, requires_grad=True)
    loss = losses.weighted_source_loss(logits, labels, weight)
    ce = torch.nn.functional.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    expected = (weight.detach() * ce).sum() / (labels != 255).sum()
    torch.testing.assert_close(loss, expected)
    assert not loss.requires_grad  # no path back into W


def test_fully_ignored_batch_gives_zero_not_nan() -> None:
    logits, labels = _batch(3)
    labels[:] = 255
    assert losses.target_loss(logits, labels).item() == 0.0
    assert losses.weighted_source_loss(logits, labels, torch.ones(labels.shape)).item() == 0.0


def test_target_loss_ignores_255_pixels() -> None:
    logits, labels = _batch(4)
    changed = logits.clone()
    changed[:, :, :3] += 100.0  # only where labels are ignored
    assert torch.equal(losses.target_loss(logits, labels), losses.target_loss(changed, labels))


def test_domain_ce_prefers_the_named_domain() -> None:
    logits = torch.zeros(2, 4, 3, 3)
    logits[:, losses.TARGET_REAL] = 5.0
    assert losses.domain_ce(logits, losses.TARGET_REAL) < 0.1 < losses.domain_ce(logits, losses.SOURCE_REAL)


def test_class_ce_downsamples_labels_to_the_discriminator_map() -> None:
    labels = torch.full((1, 32, 32), 13)
    good = torch.zeros(1, 19, 4, 4)
    good[:, 13] = 10.0
    bad = torch.zeros(1, 19, 4, 4)
    bad[:, 0] = 10.0
    assert losses.class_ce_downsampled(good, labels) < 0.01 < losses.class_ce_downsampled(bad, labels)


def _toy_domains(g: torch.Generator, confident: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Source predictions are flat softmaxes, target ones peak at the labelled class."""
    labels = torch.randint(0, 19, (4, 32, 32), generator=g)
    logits = torch.randn(4, 19, 32, 32, generator=g)
    if confident:
        logits = logits + 6.0 * torch.nn.functional.one_hot(labels, 19).permute(0, 3, 1, 2)
    return torch.softmax(logits, 1), labels


def _train_toy(scheme: str, lr: float, steps: int) -> tuple[dict[str, float], dict[str, float], dict[str, float],
                                                          dict[str, float]]:
    torch.manual_seed(0)
    w = HierarchicalWeighting(network=scheme, in_channels=19, width=0.125,  # the paper's domain classifiers
                              levels=("pixel", "region", "image"), balance="none")
    opt = torch.optim.Adam(w.parameters(), lr=lr, betas=(0.9, 0.99))
    g = torch.Generator().manual_seed(5)

    def scores() -> tuple[dict[str, float], dict[str, float]]:
        with torch.no_grad():
            (ps, ys), (pt, yt) = _toy_domains(g, False), _toy_domains(g, True)
            so, to = w(ps, ys, update_running=False).scores, w(pt, yt, update_running=False).scores
        return {k: v.mean().item() for k, v in so.items()}, {k: v.mean().item() for k, v in to.items()}

    s0, t0 = scores()
    for _ in range(steps):
        (ps, ys), (pt, yt) = _toy_domains(g, False), _toy_domains(g, True)
        opt.zero_grad()
        losses.weighting_loss(w, ps, ys, pt, yt).backward()
        opt.step()
    s1, t1 = scores()
    return s0, t0, s1, t1


def test_w1_classifier_pushes_source_scores_down_and_target_up() -> None:
    s0, t0, s1, t1 = _train_toy("w1", lr=1e-3, steps=40)
    for level in ("pixel", "region", "image"):
        assert s1[level] < s0[level] - 0.2 and s1[level] < 0.3, (level, s0, s1)
        assert t1[level] > t0[level] + 0.2 and t1[level] > 0.7, (level, t0, t1)


def test_w19_classifier_separates_the_domains_at_pixel_level() -> None:
    """W^19 learns slowly: InstanceNorm before its linear head fixes each image's mean logit per
    channel, so its image level cannot separate domains at all (see docs/weighting-variants.md);
    the pixel level still moves in the right direction."""
    s0, t0, s1, t1 = _train_toy("w19", lr=1e-2, steps=40)
    assert t1["pixel"] - s1["pixel"] > (t0["pixel"] - s0["pixel"]) + 0.01, (s0, t0, s1, t1)
    assert s1["pixel"] < 0.5 < t1["pixel"]


def test_sharpening_keeps_batch_mean_one_and_widens_the_gap() -> None:
    def _sharpen(weight: torch.Tensor, valid: torch.Tensor, power: float, renormalise: bool,
                 clamp: float | None) -> torch.Tensor:
        w = HierarchicalWeighting("w1", width=0.125, sharpen=power, normalize="batch" if renormalise else "none",
                                  clamp=clamp)
        return w._sharpen(weight, valid)

    weight = torch.tensor([[[0.5, 1.0, 1.5, 9.0]]])
    valid = torch.tensor([[[True, True, True, False]]])
    assert torch.equal(_sharpen(weight, valid, 1.0, True, None), weight)
    sharp = _sharpen(weight, valid, 2.0, True, None)
    assert sharp[valid].mean().item() == pytest.approx(1.0)
    assert (sharp[0, 0, 2] / sharp[0, 0, 0]).item() == pytest.approx(9.0)  # (1.5 / 0.5) ** 2
    assert _sharpen(weight, valid, 2.0, True, 1.2).max().item() == pytest.approx(1.2)
    torch.testing.assert_close(_sharpen(weight, valid, 3.0, False, None), weight**3)
