"""benchmarks/gpu_check.py at 1/16 width on the CPU, so the GPU check cannot rot between GPU runs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.data_fixtures import cached_synthetic_data

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gc_mod = _load()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def test_tiny_check_runs_end_to_end_on_the_cpu_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    cases = "pspnet/joint,deeplabv2/w19+gan,eval/deeplabv2,torchrun"
    cmd = [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--threads", "1", "--cases", cases,
           "--json", str(out), "--no-progress", "--out", str(tmp_path / "work")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "gpu_check (tiny)" in proc.stderr and "goals" in proc.stderr
    result = json.loads(out.read_text())
    rows = {r["case"]: r for r in result["cases"]}
    assert list(rows) == cases.split(",")
    assert all(r["status"] == "ok" for r in rows.values()), rows
    for name in ("pspnet/joint", "deeplabv2/w19+gan"):
        r = rows[name]
        assert r["steps_timed"] == 4 and r["images_per_step"] == 2 * r["batch_per_domain"]
        assert r["images_per_s"] > 0 and 0 <= r["loader_wait_share"] < 1 and r["finite"] is True
        assert r["target_loss_first"] > 0 and r["amp_dtype"] == "float32"
    assert rows["deeplabv2/w19+gan"]["gan"] is True and rows["deeplabv2/w19+gan"]["bn"] == "train"
    assert rows["eval/deeplabv2"]["label_size"] == "128x64" and rows["eval/deeplabv2"]["images_per_s"] > 0
    tr = rows["torchrun"]
    assert tr["backend"] == "gloo" and tr["bn"] == "sync" and tr["finite"] is True and tr["images_per_s"] > 0
    goals = {g["goal"]: g for g in result["goals"]}
    assert any(g.startswith("no non-finite loss") and v["met"] is True for g, v in goals.items())
    assert all(v["met"] is None for g, v in goals.items() if "step /" in g or "loader" in g)  # tiny: not judged
    assert result["scale"]["name"] == "tiny" and (tmp_path / "work" / "data" / "gtav" / "train").is_dir()


def test_cases_select_by_glob_in_order_and_unknown_patterns_are_refused() -> None:
    assert gc_mod.select_cases("eval/*,fcn8s/joint") == ["fcn8s/joint", "eval/fcn8s", "eval/pspnet", "eval/deeplabv2"]
    assert len(gc_mod.select_cases("*")) == 3 * 4 + 1 + 3 + 1
    with pytest.raises(SystemExit, match="matches no case"):
        gc_mod.select_cases("resnet/*")


def _ctx(data: Path, tmp_path: Path, left: list[float]) -> object:
    ctx = gc_mod.Context(gc_mod.TINY, torch.device("cpu"), data, tmp_path, time.monotonic() + 60, 0, 0, False, {})
    ctx.left = lambda: left.pop(0) if left else -1.0  # type: ignore[method-assign]
    return ctx


def test_budget_stops_a_case_between_steps_and_skips_the_rest(data: Path, tmp_path: Path) -> None:
    ctx = _ctx(data, tmp_path, [1.0, 1.0, 1.0])  # the case starts, then two steps fit
    row = gc_mod._run_case(ctx, "pspnet/target-only")
    assert row["status"] == "partial (budget)" and row["steps_timed"] == 1  # one warm-up step, one timed
    assert row["step_s"] > 0 and row["finite"] is True
    skipped = gc_mod._run_case(ctx, "eval/pspnet")
    assert skipped == {"case": "eval/pspnet", "kind": "eval", "status": "skipped (budget)"}


def test_calibrated_backbone_has_measured_statistics(data: Path) -> None:
    state = gc_mod.calibrated_backbone("deeplabv2-r101", 0.0625, data, torch.device("cpu"), batches=2)
    assert int(state["bn1.num_batches_tracked"]) == 2
    assert state["bn1.running_mean"].abs().max() > 0 and not torch.allclose(state["bn1.running_var"],
                                                                           torch.ones_like(state["bn1.running_var"]))
    assert "fc.weight" in state  # the file loads strictly into the backbone, ImageNet head included


def test_goals_judge_the_ratio_and_the_loader_share_only_at_full_width() -> None:
    rows = [
        {"case": "fcn8s/joint", "kind": "train", "status": "ok", "step_s": 0.10, "loader_wait_share": 0.01,
         "finite": True, "amp_dtype": "bfloat16"},
        {"case": "fcn8s/w19+gan", "kind": "train", "status": "ok", "step_s": 0.20, "loader_wait_share": 0.07,
         "finite": True, "amp_dtype": "bfloat16"},
    ]
    full = {g["goal"]: g for g in gc_mod.goals(rows, gc_mod.FULL)}
    ratio = next(g for k, g in full.items() if k.startswith("fcn8s"))
    assert ratio["value"] == pytest.approx(2.0) and ratio["met"] is False
    loader = next(g for k, g in full.items() if k.startswith("loader"))
    assert loader["value"] == pytest.approx(0.07) and loader["met"] is False
    finite = next(g for k, g in full.items() if k.startswith("no non-finite"))
    assert finite["met"] is True and "bfloat16" in next(k for k in full if k.startswith("no non-finite"))
    rows[1]["status"] = "non-finite"
    assert next(g for g in gc_mod.goals(rows, gc_mod.FULL) if g["goal"].startswith("no non"))["met"] is False
    assert all(g["met"] is None for g in gc_mod.goals(rows[:1], gc_mod.TINY) if "loader" in g["goal"])
