"""Cityscapes test submission: names the official matching rule finds, 2048x1024, valid labelIds, zip."""

from __future__ import annotations

import copy
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as cs_eval
from hrseg.data.labels import KNOWN_LABEL_IDS, TRAIN_TO_LABEL
from hrseg.errors import HrsegError
from hrseg.inference.outputs import OutputSpec
from hrseg.inference.engine import segment_image
from hrseg.inference.predictor import predict
from hrseg.inference.sources import read_image
from hrseg.inference.submission import SubmissionWriter, submission_name, write_submission
from tests.inference_fixtures import PaletteModel, block_ids, painted_image, write_image

W, H = 2048, 1024
FRAMES = [("berlin", 0, 19), ("berlin", 123, 19), ("bonn", 7, 42)]


def make_test_split(root: Path) -> list[str]:
    """A Cityscapes-format test split: leftImg8bit/test/CITY/CITY_SEQ_FRAME_leftImg8bit.png, no labels."""
    names = []
    for i, (city, seq, frame) in enumerate(FRAMES):
        rel = f"leftImg8bit/test/{city}/{city}_{seq:06d}_{frame:06d}_leftImg8bit.png"
        write_image(root / rel, painted_image(block_ids(H, W, seed=i, block=256)))
        names.append(rel)
    return names


def _official_match(results: Path, city: str, seq: int, frame: int) -> str:
    """The file cityscapesScripts' getPrediction picks for this frame's ground truth (it exits if 0 or >1)."""
    args = copy.copy(cs_eval.args)
    args.predictionPath, args.predictionWalk = str(results), None
    gt = f"gtFine/test/{city}/{city}_{seq:06d}_{frame:06d}_gtFine_labelIds.png"
    return cs_eval.getPrediction(args, gt)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("cityscapes")
    return root, make_test_split(root)


def test_submission_names_sizes_ids_and_zip(split: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, names = split
    model = PaletteModel()
    stale = tmp_path / "sub" / "labelIds" / "berlin" / "berlin_999999_000019_pred_labelIds.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left from an earlier run")
    preds = ((n, segment_image(model, read_image(root / n), _working())) for n in names)
    result = write_submission(preds, tmp_path / "sub", expected=len(FRAMES))
    want = sorted(f"{c}/{c}_{s:06d}_{f:06d}_pred_labelIds.png" for c, s, f in FRAMES)
    assert result.count == 3 and list(result.files) == want
    with zipfile.ZipFile(result.zip) as zf:
        assert sorted(zf.namelist()) == want  # the stale file is not submitted
        zf.extractall(tmp_path / "unzipped")
    for (city, seq, frame), name in zip(FRAMES, names):
        found = Path(_official_match(tmp_path / "unzipped", city, seq, frame))
        label = cv2.imread(str(found), cv2.IMREAD_UNCHANGED)
        assert label.shape == (H, W) and label.dtype == np.uint8
        assert KNOWN_LABEL_IDS[label].all()
        assert set(np.unique(label)) <= set(TRAIN_TO_LABEL[:19].tolist())
        painted = block_ids(H, W, seed=FRAMES.index((city, seq, frame)), block=256)
        assert (label == TRAIN_TO_LABEL[painted]).mean() > 0.9  # blocks survive the 64x32 working size


def test_predict_output_tree_is_also_accepted_by_the_official_rule(split: tuple[Path, list[str]],
                                                                   tmp_path: Path) -> None:
    root, _ = split
    predict(PaletteModel(), [root / "leftImg8bit" / "test"], tmp_path / "out", _working(),
            outputs=OutputSpec(colour=False, overlay=False), device="cpu", show_progress=False)
    for city, seq, frame in FRAMES:
        found = Path(_official_match(tmp_path / "out" / "labelIds", city, seq, frame))
        assert found.parent.name == city and cv2.imread(str(found), cv2.IMREAD_UNCHANGED).shape == (H, W)


def _working():  # type: ignore[no-untyped-def]
    from hrseg.inference.tta import InferenceOptions

    return InferenceOptions(size=(64, 32))


@pytest.mark.parametrize(
    "name, rel",
    [
        ("leftImg8bit/test/berlin/berlin_000123_000019_leftImg8bit.png",
         "berlin/berlin_000123_000019_pred_labelIds.png"),
        ("bad-honnef_000000_000042_leftImg8bit.png", "bad-honnef/bad-honnef_000000_000042_pred_labelIds.png"),
        ("bonn_000001_000002", "bonn/bonn_000001_000002_pred_labelIds.png"),
    ],
)
def test_submission_name(name: str, rel: str) -> None:
    assert submission_name(name).as_posix() == rel


@pytest.mark.parametrize("name", ["img_0001.png", "berlin_123_19_leftImg8bit.png", "berlin_000123_000019_gtFine.png"])
def test_names_that_are_not_cityscapes_images_are_refused(name: str) -> None:
    with pytest.raises(HrsegError, match="not a Cityscapes image name"):
        submission_name(name)


def test_bad_predictions_are_refused_with_the_file_named(tmp_path: Path) -> None:
    writer = SubmissionWriter(tmp_path, size=(8, 4))
    name = "mainz_000000_000001_leftImg8bit.png"
    with pytest.raises(HrsegError, match=r"leftImg8bit\.png: prediction is 4x2, the server needs 8x4"):
        writer.add(name, np.zeros((2, 4), np.uint8))
    with pytest.raises(HrsegError, match=r"trainIds \[19\]"):
        writer.add(name, np.full((4, 8), 19, np.uint8))
    with pytest.raises(HrsegError, match="dtype int64"):
        writer.add(name, np.zeros((4, 8), np.int64))
    with pytest.raises(HrsegError, match="no predictions"):
        writer.finish()
    writer.add(name, np.full((4, 8), 255, np.uint8))  # ignore -> labelId 0, a valid id
    with pytest.raises(HrsegError, match="second prediction"):
        writer.add("leftImg8bit/test/mainz/" + name, np.zeros((4, 8), np.uint8))
    with pytest.raises(HrsegError, match="1 predictions, but the split has 1525"):
        writer.finish(expected=1525)
    assert not (tmp_path / "cityscapes-submission.zip").exists()
    result = writer.finish(tmp_path / "s.zip")
    label = cv2.imread(str(tmp_path / "labelIds" / result.files[0]), cv2.IMREAD_UNCHANGED)
    assert label.shape == (4, 8) and (label == 0).all()
