"""`hrseg visualize weights|predictions` on runs trained by the real train() on tiny procedural data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from hrseg.cli.main import app
from hrseg.training.config import override
from hrseg.training.presets import quick_config
from hrseg.training.trainer import train
from hrseg.visualization.render import panel_names, prediction_numbers, spread_indices, weight_numbers
from tests.data_fixtures import cached_synthetic_data

TINY = {
    "model.width": 0.0625, "weighting.width": 0.125, "data.batch_size": 2, "data.crop": (64, 32),
    "optim.iters": 2, "run.device": "cpu", "run.progress": False, "data.target_images": 4,
}



@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    data = cached_synthetic_data(tmp_path_factory)
    root = tmp_path_factory.mktemp("vis-runs")
    out = {}
    for scheme in ("target-only", "w1", "w19"):
        train(override(quick_config(scheme, str(data), str(root / scheme)), TINY))
        out[scheme] = root / scheme
    return out


def _gallery(out: Path, count: int) -> list[Path]:
    index = (out / "index.html").read_text()
    linked = re.findall(r'<img src="([^"]+)"', index)
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == count and sorted(linked) == sorted(p.name for p in pngs)
    listed = json.loads((out / "gallery.json").read_text())
    assert sorted(Path(p).name for p in listed["panels"]) == sorted(p.name for p in pngs)
    assert [it["panel"] for it in listed["items"]] == listed["panels"] and listed["metrics"]
    return pngs


def test_weight_panels_for_w1_and_w19(runs: dict[str, Path], tmp_path: Path) -> None:
    heights = {}
    for scheme in ("w1", "w19"):
        out = tmp_path / scheme
        result = CliRunner().invoke(app, ["visualize", "weights", "--run", str(runs[scheme]), "--out", str(out),
                                          "--num", "3", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        pngs = _gallery(out, 3)
        assert [p.name for p in pngs] == ["00001.png", "00007.png", "00012.png"]  # spread over 12 images
        panel = cv2.imread(str(pngs[0]))
        heights[scheme] = panel.shape[0]
        assert panel.shape[1] >= 900  # three 320-pixel columns
        items = json.loads((out / "gallery.json").read_text())["items"]
        for it in items:  # the scenes have a realism mask: every per-image number is defined
            n = it["numbers"]
            assert 0.0 <= n["auc"] <= 1.0 and n["weight_realistic"] > 0 and n["weight_deviating"] > 0
    # W^19 adds the per-class panel under the level panel
    assert heights["w19"] > heights["w1"] + 100


def test_prediction_panels_for_target_images(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["visualize", "predictions", "--run", str(runs["target-only"]), "--out",
                                      str(out), "--num", "10", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    pngs = _gallery(out, 4)  # only 4 val images exist
    assert all(p.name.endswith(".png") and "_leftImg8bit" not in p.name for p in pngs)
    city = pngs[0].name.split("_")[0]
    assert not pngs[0].name.startswith(f"{city}_{city}_")  # the city folder is not repeated in the name
    items = json.loads((out / "gallery.json").read_text())["items"]
    assert all(0.0 <= it["numbers"]["miou"] <= 1.0 for it in items)


def test_panel_names_are_the_image_names_with_folders_only_on_a_clash() -> None:
    names = ["leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png",
             "leftImg8bit/val/lindau/lindau_000001_000019_leftImg8bit.png", "a/x.png", "b/x.png"]
    assert panel_names(names) == ["frankfurt_000000_000019.png", "lindau_000001_000019.png", "a_x.png", "b_x.png"]


def test_per_image_numbers() -> None:
    label = np.array([[0, 0, 1, 255]], np.uint8)
    assert prediction_numbers(label, np.array([[0, 1, 1, 7]], np.uint8)) == pytest.approx(
        {"miou": (1 / 2 + 1 / 2) / 2, "pixel_accuracy": 2 / 3})
    weight = np.array([[2.0, 0.5, 1.0, 9.0]])
    realism = np.array([[1, 0, 0, 1]], np.uint8)  # the last pixel is ignored by its label
    n = weight_numbers(weight, label, realism)
    assert n["weight_realistic"] == 2.0 and n["weight_deviating"] == 0.75 and n["auc"] == 1.0
    assert n["weight_mean"] == pytest.approx(3.5 / 3)
    assert weight_numbers(weight, label, None)["auc"] is None


def test_weights_of_a_run_without_weighting_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "none"
    result = CliRunner().invoke(app, ["visualize", "weights", "--run", str(runs["target-only"]), "--out", str(out)])
    assert result.exit_code == 2
    assert "no weighting network" in " ".join(result.output.split())
    assert not out.exists()


def test_bad_num_is_refused(runs: dict[str, Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["visualize", "weights", "--run", str(runs["w19"]), "--out", str(tmp_path),
                                      "--num", "0"])
    assert result.exit_code == 2 and "--num" in result.output


def test_spread_indices() -> None:
    assert spread_indices(12, 3) == [0, 6, 11]
    assert spread_indices(3, 10) == [0, 1, 2]
    assert spread_indices(100, 1) == [0]
