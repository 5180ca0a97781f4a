"""SIGTERM is a checkpoint: a preempted training writes last.pt and exits 143 with the resume command (case 12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.data_fixtures import cached_synthetic_data

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--width", "0.0625", "--weight-width", "0.125", "--gan-width", "0.0625", "--pretrained", "none",
         "--crop", "32x16", "--batch-size", "2", "--device", "cpu", "--no-progress"]


def _logged(run: Path) -> int:
    try:
        return len((run / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def test_sigterm_writes_a_checkpoint_and_exits_143_with_the_resume_command(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    data = cached_synthetic_data(tmp_path_factory, prepared_size=(32, 16))
    run = tmp_path_factory.mktemp("sigterm") / "run"
    args = [sys.executable, "-m", "hrseg", "train", "--scheme", "joint", "--data", str(data), "--out", str(run),
            "--iters", "100000", "--set", "run.checkpoint_every=100000", "--set", "run.log_every=1",
            "--set", "data.workers=1", *SMALL]
    proc = subprocess.Popen(args, cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="300"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while _logged(run) < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[0]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out
    last = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert 3 <= last["iteration"] < 100000
    assert f"interrupted by SIGTERM at iteration {last['iteration']} (checkpoint written); continue with " \
           f"hrseg train --resume {run}" in " ".join(out.split()), out
    assert "Traceback" not in out
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["stopped_by"] == "SIGTERM"
