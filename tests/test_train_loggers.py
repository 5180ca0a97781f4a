"""Loggers as a registry: Weights & Biases (offline) and MLflow (file store) get what metrics.jsonl gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hrseg.errors import HrsegError
from hrseg.evaluation.validation import train_with_validation
from hrseg.training import loggers
from hrseg.training.config import TrainConfig, override
from hrseg.training.trainer import train
from tests.data_fixtures import cached_synthetic_data

TINY = {
    "model.width": 0.0625, "model.pretrained": "none", "data.batch_size": 2, "data.crop": (32, 16),
    "optim.iters": 3, "run.device": "cpu", "run.progress": False, "data.target_images": 4,
    "run.val_every": 2, "run.val_images": 2,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def cfg_for(data: Path, out: Path, **extra: object) -> TrainConfig:
    return override(TrainConfig(scheme="joint"), {**TINY, "data.data": str(data), "run.out": str(out), **extra})


def jsonl(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_mlflow_file_store_gets_every_logged_number(data: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    run = tmp_path / "run"
    train_with_validation(cfg_for(data, run, **{"run.loggers": ("mlflow",)}))
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("hrseg").experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert found.data.params["optim.lr"] == "0.01" and found.data.params["scheme"] == "joint"
    lines = jsonl(run)
    target = {m.step: m.value for m in client.get_metric_history(found.info.run_id, "target")}
    assert target == {r["iter"]: pytest.approx(r["target"]) for r in lines if "target" in r}
    val = {m.step: m.value for m in client.get_metric_history(found.info.run_id, "val/miou")}
    assert val == {r["iter"]: pytest.approx(r["val_miou"]) for r in lines if r.get("kind") == "val"}
    assert client.get_metric_history(found.info.run_id, "val/iou/road")


def test_wandb_offline_run_gets_the_values(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train_with_validation(cfg_for(data, run, **{"run.loggers": ("wandb",)}))
    (record,) = (run / "wandb").glob("offline-run-*/run-*.wandb")
    content = record.read_bytes()  # W&B's own log: protobuf records holding keys and JSON values
    for key in (b"target", b"val/miou", b"val/iou/road", b"optim.lr"):
        assert key in content, key


def test_unknown_or_missing_loggers_stop_before_the_folder_is_touched(data: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HrsegError, match="unknown logger 'neptune'"):
        train(cfg_for(data, tmp_path / "a", **{"run.loggers": ("neptune",)}))
    monkeypatch.setitem(loggers.PACKAGES, "wandb", ("hrseg_no_such_package", 'pip install "hrseg[wandb]"'))
    with pytest.raises(HrsegError, match=r"--logger wandb: the hrseg_no_such_package package is not installed"):
        train(cfg_for(data, tmp_path / "b", **{"run.loggers": ("wandb",)}))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_the_registry_names_tensorboard_wandb_and_mlflow() -> None:
    assert set(loggers.LOGGERS.names()) >= {"tensorboard", "wandb", "mlflow"}
    cfg = override(TrainConfig(), {"run.tensorboard": True, "run.loggers": ("mlflow", "tensorboard")})
    assert loggers.logger_names(cfg) == ("tensorboard", "mlflow")
