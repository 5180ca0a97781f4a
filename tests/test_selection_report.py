"""The report's selection columns: share of the oracle's gain and AUC per weighting level."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hrseg.atomic import write_json
from hrseg.cli.main import app
from hrseg.console import console
from hrseg.reporting import build_report
from hrseg.training.presets import quick_config


def _run(root: Path, name: str, scheme: str, seed: int, miou: float, levels: dict | None = None,
         **changes: object) -> Path:
    run = root / name
    write_json(run / "config.json", quick_config(scheme, "D", "o", seed=seed, **changes).to_dict())
    write_json(run / "eval" / "val.json", {"kind": "segmentation", "miou": miou})
    if levels is not None:
        write_json(run / "eval" / "source.json", {
            "kind": "weighting", "auc": 0.8, "mean_weight_realistic": 1.3, "mean_weight_deviating": 0.4,
            "levels": {k: {"auc": v, "mean_realistic": 0.6, "mean_deviating": 0.4} for k, v in levels.items()}})
    return run


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    out = []
    for seed, (j, o, w) in enumerate([(0.50, 0.56, 0.53), (0.52, 0.56, 0.55)]):
        out.append(_run(tmp_path, f"joint-s{seed}", "joint", seed, j))
        out.append(_run(tmp_path, f"oracle-s{seed}", "oracle", seed, o))
        out.append(_run(tmp_path, f"w19-s{seed}", "w19", seed, w,
                        levels={"pixel": 0.8, "region": 0.7 + seed / 10, "image": 0.6}))
    return out


def test_capture_ratio_and_level_auc(runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = build_report(runs)
    rows = {r.configuration: r for r in report.rows}
    assert rows["Ours with W^19"].captured == pytest.approx((0.54 - 0.51) / (0.56 - 0.51))
    assert rows["direct joint"].captured == pytest.approx(0.0)
    assert rows["oracle (realism mask)"].captured == pytest.approx(1.0)
    assert rows["Ours with W^19"].level_aucs() == pytest.approx({"pixel": 0.8, "region": 0.75, "image": 0.6})
    md = report.markdown()
    assert "share of oracle gain" in md and "AUC pixel / region / image" in md
    assert "| 60 % | 0.800 | 1.30 / 0.40 | 0.80 / 0.75 / 0.60 |" in md
    monkeypatch.setattr(console, "width", 200)  # a wide terminal: every column whole
    result = CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert "60 %" in result.output and "0.80/0.75/0.60" in result.output


def test_the_printed_table_fits_80_columns_whole(runs: list[Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With every column shown, nothing is cut: shared settings move into the title."""
    monkeypatch.setattr(console, "width", 80)
    result = CliRunner().invoke(app, ["report", *map(str, runs), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    table = result.stderr.split("wrote ")[0]
    assert "…" not in table
    assert max(len(line) for line in table.splitlines()) <= 80
    assert "FCN-8s / VGG16, 16 target images, 2 runs" in table
    for cell in ("oracle (realism mask)", "54.0 ± 1.4", "60 %", "0.800", "0.80/0.75/0.60"):
        assert cell in table


def test_no_oracle_row_no_capture_column(runs: list[Path]) -> None:
    report = build_report([r for r in runs if "oracle" not in r.name])
    assert all(r.captured is None for r in report.rows)
    assert "oracle gain" not in report.markdown()


def test_titles_name_w_input_only_when_it_is_not_the_default(tmp_path: Path) -> None:
    rows = build_report([
        _run(tmp_path, "default", "w19", 0, 0.5),
        _run(tmp_path, "pred", "w19", 0, 0.4, **{"weighting.input": "pred"}),
    ]).rows
    assert sorted(r.configuration for r in rows) == ["Ours with W^19", "Ours with W^19 (prediction input)"]


def test_the_heading_is_not_wrapped_to_a_narrow_table(runs: list[Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Two runs make a narrow table; its heading stays two whole lines, as wide as it needs."""
    monkeypatch.setattr(console, "width", 200)
    result = CliRunner().invoke(app, ["report", *map(str, runs[:2]), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(line.strip() == "mIoU on val (%), mean ± std over runs; Δ: vs target only" for line in lines), lines
