"""Tiny trained runs and CLI helpers for the predict / export / eval-test / CLI-language tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from hrseg.cli.main import app
from hrseg.training.config import TrainConfig, override
from hrseg.training.presets import quick_config
from hrseg.training.trainer import train

#: a run that trains in about a second on one CPU thread
TINY: dict[str, Any] = {
    "model.width": 0.0625, "weighting.width": 0.125, "data.batch_size": 2, "data.crop": (32, 16),
    "optim.iters": 2, "run.device": "cpu", "run.progress": False, "data.target_images": 4,
}


def tiny_run(data: Path, out: Path, scheme: str = "target-only", **changes: Any) -> Path:
    """Train ``scheme`` on prepared ``data`` into ``out`` with the TINY budget (plus ``changes``)."""
    train(override(quick_config(scheme, str(data), str(out)), {**TINY, **changes}))
    return out


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, [str(a) for a in args])


def text(result: Any) -> str:
    """stdout and stderr of a CliRunner result (``output`` holds both), whitespace collapsed (rich wraps lines)."""
    return " ".join(result.output.split())


def stdout_json(result: Any) -> Any:
    """The JSON document a command printed on stdout (rich tables go to stderr)."""
    return json.loads(result.stdout[result.stdout.index("{"):])


#: a joint run of 6 iterations with checkpoints every 2 (validation and auto-resume tests)
JOINT_TINY: dict[str, Any] = {
    "model.width": 0.0625, "model.pretrained": "none", "data.batch_size": 2, "data.crop": (32, 16),
    "optim.lr": 0.05, "optim.iters": 6, "run.device": "cpu", "run.progress": False, "run.checkpoint_every": 2,
    "data.target_images": 4,
}


def joint_config(data: Path, out: Path, **extra: object) -> TrainConfig:
    """The JOINT_TINY config on prepared ``data`` into ``out``, plus ``extra`` config keys."""
    return override(TrainConfig(scheme="joint"), {**JOINT_TINY, "data.data": str(data), "run.out": str(out), **extra})
