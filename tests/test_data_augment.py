"""Batch augmentation on tensors and ImageNet normalisation."""

from __future__ import annotations

import pytest
import torch

from hrseg.data.augment import IMAGENET_MEAN, IMAGENET_STD, augment_batch, denormalize, normalize


def _batch(b: int = 3, h: int = 12, w: int = 20, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, 19, (b, h, w), generator=g, dtype=torch.uint8)
    label[:, 0, 0] = 255
    return {
        "image": torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8),
        "label": label,
        "realism": torch.randint(0, 2, (b, h, w), generator=g, dtype=torch.uint8),
        "name": [f"n{i}" for i in range(b)],
    }


def test_normalize_matches_torchvision_formula_and_round_trips() -> None:
    img = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    x = normalize(img)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert x.dtype == torch.float32
    assert torch.allclose(x, (img.float() / 255 - mean) / std)
    assert torch.allclose(denormalize(x) * 255, img.float(), atol=1e-3)
    assert normalize(img[0]).shape == (3, 4, 5)


def test_identity_settings_only_normalise_and_cast() -> None:
    batch = _batch()
    out = augment_batch(batch, crop=None, scale=None, flip=False)
    assert out["label"].dtype == torch.int64 and torch.equal(out["label"], batch["label"].long())
    assert torch.allclose(out["image"], normalize(batch["image"]))
    assert out["name"] == batch["name"]


def test_full_size_crop_at_scale_one_is_exact_or_mirrored() -> None:
    batch = _batch(b=8)
    out = augment_batch(batch, crop=(20, 12), scale=(1.0, 1.0), flip=True, generator=torch.Generator().manual_seed(1))
    flipped = 0
    for i in range(8):
        lab, real = batch["label"][i].long(), batch["realism"][i]
        if torch.equal(out["label"][i], lab):
            assert torch.equal(out["realism"][i], real)
            assert torch.allclose(out["image"][i], normalize(batch["image"][i]), atol=1e-4)
        else:
            flipped += 1
            assert torch.equal(out["label"][i], lab.flip(-1))
            assert torch.equal(out["realism"][i], real.flip(-1))
            assert torch.allclose(out["image"][i], normalize(batch["image"][i]).flip(-1), atol=1e-4)
    assert 0 < flipped < 8


def test_random_crops_keep_label_values_and_shapes() -> None:
    batch = _batch()
    out = augment_batch(batch, crop=(16, 8), scale=(0.5, 2.0), flip=True, generator=torch.Generator().manual_seed(0))
    assert out["image"].shape == (3, 3, 8, 16) and out["image"].dtype == torch.float32
    assert out["label"].shape == (3, 8, 16) and out["label"].dtype == torch.int64
    assert out["realism"].shape == (3, 8, 16) and out["realism"].dtype == torch.uint8
    allowed = set(batch["label"].unique().tolist()) | {255}
    assert set(out["label"].unique().tolist()) <= allowed  # nearest: no blended label values
    assert set(out["realism"].unique().tolist()) <= {0, 1, 255}


def test_crop_larger_than_image_pads_with_ignore_and_mean() -> None:
    batch = _batch(b=1, h=4, w=6)
    out = augment_batch(batch, crop=(12, 8), scale=(1.0, 1.0), flip=False, generator=torch.Generator().manual_seed(0))
    lab = out["label"][0]
    assert (lab == 255).sum() == 12 * 8 - 4 * 6 + (batch["label"][0] == 255).sum()
    outside = out["realism"][0] == 255  # realism has no 255 inside the image
    assert outside.sum() == 12 * 8 - 4 * 6
    assert out["image"][0][:, outside].abs().max() < 1e-4  # padded with the mean colour


def test_same_generator_seed_same_result_and_device_kept() -> None:
    batch = _batch()
    kw = dict(crop=(10, 6), scale=(0.75, 1.25), flip=True)
    a = augment_batch(batch, generator=torch.Generator().manual_seed(5), **kw)
    b = augment_batch(batch, generator=torch.Generator().manual_seed(5), **kw)
    c = augment_batch(batch, generator=torch.Generator().manual_seed(6), **kw)
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(a["image"], c["image"])
    assert a["image"].device == batch["image"].device


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="scale"):
        augment_batch(_batch(), crop=(8, 8), scale=(1.5, 1.0))
    with pytest.raises(ValueError, match="expects images"):
        augment_batch({"image": torch.zeros(3, 4, 4, dtype=torch.uint8), "label": torch.zeros(4, 4)})
