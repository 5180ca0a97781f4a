"""report.html: the table, per-class IoU bars and training curves (matplotlib), galleries linked, one file."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hrseg.atomic import write_json
from hrseg.cli.main import app
from hrseg.errors import HrsegError
from hrseg.reporting import build_report
from hrseg.training.presets import quick_config
from hrseg.visualization.gallery import GalleryItem, write_gallery
from hrseg.visualization.report_page import GalleryLink, curve_panels, write_report_page


def fake_run(root: Path, scheme: str, seed: int, miou: float, iters: int = 20, val_every: int = 0) -> Path:
    """A run folder as training and evaluation leave it: config, eval/val.json with per-class IoU, metrics.jsonl."""
    run = root / f"{scheme}-s{seed}"
    write_json(run / "config.json", quick_config(scheme, "D", "o", seed=seed).to_dict())
    write_json(run / "eval" / "val.json", {"kind": "segmentation", "miou": miou,
                                           "iou": {"road": miou + 0.2, "sky": miou, "car": None}})
    lines = []
    for i in range(1, iters + 1):
        rec: dict[str, object] = {"iter": i, "phase": "joint", "target": 3.0 - i / iters, "source": 2.5 - i / iters}
        if scheme.startswith("w"):
            rec.update(w_cls=4.0 - i / iters, weight_realistic=1.0 + i / iters / 4, weight_deviating=1.0 - i / iters / 4)
        lines.append(json.dumps(rec))
        if val_every and i % val_every == 0:
            lines.append(json.dumps({"iter": i, "kind": "val", "val_miou": miou * i / iters, "val_iou": {}}))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return run


def fake_runs(root: Path, val_every: int = 0) -> list[Path]:
    return [fake_run(root, scheme, seed, miou, val_every=val_every)
            for seed in (0, 1) for scheme, miou in (("target-only", 0.40 + seed / 100), ("w19", 0.45 + seed / 50))]


def fake_gallery(folder: Path) -> Path:
    folder.mkdir(parents=True)
    write_gallery(folder, "weights: w19-s0", [GalleryItem("a", "a.png", {"auc": 0.6})])
    return folder


def test_page_holds_the_table_the_plots_and_the_gallery_link(tmp_path: Path) -> None:
    report = build_report(fake_runs(tmp_path / "runs", val_every=5))
    gallery = fake_gallery(tmp_path / "weights" / "w19")
    page = write_report_page(report, tmp_path / "out" / "report.html", [GalleryLink("weight maps", gallery)])
    text = page.read_text()
    assert text.count("<tr>") == 1 + 2 and "Ours with W^19" in text and "target only" in text
    plots = re.findall(r'<img class="plot" src="data:image/png;base64,([^"]+)"', text)
    assert len(plots) == 2  # per-class IoU bars and the training curves, embedded: the page is one file
    assert 'href="../weights/w19/index.html"' in text and "(1 panels)" in text
    assert not re.search(r'(src|href)="https?:', text)
    titles = [title for title, _ in curve_panels(report.rows)[2]]
    assert titles == ["target loss", "source loss (weighted)", "weighting networks' loss",
                      "mean weight: realistic (solid) / deviating (dashed) source pixels", "validation mIoU (%)"]


def test_validation_curve_only_when_runs_validated(tmp_path: Path) -> None:
    rows = build_report(fake_runs(tmp_path)).rows
    assert "validation mIoU (%)" not in [t for t, _ in curve_panels(rows)[2]]


def test_cli_report_html(tmp_path: Path) -> None:
    runs = [str(p) for p in fake_runs(tmp_path / "runs")]
    gallery = fake_gallery(tmp_path / "g")
    result = CliRunner().invoke(app, ["report", *runs, "--out", str(tmp_path / "rep"), "--html",
                                      "--gallery", str(gallery)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "rep" / "report.html").is_file() and "report.html" in result.output
    # a gallery link needs the page; a folder that is not a gallery is named
    alone = CliRunner().invoke(app, ["report", *runs, "--out", str(tmp_path / "r2"), "--gallery", str(gallery)])
    assert alone.exit_code == 2 and "--html" in alone.output
    bad = CliRunner().invoke(app, ["report", *runs, "--out", str(tmp_path / "r3"), "--html",
                                   "--gallery", str(tmp_path)])
    assert bad.exit_code == 2 and "gallery.json" in bad.output and not (tmp_path / "r3" / "report.html").exists()


def test_without_matplotlib_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = build_report(fake_runs(tmp_path))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(HrsegError, match=r"pip install \"hrseg\[plots\]\""):
        write_report_page(report, tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def test_validation_curve_from_a_real_run(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The validation lines training writes (run.val_every) become the page's val mIoU panel."""
    from hrseg.evaluation.evaluate import EvalOptions, evaluate_and_save
    from hrseg.evaluation.validation import train_with_validation
    from hrseg.training.config import override
    from tests.data_fixtures import cached_synthetic_data

    data = cached_synthetic_data(tmp_path_factory)
    run = tmp_path_factory.mktemp("val-run") / "w1"
    train_with_validation(override(quick_config("w1", str(data), str(run)), {
        "model.width": 0.0625, "weighting.width": 0.125, "data.batch_size": 2, "data.crop": (64, 32),
        "optim.iters": 4, "run.device": "cpu", "run.progress": False, "run.val_every": 2, "data.target_images": 4}))
    evaluate_and_save(run, EvalOptions(split="val", device="cpu", show_progress=False))
    rows = build_report([run]).rows
    train_logs, val_logs, panels = curve_panels(rows)
    assert [r["iter"] for r in val_logs[rows[0].configuration][0]] == [2, 4]
    assert panels[-1][0] == "validation mIoU (%)"
