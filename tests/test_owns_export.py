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
