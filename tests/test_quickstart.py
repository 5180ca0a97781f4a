"""`hrseg quickstart` end to end at toy size: scenes, 4 schemes x 2 seeds, eval, weight maps, report; resumable."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hrseg.cli.main import app
from hrseg.errors import HrsegError
from hrseg.quickstart import QuickstartConfig

TOY = ["--seeds", "2", "--iters", "2", "--source-images", "12", "--target-images", "16", "--val-images", "4",
       "--scene-size", "128x64", "--workers", "1", "--no-progress"]



def test_quickstart_runs_everything_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "qs"
    result = CliRunner().invoke(app, ["quickstart", "--out", str(out), *TOY, "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "2 at a time" in result.output

    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert runs == sorted(f"{s}-s{k}" for s in ("target-only", "joint", "w1", "w19") for k in (0, 1))
    for run in runs:
        assert (out / "runs" / run / "eval" / "val.json").is_file()
        has_w = run.startswith("w1")
        assert (out / "runs" / run / "eval" / "source.json").is_file() == has_w
    for scheme in ("w1", "w19"):
        assert (out / "weights" / scheme / "index.html").is_file()
        assert len(list((out / "weights" / scheme).glob("*.png"))) == 6

    report = json.loads((out / "report.json").read_text())
    rows = {r["configuration"]: r for r in report["rows"]}
    assert set(rows) == {"target only", "direct joint", "Ours with W^1", "Ours with W^19"}
    for row in rows.values():
        assert row["num_runs"] == 2 and row["seeds"] == [0, 1] and row["miou_std"] is not None
        assert row["delta_to_target_only"] == pytest.approx(row["miou_mean"] - rows["target only"]["miou_mean"])
    assert rows["Ours with W^19"]["weighting_auc"] is not None
    md = (out / "report.md").read_text()
    assert md.count("\n") == 1 + 2 + 4 + 2 and " ± " in md  # the hrseg mark, header, rule, 4 rows, checkpoint
    assert md.endswith("\nEvery row scored checkpoints/final.pt.\n")  # which checkpoint the rows used
    page = (out / "report.html").read_text()  # the same table with plots, linking the weight-map galleries
    assert 'href="weights/w19/index.html"' in page and page.count("data:image/png;base64,") == 2
    assert "Ours with W^19" in result.output and "wall time" in result.output and "report.md" in result.output
    summary = json.loads((out / "quickstart.json").read_text())
    assert summary["seconds"]["total"] > 0 and len(summary["runs"]) == 8

    # a second call keeps every finished run and evaluation
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*") if p.suffix in (".pt", ".json")}
    again = CliRunner().invoke(app, ["quickstart", "--out", str(out), *TOY])
    assert again.exit_code == 0, again.output
    assert again.output.count("already trained with this configuration") == 8
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps

    # one run retrained in this process (--jobs 1) equals the one the worker process trained;
    # --oracle adds the perfect-selection row and the share of its gain every row captures
    w19 = out / "runs" / "w19-s1"
    before = json.loads((w19 / "eval" / "val.json").read_text())
    shutil.rmtree(w19)
    third = CliRunner().invoke(app, ["quickstart", "--out", str(out), *TOY, "--jobs", "1", "--oracle"])
    assert third.exit_code == 0, third.output
    assert third.output.count("already trained with this configuration") == 7
    after = json.loads((w19 / "eval" / "val.json").read_text())
    assert after["confusion_matrix"] == before["confusion_matrix"]
    assert sorted(p.name for p in (out / "runs").glob("oracle-s*")) == ["oracle-s0", "oracle-s1"]
    rows = {r["configuration"]: r for r in json.loads((out / "report.json").read_text())["rows"]}
    assert set(rows) == {"target only", "direct joint", "Ours with W^1", "Ours with W^19", "oracle (realism mask)"}
    joint, oracle = rows["direct joint"]["miou_mean"], rows["oracle (realism mask)"]["miou_mean"]
    if oracle != joint:
        captured = (rows["Ours with W^19"]["miou_mean"] - joint) / (oracle - joint)
        assert rows["Ours with W^19"]["captured_oracle_gain"] == pytest.approx(captured)
        assert rows["oracle (realism mask)"]["captured_oracle_gain"] == pytest.approx(1.0)
    assert set(rows["Ours with W^19"]["weighting_auc_levels"]) == {"pixel", "region", "image", "agreement"}
    assert set(rows["Ours with W^1"]["weighting_auc_levels"]) == {"pixel", "region", "image"}
    assert "AUC pixel / region / image / agreement" in (out / "report.md").read_text()


def test_bad_options_are_refused(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "q"), "--seeds", "0"])
    assert result.exit_code == 2 and "--seeds" in result.output
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "q"), "--jobs", "0"])
    assert result.exit_code == 2 and "--jobs" in result.output
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "q"), "--scene-size", "big"])
    assert result.exit_code == 2 and "--scene-size" in result.output
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "q"), "--add-scheme", "nope"])
    assert result.exit_code == 2 and "unknown scheme 'nope'" in " ".join(result.output.split())
    assert not (tmp_path / "q").exists()


def test_add_scheme_trains_a_new_row_beside_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hrseg.quickstart as qs

    seen = {}

    def fake(cfg: QuickstartConfig) -> None:
        seen["schemes"] = cfg.trained_schemes
        raise HrsegError("stop here")

    monkeypatch.setattr(qs, "run_quickstart", fake)
    result = CliRunner().invoke(app, ["quickstart", "--out", str(tmp_path / "q"), "--add-scheme", "self-training",
                                      "--add-scheme", "joint"])
    assert result.exit_code == 2
    assert seen["schemes"] == (*QuickstartConfig().schemes, "self-training")
    assert "self-training" not in QuickstartConfig().schemes  # opt-in: the default quick start is unchanged


def test_default_budget_is_the_same_for_every_scheme() -> None:
    cfg = QuickstartConfig()
    budgets = {s: cfg.train_config(s, 0) for s in cfg.schemes}
    keys = ("optim", "data", "model")
    first = budgets["target-only"].to_dict()
    for scheme, tc in budgets.items():
        d = tc.to_dict()
        assert all(d[k] == first[k] for k in keys), scheme
        assert not d["gan"]["enabled"]
    assert cfg.seeds == 3 and cfg.jobs == 2 and cfg.threads == 1
    assert not cfg.oracle and "oracle" not in cfg.trained_schemes  # the default quick start pays nothing for it
    assert QuickstartConfig(oracle=True).trained_schemes == (*cfg.schemes, "oracle")


def test_a_quick_start_run_keeps_its_start_lines_to_itself(tmp_path_factory: pytest.TempPathFactory,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Parallel runs printed their parameter counts into the quick start's output, interleaved."""
    from hrseg.console import console
    from hrseg.quickstart import _train_once
    from hrseg.training.config import override
    from hrseg.training.presets import quick_config
    from hrseg.training.rundir import RunDir
    from tests.cli_fixtures import TINY
    from tests.data_fixtures import cached_synthetic_data

    data = cached_synthetic_data(tmp_path_factory)
    out = tmp_path_factory.mktemp("q") / "run"
    cfg = override(quick_config("target-only", str(data), str(out)), TINY).resolved()
    assert _train_once(RunDir(out), cfg) == "trained"
    assert "parameters:" not in capsys.readouterr().err
    assert not console.quiet  # the quick start's own lines still print
