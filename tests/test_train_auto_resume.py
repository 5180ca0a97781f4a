"""--auto-resume (fresh / continue / refuse / finished), extending a finished run, and the config history."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from hrseg.errors import HrsegError
from hrseg.training.config import override
from hrseg.training.resume import continue_config
from hrseg.training.rundir import RunDir
from hrseg.training.trainer import train
from tests.cli_fixtures import invoke, text, joint_config as cfg_for
from tests.data_fixtures import cached_synthetic_data

@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def seg(run: Path, name: str = "final.pt") -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / name, weights_only=True)["models"]["segmenter"]


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def lrs(run: Path) -> dict[int, float]:
    return {r["iter"]: r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "lr" in r}


def test_auto_resume_starts_continues_exactly_refuses_and_knows_finished(data: Path, tmp_path: Path) -> None:
    train(cfg_for(data, tmp_path / "whole"))
    run = tmp_path / "run"
    assert train(cfg_for(data, run), auto_resume=True, stop_after=3).status == "interrupted"  # fresh
    # the same command again (a restarted job): continues from last.pt; execution settings may differ
    done = train(cfg_for(data, run, **{"run.checkpoint_every": 3}), auto_resume=True)
    assert done.status == "finished" and done.iteration == 6
    assert same(seg(tmp_path / "whole"), seg(run))
    events = [(h["event"], h["iteration"]) for h in RunDir(run).history()]
    assert events == [("start", 0), ("resume", 3)]
    again = train(cfg_for(data, run), auto_resume=True)  # a restart after the end: nothing left to train
    assert again.status == "finished" and again.iteration == 6 and len(RunDir(run).history()) == 2
    with pytest.raises(HrsegError, match="another config .*optim.lr"):
        train(cfg_for(data, run, **{"optim.lr": 0.1}), auto_resume=True)
    with pytest.raises(HrsegError, match="drop --resume"):
        train(cfg_for(data, run), auto_resume=True, resume=True)


def test_auto_resume_restarts_a_run_killed_before_its_first_checkpoint(data: Path, tmp_path: Path) -> None:
    train(cfg_for(data, tmp_path / "whole"))
    run = tmp_path / "run"
    train(cfg_for(data, run), stop_after=1)
    shutil.rmtree(run / "checkpoints")  # as after a kill -9 before the first checkpoint was written
    assert train(cfg_for(data, run), auto_resume=True).status == "finished"
    assert same(seg(tmp_path / "whole"), seg(run))


def test_auto_resume_on_the_command_line(data: Path, tmp_path: Path) -> None:
    args = ["train", "--scheme", "joint", "--data", data, "--out", tmp_path / "run", "--width", "0.0625",
            "--crop", "32x16", "--batch-size", "2", "--target-images", "4", "--device", "cpu", "--no-progress",
            "--auto-resume"]
    first = invoke(*args, "--iters", "2")
    assert first.exit_code == 0, text(first)
    assert invoke(*args, "--iters", "2").exit_code == 0  # finished: says so, trains nothing
    other = invoke(*args, "--iters", "4")
    assert other.exit_code == 2 and "holds a run with another config (differs in --iters)" in text(other)


@pytest.mark.parametrize("mode", ["stretch", "restart"])
def test_extend_a_finished_run(data: Path, tmp_path: Path, mode: str) -> None:
    run = tmp_path / "run"
    train(cfg_for(data, run, **{"optim.iters": 4}))
    with pytest.raises(HrsegError, match="say how with an extend mode"):
        continue_config(RunDir(run), {"optim.iters": 8})
    with pytest.raises(HrsegError, match="above the run's 4"):
        continue_config(RunDir(run), {"optim.iters": 3}, "stretch")
    out = invoke("train", "--resume", run, "--iters", "8", "--extend", mode, "--no-progress")
    assert out.exit_code == 0, text(out)
    lr = lrs(run)
    assert sorted(lr) == list(range(1, 9))
    assert lr[4] == pytest.approx(0.05 * (1 - 3 / 4) ** 0.9)  # the first 4 iterations kept their plan
    expected = 0.05 * (1 - 4 / 8) ** 0.9 if mode == "stretch" else 0.05
    assert lr[5] == pytest.approx(expected)  # the re-planned rate at the resume iteration, not the old plan's 0
    assert lr[8] < lr[5]
    history = RunDir(run).history()
    assert [h["event"] for h in history] == ["start", "extend"]
    assert history[1]["iteration"] == 4 and history[1]["changes"]["optim.iters"] == [4, 8]
    if mode == "restart":
        assert history[1]["changes"]["optim.restarts"] == [[], [4]]
    assert json.loads((run / "config.json").read_text())["optim"]["iters"] == 8


def test_a_finetune_run_keeps_its_phase_boundary_when_extended(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(override(cfg_for(data, run, **{"optim.iters": 4}), {"scheme": "finetune"}))
    cfg = continue_config(RunDir(run), {"optim.iters": 10}, "stretch")
    assert cfg.finetune_source_iters() == 2
