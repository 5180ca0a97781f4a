"""Checkpoints along training (--save-every), final.pt without a second copy, and --tensorboard on request."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from hrseg.errors import HrsegError
from hrseg.training import tensorboard as tb
from hrseg.training.config import TrainConfig, override
from hrseg.training.rundir import RunDir
from hrseg.training.trainer import train
from hrseg.visualization.tensorboard import weight_picture
from tests.cli_fixtures import TINY, invoke, stdout_json, text
from tests.data_fixtures import cached_synthetic_data

SMALL = ["--width", "0.0625", "--weight-width", "0.125", "--pretrained", "none", "--crop", "32x16",
         "--batch-size", "2", "--device", "cpu", "--no-progress", "--target-images", "4", "--threads", "1",
         "--no-gan"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory, prepared_size=(32, 16))


def test_save_every_keeps_weight_snapshots_and_final_is_last(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = invoke("train", "--scheme", "w19", "--data", data, "--out", run, "--iters", "5", "--save-every", "2",
                    "--checkpoint-every", "1", *SMALL, "--json", "-")
    assert result.exit_code == 0, text(result)
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["final.pt", "iter_000002.pt", "iter_000004.pt", "last.pt",
                                                      "previous.pt"]
    assert os.path.samefile(ckpts / "final.pt", ckpts / "last.pt")  # one file on disk, two names
    previous = torch.load(ckpts / "previous.pt", weights_only=True)
    assert previous["iteration"] == 4 and "optimizers" in previous  # the resumable state before the last
    assert stdout_json(result)["checkpoint"] == str(ckpts / "final.pt")
    snap = torch.load(ckpts / "iter_000002.pt", weights_only=True)
    assert snap["iteration"] == 2 and set(snap["models"]) == {"segmenter", "weighting"}
    assert "optimizers" not in snap and "rng" not in snap  # weights only: a fraction of last.pt
    assert (ckpts / "iter_000002.pt").stat().st_size < (ckpts / "last.pt").stat().st_size
    assert json.loads((run / "config.json").read_text())["run"]["save_every"] == 2
    # a snapshot is a checkpoint like any other for eval, export and predict
    ev = invoke("eval", "--run", run, "--checkpoint", "iter_000004.pt", "--device", "cpu", "--no-progress",
                "--json", "-")
    assert ev.exit_code == 0, text(ev)
    assert stdout_json(ev)["checkpoint"].endswith("iter_000004.pt")
    assert invoke("export", run, "--checkpoint", "iter_000002.pt", "--out", tmp_path / "m.pt").exit_code == 0
    assert torch.load(tmp_path / "m.pt", weights_only=True)["iteration"] == 2


def test_snapshots_before_an_interruption_survive_resume(data: Path, tmp_path: Path) -> None:
    cfg = override(TrainConfig(scheme="joint"), {**TINY, "optim.iters": 4, "run.save_every": 1,
                                                 "data.data": str(data), "run.out": str(tmp_path / "run")})
    assert train(cfg, stop_after=2).status == "interrupted"
    ckpts = tmp_path / "run" / "checkpoints"
    assert not (ckpts / "final.pt").exists()
    assert sorted(p.name for p in ckpts.glob("iter_*.pt")) == ["iter_000001.pt", "iter_000002.pt"]
    assert train(cfg, resume=True).status == "finished"
    assert [p.name for p in RunDir(tmp_path / "run").snapshots()] == [f"iter_00000{i}.pt" for i in (1, 2, 3, 4)]
    assert os.path.samefile(ckpts / "iter_000004.pt", ckpts / "final.pt")
    assert RunDir(tmp_path / "run").resolve_checkpoint() == ckpts / "final.pt"


def test_keep_checkpoints_of_older_configs_still_loads() -> None:
    saved = TrainConfig().to_dict()
    del saved["run"]["save_every"]
    saved["run"].update(keep_checkpoints=True, checkpoint_every=250)
    assert TrainConfig.from_dict(saved).run.save_every == 250  # a snapshot at every checkpoint, as before
    saved["run"]["keep_checkpoints"] = False
    assert TrainConfig.from_dict(saved).run.save_every == 0
    changed = override(TrainConfig(), {"run.keep_checkpoints": True, "run.checkpoint_every": 7})
    assert changed.run.save_every == 7
    saved["run"]["keep_checkpoints"] = "yes"
    with pytest.raises(HrsegError, match="run.keep_checkpoints: expected true/false"):
        TrainConfig.from_dict(saved)
    with pytest.raises(HrsegError, match="run.save_every: must be >= 0"):
        override(TrainConfig(), {"run.save_every": -1}).validate()


def test_tensorboard_missing_is_one_line_before_the_run_folder_exists(data: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    run = tmp_path / "run"
    small = [a for a, before in zip(SMALL, ["", *SMALL]) if "--weight-width" not in (a, before)]  # joint has no W
    result = invoke("train", "--scheme", "joint", "--data", data, "--out", run, "--iters", "1", "--tensorboard",
                    *small)
    assert result.exit_code == 2
    assert text(result) == f"error: {tb.MISSING}"
    assert not run.exists()
    # without the flag nothing looks for it
    result = invoke("train", "--scheme", "joint", "--data", data, "--out", run, "--iters", "1", *small)
    assert result.exit_code == 0, text(result)
    assert not (run / "tb").exists()


class _Writer:
    """Records what a SummaryWriter would receive."""

    made: list["_Writer"] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir = log_dir
        self.scalars: list[tuple[str, float, int]] = []
        self.images: list[tuple[str, np.ndarray, int, str]] = []
        self.closed = False
        _Writer.made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))

    def add_image(self, tag: str, image: Any, step: int, dataformats: str = "CHW") -> None:
        self.images.append((tag, np.asarray(image), step, dataformats))

    def close(self) -> None:
        self.closed = True


def test_tensorboard_logs_losses_and_weight_panels_without_changing_training(
        data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tb, "summary_writer_class", lambda: _Writer)
    _Writer.made.clear()
    common = {**TINY, "optim.iters": 3, "data.data": str(data), "weighting.width": 0.125, "gan.enabled": False}
    with_tb = override(TrainConfig(scheme="w19"), {**common, "run.out": str(tmp_path / "tb"), "run.tensorboard": True,
                                                    "run.tensorboard_every": 2})
    without = override(TrainConfig(scheme="w19"), {**common, "run.out": str(tmp_path / "plain")})
    train(with_tb, weight_picture=weight_picture)
    train(without)
    (writer,) = _Writer.made
    assert writer.log_dir == str(tmp_path / "tb" / "tb") and writer.closed
    steps = {step for tag, _, step in writer.scalars if tag == "target"}
    assert steps == {1, 2, 3} and {"source", "w_cls", "lr"} <= {tag for tag, _, _ in writer.scalars}
    assert [(tag, step, fmt) for tag, _, step, fmt in writer.images] == [("weights/source", 2, "HWC")]
    panel = writer.images[0][1]
    assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[2] == 3 and panel.std() > 0
    a = torch.load(tmp_path / "tb" / "checkpoints" / "final.pt", weights_only=True)["models"]
    b = torch.load(tmp_path / "plain" / "checkpoints" / "final.pt", weights_only=True)["models"]
    for net in ("segmenter", "weighting"):
        for key, value in a[net].items():
            assert torch.equal(value, b[net][key]), f"{net}.{key} changed by logging"


def test_tensorboard_can_be_turned_on_when_resuming(data: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tb, "summary_writer_class", lambda: _Writer)
    _Writer.made.clear()
    run = tmp_path / "run"
    cfg = override(TrainConfig(scheme="joint"), {**TINY, "optim.iters": 3, "data.data": str(data),
                                                 "run.out": str(run)})
    assert train(cfg, stop_after=1).status == "interrupted"
    refused = invoke("train", "--resume", run, "--crop", "32x16")
    assert refused.exit_code == 2 and "--crop cannot change on resume (may change: run.device" in text(refused)
    result = invoke("train", "--resume", run, "--tensorboard", "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, text(result)
    assert json.loads((run / "config.json").read_text())["run"]["tensorboard"] is True
    (writer,) = _Writer.made
    assert sorted({step for tag, _, step in writer.scalars if tag == "target"}) == [2, 3]
