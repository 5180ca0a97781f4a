"""`hrseg eval --split test --save-predictions DIR`: a Cityscapes server submission from a prepared test split.

The test split is generated like `hrseg prepare synthetic` generates Cityscapes scenes (same file layout,
2048x1024 like the real test set, with placeholder gtFine files as the real download has), prepared with
`hrseg prepare cityscapes --split test`, and predicted by a run trained on procedural scenes.
"""

from __future__ import annotations

import copy
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval
from hrseg.data.labels import TRAIN_TO_LABEL
from tests.cli_fixtures import invoke, text, tiny_run
from tests.data_fixtures import cached_synthetic_data, make_cityscapes_root

SIZE = (2048, 1024)
CLASS_LABEL_IDS = set(TRAIN_TO_LABEL[:19].tolist())  # 7, 8, 11, ..., 33: what the server reads


@pytest.fixture(scope="module")
def test_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """(raw Cityscapes root, prepared DATA, test image names)."""
    root = make_cityscapes_root(tmp_path_factory.mktemp("cityscapes"), split="test", count=3, size=SIZE)
    data = tmp_path_factory.mktemp("prepared")
    result = invoke("prepare", "cityscapes", "--root", root, "--out", data, "--split", "test", "--size", "32x16",
                    "--workers", "1")
    assert result.exit_code == 0, text(result)
    names = sorted(str(p.relative_to(root)) for p in (root / "leftImg8bit" / "test").rglob("*.png"))
    return root, data, names


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = cached_synthetic_data(tmp_path_factory, prepared_size=(32, 16))
    return tiny_run(data, tmp_path_factory.mktemp("runs") / "target-only")


def _official_match(results: Path, name: str) -> str:
    """The file cityscapesScripts' getPrediction picks for this test image (it exits on none or several)."""
    stem = Path(name).name[: -len("_leftImg8bit.png")]
    args = copy.copy(cs_eval.args)
    args.predictionPath, args.predictionWalk = str(results), None
    return cs_eval.getPrediction(args, f"gtFine/test/{stem.split('_')[0]}/{stem}_gtFine_labelIds.png")


def test_eval_test_split_writes_a_submission(run: Path, test_data: tuple[Path, Path, list[str]],
                                             tmp_path: Path) -> None:
    root, data, names = test_data
    sub = tmp_path / "submission"
    result = invoke("eval", "--run", run, "--data", data, "--split", "test", "--save-predictions", sub,
                    "--colour", "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, text(result)
    assert "not scored" in text(result) and "cityscapes-submission.zip" in text(result)
    report = json.loads((run / "eval" / "test.json").read_text())
    assert report["kind"] == "submission" and report["num_images"] == 3
    assert report["zip"] == str(sub / "cityscapes-submission.zip")
    assert report["inference"]["scales"] == [1.0] and report["inference"]["scores"] == "logits"

    pngs = sorted((sub / "labelIds").rglob("*.png"))
    want = sorted(f"{Path(n).parent.name}/{Path(n).name[: -len('_leftImg8bit.png')]}_pred_labelIds.png"
                  for n in names)
    assert [p.relative_to(sub / "labelIds").as_posix() for p in pngs] == want
    with zipfile.ZipFile(sub / "cityscapes-submission.zip") as zf:
        assert sorted(zf.namelist()) == want
        for arc in want:
            ids = cv2.imdecode(np.frombuffer(zf.read(arc), np.uint8), cv2.IMREAD_UNCHANGED)
            assert ids.shape == (SIZE[1], SIZE[0]) and ids.dtype == np.uint8  # full resolution, one channel
            assert set(np.unique(ids).tolist()) <= CLASS_LABEL_IDS  # Cityscapes labelIds of the 19 classes
    for name in names:  # the official matching rule finds exactly one file per test image
        assert Path(_official_match(sub / "labelIds", name)).parent.parent == sub / "labelIds"
    assert len(list((sub / "colour").rglob("*_pred_color.png"))) == 3

    # the same pixels as predicting the raw test images at the size they were prepared at
    same = invoke("predict", run, root / "leftImg8bit" / "test", "--out", tmp_path / "pred", "--size", "32x16",
                  "--no-colour", "--no-overlay", "--device", "cpu", "--no-progress")
    assert same.exit_code == 0, text(same)
    for rel in want:
        mine = tmp_path / "pred" / "labelIds" / rel.replace("_pred_labelIds", "_leftImg8bit_pred_labelIds")
        assert np.array_equal(cv2.imread(str(mine), cv2.IMREAD_UNCHANGED),
                              cv2.imread(str(sub / "labelIds" / rel), cv2.IMREAD_UNCHANGED)), rel


def test_eval_test_split_needs_a_folder_to_write_to(run: Path, test_data: tuple[Path, Path, list[str]]) -> None:
    _, data, _ = test_data
    result = invoke("eval", "--run", run, "--data", data, "--split", "test", "--device", "cpu", "--no-progress")
    assert result.exit_code == 2
    assert "--split test: cityscapes/test has no full-resolution labels to score" in text(result)
    assert "--save-predictions DIR" in text(result)
