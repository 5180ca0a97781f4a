"""Tiny trained runs and CLI helpers for the predict / export / eval-test / CLI-language tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from hrseg.cli.main import app
from hrseg.training.config import override
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
