"""CLI for `hrseg report`: compare runs in one Table-1 style table (Markdown + JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich import box
from rich.table import Table

from hrseg.cli.common import emit_json, json_option, json_target, user_errors
from hrseg.console import console
from hrseg.errors import HrsegError
from hrseg.reporting import LEVEL_SHORT, Report, build_report, captured_text, write_report
from hrseg.visualization.report_page import gallery_links, write_report_page


def _shared_text(name: str, value: str) -> str:
    if name == "backbone":
        return value
    if name == "checkpoint":
        return f"checkpoint {value}"
    return f"{value} {name.removesuffix('s')}" if value == "1" else f"{value} {name}"


def print_report(report: Report) -> None:
    """The comparison as a rich table that fits an 80-column terminal (report.md has every column).

    Settings every row shares (backbone, labelled target images, runs) go into
    the heading instead of a column each. The heading is printed above the
    table, not as its title: rich wraps a title to the table's width, which
    broke it over five lines for a narrow two-row table.
    """
    has_auc = any(r.auc is not None for r in report.rows)
    shared = {
        "backbone": {r.backbone for r in report.rows}, "target images": {r.target_images for r in report.rows},
        "runs": {str(len(r.runs)) for r in report.rows}, "checkpoint": {r.checkpoint for r in report.rows} - {"?"},
    }
    common = [_shared_text(name, values.pop()) for name, values in shared.items() if len(values) == 1]
    heading = f"mIoU on {report.split} (%), mean ± std over runs; Δ: vs target only"
    if any(r.target_images == "0" for r in report.rows):
        heading += " (vs source only without target labels)"
    if common:
        heading += "\n" + ", ".join(common)
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("configuration", no_wrap=True)
    varying = [name for name, values in shared.items() if values]  # emptied by pop() when shared
    for name in varying:
        table.add_column(name, justify="left" if name in ("backbone", "checkpoint") else "right", no_wrap=True)
    table.add_column("mIoU", justify="right", no_wrap=True)
    table.add_column("Δ", justify="right", no_wrap=True)
    if report.has_oracle:
        table.add_column("of oracle", justify="right", no_wrap=True)
    if has_auc:
        table.add_column("AUC", justify="right", no_wrap=True)
    levels = report.levels
    if report.has_level_auc:
        table.add_column("/".join(LEVEL_SHORT.get(lvl, lvl) for lvl in levels), justify="right", no_wrap=True)
    for row in report.rows:
        cells = [row.configuration]
        cells += [{"backbone": row.backbone, "target images": row.target_images, "runs": str(len(row.runs)),
                   "checkpoint": row.checkpoint}[n] for n in varying]
        cells += [row.miou_text(), "—" if row.delta is None else f"{100 * row.delta:+.1f}"]
        if report.has_oracle:
            cells.append(captured_text(row.captured))
        if has_auc:
            cells.append("—" if row.auc is None else f"{row.auc:.3f}")
        if report.has_level_auc:
            cells.append(row.level_auc_text(levels).replace(" / ", "/"))
        table.add_row(*cells)
    console.print(heading, highlight=False)
    console.print(table)


def report_command(
    runs: List[Path] = typer.Argument(..., help="Run directories (already evaluated with hrseg eval)."),
    split: str = typer.Option("val", "--split", help="Which evaluation to compare (RUN/eval/<split>.json)."),
    strict: bool = typer.Option(False, "--strict", help="Fail on a run without the evaluation instead of "
                                                         "skipping it with a warning."),
    out: Path = typer.Option(Path("."), "--out", help="Folder for report.md and report.json (and report.html)."),
    html: bool = typer.Option(False, "--html/--no-html",
                              help="Also write report.html: the table, per-class IoU and training curves as plots "
                                   "(needs matplotlib: pip install \"hrseg[plots]\")."),
    gallery: List[Path] = typer.Option([], "--gallery",
                                       help="A gallery folder (hrseg visualize --out) to link from report.html; "
                                            "repeatable."),
    json_path: Optional[str] = json_option("Also write report.json's content to PATH ('-': standard output)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace a report.md / report.json / report.html in --out that hrseg did "
                                        "not write."),
) -> None:
    """Compare runs like the paper's Table 1: configuration, backbone, target images, mIoU, Δ to target-only.

    The paper's own numbers and how they compare: docs/method.md.
    """
    with user_errors():
        json_target(json_path)
        report = build_report(runs, split, strict=strict)
        for run, why in report.skipped:
            console.print(f"[yellow]skipped {run}: {why}[/]", highlight=False, soft_wrap=True)
        for stale in [r for row in report.rows for r in row.runs if r.stale]:
            console.print(f"[yellow]not the run's result: {escape(stale.path)}: {escape(stale.stale or '')}[/]",
                          highlight=False, soft_wrap=True)
        if gallery and not html:
            raise HrsegError("--gallery: links go into report.html; add --html")
        links = gallery_links(gallery) if html else []
        if html:
            from hrseg.ownership import check_replace, html_owned

            check_replace(out / "report.html", html_owned, overwrite, "a report page")
        md, js = write_report(report, out, overwrite)  # before printing: a bad --out is the only thing the user sees
        page = write_report_page(report, out / "report.html", links) if html else None
        print_report(report)
        console.print(f"wrote {md} and {js}" + (f"; open {page}" if page else ""))
        emit_json(report.to_dict(), json_path)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root application."""
    app.command("report")(report_command)
