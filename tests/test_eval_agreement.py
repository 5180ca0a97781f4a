"""hrseg's scores equal cityscapesScripts' evalPixelLevelSemanticLabeling on the same predictions.

A tiny Cityscapes-format split is generated (full-resolution labelId PNGs,
including ignored labelIds), prepared into shards at half resolution by
`hrseg prepare`'s library function, and
scored with a deliberately imperfect colour-matching predictor; the saved
labelId PNGs are then scored by the official script, driven in-process.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval
from hrseg.data.augment import denormalize
from hrseg.data.dataset import open_split
from hrseg.data.labels import CLASS_NAMES, LABEL_TO_TRAIN, PALETTE
from hrseg.data.prepare import PrepareConfig, prepare
from hrseg.errors import HrsegError
from hrseg.evaluation.evaluate import evaluate_segmenter, score_folder
from hrseg.evaluation.predictions import PredictionWriter

FULL_W, FULL_H = 96, 48
SMALL_W, SMALL_H = 48, 24
FRAMES = [("aachen", 0, 19), ("aachen", 1, 19), ("bochum", 0, 42)]
# every evaluated labelId except 31 (train, left absent so its IoU is NaN), plus ignored ones
GT_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 32, 33, 0, 1, 4, 9, 14]


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array)


def make_cityscapes_val(root: Path, seed: int = 0) -> list[str]:
    """Raw Cityscapes layout: blocky labelId maps and images coloured by class plus noise."""
    rng = np.random.default_rng(seed)
    names = []
    for city, seq, frame in FRAMES:
        stem = f"{city}_{seq:06d}_{frame:06d}"
        block = rng.choice(GT_IDS, size=(FULL_H // 8, FULL_W // 8)).astype(np.uint8)
        label_ids = np.kron(block, np.ones((8, 8), np.uint8))
        label_ids[rng.random(label_ids.shape) < 0.05] = 7  # speckle: hard at half resolution
        colour = PALETTE[LABEL_TO_TRAIN[label_ids]].astype(np.float32)
        image = np.clip(colour + rng.normal(0, 40, colour.shape), 0, 255).astype(np.uint8)
        rel = f"leftImg8bit/val/{city}/{stem}_leftImg8bit.png"
        _write_png(root / rel, image[..., ::-1])
        _write_png(root / "gtFine" / "val" / city / f"{stem}_gtFine_labelIds.png", label_ids)
        names.append(rel)
    return names


class ColourMatcher(nn.Module):
    """Predicts the class whose palette colour is nearest, but never 'bus' or 'train'."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rgb = denormalize(x) * 255.0
        palette = torch.tensor(PALETTE[:19], dtype=torch.float32)
        palette[[15, 16]] = 1e4  # bus, train: unreachable, so bus pixels become misses
        dist = ((rgb.unsqueeze(1) - palette.view(1, 19, 3, 1, 1)) ** 2).sum(2)
        return -dist / 1000.0


def official_scores(raw: Path, predictions: Path) -> dict:
    """Run cityscapesScripts' pixel-level evaluation in-process, quietly, instance scores off."""
    args = copy.copy(cs_eval.args)
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.quiet = True
    args.JSONOutput = False
    args.colorized = False
    args.predictionPath = str(predictions)
    args.predictionWalk = None
    gts = sorted(str(p) for p in (raw / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    preds = [cs_eval.getPrediction(args, gt) for gt in gts]
    return cs_eval.evaluateImgLists(preds, gts, args)


@pytest.fixture(scope="module")
def tiny_val(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("agreement")
    raw, data = root / "raw", root / "data"
    make_cityscapes_val(raw)
    prepare(PrepareConfig(dataset="cityscapes", root=raw, out=data, splits=("val",), size=(SMALL_W, SMALL_H)),
            show_progress=False)
    return raw, data


def test_hrseg_and_official_script_agree(tiny_val: tuple[Path, Path], tmp_path: Path) -> None:
    raw, data = tiny_val
    ds = open_split(data, "cityscapes", "val", fields=("image", "full_label", "name"))
    writer = PredictionWriter(tmp_path / "pred", colour=True)
    ours = evaluate_segmenter(ColourMatcher(), ds, classes=19, writer=writer, show_progress=False)
    official = official_scores(raw, writer.label_ids_dir)

    assert 0.2 < ours.miou < 0.95, "the predictor must be imperfect for the comparison to mean something"
    assert ours.iou["bus"] == 0.0 and ours.iou["train"] is None
    assert math.isnan(official["classScores"]["train"])
    for name in CLASS_NAMES:
        theirs = official["classScores"][name]
        if ours.iou[name] is None:
            assert math.isnan(theirs), name
        else:
            assert ours.iou[name] == pytest.approx(theirs, abs=1e-4), name
    assert ours.miou == pytest.approx(official["averageScoreClasses"], abs=1e-4)

    # the files are named the way the official matcher expects, and colour PNGs live outside its root
    written = sorted(p.relative_to(writer.label_ids_dir).as_posix() for p in writer.label_ids_dir.rglob("*.png"))
    assert written == ["aachen/aachen_000000_000019_pred_labelIds.png", "aachen/aachen_000001_000019_pred_labelIds.png",
                       "bochum/bochum_000000_000042_pred_labelIds.png"]
    assert len(list((tmp_path / "pred" / "colour").rglob("*_pred_color.png"))) == 3

    # scoring the saved folder gives the same numbers as scoring the model
    folder = score_folder(writer.label_ids_dir, data, "cityscapes", "val", show_progress=False)
    assert folder.confusion_matrix == ours.confusion_matrix
    assert folder.miou == pytest.approx(ours.miou, abs=1e-12)


def test_folder_of_wrong_size_predictions_is_refused(tiny_val: tuple[Path, Path], tmp_path: Path) -> None:
    raw, data = tiny_val
    pred_dir = tmp_path / "pred"
    for gt in (raw / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"):
        stem = gt.name.replace("_gtFine_labelIds.png", "")
        _write_png(pred_dir / f"{stem}_pred_labelIds.png", np.full((FULL_H // 2, FULL_W // 2), 7, np.uint8))
    with pytest.raises(HrsegError, match=r"aachen_000000_000019_pred_labelIds\.png: prediction is 48x24"):
        score_folder(pred_dir, data, "cityscapes", "val", show_progress=False)


def test_scoring_a_training_model_leaves_its_mode_and_statistics_alone(tiny_val: tuple[Path, Path]) -> None:
    _, data = tiny_val
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 19, 1)).train()
    before = model[0].running_mean.clone()
    ds = open_split(data, "cityscapes", "val", fields=("image", "full_label", "name"))
    evaluate_segmenter(model, ds, show_progress=False)
    assert model.training and torch.equal(model[0].running_mean, before)
