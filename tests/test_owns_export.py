"""`hrseg export --out FILE` replaces only an earlier export (issue 18, case 2)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hrseg.export import FORMAT
from tests.cli_fixtures import invoke, text, tiny_run
from tests.data_fixtures import cached_synthetic_data


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = cached_synthetic_data(tmp_path_factory, prepared_size=(32, 16))
    return tiny_run(data, tmp_path_factory.mktemp("runs") / "t")


def test_export_never_replaces_a_file_it_did_not_write(run: Path, tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG a user's photo")
    result = invoke("export", run, "--out", photo)
    assert result.exit_code == 2, text(result)
    assert "photo.png: exists and is not an exported model written by hrseg" in text(result)
    assert "--overwrite" in text(result)
    assert photo.read_bytes() == b"\x89PNG a user's photo"
    result = invoke("export", run, "--out", photo, "--overwrite")  # asked for: replaced
    assert result.exit_code == 0, text(result)
    assert torch.load(photo, weights_only=True)["format"] == FORMAT


def test_export_never_replaces_a_checkpoint_even_with_overwrite(run: Path) -> None:
    last = run / "checkpoints" / "last.pt"
    before = last.read_bytes()
    for extra in ((), ("--overwrite",)):
        result = invoke("export", run, "--out", last, *extra)
        assert result.exit_code == 2, text(result)
        assert "last.pt: is a training checkpoint; an export never replaces one" in text(result)
    assert last.read_bytes() == before


def test_export_replaces_its_own_earlier_export(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    assert invoke("export", run, "--out", out).exit_code == 0
    result = invoke("export", run, "--out", out, "--half")
    assert result.exit_code == 0, text(result)
    assert torch.load(out, weights_only=True)["dtype"] == "float16"


def test_report_and_visualize_never_replace_a_users_files(run: Path, tmp_path: Path) -> None:  # case 16
    assert invoke("eval", "--run", run, "--no-progress").exit_code == 0
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "report.md").write_text("# my notes\n")
    result = invoke("report", run, "--out", rep)
    assert result.exit_code == 2 and "report.md: exists and is not a report written by hrseg" in text(result)
    assert (rep / "report.md").read_text() == "# my notes\n" and not (rep / "report.json").exists()
    assert invoke("report", run, "--out", rep, "--overwrite").exit_code == 0
    assert invoke("report", run, "--out", rep).exit_code == 0, "its own report is replaced without --overwrite"
    vis = tmp_path / "vis"
    vis.mkdir()
    (vis / "index.html").write_text("<html>my page</html>")
    args = ("visualize", "predictions", "--run", run, "--out", vis, "--num", "2", "--no-progress")
    result = invoke(*args)
    assert result.exit_code == 2 and "index.html exists and was not written by hrseg" in text(result), text(result)
    assert (vis / "index.html").read_text() == "<html>my page</html>"
    assert invoke(*args, "--overwrite").exit_code == 0
    panels = sorted(p.name for p in vis.glob("*.png"))
    assert panels and invoke(*args).exit_code == 0, "its own gallery is redrawn without --overwrite"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"iteration": "abc"}, "'iteration' must be a count >= 0, got 'abc'"),
        ({"size": []}, "'size' must be [width, height] in 1..65536, got []"),
        ({"size": "x"}, "'size' must be [width, height] in 1..65536, got 'x'"),
        ({"size": [100000, 100000]}, "'size' must be [width, height] in 1..65536, got [100000, 100000]"),
        ({"crop": [0, "y"]}, "'crop' must be [width, height] in 1..65536, got [0, 'y']"),
        ({"width": 64}, "'width' must be in (0, 4], got 64"),
        ({"width": 2.0}, "its weights do not fit a fcn8s-vgg16 of width 2.0"),
        ({"num_classes": 10**9}, "'num_classes' must be in 1..255, got 1000000000"),
        ({"class_names": ["road"]}, "'class_names' must be 19 names"),
    ],
)
def test_a_crafted_export_is_one_line_before_anything_is_allocated(  # case 15
        run: Path, tmp_path: Path, change: dict, message: str) -> None:
    good = tmp_path / "good.pt"
    assert invoke("export", run, "--out", good).exit_code == 0
    crafted = tmp_path / "crafted.pt"
    torch.save({**torch.load(good, weights_only=True), **change}, crafted)
    img = tmp_path / "img.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(img), np.zeros((16, 32, 3), np.uint8))
    result = invoke("predict", crafted, img, "--out", tmp_path / "out", "--device", "cpu", "--no-progress")
    assert result.exit_code == 2, text(result)
    assert message in text(result) and "Traceback" not in result.output, text(result)


def test_an_evaluation_names_what_it_scored_and_report_marks_an_old_one(  # case 5
        run: Path, tmp_path: Path) -> None:
    import json

    assert invoke("eval", "--run", run, "--no-progress").exit_code == 0
    ev = json.loads((run / "eval" / "val.json").read_text())
    assert ev["checkpoint"].endswith("final.pt") and ev["iteration"] == 2
    result = invoke("report", run, "--out", tmp_path / "rep")
    assert result.exit_code == 0 and "not the run's result" not in text(result)
    # an evaluation taken while the run was still training (of last.pt at iteration 1)
    ev.update(checkpoint=str(run / "checkpoints" / "last.pt"), iteration=1)
    (run / "eval" / "val.json").write_text(json.dumps(ev))
    result = invoke("report", run, "--out", tmp_path / "rep")
    assert result.exit_code == 0, text(result)
    line = f"not the run's result: {run}: scored iteration 1, the run finished at 2; evaluate it again"
    assert line in text(result), text(result)
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Not the run's result:" in md and "scored iteration 1, the run finished at 2" in md
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["rows"][0]["stale"] == {str(run): line.split(f"{run}: ", 1)[1] + f" (hrseg eval {run} --split val)"}
    assert invoke("eval", "--run", run, "--no-progress").exit_code == 0  # leave the fixture as it was
