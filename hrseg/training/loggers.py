"""Experiment trackers as a registry: TensorBoard, Weights & Biases, MLflow, all fed from the one RunLog.

``--logger NAME`` (repeatable; ``run.loggers``) turns one on; ``--tensorboard``
(``run.tensorboard``) is the TensorBoard one. Each is an optional package,
never turned on by its mere presence; a run that asks for one that is not
installed stops before its folder is touched, with one line saying what to
install. Every logger gets the same numbers ``metrics.jsonl`` gets (training
values at ``log_every``, validations as ``val/miou`` and ``val/iou/<class>``),
stepped by iteration, and the resolved config as its parameters.

- ``wandb``: a W&B run named after the run folder, its files under ``RUN/wandb``;
  the project is ``$WANDB_PROJECT`` (default ``hrseg``) and W&B's own
  ``WANDB_MODE`` decides online or offline (``offline`` needs no network or account;
  ``wandb sync RUN/wandb/offline-run-*`` uploads later).
- ``mlflow``: an MLflow run in ``$MLFLOW_TRACKING_URI`` (a server, or any store
  MLflow knows), else in a file store in ``RUN/mlruns`` (``mlflow ui
  --backend-store-uri RUN/mlruns``); the experiment is ``$MLFLOW_EXPERIMENT_NAME``
  (default ``hrseg``).

Each start of a run (a resume included) is a new tracker run with the same
name; the steps are iterations, so its curves continue where they stopped.
"""

from __future__ import annotations

import importlib
import os
import time
from typing import Any, Callable, Protocol

from hrseg.errors import HrsegError
from hrseg.registry import Registry
from hrseg.training.config import TrainConfig
from hrseg.training.resume import flatten
from hrseg.training.rundir import RunDir
from hrseg.training.tensorboard import TensorBoardLog, WeightPicture, check_available


class Logger(Protocol):
    """What the run log calls: numbers at an iteration, and close at the end."""

    def scalars(self, values: dict[str, Any], iteration: int) -> None: ...

    def close(self) -> None: ...


Factory = Callable[[RunDir, TrainConfig, "WeightPicture | None"], Logger]
LOGGERS: Registry[Factory] = Registry("logger", "--logger")
#: the package each logger needs, and how to install it (checked before a run starts)
PACKAGES = {"wandb": ("wandb", 'pip install "hrseg[wandb]"'), "mlflow": ("mlflow", 'pip install "hrseg[mlflow]"')}


def numbers(values: dict[str, Any]) -> dict[str, float]:
    """The numeric values of a log line (not its iteration, phase or flags)."""
    return {k: float(v) for k, v in values.items()
            if k != "iter" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def logger_names(cfg: TrainConfig) -> tuple[str, ...]:
    """The loggers a config asks for, TensorBoard first when ``run.tensorboard`` is on."""
    names = (("tensorboard",) if cfg.run.tensorboard else ()) + tuple(cfg.run.loggers)
    return tuple(dict.fromkeys(names))


def check_loggers(cfg: TrainConfig) -> None:
    """Unknown names and missing packages, as one line each, before the run folder is touched."""
    for name in logger_names(cfg):
        LOGGERS.check(name)
        if name == "tensorboard":
            check_available()
        elif name in PACKAGES:
            module, install = PACKAGES[name]
            try:
                importlib.import_module(module)
            except ImportError:
                raise HrsegError(f"--logger {name}: the {module} package is not installed ({install})") from None


def open_loggers(run: RunDir, cfg: TrainConfig, picture: WeightPicture | None = None) -> list[Logger]:
    return [LOGGERS[name](run, cfg, picture) for name in logger_names(cfg)]


@LOGGERS.register("tensorboard")
def _tensorboard(run: RunDir, cfg: TrainConfig, picture: WeightPicture | None) -> Logger:
    return TensorBoardLog(str(run.tensorboard_dir), cfg.run.tensorboard_every, cfg.weighting.input, picture)


class WandbLog:
    """One W&B run (offline or online, as ``WANDB_MODE`` says) under ``RUN/wandb``."""

    def __init__(self, run: RunDir, cfg: TrainConfig) -> None:
        import wandb

        self.run = wandb.init(dir=str(run.path), project=os.environ.get("WANDB_PROJECT", "hrseg"),
                              name=run.path.name, config=flatten(cfg.to_dict()), reinit="create_new",
                              settings=wandb.Settings(silent=True, console="off"))

    def scalars(self, values: dict[str, Any], iteration: int) -> None:
        self.run.log(numbers(values), step=iteration)

    def close(self) -> None:
        self.run.finish()


@LOGGERS.register("wandb")
def _wandb(run: RunDir, cfg: TrainConfig, picture: WeightPicture | None) -> Logger:
    return WandbLog(run, cfg)


class MlflowLog:
    """One MLflow run, through the client API (no global "active run" to leak between runs)."""

    def __init__(self, run: RunDir, cfg: TrainConfig) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            uri = (run.path / "mlruns").absolute().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks to opt in to file stores
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "hrseg")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=run.path.name).info.run_id
        params = [Param(k, str(v)) for k, v in flatten(cfg.to_dict()).items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=params[i:i + 100])

    def scalars(self, values: dict[str, Any], iteration: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, iteration) for k, v in numbers(values).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


@LOGGERS.register("mlflow")
def _mlflow(run: RunDir, cfg: TrainConfig, picture: WeightPicture | None) -> Logger:
    return MlflowLog(run, cfg)
