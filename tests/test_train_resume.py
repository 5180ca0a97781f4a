"""Exact resume, Ctrl-C, non-finite losses, mismatched data, and loading runs back."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from hrseg.errors import HrsegError
from hrseg.training import losses
from hrseg.training.config import TrainConfig, override
from hrseg.loader import load_model
from hrseg.training.rundir import RunDir
from hrseg.training.trainer import Trainer, train
from tests.data_fixtures import cached_synthetic_data, copy_data, make_synthetic_data

TINY = {
    "model.width": 0.0625, "model.pretrained": "none", "weighting.width": 0.125, "gan.width": 0.0625,
    "data.batch_size": 2, "data.crop": (64, 32), "optim.lr": 0.01, "run.device": "cpu", "run.progress": False,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def cfg_for(data: Path, out: Path, scheme: str = "w19", **extra: object) -> TrainConfig:
    base = {**TINY, "data.data": str(data), "run.out": str(out), "optim.iters": 5, "run.checkpoint_every": 2}
    return override(TrainConfig(scheme=scheme), {**base, **extra})


def _all_state(run: Path, name: str = "final.pt") -> dict:
    return torch.load(run / "checkpoints" / name, weights_only=True)


def _assert_same_tensors(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where  # type: ignore[arg-type]
        for i, (x, y) in enumerate(zip(a, b)):  # type: ignore[call-overload]
            _assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_ctrl_c_then_resume_is_bitwise_equal_to_an_uninterrupted_run(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # W^19 + GAN + running normalisation + a loader worker: every state the checkpoint must carry
    extra = {"gan.enabled": True, "weighting.normalize": "running", "data.workers": 1, "optim.iters": 7}
    full = train(cfg_for(data, tmp_path / "full", **extra))
    assert full.status == "finished"

    real_step = Trainer.step

    def step_with_ctrl_c(self: Trainer, p: object) -> dict:
        if self.iteration == 1:  # a terminal's Ctrl-C reaches the loader worker too: it must keep serving
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGINT)  # type: ignore[arg-type]
        if self.iteration == 5:  # during the sixth iteration (past the worker's prefetched batches)
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(self, p)

    monkeypatch.setattr(Trainer, "step", step_with_ctrl_c)
    part = train(cfg_for(data, tmp_path / "part", **extra))
    monkeypatch.undo()
    assert part.status == "interrupted" and part.iteration == 6  # the step in flight completes
    assert _all_state(tmp_path / "part", "last.pt")["iteration"] == 6
    assert not (tmp_path / "part" / "checkpoints" / "final.pt").exists()

    resumed = train(RunDir(tmp_path / "part").config(), resume=True)
    assert resumed.status == "finished" and resumed.iteration == 7
    a, b = _all_state(tmp_path / "full"), _all_state(tmp_path / "part")
    for key in ("models", "optimizers", "schedulers", "scaler", "rng", "data"):
        _assert_same_tensors(a[key], b[key], key)
    strip = lambda r: {k: v for k, v in r.items() if k != "images_per_s"}  # noqa: E731
    assert [strip(r) for r in RunDir(tmp_path / "full").metrics()] == [strip(r) for r in RunDir(tmp_path / "part").metrics()]


def test_finetune_resume_across_the_phase_switch(data: Path, tmp_path: Path) -> None:
    extra = {"optim.iters": 4, "finetune.source_iters": 2}
    train(cfg_for(data, tmp_path / "full", scheme="finetune", **extra))
    assert train(cfg_for(data, tmp_path / "part", scheme="finetune", **extra), stop_after=1).iteration == 1
    train(RunDir(tmp_path / "part").config(), resume=True)
    _assert_same_tensors(_all_state(tmp_path / "full")["models"], _all_state(tmp_path / "part")["models"])


def test_non_finite_loss_stops_naming_the_term_and_keeps_the_last_good_checkpoint(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = losses.weighted_source_loss
    calls = {"n": 0}

    def poisoned(*args: object, **kwargs: object) -> torch.Tensor:
        calls["n"] += 1
        value = real(*args, **kwargs)  # type: ignore[arg-type]
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(losses, "weighted_source_loss", poisoned)
    run = tmp_path / "nan"
    with pytest.raises(HrsegError, match=r"non-finite loss 'source' .* at iteration 3"):
        train(cfg_for(data, run, scheme="joint"))
    good = _all_state(run, "last.pt")
    assert good["iteration"] == 2
    assert all(torch.isfinite(t).all() for t in good["models"]["segmenter"].values())
    assert not (run / "checkpoints" / "final.pt").exists()


def test_wrong_class_count_is_refused_before_training(data: Path, tmp_path: Path) -> None:
    cfg = override(cfg_for(data, tmp_path / "r"), {"model.num_classes": 16})
    with pytest.raises(HrsegError, match=r"manifest.json: target split has 19 classes but the model has 16"):
        train(cfg)
    assert not (tmp_path / "r").exists()


def test_empty_split_is_refused(data: Path, tmp_path: Path) -> None:
    broken = copy_data(data, tmp_path / "data")
    manifest = broken / "gtav" / "train" / "manifest.json"
    m = json.loads(manifest.read_text())
    m.update(num_images=0, shards=[])
    manifest.write_text(json.dumps(m))
    with pytest.raises(HrsegError, match="empty"):
        train(cfg_for(broken, tmp_path / "r", scheme="joint"))


def test_missing_data_dir_and_missing_split(data: Path, tmp_path: Path) -> None:
    with pytest.raises(HrsegError, match="data directory not found"):
        train(cfg_for(tmp_path / "nowhere", tmp_path / "r"))
    with pytest.raises(HrsegError, match="synthia/train"):
        train(override(cfg_for(data, tmp_path / "r", scheme="joint"), {"data.source": "synthia"}))


def test_resume_refuses_data_of_another_size(data: Path, tmp_path: Path) -> None:
    mine = copy_data(data, tmp_path / "data")
    run = tmp_path / "run"
    train(cfg_for(mine, run, scheme="joint"), stop_after=2)
    shutil.rmtree(mine)
    other = make_synthetic_data(tmp_path / "other", size=(80, 40))
    other.rename(mine)
    with pytest.raises(HrsegError, match="data changed since this run started"):
        train(RunDir(run).config(), resume=True)


def test_resume_needs_a_checkpoint_and_an_unfinished_run(data: Path, tmp_path: Path) -> None:
    with pytest.raises(HrsegError, match="not a run directory"):
        RunDir(tmp_path / "none").config()
    run = tmp_path / "done"
    train(cfg_for(data, run, scheme="target-only", **{"optim.iters": 2}))
    with pytest.raises(HrsegError, match="already finished"):
        train(RunDir(run).config(), resume=True)
    (run / "checkpoints" / "last.pt").unlink()
    with pytest.raises(HrsegError, match="nothing to resume"):
        train(RunDir(run).config(), resume=True)


def test_load_model_refuses_foreign_or_missing_checkpoints(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(cfg_for(data, run, scheme="w1", **{"optim.iters": 2}))
    loaded = load_model(run, checkpoint="last.pt")
    assert loaded.iteration == 2 and loaded.weighting is not None and not loaded.weighting.training

    config = json.loads((run / "config.json").read_text())
    config["model"]["arch"] = "pspnet-r50"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(HrsegError, match="checkpoint is for 'fcn8s-vgg16', the run uses 'pspnet-r50'"):
        load_model(run)
    config["model"].update(arch="fcn8s-vgg16", num_classes=13)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(HrsegError, match="checkpoint has 19 classes, the run has 13"):
        load_model(run)
    config["model"].update(num_classes=19, width=0.125)
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(HrsegError, match="segmenter weights do not fit"):
        load_model(run)

    shutil.rmtree(run / "checkpoints")
    with pytest.raises(HrsegError, match="has no checkpoint"):
        load_model(run)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "final.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(HrsegError, match="final.pt: not a readable hrseg checkpoint"):
        load_model(run)
