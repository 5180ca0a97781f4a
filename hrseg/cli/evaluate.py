"""CLI for `hrseg eval`: score a run on a split, weighting quality on source, a test-set submission,
or a folder of PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from hrseg.cli.common import (FLIP, OVERLAP, SCALE, SLIDE, WINDOW, emit_json, json_option, json_target,
                              old_run_option, run_argument, the_run, tta_changes, user_errors)
from hrseg.console import console
from hrseg.errors import HrsegError
from hrseg.evaluation.results import EvalReport, WeightingReport


def _pct(x: float | None) -> str:
    return "—" if x is None or x != x else f"{100 * x:.2f}"


def _num(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:.3f}"


def print_eval_report(report: EvalReport) -> None:
    table = Table(title=f"{report.dataset}/{report.split}: {report.num_images} images, {report.classes} classes")
    table.add_column("class")
    table.add_column("IoU (%)", justify="right")
    for name, iou in report.iou.items():
        table.add_row(name, _pct(iou))
    table.add_section()
    table.add_row("[bold]mIoU", f"[bold]{_pct(report.miou)}")
    table.add_row("pixel accuracy", _pct(report.pixel_accuracy))
    console.print(table)


def print_weighting_report(report: WeightingReport) -> None:
    table = Table(title=f"weighting quality ({report.scheme}) on {report.dataset}/{report.split}: "
                        f"{report.num_images} images, {report.realistic_pixels} realistic / "
                        f"{report.deviating_pixels} deviating pixels")
    for col in ("map", "ROC AUC", "mean on realistic", "mean on deviating"):
        table.add_column(col, justify="left" if col == "map" else "right")
    table.add_row("[bold]combined weight", f"[bold]{_num(report.combined.auc)}",
                  _num(report.combined.mean_realistic), _num(report.combined.mean_deviating))
    for level, q in report.levels.items():
        table.add_row(f"{level} score", _num(q.auc), _num(q.mean_realistic), _num(q.mean_deviating))
    console.print(table)
    if report.per_class:
        levels = list(report.levels)
        per = Table(title=f"within each class (AUC of realistic vs deviating pixels of that class; "
                          f"mean over classes by pixel share: {_num(report.within_class_auc)})")
        for col in ("class", "share", "AUC combined", *(f"AUC {lvl}" for lvl in levels), "mean weight real / dev"):
            per.add_column(col, justify="left" if col == "class" else "right")
        for name, q in report.per_class.items():
            per.add_row(name, f"{100 * q.share:.1f} %", _num(q.auc), *(_num(q.level_auc.get(lvl)) for lvl in levels),
                        f"{_num(q.mean_realistic)} / {_num(q.mean_deviating)}")
        console.print(per)


def print_submission(report: object) -> None:
    from hrseg.evaluation.evaluate import SubmissionReport

    assert isinstance(report, SubmissionReport)
    table = Table(title=f"{report.dataset}/{report.split}: predictions for the evaluation server (not scored)")
    table.add_column("what")
    table.add_column("where")
    table.add_row(f"{report.num_images} labelId PNGs", report.predictions)
    table.add_row("zip to upload", report.zip or "—")
    if report.colour:
        table.add_row("colour PNGs", report.colour)
    console.print(table)
    if report.zip:
        console.print(f"upload {report.zip} at the Cityscapes benchmark server (pixel-level semantic labeling)",
                      highlight=False, soft_wrap=True)


def eval_command(
    run: Optional[Path] = run_argument("Run folder to evaluate."),
    checkpoint: Optional[Path] = typer.Option(
        None, "--checkpoint", help="Checkpoint name in RUN/checkpoints or a file (default: final.pt, else last.pt)."),
    network: str = typer.Option(
        "student", "--model", help="student (the trained S) or teacher (a self-training run's mean teacher; its "
                                   "report goes to RUN/eval/<split>-teacher.json)."),
    split: str = typer.Option(
        "val", "--split", help="Target split (val; test writes a server submission), 'source' for weighting "
                               "quality, or dataset/split."),
    classes: int = typer.Option(19, "--classes", help="Evaluated classes: 19, 16 or 13 (SYNTHIA protocols)."),
    save_predictions: Optional[Path] = typer.Option(
        None, "--save-predictions", help="Write labelId PNGs to DIR/labelIds (official-script layout); "
                                         "with --split test also DIR/cityscapes-submission.zip."),
    colour: bool = typer.Option(False, "--colour/--no-colour", "--color/--no-color",
                                help="With --save-predictions: also colour PNGs in DIR/colour."),
    json_path: Optional[str] = json_option("Write the report as JSON to PATH instead of RUN/eval/<split>.json "
                                           "('-': standard output, and the file as well)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    amp: bool = typer.Option(False, "--amp/--no-amp", help="Mixed precision on CUDA (scores in full precision "
                                                           "by default)."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", help="Images per forward pass (default 2; source: the run's training batch)."),
    data: Optional[Path] = typer.Option(None, "--data", help="Prepared data dir (default: the run's)."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Evaluate only the first N images."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0 = torch's default)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress bar."),
    slide: bool = SLIDE, window: Optional[str] = WINDOW, overlap: float = OVERLAP,
    scales: Optional[List[float]] = SCALE, flip: bool = FLIP,
    predictions: Optional[Path] = typer.Option(
        None, "--predictions", help="Score this folder of prediction PNGs instead of a run (needs --data)."),
    dataset: str = typer.Option("cityscapes", "--dataset", help="With --predictions: dataset of the split."),
    ids: str = typer.Option("label", "--ids", help="With --predictions: PNGs hold 'label' ids or 'train' ids."),
    old_run: Optional[Path] = old_run_option(),
) -> None:
    """Evaluate a run (mIoU on a target split, or weighting AUC on 'source'), write a Cityscapes test
    submission (--split test --save-predictions DIR), or score a folder of PNGs.

    How evaluation is done and why: docs/method.md, "Evaluation".
    """
    from dataclasses import replace

    from hrseg.evaluation.evaluate import EvalOptions, evaluate_and_save, score_folder
    from hrseg.inference.tta import InferenceOptions

    with user_errors():
        json_target(json_path)
        changes = tta_changes(slide=slide, window=window, overlap=overlap, scales=scales, flip=flip)
        run = the_run(run, old_run, "eval", required=False)
        if (run is None) == (predictions is None):
            raise HrsegError("eval: give exactly one of RUN or --predictions DIR")
        if predictions is not None:
            if data is None:
                raise HrsegError("--predictions: also give --data (the prepared data dir holding the split)")
            if ids not in ("label", "train"):
                raise HrsegError(f"--ids: must be 'label' or 'train', got {ids!r}")
            report = score_folder(predictions, data, dataset, split, classes=classes, ids=ids,
                                  show_progress=progress)
            print_eval_report(report)
            emit_json(report.to_dict(), json_path)
            return
        assert run is not None
        tta = replace(InferenceOptions(), **changes)  # --slide without --window: the library slides the crop
        opts = EvalOptions(split=split, classes=classes, checkpoint=str(checkpoint) if checkpoint else None,
                           data=str(data) if data else None,
                           save_predictions=str(save_predictions) if save_predictions else None,
                           colour=colour, device=device, batch_size=batch_size, max_images=max_images,
                           threads=threads, show_progress=progress, tta=tta, amp=amp, model=network)
        written = None if json_path == "-" else json_path
        full, path = evaluate_and_save(run, opts, written)
        if isinstance(full, WeightingReport):
            print_weighting_report(full)
        elif isinstance(full, EvalReport):
            print_eval_report(full)
        else:
            print_submission(full)
        console.print(f"wrote {path}", highlight=False)
        if json_path == "-":
            emit_json(json.loads(path.read_text()), "-")  # what was written, with the options the library resolved
        if isinstance(full, EvalReport) and full.predictions:
            from hrseg.evaluation.evaluate import official_check
            from hrseg.training.rundir import RunDir

            console.print(f"predictions: {full.predictions}", highlight=False, soft_wrap=True)
            console.print(official_check(full.predictions, data or RunDir(run).config().data.data, split, max_images),
                          highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root application."""
    app.command("eval")(eval_command)
