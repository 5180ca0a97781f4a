"""Faults around run folders and checkpoints: each is named in one line, and nothing written is lost."""

from __future__ import annotations

import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hrseg.cli.main import app
from hrseg.errors import HrsegError
from hrseg.training.config import TrainConfig, override
from hrseg.training.rundir import RunDir
from hrseg.training.trainer import train
from tests.data_fixtures import cached_synthetic_data

runner = CliRunner()
TINY = {
    "model.width": 0.0625, "model.pretrained": "none", "weighting.width": 0.125, "data.batch_size": 2,
    "data.crop": (64, 32), "optim.lr": 0.01, "optim.iters": 3, "run.device": "cpu", "run.progress": False,
    "run.checkpoint_every": 2, "gan.enabled": False,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def cfg_for(data: Path, out: Path, scheme: str = "joint", **extra: object) -> TrainConfig:
    return override(TrainConfig(scheme=scheme), {**TINY, "data.data": str(data), "run.out": str(out), **extra})


def _flip(path: Path, offset_fraction: float = 0.5) -> None:
    """Flip one byte of record data at or after ``offset_fraction`` of the file.

    Bytes outside the records' data (local header padding, data descriptors)
    are covered by no checksum and ignored by loading, so a flip there is no
    damage; the offset moves to the next byte of record data.
    """
    raw = bytearray(path.read_bytes())
    offset = int(len(raw) * offset_fraction)
    with zipfile.ZipFile(path) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.header_offset):
            name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
            data_start = info.header_offset + 30 + name_len + extra_len
            if offset < data_start + info.compress_size and info.compress_size > 0:
                offset = max(offset, data_start)
                break
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_damaged_checkpoint_is_named_by_resume_eval_and_visualize(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert train(cfg_for(data, run, scheme="w19"), stop_after=2).status == "interrupted"
    last = run / "checkpoints" / "last.pt"
    _flip(last)
    with pytest.raises(HrsegError, match=r"last.pt: checkpoint is damaged \(checksum mismatch in record"):
        train(RunDir(run).config(), resume=True)
    train(cfg_for(data, tmp_path / "done", scheme="w19"))
    final = tmp_path / "done" / "checkpoints" / "final.pt"
    _flip(final, 0.3)
    for args in (["eval", "--run", str(tmp_path / "done"), "--device", "cpu"],
                 ["visualize", "weights", "--run", str(tmp_path / "done"), "--out", str(tmp_path / "vis")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "final.pt: checkpoint is damaged" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_truncated_checkpoint_is_named(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(cfg_for(data, run))
    final = run / "checkpoints" / "final.pt"
    final.write_bytes(final.read_bytes()[: final.stat().st_size // 2])
    with pytest.raises(HrsegError, match="final.pt: not a readable hrseg checkpoint .damaged or truncated"):
        RunDir(run).load_for_inference()


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def full_disk(obj: object, f: object, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] >= 2:  # the first checkpoint (iteration 2) fits, the final one does not
            Path(str(f)).write_bytes(b"PK\x03\x04partial")
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4992 vs 4864")
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    # the end of a run writes last.pt, then links final.pt to it: the failing write is last.pt's
    with pytest.raises(HrsegError, match=r"last.pt: out of disk space writing the checkpoint"):
        train(cfg_for(data, run))
    monkeypatch.undo()
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.pt"]  # no temporary file left, and the intact last.pt was not rotated away
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["iteration"] == 2


def test_a_second_training_on_a_locked_folder_is_refused(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(HrsegError, match="another training is running in this run directory"):
            train(cfg_for(data, run))
        assert sorted(p.name for p in run.iterdir()) == [".lock"]  # nothing written by the refused run
    finally:
        holder.kill()
        holder.wait()
    # a killed holder releases the lock: the same folder trains now
    assert train(cfg_for(data, run)).status == "finished"
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # and the finished run released it too
    finally:
        os.close(fd)


def test_run_folder_rules_live_in_the_library(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(cfg_for(data, run))
    with pytest.raises(HrsegError, match="already holds a run; continue it with --resume"):
        train(cfg_for(data, run))
    summary = json.loads((run / "summary.json").read_text())
    assert train(cfg_for(data, run, **{"optim.iters": 2}), overwrite=True).iteration == 2
    assert json.loads((run / "summary.json").read_text()) != summary

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "own file"}')  # a user's file that happens to share the name
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(HrsegError, match=r"holds files that are not an hrseg run \(config.json, notes.txt\)"):
        train(cfg_for(data, mine))
    assert (mine / "config.json").read_text() == '{"my": "own file"}'
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(HrsegError, match=r"holds files that are not an hrseg run \(notes.txt\)"):
        train(cfg_for(data, foreign))
    assert (foreign / "notes.txt").read_text() == "keep me"
    assert train(cfg_for(data, foreign), overwrite=True).status == "finished"
    assert (foreign / "notes.txt").read_text() == "keep me"  # --overwrite writes beside foreign files


def test_out_that_is_a_file_or_read_only_is_one_line(data: Path, tmp_path: Path) -> None:
    as_file = tmp_path / "file"
    as_file.write_text("x")
    args = ["train", "--scheme", "joint", "--data", str(data), "--iters", "1", "--width", "0.0625",
            "--crop", "64x32", "--batch-size", "2", "--device", "cpu", "--no-progress"]
    result = runner.invoke(app, [*args, "--out", str(as_file)])
    assert result.exit_code == 2 and "exists and is not a directory" in result.stderr
    read_only = tmp_path / "ro" / "run"

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Path, "mkdir", refuse)
        result = runner.invoke(app, [*args, "--out", str(read_only)])
    assert result.exit_code == 2, result.output
    assert "cannot write to the run directory (Permission denied)" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_resume_refuses_a_checkpoint_of_another_architecture_or_width(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(cfg_for(data, run), stop_after=2)
    config = json.loads((run / "config.json").read_text())
    config["model"]["width"] = 0.125
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(HrsegError, match="last.pt: segmenter weights do not fit the run's config"):
        train(RunDir(run).config(), resume=True)
    config["model"].update(width=0.0625, arch="pspnet-r50")
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(HrsegError, match="last.pt: checkpoint is for 'fcn8s-vgg16', the run uses 'pspnet-r50'"):
        train(RunDir(run).config(), resume=True)


@pytest.mark.parametrize("command", ["report", "visualize"])
def test_outputs_into_a_file_are_one_line(command: str, data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(cfg_for(data, run, scheme="w19"))
    runner.invoke(app, ["eval", "--run", str(run), "--device", "cpu"])
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    args = {"report": ["report", str(run), "--out", str(blocker / "sub")],
            "visualize": ["visualize", "weights", "--run", str(run), "--out", str(blocker / "sub"), "--num", "1"]}
    result = runner.invoke(app, args[command])
    assert result.exit_code == 2, result.output
    assert "cannot write here (Not a directory)" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert blocker.read_text() == "a file, not a folder"


def test_a_partial_evaluation_never_enters_a_report(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(cfg_for(data, run))
    full = runner.invoke(app, ["eval", "--run", str(run), "--device", "cpu"])
    assert full.exit_code == 0, full.output
    kept = (run / "eval" / "val.json").read_text()
    part = runner.invoke(app, ["eval", "--run", str(run), "--device", "cpu", "--max-images", "1"])
    assert part.exit_code == 0, part.output
    assert (run / "eval" / "val.json").read_text() == kept  # the full evaluation is not overwritten
    partial = json.loads((run / "eval" / "val-first1.json").read_text())
    assert partial["num_images"] == 1
    report = runner.invoke(app, ["report", str(run), "--out", str(tmp_path / "rep")])
    assert report.exit_code == 0, report.output
    rows = json.loads((tmp_path / "rep" / "report.json").read_text())["rows"]
    assert rows[0]["mious"] == [json.loads(kept)["miou"]]


def test_config_json_stores_absolute_paths(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel_data = os.path.relpath(data, tmp_path)
    train(cfg_for(Path(rel_data), Path("rel-run")))
    saved = json.loads((tmp_path / "rel-run" / "config.json").read_text())
    assert Path(saved["data"]["data"]).is_absolute() and Path(saved["run"]["out"]).is_absolute()
    monkeypatch.chdir("/")  # from another folder, the run still finds its data
    result = runner.invoke(app, ["eval", "--run", str(tmp_path / "rel-run"), "--device", "cpu"])
    assert result.exit_code == 0, result.output


def test_a_damaged_last_checkpoint_offers_the_previous_one_and_resume_from_it_is_exact(
    data: Path, tmp_path: Path
) -> None:
    full = tmp_path / "full"
    train(cfg_for(data, full, **{"optim.iters": 6, "run.checkpoint_every": 2}))
    run = tmp_path / "run"
    assert train(cfg_for(data, run, **{"optim.iters": 6, "run.checkpoint_every": 2}), stop_after=5).iteration == 5
    previous = torch.load(run / "checkpoints" / "previous.pt", weights_only=True)
    assert previous["iteration"] == 4  # the last.pt before the interrupt's
    _flip(run / "checkpoints" / "last.pt")
    result = runner.invoke(app, ["train", "--resume", str(run), "--no-progress"])
    assert result.exit_code == 2
    message = " ".join(result.stderr.split())
    assert re.search(r"last.pt: (checkpoint is damaged|not a readable hrseg checkpoint \(damaged)", message)
    assert "previous.pt (iteration 4) is intact: continue from it with hrseg train --resume" in message
    assert "--from previous.pt" in message
    resumed = runner.invoke(app, ["train", "--resume", str(run), "--from", "previous.pt", "--no-progress"])
    assert resumed.exit_code == 0, resumed.output
    a = torch.load(full / "checkpoints" / "final.pt", weights_only=True)["models"]["segmenter"]
    b = torch.load(run / "checkpoints" / "final.pt", weights_only=True)["models"]["segmenter"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # iterations 5-6 redone exactly
    iters = [json.loads(line)["iter"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert iters == [1, 2, 3, 4, 5, 6]
