"""predict() on folders, mixed sizes, corrupt files and videos; segment_image() for one array."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hrseg.data.labels import KNOWN_LABEL_IDS, PALETTE, TRAIN_TO_LABEL
from hrseg.errors import HrsegError
from hrseg.inference.outputs import OutputSpec
from hrseg.device import resolve_amp
from hrseg.inference.engine import segment_image
from hrseg.inference.predictor import predict
from hrseg.inference.tta import InferenceOptions
from tests.inference_fixtures import PaletteModel, block_ids, painted_image, write_image, write_video


def _read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img[:, :, ::-1]


def _tree(root: Path) -> dict[str, np.ndarray]:
    """Images painted with class colours in two sizes and two folders; name -> trainIds painted."""
    painted = {}
    for name, (h, w), seed in [("a/cam/x", (24, 40), 0), ("b/cam/x", (24, 40), 1), ("b/y", (16, 32), 2),
                               ("b/z", (24, 40), 3), ("c", (16, 32), 4)]:
        ids = block_ids(h, w, seed=seed)
        write_image(root / f"{name}.png", painted_image(ids))
        painted[name] = ids
    return painted


def test_predict_a_folder_writes_every_kind_at_the_input_resolution(tmp_path: Path) -> None:
    painted = _tree(tmp_path / "in")
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png at all")
    model = PaletteModel()
    result = predict(model, [tmp_path / "in"], tmp_path / "out", InferenceOptions(),
                     batch_size=2, device="cpu", workers=2, show_progress=False)
    assert result.images == 5
    assert [s.to_dict() for s in result.skipped] == [
        {"input": str((tmp_path / "in" / "broken.png").absolute()),
         "reason": "not an image OpenCV can decode (corrupt or unsupported format)"}
    ]
    out = tmp_path / "out"
    for name, ids in painted.items():
        label = cv2.imread(str(out / "labelIds" / f"{name}_pred_labelIds.png"), cv2.IMREAD_UNCHANGED)
        assert label.shape == ids.shape and label.dtype == np.uint8
        assert np.array_equal(label, TRAIN_TO_LABEL[ids])  # the palette model recovers the painted classes
        assert KNOWN_LABEL_IDS[label].all()
        colour = _read_rgb(out / "colour" / f"{name}_pred_color.png")
        assert np.array_equal(colour, PALETTE[ids])
        overlay = _read_rgb(out / "overlay" / f"{name}_overlay.png")
        assert overlay.shape == ids.shape + (3,)
        assert np.abs(overlay.astype(int) - PALETTE[ids]).max() <= 1  # image and colours agree here
    # batches never mix sizes: 24x40 and 16x32 arrive at the model separately
    assert sorted({s[-2:] for s in model.seen}) == [(16, 32), (24, 40)]


def test_index_is_json_in_input_order_with_sizes_outputs_and_skips(tmp_path: Path) -> None:
    _tree(tmp_path / "in")
    result = predict(PaletteModel(), [tmp_path / "in", tmp_path / "nope.png"], tmp_path / "out",
                     InferenceOptions(), outputs=OutputSpec(colour=False, overlay=False),
                     device="cpu", show_progress=False)
    index = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert index == json.loads(json.dumps(result.to_dict()))
    assert [i["name"] for i in index["inputs"]] == ["a/cam/x", "b/cam/x", "b/y", "b/z", "c"]
    first = index["inputs"][0]
    assert first["kind"] == "image" and first["size"] == [40, 24]
    assert first["outputs"] == {"labelIds": "labelIds/a/cam/x_pred_labelIds.png"}
    assert first["seconds"] > 0
    assert index["skipped"] == [{"input": str(tmp_path / "nope.png"), "reason": "does not exist"}]
    assert index["counts"] == {"images": 5, "videos": 0, "pictures": 5, "skipped": 1}
    assert index["options"]["scores"] == "logits" and index["device"] == "cpu" and index["amp"] is None
    assert not (tmp_path / "out" / "colour").exists()


def test_working_size_resizes_inputs_but_outputs_keep_the_input_resolution(tmp_path: Path) -> None:
    ids = block_ids(48, 80, seed=5, block=16)
    write_image(tmp_path / "big.png", painted_image(ids))
    write_image(tmp_path / "small.png", painted_image(block_ids(24, 30, seed=6, block=6)))
    model = PaletteModel()
    predict(model, [tmp_path / "big.png", tmp_path / "small.png"], tmp_path / "out",
            InferenceOptions(size=(20, 12)), device="cpu", show_progress=False)
    assert model.seen == [(2, 3, 12, 20)]  # both resized to the working size, so one batch
    label = cv2.imread(str(tmp_path / "out" / "labelIds" / "big_pred_labelIds.png"), cv2.IMREAD_UNCHANGED)
    assert label.shape == (48, 80)
    interior = np.zeros_like(ids, dtype=bool)  # away from block borders the class survives the round trip
    for y in range(0, 48, 16):
        for x in range(0, 80, 16):
            interior[y + 5 : y + 11, x + 5 : x + 11] = True
    assert np.array_equal(label[interior], TRAIN_TO_LABEL[ids][interior])


def test_predictions_equal_segment_image_whatever_the_batching(tmp_path: Path) -> None:
    """Batching (sizes, batch size, threads) must not change a single pixel."""
    _tree(tmp_path / "in")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 19, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(19, 19, 1))
    opts = InferenceOptions(size=(36, 20), flip=True)
    predict(model, [tmp_path / "in"], tmp_path / "out", opts, outputs=OutputSpec(colour=False, overlay=False),
            batch_size=3, device="cpu", workers=2, show_progress=False)
    for png in sorted((tmp_path / "in").rglob("*.png")):
        rel = png.relative_to(tmp_path / "in").with_suffix("")
        want = segment_image(model, cv2.imread(str(png))[:, :, ::-1].copy(), opts)
        got = cv2.imread(str(tmp_path / "out" / "labelIds" / f"{rel}_pred_labelIds.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(got, TRAIN_TO_LABEL[want]), rel


def test_video_gives_an_overlay_video_with_the_same_frames_fps_and_size(tmp_path: Path) -> None:
    frames = [painted_image(block_ids(32, 48, seed=i)) for i in range(5)]
    write_video(tmp_path / "in" / "drive.mp4", frames, fps=15.0)
    write_image(tmp_path / "in" / "still.png", frames[0])
    result = predict(PaletteModel(), [tmp_path / "in"], tmp_path / "out", batch_size=2,
                     outputs=OutputSpec(frames=True, colour=False), device="cpu", show_progress=False)
    video = tmp_path / "out" / "overlay" / "drive_overlay.mp4"
    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened()
    got = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        got.append(frame)
    assert (cap.get(cv2.CAP_PROP_FPS), len(got), got[0].shape) == (15.0, 5, (32, 48, 3))
    cap.release()
    record = next(i for i in result.inputs if i["kind"] == "video")
    assert record["frames"] == 5 and record["fps"] == 15.0 and record["size"] == [48, 32]
    assert record["outputs"]["overlay_video"] == "overlay/drive_overlay.mp4" and record["video_codec"] == "h264"
    pngs = sorted((tmp_path / "out" / "labelIds" / "drive").glob("*.png"))
    assert [p.name for p in pngs] == [f"drive_{i:06d}_pred_labelIds.png" for i in range(5)]
    assert cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED).shape == (32, 48)
    assert result.images == 6
    assert not list((tmp_path / "out" / "overlay").glob(".*"))  # no temporary file left behind


def test_corrupt_video_is_skipped_and_the_images_still_written(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.mp4").write_bytes(b"\x00" * 64)
    write_image(tmp_path / "in" / "ok.png", painted_image(block_ids(8, 8)))
    result = predict(PaletteModel(), [tmp_path / "in"], tmp_path / "out", device="cpu", show_progress=False)
    assert [Path(s.input).name for s in result.skipped] == ["bad.mp4"]
    assert "not a video" in result.skipped[0].reason
    assert (tmp_path / "out" / "labelIds" / "ok_pred_labelIds.png").is_file()


def test_nothing_readable_still_writes_an_index_listing_why(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"garbage")
    result = predict(PaletteModel(), [tmp_path / "x.png"], tmp_path / "out", device="cpu", show_progress=False)
    assert result.images == 0 and len(result.skipped) == 1
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())["counts"]["skipped"] == 1


def test_model_mode_is_restored_and_bad_arguments_are_user_errors(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", painted_image(block_ids(8, 8)))
    model = PaletteModel().train()
    predict(model, [tmp_path / "a.png"], tmp_path / "out", device="cpu", show_progress=False)
    assert model.training
    with pytest.raises(HrsegError, match="--batch-size"):
        predict(model, [tmp_path / "a.png"], tmp_path / "out", batch_size=0, show_progress=False)
    with pytest.raises(HrsegError, match="nothing to write"):
        predict(model, [tmp_path / "a.png"], tmp_path / "out",
                outputs=OutputSpec(label_ids=False, colour=False, overlay=False), show_progress=False)
    with pytest.raises(HrsegError, match="--amp"):
        resolve_amp(torch.device("cpu"), True)
    assert resolve_amp(torch.device("cpu"), None) is None


def test_segment_image_returns_train_ids_at_the_input_size() -> None:
    ids = block_ids(30, 50, seed=9, block=10)
    got = segment_image(PaletteModel(), painted_image(ids))
    assert got.dtype == np.uint8 and np.array_equal(got, ids)
    with pytest.raises(ValueError, match="RGB uint8"):
        segment_image(PaletteModel(), np.zeros((4, 4), np.uint8))


def test_output_folder_inside_the_input_folder_is_not_read_back(tmp_path: Path) -> None:
    write_image(tmp_path / "photos" / "a.png", painted_image(block_ids(8, 8)))
    for _ in range(2):
        result = predict(PaletteModel(), [tmp_path / "photos"], tmp_path / "photos" / "pred", device="cpu",
                         show_progress=False)
        assert [i["name"] for i in result.inputs] == ["a"] and result.skipped == []


def test_video_with_no_video_output_enabled_is_skipped_with_a_reason(tmp_path: Path) -> None:
    write_video(tmp_path / "v.mp4", [painted_image(block_ids(16, 16))])
    write_image(tmp_path / "a.png", painted_image(block_ids(8, 8)))
    result = predict(PaletteModel(), [tmp_path / "v.mp4", tmp_path / "a.png"], tmp_path / "out", device="cpu",
                     outputs=OutputSpec(overlay=False), show_progress=False)
    assert [(Path(s.input).name, s.reason.split(":")[0]) for s in result.skipped] == [
        ("v.mp4", "nothing to write for a video")
    ]
    assert [i["name"] for i in result.inputs] == ["a"]


def test_predicting_raw_val_images_at_the_prepared_size_equals_what_evaluation_scores(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    """Same resize as prepare (area), same upsampling: the labelId PNGs are identical, byte for byte in value."""
    from hrseg.data.dataset import open_split
    from hrseg.evaluation.evaluate import evaluate_segmenter
    from hrseg.evaluation.predictions import PredictionWriter
    from tests.data_fixtures import cached_synthetic_data
    from tests.inference_fixtures import ContextModel

    data = cached_synthetic_data(tmp_path_factory, prepared_size=(48, 24))  # 0.75: area != bilinear
    model = ContextModel(num_classes=19, seed=3).eval()
    ds = open_split(data, "cityscapes", "val", fields=("image", "full_label", "name"))
    evaluate_segmenter(model, ds, writer=PredictionWriter(tmp_path / "eval"), show_progress=False)
    raw = data / "raw" / "cityscapes" / "leftImg8bit" / "val"
    predict(model, [raw], tmp_path / "pred", InferenceOptions(size=(48, 24)),
            outputs=OutputSpec(colour=False, overlay=False), device="cpu", show_progress=False)
    scored = sorted((tmp_path / "eval" / "labelIds").rglob("*.png"))
    assert len(scored) == len(ds) > 0
    for png in scored:
        rel = png.relative_to(tmp_path / "eval" / "labelIds")
        ours = tmp_path / "pred" / "labelIds" / rel.parent / png.name.replace("_pred_", "_leftImg8bit_pred_")
        a, b = (cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in (png, ours))
        assert a.shape == (32, 64) and np.array_equal(a, b), rel
        assert len(np.unique(a)) > 1  # a model that predicts one class everywhere would prove nothing
