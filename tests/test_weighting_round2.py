"""Selection round two (docs/weighting-variants.md): W's class-balanced loss and the agreement level."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hrseg.data.dataset import ShardDataset
from hrseg.data.labels import IGNORE_INDEX
from hrseg.errors import HrsegError
from hrseg.models.weighting import HierarchicalWeighting, agreement_logit, class_balanced_mean
from hrseg.training.build import build_networks, build_optimizers
from hrseg.training.config import TrainConfig, override
from hrseg.training.trainer import Trainer
from tests.data_fixtures import cached_synthetic_data

AGREE = ("pixel", "region", "image", "agreement")


def _thin_class_labels() -> torch.Tensor:
    """8x16 labels: class 0 almost everywhere, a one-pixel-wide pole (class 5) of 8 pixels, 2 ignored pixels."""
    y = torch.zeros(1, 8, 16, dtype=torch.long)
    y[0, :, 7] = 5
    y[0, 0, :2] = IGNORE_INDEX
    return y


@pytest.mark.parametrize("balance", ["none", "class", "sqrt"])
def test_balanced_loss_gives_a_thin_class_its_stated_share(balance: str) -> None:
    w = HierarchicalWeighting("w19", width=0.125, levels=("pixel",), balance=balance)
    y = _thin_class_labels()
    z = torch.zeros(1, 19, 8, 16, requires_grad=True)  # at the label size: the pixel level reads it unresized
    w.classifier_loss(torch.zeros(1, 3, 8, 16), y, domain=0.0, logits={"pixel": z}).backward()
    assert z.grad is not None
    # d BCE / d z at z = 0, target 0 is 0.5 times the pixel's share of the loss
    share = (2 * z.grad.sum(1))[0]
    pole, valid = y[0] == 5, y[0] != IGNORE_INDEX
    n_valid = int(valid.sum())
    n_pole = int(pole.sum())
    expected = {"class": 0.5,  # two classes present
                "sqrt": n_pole ** 0.5 / (n_pole ** 0.5 + (n_valid - n_pole) ** 0.5),
                "none": n_pole / n_valid}[balance]
    assert float(share[pole].sum()) == pytest.approx(expected, rel=1e-5)
    assert float(share[valid].sum()) == pytest.approx(1.0, rel=1e-5)
    assert float(share[~valid].abs().sum()) == 0.0


def test_class_balanced_mean_is_the_mean_of_class_means() -> None:
    y = _thin_class_labels()
    values = torch.rand(1, 8, 16)
    valid = y != IGNORE_INDEX
    means = [values[valid & (y == c)].mean() for c in (0, 5)]
    assert float(class_balanced_mean(values, y, valid, 19)) == pytest.approx(float(sum(means) / 2), rel=1e-5)


def test_balance_is_a_checked_option() -> None:
    with pytest.raises(HrsegError, match="weighting.balance"):
        HierarchicalWeighting("w19", balance="pixels")


def test_agreement_level_reads_the_image_and_needs_it_in_the_input() -> None:
    with pytest.raises(HrsegError, match="weighting.levels.*agreement.*weighting.input"):
        HierarchicalWeighting("w19", input="pred", levels=AGREE)
    w = HierarchicalWeighting("w19", 19 + 3, input="pred+image", width=0.125, levels=AGREE)
    x = torch.randn(2, 22, 16, 32)
    y = torch.randint(0, 19, (2, 16, 32))
    a = w(x, y).scores["agreement"]
    x2 = x.clone()
    x2[:, :19] = torch.randn(2, 19, 16, 32)  # another prediction, the same image
    assert torch.equal(w(x2, y).scores["agreement"], a)


def test_agreement_score_is_the_class_classifier_probability_of_the_label() -> None:
    torch.manual_seed(0)
    z = torch.randn(2, 19, 4, 8)
    y = torch.randint(0, 19, (2, 4, 8))
    p = torch.softmax(z, 1).gather(1, y.unsqueeze(1)).squeeze(1)
    assert torch.allclose(torch.sigmoid(agreement_logit(z, y)), p, atol=1e-6)
    w = HierarchicalWeighting("w19", width=0.125, levels=("agreement",))
    x = torch.randn(2, 3, 16, 32)
    y = torch.randint(0, 19, (2, 16, 32))
    z = torch.nn.functional.interpolate(w.level_logits(x)["agreement"], size=(16, 32), mode="bilinear",
                                        align_corners=False)
    p = torch.softmax(z, 1).gather(1, y.unsqueeze(1)).squeeze(1)
    assert torch.allclose(w(x, y).scores["agreement"], p, atol=1e-5)


def _agreement_grads(w: HierarchicalWeighting, x: torch.Tensor, y: torch.Tensor, domain: float) -> list[torch.Tensor]:
    w.zero_grad()
    w.classifier_loss(x, y, domain).backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            for p in w.trunks["agreement"].parameters()]


def test_synthetic_labels_never_train_the_agreement_level_real_labels_do() -> None:
    torch.manual_seed(0)
    w = HierarchicalWeighting("w19", width=0.125, levels=AGREE)
    x = torch.randn(2, 3, 16, 32)
    y = torch.randint(0, 19, (2, 16, 32))
    source = _agreement_grads(w, x, y, domain=0.0)
    assert all(float(g.abs().sum()) == 0.0 for g in source)
    assert any(float(p.grad.abs().sum()) > 0 for p in w.trunks["pixel"].parameters() if p.grad is not None)
    target = _agreement_grads(w, x, y, domain=1.0)
    assert any(float(g.abs().sum()) > 0 for g in target)
    other = _agreement_grads(w, x, torch.randint(0, 19, (2, 16, 32)), domain=1.0)
    assert any(not torch.equal(a, b) for a, b in zip(target, other))


def test_agreement_level_has_its_own_learning_rate() -> None:
    cfg = override(TrainConfig(scheme="w19"), {"weighting.levels": AGREE, "weighting.agreement_lr": 5e-3,
                                               "weighting.width": 0.125, "model.width": 0.0625,
                                               "model.pretrained": "none", "gan.enabled": False}).resolved()
    nets = build_networks(cfg)
    groups = build_optimizers(cfg, nets)["weighting"].param_groups
    agree = {id(p) for p in nets["weighting"].trunks["agreement"].parameters()}
    assert [g["lr"] for g in groups] == [cfg.weighting.lr, 5e-3]
    assert {id(p) for p in groups[1]["params"]} == agree
    assert not agree & {id(p) for p in groups[0]["params"]}


TINY = {
    "model.width": 0.0625, "model.pretrained": "none", "weighting.width": 0.125, "data.batch_size": 2,
    "data.crop": (64, 32), "optim.lr": 0.01, "run.device": "cpu", "run.progress": False, "gan.enabled": False,
    "data.target_images": 2, "optim.iters": 3, "data.workers": 0, "weighting.levels": AGREE,
    "weighting.input": "image",
}


def _agreement_after_training(data: Path, out: Path, corrupt: set[int] | None, monkeypatch: pytest.MonkeyPatch
                              ) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Train a few steps; ``corrupt``: target-train indices whose labels are replaced (None: the unlabelled ones)."""
    original = ShardDataset.__getitem__
    subset: list[int] = []

    def read(self: ShardDataset, i: int) -> dict:
        item = original(self, i)
        index = int(self.indices[i])
        target = self.manifest.dataset == "cityscapes"
        bad = (target and self.manifest.split != "train") or (
            target and (index in corrupt if corrupt is not None else subset and index not in subset))
        if bad and "label" in item:
            g = torch.Generator().manual_seed(1000 + index)
            item = {**item, "label": torch.randint(0, 19, item["label"].shape, generator=g).to(item["label"].dtype)}
        return item

    monkeypatch.setattr(ShardDataset, "__getitem__", read)
    cfg = override(TrainConfig(scheme="w19"), {**TINY, "data.data": str(data), "run.out": str(out)})
    trainer = Trainer(cfg)
    subset.extend(int(i) for i in trainer.data.target_indices)
    trainer.run()
    monkeypatch.setattr(ShardDataset, "__getitem__", original)
    state = {k: v.clone() for k, v in trainer.nets["weighting"].trunks["agreement"].state_dict().items()}
    return state, list(subset)


def test_agreement_reads_no_target_label_outside_the_labelled_subset(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = cached_synthetic_data(tmp_path_factory)
    clean, subset = _agreement_after_training(data, tmp_path / "clean", set(), monkeypatch)
    # every target label S does not train on (other train images, val) replaced by noise: the same classifier
    noisy, _ = _agreement_after_training(data, tmp_path / "noisy", None, monkeypatch)
    assert all(torch.equal(clean[k], noisy[k]) for k in clean)
    # the control: a labelled image's labels do reach it
    control, _ = _agreement_after_training(data, tmp_path / "control", {subset[0]}, monkeypatch)
    assert any(not torch.equal(clean[k], control[k]) for k in clean)
    assert json.loads((tmp_path / "clean" / "data_subset.json").read_text())["target"]["indices"] == subset


class _ImageWeighting(torch.nn.Module):
    """A stand-in W whose weight is the image's channel mean: it ranks within a class, and we know how."""

    out_channels = 19

    def forward(self, inp: torch.Tensor, labels: torch.Tensor, update_running: bool = False):  # type: ignore[no-untyped-def]
        from hrseg.models.weighting import WeightOutput

        w = inp.mean(1)
        return WeightOutput(logits={}, scores={"pixel": torch.sigmoid(w), "agreement": torch.sigmoid(-w)}, weight=w)


def test_source_report_gives_each_class_its_within_class_auc(tmp_path_factory: pytest.TempPathFactory) -> None:
    import numpy as np

    from hrseg.data.augment import normalize
    from hrseg.data.dataset import open_split
    from hrseg.data.labels import CLASS_NAMES
    from hrseg.evaluation.metrics import roc_auc
    from hrseg.evaluation.weighting import MIN_CLASS_PIXELS, weighting_quality

    data = cached_synthetic_data(tmp_path_factory)
    ds = open_split(data, "gtav", "train", fields=("image", "label", "realism"))
    rep = weighting_quality(torch.nn.Conv2d(3, 19, 1), _ImageWeighting(), ds, weight_input="image", batch_size=5,
                            show_progress=False)
    images = torch.stack([ds[i]["image"] for i in range(len(ds))])
    w = normalize(images).mean(1).numpy()
    labels = np.stack([ds[i]["label"].numpy() for i in range(len(ds))])
    realism = np.stack([ds[i]["realism"].numpy() for i in range(len(ds))])
    known = (labels != IGNORE_INDEX) & (realism != 255)
    expected = {}
    for c in range(19):
        m = known & (labels == c)
        if m.sum() >= MIN_CLASS_PIXELS:
            expected[CLASS_NAMES[c]] = (m.sum() / known.sum(), roc_auc(w[m], realism[m] == 1)
                                        if len(set(realism[m].tolist())) == 2 else float("nan"))
    assert list(rep.per_class) == list(expected)
    for name, (share, auc) in expected.items():
        q = rep.per_class[name]
        assert q.share == pytest.approx(share)
        if auc == auc:
            assert q.auc == pytest.approx(auc, abs=1e-6)
            assert q.level_auc["pixel"] == pytest.approx(auc, abs=1e-6)
            assert q.level_auc["agreement"] == pytest.approx(1 - auc, abs=1e-6)
    d = rep.to_dict()
    assert set(d["within_class_auc_levels"]) == {"pixel", "agreement"}
    assert d["within_class_auc"] == pytest.approx(
        sum(s * a for s, a in expected.values() if a == a) / sum(s for s, a in expected.values() if a == a))


def _image_level_gap(image_norm: str) -> float:
    """Target-minus-source image-level score after W learns images that differ only in overall brightness."""
    torch.manual_seed(0)
    w = HierarchicalWeighting("w19", width=0.25, levels=("image",), balance="none", image_norm=image_norm)
    opt = torch.optim.Adam(w.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 19, (4, 16, 32), generator=g)

    def images(level: float) -> torch.Tensor:
        return level + 0.2 * torch.randn(4, 3, 16, 32, generator=g)

    for _ in range(30):
        opt.zero_grad()
        loss = w.classifier_loss(images(-0.5), labels, 0.0) + w.classifier_loss(images(0.5), labels, 1.0)
        loss.backward()
        opt.step()
    with torch.no_grad():
        src, tgt = w(images(-0.5), labels).scores["image"], w(images(0.5), labels).scores["image"]
    return float(tgt.mean() - src.mean())


def test_image_level_without_instance_norm_sees_what_sets_images_apart() -> None:
    plain = HierarchicalWeighting("w19", width=0.25, image_norm="none")
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in plain.trunks["image"])
    assert any(isinstance(m, torch.nn.InstanceNorm2d) for m in plain.trunks["pixel"])
    assert plain.state_dict().keys() == HierarchicalWeighting("w19", width=0.25).state_dict().keys()
    assert _image_level_gap("none") > 0.5  # brightness alone tells the domains apart ...
    assert abs(_image_level_gap("instance")) < 0.5 * _image_level_gap("none")  # ... hardly through InstanceNorm
    with pytest.raises(HrsegError, match="weighting.image_norm"):
        HierarchicalWeighting("w19", image_norm="batch")
