"""`hrseg report`: grouping by configuration, mean ± std over seeds, delta to target-only, files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hrseg.atomic import write_json
from hrseg.cli.main import app
from hrseg.errors import HrsegError
from hrseg.reporting import build_report, write_report
from hrseg.training.config import TrainConfig
from hrseg.training.presets import quick_config


def _run(root: Path, name: str, cfg: TrainConfig, miou: float, auc: float | None = None) -> Path:
    run = root / name
    write_json(run / "config.json", cfg.to_dict())
    write_json(run / "eval" / "val.json", {"kind": "segmentation", "miou": miou})
    if auc is not None:
        write_json(run / "eval" / "source.json", {"kind": "weighting", "auc": auc,
                                                  "mean_weight_realistic": 1.2, "mean_weight_deviating": 0.5})
    return run


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    out = []
    for seed, (t, j, w) in enumerate([(0.50, 0.55, 0.56), (0.52, 0.57, 0.60), (0.54, 0.53, 0.58)]):
        out.append(_run(tmp_path, f"target-s{seed}", quick_config("target-only", "D", "o", seed=seed), t))
        out.append(_run(tmp_path, f"joint-s{seed}", quick_config("joint", "D", "o", seed=seed), j))
        out.append(_run(tmp_path, f"w19-s{seed}", quick_config("w19", "D", "o", seed=seed), w, auc=0.7 + seed / 100))
    return out


def test_runs_differing_only_in_seed_form_one_row_with_mean_and_std(runs: list[Path]) -> None:
    report = build_report(runs)
    assert [r.configuration for r in report.rows] == ["target only", "direct joint", "Ours with W^19"]
    target, joint, w19 = report.rows
    assert len(target.runs) == 3 and target.mean == pytest.approx(0.52) and target.std == pytest.approx(0.02)
    assert target.delta == pytest.approx(0.0)
    assert joint.delta == pytest.approx(0.55 - 0.52)
    assert w19.delta == pytest.approx(0.58 - 0.52)
    assert w19.auc == pytest.approx(0.71) and joint.auc is None
    assert w19.miou_text() == "58.0 ± 2.0"
    assert target.target_images == "16" and target.backbone == "FCN-8s / VGG16"


def test_configurations_with_equal_titles_are_told_apart(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", quick_config("joint", "D", "o"), 0.5)
    b = _run(tmp_path, "b", quick_config("joint", "D", "o", **{"optim.lr": 0.05}), 0.6)
    rows = build_report([a, b]).rows
    assert len(rows) == 2 and rows[0].configuration != rows[1].configuration
    assert "lr=0.05" in rows[1].configuration
    assert rows[0].delta is None  # no target-only run to compare with


def test_cli_prints_the_table_and_writes_markdown_and_json(runs: list[Path], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| Ours with W^19 | FCN-8s / VGG16 | 16 | 3 | 58.0 ± 2.0 | +6.0 | 0.710 | 1.20 / 0.50 |" in md
    assert "| target only | FCN-8s / VGG16 | 16 | 3 | 52.0 ± 2.0 | +0.0 | — | — |" in md
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [r["num_runs"] for r in data["rows"]] == [3, 3, 3]
    assert data["rows"][1]["seeds"] == [0, 1, 2]


def test_unevaluated_run_is_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / "r"
    write_json(run / "config.json", TrainConfig().to_dict())
    with pytest.raises(HrsegError, match=r"eval/val\.json: missing; evaluate the run first"):
        build_report([run])
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not a run directory" in result.output


def test_report_files_are_replaced_whole(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "rep"
    write_report(build_report(runs[:3]), out)
    write_report(build_report(runs), out)
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "report.md"]  # no temp files left


def test_rows_follow_table_one_order_whatever_the_argument_order(runs: list[Path], tmp_path: Path) -> None:
    few = _run(tmp_path, "few", quick_config("target-only", "D", "o", **{"data.target_images": 4}), 0.3)
    report = build_report([*reversed(runs), few])
    assert [(r.configuration, r.target_images) for r in report.rows] == [
        ("target only", "4"), ("target only", "16"), ("direct joint", "16"), ("Ours with W^19", "16")]
    assert report.rows[0].delta == pytest.approx(0.0)  # compared with its own budget's target-only


def test_runs_without_the_evaluation_are_skipped_with_a_warning_or_refused_with_strict(
        runs: list[Path], tmp_path: Path) -> None:
    pending = tmp_path / "pending"
    write_json(pending / "config.json", quick_config("joint", "D", "o", seed=7).to_dict())  # still training
    report = build_report([*runs, pending])
    assert sum(len(r.runs) for r in report.rows) == len(runs)
    assert [run for run, _ in report.skipped] == [str(pending)]
    assert report.to_dict()["skipped"][0]["run"] == str(pending)
    with pytest.raises(HrsegError, match="val.json: missing"):
        build_report([*runs, pending], strict=True)
    with pytest.raises(HrsegError, match="none of the 1 run"):
        build_report([pending])
    cli = CliRunner().invoke(app, ["report", *map(str, runs), str(pending), "--out", str(tmp_path / "rep")])
    assert cli.exit_code == 0, cli.output
    assert f"skipped {pending}:" in " ".join(cli.output.split())
    strict = CliRunner().invoke(app, ["report", *map(str, runs), str(pending), "--strict", "--out",
                                      str(tmp_path / "rep2")])
    assert strict.exit_code == 2 and "missing" in strict.output


def test_the_report_says_which_checkpoint_each_row_scored(tmp_path: Path) -> None:
    a = _run(tmp_path, "a", quick_config("target-only", "D", "o"), 0.5)
    b = _run(tmp_path, "b", quick_config("joint", "D", "o"), 0.6)
    write_json(a / "eval" / "val.json", {"kind": "segmentation", "miou": 0.5, "checkpoint": f"{a}/checkpoints/best.pt"})
    write_json(b / "eval" / "val.json", {"kind": "segmentation", "miou": 0.6, "checkpoint": f"{b}/checkpoints/final.pt"})
    report = build_report([a, b])
    assert [r.checkpoint for r in report.rows] == ["best.pt", "final.pt"]
    md = report.markdown()
    assert "| checkpoint |" in md and "| best.pt |" in md and "| final.pt |" in md
    cli = CliRunner().invoke(app, ["report", str(a), str(b), "--out", str(tmp_path / "rep")])
    assert cli.exit_code == 0 and "best.pt" in cli.output and "final.pt" in cli.output
    write_json(b / "eval" / "val.json", {"kind": "segmentation", "miou": 0.6, "checkpoint": f"{b}/checkpoints/best.pt"})
    assert build_report([a, b]).markdown().endswith("\nEvery row scored checkpoints/best.pt.\n")
