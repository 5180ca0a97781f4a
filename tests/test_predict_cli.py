"""`hrseg predict` with a trained run: images, folders, globs, videos, bad inputs, sizes, test-time options."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from hrseg.data.labels import KNOWN_LABEL_IDS
from tests.cli_fixtures import invoke, stdout_json, text, tiny_run
from tests.data_fixtures import cached_synthetic_data
from tests.inference_fixtures import write_image, write_video


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # scenes at 64x32, prepared at 32x16: the model works at 32x16, outputs come back at each input's size
    return cached_synthetic_data(tmp_path_factory, prepared_size=(32, 16))


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(data, tmp_path_factory.mktemp("runs") / "target-only")


def _val_dir(data: Path) -> Path:
    return data / "raw" / "cityscapes" / "leftImg8bit" / "val"


def _label_ids(path: Path) -> np.ndarray:
    ids = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert ids is not None and ids.ndim == 2 and ids.dtype == np.uint8, path
    return ids


def test_predict_folder_glob_files_and_bad_inputs(run: Path, data: Path, tmp_path: Path) -> None:
    extra = tmp_path / "mine"
    rng = np.random.default_rng(0)
    write_image(extra / "photo.jpg", rng.integers(0, 255, (30, 50, 3), dtype=np.uint8))
    (extra / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    result = invoke("predict", run, _val_dir(data), str(extra / "*.jpg"), extra / "broken.png",
                    tmp_path / "missing.png", "--out", out, "--device", "cpu", "--no-progress", "--no-color",
                    "--json", "-")
    assert result.exit_code == 0, text(result)
    index = stdout_json(result)
    assert index["counts"] == {"images": 5, "videos": 0, "pictures": 5, "skipped": 2}
    reasons = {Path(s["input"]).name: s["reason"] for s in index["skipped"]}
    assert reasons == {"broken.png": "not an image OpenCV can decode (corrupt or unsupported format)",
                       "missing.png": "does not exist"}
    assert "skipped" in text(result) and "broken.png" in text(result)  # listed under the table
    assert index["options"]["size"] == [32, 16]  # the size the run's val images were prepared (and scored) at
    assert index["model"]["kind"] == "run" and index["model"]["checkpoint"].endswith("final.pt")
    assert json.loads((out / "predictions.json").read_text()) == index  # the index says the same
    assert not (out / "colour").exists()  # --no-color (the American spelling) turned colour PNGs off
    for item in index["inputs"]:
        ids = _label_ids(out / item["outputs"]["labelIds"])
        assert [ids.shape[1], ids.shape[0]] == item["size"]  # at the input's own resolution
        assert KNOWN_LABEL_IDS[ids].all()
        assert (out / item["outputs"]["overlay"]).is_file()
    sizes = {Path(i["input"]).name: i["size"] for i in index["inputs"]}
    assert sizes["photo.jpg"] == [50, 30] and sizes["frankfurt_000000_000019_leftImg8bit.png"] == [64, 32]


def test_predict_reproduces_evaluation_on_val_images(run: Path, data: Path, tmp_path: Path) -> None:
    """The default working size is the one eval scored at, so the raw val images give eval's own PNGs."""
    assert invoke("eval", "--run", run, "--save-predictions", tmp_path / "eval", "--device", "cpu",
                  "--no-progress").exit_code == 0
    result = invoke("predict", run, _val_dir(data), "--out", tmp_path / "pred", "--device", "cpu", "--no-progress",
                    "--no-colour", "--no-overlay")
    assert result.exit_code == 0, text(result)
    evaluated = sorted((tmp_path / "eval" / "labelIds").rglob("*.png"))
    assert len(evaluated) == 4
    for path in evaluated:
        stem = path.name[: -len("_pred_labelIds.png")]
        mine = tmp_path / "pred" / "labelIds" / path.parent.name / f"{stem}_leftImg8bit_pred_labelIds.png"
        assert np.array_equal(_label_ids(mine), _label_ids(path)), stem


def test_predict_sizes_and_test_time_options(run: Path, data: Path, tmp_path: Path) -> None:
    image = next(_val_dir(data).rglob("*.png"))
    native = invoke("predict", run, image, "--out", tmp_path / "a", "--size", "native", "--device", "cpu",
                    "--no-progress", "--json", "-")
    assert native.exit_code == 0, text(native)
    assert stdout_json(native)["options"]["size"] is None
    tta = invoke("predict", run, image, "--out", tmp_path / "b", "--size", "48x24", "--slide", "--flip",
                 "--scale", "0.75", "--scale", "1", "--overlap", "0.5", "--device", "cpu", "--no-progress",
                 "--json", tmp_path / "b.json")
    assert tta.exit_code == 0, text(tta)
    opts = json.loads((tmp_path / "b.json").read_text())["options"]
    assert opts["size"] == [48, 24] and opts["window"] == [32, 16]  # --slide without --window: the training crop
    assert opts["scales"] == [0.75, 1.0] and opts["flip"] and opts["overlap"] == 0.5
    assert opts["scores"] == "mean softmax probabilities"
    for args, message in (
        (["--scale", "0"], "--scale: every scale must be a positive number, got 0.0"),
        (["--window", "32"], "--window '32': expected WIDTHxHEIGHT"),
        (["--size", "big"], "--size 'big': expected WIDTHxHEIGHT"),
        (["--resize", "cubic"], "--resize: must be one of area, bilinear"),
        (["--checkpoint", "nope.pt"], "nope.pt: checkpoint not found"),
        (["--json", "--no-progress"], None),  # a bare --json (the old switch) still means stdout
    ):
        result = invoke("predict", run, image, "--out", tmp_path / "c", "--device", "cpu", *args)
        if message is None:
            assert result.exit_code == 0 and stdout_json(result)["counts"]["images"] == 1, text(result)
        else:
            assert result.exit_code == 2 and message in text(result), (args, text(result))


def test_predict_a_video_writes_an_overlay_video_and_frames(run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (32, 64, 3), dtype=np.uint8) for _ in range(5)]
    video = write_video(tmp_path / "clips" / "drive.mp4", frames)
    out = tmp_path / "pred"
    result = invoke("predict", run, video, "--out", out, "--frames", "--no-colour", "--device", "cpu",
                    "--no-progress", "--batch-size", "2")
    assert result.exit_code == 0, text(result)
    index = json.loads((out / "predictions.json").read_text())
    assert index["counts"] == {"images": 0, "videos": 1, "pictures": 5, "skipped": 0}
    cap = cv2.VideoCapture(str(out / index["inputs"][0]["outputs"]["overlay_video"]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (64, 32)
    cap.release()
    assert len(list((out / "labelIds").rglob("*.png"))) == 5


def test_nothing_predictable_is_one_line_exit_2_after_the_index(run: Path, tmp_path: Path) -> None:
    bad = tmp_path / "in" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"\x89PNG but not really")
    result = invoke("predict", run, bad, "--out", tmp_path / "out", "--device", "cpu", "--no-progress")
    assert result.exit_code == 2
    assert "error: nothing could be predicted: 1 input(s) skipped; first" in text(result)
    assert json.loads((tmp_path / "out" / "predictions.json").read_text())["counts"]["skipped"] == 1
    missing = invoke("predict", run, tmp_path / "nowhere", "--out", tmp_path / "out2", "--device", "cpu")
    assert missing.exit_code == 2 and "no images or videos found" in text(missing)
    a_file = invoke("predict", run, bad, "--out", bad, "--device", "cpu")
    assert a_file.exit_code == 2 and f"--out {bad}: cannot write here" in text(a_file)


def test_the_run_decides_its_working_size_not_its_data_folder(run: Path, data: Path, tmp_path: Path) -> None:
    """Issue 18, case 4: data re-prepared at another size changes nothing; only a checkpoint from before
    the size was recorded falls back to the data folder (and, without it, needs --size)."""
    from hrseg.training.checkpoint import load_checkpoint, save_checkpoint

    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    regrown = tmp_path / "data"
    shutil.copytree(data, regrown)
    for manifest in regrown.rglob("manifest.json"):  # as if prepared again at twice the size
        m = json.loads(manifest.read_text())
        m["size"] = [2 * v for v in m["size"]]
        manifest.write_text(json.dumps(m))
    cfg = json.loads((moved / "config.json").read_text())
    cfg["data"]["data"] = str(regrown)
    (moved / "config.json").write_text(json.dumps(cfg))
    image = next(_val_dir(data).rglob("*.png"))
    ok = invoke("predict", moved, image, "--out", tmp_path / "b", "--device", "cpu", "--no-progress", "--json", "-")
    assert ok.exit_code == 0, text(ok)
    assert stdout_json(ok)["options"]["size"] == [32, 16]
    assert np.array_equal(_label_ids(next((tmp_path / "b" / "labelIds").rglob("*.png"))),
                          _label_ids(_predict_one(run, image, tmp_path / "c")))
    for name in ("final.pt", "last.pt"):  # a checkpoint written before the size was recorded
        path = moved / "checkpoints" / name
        payload = load_checkpoint(path)
        payload.pop("working_size")
        path.unlink()
        save_checkpoint(path, {k: v for k, v in payload.items() if k != "format"})
    cfg["data"]["data"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(cfg))
    refused = invoke("predict", moved, image, "--out", tmp_path / "a", "--device", "cpu")
    assert refused.exit_code == 2
    assert "--size: " in text(refused) and "give --size WxH" in text(refused)


def _predict_one(run: Path, image: Path, out: Path) -> Path:
    assert invoke("predict", run, image, "--out", out, "--device", "cpu", "--no-progress").exit_code == 0
    return next((out / "labelIds").rglob("*.png"))
