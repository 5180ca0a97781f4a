"""`hrseg eval` on runs trained by the real train() on tiny procedural data, and its refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hrseg.cli.main import app
from hrseg.data.dataset import open_split
from hrseg.data.labels import IGNORE_INDEX
from hrseg.evaluation.evaluate import EvalOptions, evaluate_run, score_folder
from hrseg.evaluation.metrics import roc_auc
from hrseg.evaluation.weighting import weighting_quality
from hrseg.models.weighting import WeightOutput
from hrseg.training.config import TrainConfig, override
from hrseg.training.presets import quick_config
from hrseg.training.trainer import train
from tests.data_fixtures import cached_synthetic_data

TINY = {
    "model.width": 0.0625, "weighting.width": 0.125, "data.batch_size": 2, "data.crop": (32, 16),
    "optim.iters": 2, "run.device": "cpu", "run.progress": False, "data.target_images": 4,
}



@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # shards at half the scene size: evaluation must upsample to the 64x32 full labels
    return cached_synthetic_data(tmp_path_factory, prepared_size=(32, 16))


@pytest.fixture(scope="module")
def runs(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for scheme in ("target-only", "w19"):
        cfg = override(quick_config(scheme, str(data), str(root / scheme)), TINY)
        train(cfg)
        out[scheme] = root / scheme
    return out


def _invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


def test_eval_val_scores_at_full_resolution_and_writes_official_pngs(runs: dict[str, Path], data: Path,
                                                                     tmp_path: Path) -> None:
    run = runs["target-only"]
    pred = tmp_path / "pred"
    result = _invoke("eval", "--run", str(run), "--split", "val", "--save-predictions", str(pred), "--colour",
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "mIoU" in result.output
    report = json.loads((run / "eval" / "val.json").read_text())
    assert report["num_images"] == 4 and len(report["iou"]) == 19
    assert report["upsampling"] == {"mode": "bilinear", "align_corners": False}
    assert report["checkpoint"].endswith("final.pt")
    valid = [v for v in report["iou"].values() if v is not None]
    assert report["miou"] == pytest.approx(sum(valid) / len(valid))
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (19, 20)
    full = open_split(data, "cityscapes", "val", fields=("full_label",))
    labelled = sum(int((full[i]["full_label"] != IGNORE_INDEX).sum()) for i in range(len(full)))
    assert cm.sum() == labelled  # every labelled full-resolution pixel scored once
    assert report["pixel_accuracy"] == pytest.approx(np.trace(cm[:, :19]) / cm.sum())

    pngs = sorted((pred / "labelIds").rglob("*_pred_labelIds.png"))
    assert len(pngs) == 4 and len(list((pred / "colour").rglob("*_pred_color.png"))) == 4
    first = cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)
    assert first.shape == (32, 64)  # full label size, not the 32x16 the network saw
    assert set(np.unique(first)) <= {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}
    # the folder scorer reads them back to the very same confusion matrix
    folder = score_folder(pred / "labelIds", data, "cityscapes", "val", show_progress=False)
    assert folder.confusion_matrix == report["confusion_matrix"]
    # and through the CLI
    result = _invoke("eval", "--predictions", str(pred / "labelIds"), "--data", str(data), "--split", "val",
                     "--json", str(tmp_path / "folder.json"))
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "folder.json").read_text())["miou"] == pytest.approx(report["miou"])


def test_eval_subset_protocols_average_fewer_classes(runs: dict[str, Path]) -> None:
    r19 = evaluate_run(runs["target-only"], EvalOptions(classes=19, device="cpu", show_progress=False))
    r13 = evaluate_run(runs["target-only"], EvalOptions(classes=13, device="cpu", show_progress=False))
    assert len(r13.iou) == 13 and "wall" not in r13.iou and "terrain" not in r13.iou
    assert r13.confusion_matrix == r19.confusion_matrix
    vals = [v for v in r13.iou.values() if v is not None]
    assert r13.miou == pytest.approx(sum(vals) / len(vals))


def test_eval_source_reports_weighting_quality(runs: dict[str, Path]) -> None:
    run = runs["w19"]
    result = _invoke("eval", "--run", str(run), "--split", "source", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "ROC AUC" in result.output
    rep = json.loads((run / "eval" / "source.json").read_text())
    assert rep["kind"] == "weighting" and rep["scheme"] == "w19" and rep["num_images"] == 12
    levels = {"pixel", "region", "image", "agreement"}  # W^19's default levels
    assert set(rep["levels"]) == levels
    assert rep["realistic_pixels"] > 0 and rep["deviating_pixels"] > 0
    for q in [rep, *rep["levels"].values()]:
        assert 0.0 <= q["auc"] <= 1.0
    for level in rep["levels"].values():
        assert 0.0 < level["mean_realistic"] < 1.0  # sigmoid scores
    assert "within each class" in result.output  # the per-class table
    assert rep["per_class"] and 0.0 <= rep["within_class_auc"] <= 1.0
    assert set(rep["within_class_auc_levels"]) == levels
    assert "road" in result.output  # (a narrow terminal wraps longer names)
    for q in rep["per_class"].values():
        assert set(q["levels"]) == levels


class _LabelWeighting(torch.nn.Module):
    """A stand-in W whose weight is a known function of the label, to check the bookkeeping exactly."""

    out_channels = 1

    def forward(self, inp: torch.Tensor, labels: torch.Tensor, update_running: bool = False) -> WeightOutput:
        w = (labels.float() % 7) / 7.0
        return WeightOutput(logits={}, scores={"pixel": 1.0 - w}, weight=w)


def test_weighting_quality_matches_an_independent_computation(data: Path) -> None:
    ds = open_split(data, "gtav", "train", fields=("image", "label", "realism"))
    seg = torch.nn.Conv2d(3, 19, 1)
    rep = weighting_quality(seg, _LabelWeighting(), ds, batch_size=5, show_progress=False)
    labels = np.stack([ds[i]["label"].numpy() for i in range(len(ds))])
    realism = np.stack([ds[i]["realism"].numpy() for i in range(len(ds))])
    known = (labels != IGNORE_INDEX) & (realism != 255)
    w = (labels % 7) / 7.0
    pos = realism == 1
    assert rep.realistic_pixels == int((known & pos).sum()) and rep.deviating_pixels == int((known & ~pos).sum())
    assert rep.combined.auc == pytest.approx(roc_auc(w[known], pos[known]))
    assert rep.combined.mean_realistic == pytest.approx(w[known & pos].mean())
    assert rep.combined.mean_deviating == pytest.approx(w[known & ~pos].mean())
    assert rep.levels["pixel"].auc == pytest.approx(1.0 - rep.combined.auc)


# --- bad input: one clear line, exit code 2, nothing half-written ------------------------------------


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    shutil.rmtree(dest / "eval", ignore_errors=True)
    return dest


def test_run_without_checkpoint(runs: dict[str, Path], tmp_path: Path) -> None:
    run = _copy_run(runs["target-only"], tmp_path / "run")
    shutil.rmtree(run / "checkpoints")
    result = _invoke("eval", "--run", str(run))
    assert result.exit_code == 2
    assert "no checkpoint" in result.output and str(run) in result.output
    assert not (run / "eval").exists()


@pytest.mark.parametrize("change, message", [
    ({"model.arch": "pspnet-r50"}, "checkpoint is for 'fcn8s-vgg16', the run uses 'pspnet-r50'"),
    ({"model.num_classes": 16}, "checkpoint has 19 classes, the run has 16"),
])
def test_checkpoint_of_another_architecture_or_class_count(runs: dict[str, Path], tmp_path: Path,
                                                            change: dict, message: str) -> None:
    run = _copy_run(runs["target-only"], tmp_path / "run")
    cfg = override(TrainConfig.from_dict(json.loads((run / "config.json").read_text())), change)
    (run / "config.json").write_text(json.dumps(cfg.to_dict()))
    result = _invoke("eval", "--run", str(run), "--checkpoint", str(runs["target-only"] / "checkpoints" / "final.pt"))
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (run / "eval").exists()


def test_split_missing_from_prepared_data(runs: dict[str, Path]) -> None:
    result = _invoke("eval", "--run", str(runs["target-only"]), "--split", "test")
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "cityscapes/test is not prepared" in text and "prepared splits:" in text


def test_source_split_of_a_run_without_weighting(runs: dict[str, Path]) -> None:
    result = _invoke("eval", "--run", str(runs["target-only"]), "--split", "source")
    assert result.exit_code == 2
    assert "has no weighting network" in " ".join(result.output.split())


def test_wrong_size_predictions_via_cli(data: Path, tmp_path: Path) -> None:
    ds = open_split(data, "cityscapes", "val", fields=("name",))
    for i in range(len(ds)):
        stem = Path(ds[i]["name"]).name.replace("_leftImg8bit.png", "")
        cv2.imwrite(str(tmp_path / f"{stem}_pred_labelIds.png"), np.full((16, 32), 7, np.uint8))
    out = tmp_path / "out.json"
    result = _invoke("eval", "--predictions", str(tmp_path), "--data", str(data), "--json", str(out))
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "_pred_labelIds.png: prediction is 32x16 but the ground truth is 64x32" in text
    assert not out.exists()


def test_save_predictions_with_source_split_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    result = _invoke("eval", "--run", str(runs["w19"]), "--split", "source", "--save-predictions", str(tmp_path / "p"))
    assert result.exit_code == 2 and "--save-predictions" in result.output
    assert not (tmp_path / "p").exists()


def test_threads_option_sets_torch_threads_and_negative_is_refused(runs: dict[str, Path]) -> None:
    evaluate_run(runs["target-only"], EvalOptions(device="cpu", show_progress=False, max_images=1, threads=2))
    assert torch.get_num_threads() == 2
    result = _invoke("eval", "--run", str(runs["target-only"]), "--threads", "-1")
    assert result.exit_code == 2
    assert "--threads: must be >= 0, got -1" in result.output
