"""The cityscapesScripts command `hrseg eval --save-predictions` prints works as printed and agrees."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli_fixtures import invoke, text, tiny_run
from tests.data_fixtures import cached_synthetic_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def test_the_printed_official_command_runs_and_gives_the_same_miou(data: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CITYSCAPES_DATASET", raising=False)
    run = tiny_run(data, tmp_path / "run")
    out = invoke("eval", "--run", run, "--save-predictions", tmp_path / "preds", "--device", "cpu", "--no-progress",
                 "--json", tmp_path / "ev.json")
    assert out.exit_code == 0, text(out)
    line = next(ln for ln in out.output.splitlines() if ln.startswith("official check: "))
    command = line.removeprefix("official check: ")
    assert "CITYSCAPES_DATASET=" in command and "/path/to" not in command
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSCAPES_")}
    proc = subprocess.run(command, shell=True, env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    official = json.loads((tmp_path / "preds" / "resultPixelLevelSemanticLabeling.json").read_text())
    ours = json.loads((tmp_path / "ev.json").read_text())
    assert official["averageScoreClasses"] == pytest.approx(ours["miou"], abs=1e-9)
    assert not (data / "raw" / "cityscapes" / "evaluationResults").exists()  # nothing written into the dataset


def test_a_partial_evaluation_says_why_there_is_no_official_command(data: Path, tmp_path: Path) -> None:
    run = tiny_run(data, tmp_path / "run")
    out = invoke("eval", "--run", run, "--save-predictions", tmp_path / "preds", "--max-images", 2, "--device", "cpu",
                 "--no-progress")
    assert out.exit_code == 0, text(out)
    assert "every image of gtFine/val; this evaluation scored the first 2" in text(out)
