"""Metrics against brute-force definitions on small random data."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from hrseg.evaluation.metrics import AucAccumulator, ConfusionMatrix, confusion_matrix, mean_iou, roc_auc


def _brute_iou(preds: list[np.ndarray], gts: list[np.ndarray], c: int) -> float:
    tp = fp = fn = 0
    for p, g in zip(preds, gts):
        valid = g != 255
        tp += int(((p == c) & (g == c) & valid).sum())
        fp += int(((p == c) & (g != c) & valid).sum())
        fn += int(((p != c) & (g == c)).sum())
    return tp / (tp + fp + fn) if tp + fp + fn else math.nan


def test_confusion_matrix_accumulates_over_images_and_ignores_255() -> None:
    rng = np.random.default_rng(0)
    preds, gts = [], []
    cm = ConfusionMatrix(num_classes=5)
    for _ in range(3):
        g = rng.integers(0, 5, size=(7, 9)).astype(np.uint8)
        g[rng.random(g.shape) < 0.2] = 255
        p = rng.integers(0, 5, size=(7, 9)).astype(np.uint8)
        p[rng.random(p.shape) < 0.1] = 255  # "no class" predictions still count as misses
        preds.append(p)
        gts.append(g)
        cm.update(torch.from_numpy(p), g)
    assert cm.matrix.sum() == sum(int((g != 255).sum()) for g in gts)
    for c in range(5):
        assert cm.iou()[c] == pytest.approx(_brute_iou(preds, gts, c))
    correct = sum(int(((p == g) & (g != 255)).sum()) for p, g in zip(preds, gts))
    assert cm.pixel_accuracy() == pytest.approx(correct / cm.matrix.sum())
    # accumulating equals one matrix over the concatenated split, not a per-image mean
    whole = confusion_matrix(np.concatenate(preds), np.concatenate(gts), 5)
    np.testing.assert_array_equal(whole, cm.matrix)


def test_miou_is_nan_aware_over_the_evaluated_subset() -> None:
    cm = ConfusionMatrix()
    gt = np.array([[0, 0, 1, 1]], dtype=np.uint8)
    pred = np.array([[0, 0, 1, 2]], dtype=np.uint8)
    cm.update(pred, gt)
    iou = cm.iou()
    assert iou[0] == 1.0 and iou[1] == 0.5 and iou[2] == 0.0
    assert np.isnan(iou[3:]).all()  # absent from both prediction and GT
    assert cm.miou(19) == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert mean_iou(iou, [0, 1]) == pytest.approx(0.75)
    # 13-class protocol drops wall/fence/pole (3, 4, 5) and terrain/truck/train
    iou2 = np.full(19, 0.5)
    iou2[[3, 4, 5, 9, 14, 16]] = 0.0
    assert mean_iou(iou2, 13) == pytest.approx(0.5)
    assert mean_iou(iou2, 16) == pytest.approx((13 * 0.5) / 16)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix().update(np.zeros((4, 4)), np.zeros((4, 5)))


def _brute_auc(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y], s[~y]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        s = rng.integers(0, 6, size=40).astype(np.float32)  # many ties
        y = rng.random(40) < 0.4
        assert roc_auc(s, y) == pytest.approx(_brute_auc(s, y))
    assert roc_auc(np.ones(10), np.arange(10) < 5) == 0.5
    assert roc_auc(np.arange(10.0), np.arange(10) >= 5) == 1.0
    assert roc_auc(np.arange(10.0), np.arange(10) < 5) == 0.0
    assert math.isnan(roc_auc(np.arange(3.0), np.ones(3, bool)))


def test_auc_accumulator_masks_and_subsamples_reproducibly() -> None:
    s = np.linspace(0, 1, 100)
    y = s > 0.5
    valid = np.ones(100, bool)
    valid[:10] = False
    acc = AucAccumulator()
    acc.update(s, y, valid)
    assert acc.count == 90 and acc.compute() == 1.0
    a, b = AucAccumulator(max_per_image=20, seed=3), AucAccumulator(max_per_image=20, seed=3)
    noisy = s + np.random.default_rng(0).normal(0, 0.3, 100)
    a.update(noisy, y)
    b.update(noisy, y)
    assert a.count == 20 and a.compute() == b.compute()
