"""`hrseg prepare ...` from the command line: tables, JSON, exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from typer.testing import CliRunner

from data_fixtures import make_cityscapes_root, make_gtav_root, make_synthia_root
from hrseg.cli.main import app

runner = CliRunner()


def _run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["prepare", *args], env={"COLUMNS": "200"})


def test_gtav_summary_table_json_and_verify(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=4)
    (root / "labels" / "00004.png").unlink()
    res = _run("gtav", "--root", str(root), "--out", str(tmp_path / "data"), "--size", "24x14",
               "--workers", "2", "--shard-size", "2", "--json", str(tmp_path / "s.json"))
    assert res.exit_code == 0, res.output
    assert "prepare summary" in res.output and "missing_label" in res.output and "images/s" in res.output
    summary = json.loads((tmp_path / "s.json").read_text())
    [split] = summary["splits"]
    assert split["num_images"] == 3 and split["counts"]["missing_label"] == 1 and split["size"] == [24, 14]
    ok = _run("verify", str(tmp_path / "data"))
    assert ok.exit_code == 0 and "ok" in ok.output


def test_verify_names_a_shard_corrupted_after_writing(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=4)
    assert _run("gtav", "--root", str(root), "--out", str(tmp_path / "data"), "--size", "24x14",
                "--shard-size", "2", "--workers", "1").exit_code == 0
    shard = tmp_path / "data" / "gtav" / "train" / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0x55
    shard.write_bytes(bytes(data))
    res = _run("verify", str(tmp_path / "data"), "--json", str(tmp_path / "v.json"))
    assert res.exit_code == 2
    assert "shard-00001.h5: checksum mismatch" in res.output
    assert "shard-00000.h5" not in res.output
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["splits"][0]["ok"] is False


def test_bad_inputs_exit_2_with_one_line_naming_the_problem(tmp_path: Path) -> None:
    out = str(tmp_path / "data")
    res = _run("gtav", "--root", str(tmp_path / "missing"), "--out", out)
    assert res.exit_code == 2 and "does not exist" in res.output and "Traceback" not in res.output
    (tmp_path / "wrong" / "pictures").mkdir(parents=True)
    res = _run("cityscapes", "--root", str(tmp_path / "wrong"), "--out", out, "--split", "val")
    assert res.exit_code == 2 and "expected folders leftImg8bit/val/, gtFine/val/" in res.output
    root = make_gtav_root(tmp_path / "GTAV", count=1)
    res = _run("gtav", "--root", str(root), "--out", out, "--size", "big")
    assert res.exit_code == 2 and "--size 'big': expected WIDTHxHEIGHT" in res.output
    res = _run("gtav", "--root", str(root), "--out", out, "--compression", "zip")
    assert res.exit_code == 2 and "--compression zip" in res.output
    res = _run("verify", str(tmp_path / "empty-dir-that-is-missing"))
    assert res.exit_code == 2 and "does not exist" in res.output
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.h5"))


def test_corrupt_png_is_reported_and_the_rest_goes_on(tmp_path: Path) -> None:
    root = make_cityscapes_root(tmp_path / "cs", "train", count=3)
    first = sorted((root / "leftImg8bit" / "train").rglob("*.png"))[0]
    first.write_bytes(first.read_bytes()[:64])
    res = _run("cityscapes", "--root", str(root), "--out", str(tmp_path / "data"), "--split", "train",
               "--size", "24x12", "--workers", "1")
    assert res.exit_code == 0, res.output
    assert first.name in res.output and "corrupt" in res.output
    manifest = json.loads((tmp_path / "data" / "cityscapes" / "train" / "manifest.json").read_text())
    assert manifest["num_images"] == 2 and len(manifest["skipped"]["corrupt"]) == 1


def test_changed_option_refused_until_overwrite(tmp_path: Path) -> None:
    root = make_synthia_root(tmp_path / "SYNTHIA", count=2)
    base = ["synthia", "--root", str(root), "--out", str(tmp_path / "data"), "--workers", "1"]
    assert _run(*base, "--size", "24x14").exit_code == 0
    res = _run(*base, "--size", "16x10")
    assert res.exit_code == 2 and "already prepared with other options" in res.output and "--overwrite" in res.output
    assert _run(*base, "--size", "16x10", "--overwrite").exit_code == 0
    manifest = json.loads((tmp_path / "data" / "synthia" / "train" / "manifest.json").read_text())
    assert manifest["size"] == [16, 10]


def test_synthetic_command_writes_both_formats_and_shards(tmp_path: Path) -> None:
    out = tmp_path / "data"
    res = _run("synthetic", "--out", str(out), "--seed", "3", "--source-scenes", "3", "--target-scenes", "2",
               "--val-scenes", "2", "--scene-size", "64x32", "--workers", "1", "--json", str(tmp_path / "s.json"))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "raw" / "GTAV").iterdir()) == ["images", "labels", "realism"]
    assert (out / "raw" / "GTAV" / "labels" / "00003.png").read_bytes()[25] == 3  # palettised
    names = sorted(p.name for p in (out / "raw" / "cityscapes" / "leftImg8bit" / "val").rglob("*.png"))
    assert names == ["frankfurt_000000_000019_leftImg8bit.png", "lindau_000000_000019_leftImg8bit.png"]
    label = cv2.imread(str(next((out / "raw" / "cityscapes" / "gtFine" / "val").rglob("*_labelIds.png"))),
                       cv2.IMREAD_UNCHANGED)
    assert label.dtype == np.uint8 and label.shape == (32, 64)
    splits = {(s["dataset"], s["split"]): s for s in json.loads((tmp_path / "s.json").read_text())["splits"]}
    assert splits[("gtav", "train")]["size"] == [32, 18] and splits[("gtav", "train")]["has_realism"]
    assert splits[("cityscapes", "val")]["has_full_labels"] and splits[("cityscapes", "train")]["size"] == [32, 16]
    again = _run("synthetic", "--out", str(out), "--seed", "4", "--source-images", "3", "--target-images", "2",
                 "--val-images", "2", "--scene-size", "64x32", "--workers", "1")  # old spellings still work
    assert again.exit_code == 2 and "synthetic.json" in again.output and "--overwrite" in again.output


def test_wrong_layout_is_refused_before_any_work_or_output(tmp_path: Path) -> None:
    root = tmp_path / "not-gtav"
    (root / "images").mkdir(parents=True)
    out = tmp_path / "out"
    result = _run("gtav", "--root", str(root), "--out", str(out), "--workers", "2")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines == [f"error: --root {root}: not a GTAV layout; expected folders images/, labels/ (missing labels/)"]
    assert not out.exists()
