"""CLI for `hrseg quickstart`: the whole comparison on procedural scenes in one command."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from hrseg.cli.common import emit_json, given, json_option, json_target, old_spelling, parse_size, user_errors
from hrseg.console import console


def quickstart_command(
    out: Path = typer.Option(Path("hrseg-quickstart"), "--out", help="Working folder (data, runs, pictures, report)."),
    seeds: int = typer.Option(3, "--seeds", help="Training seeds per scheme (the table shows mean ± std)."),
    iters: Optional[int] = typer.Option(None, "--iters", help="Iterations per run (default: the quick budget)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    jobs: int = typer.Option(2, "--jobs", help="Runs trained at the same time (worker processes); 1: one by one."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads (1 is fastest for the small model)."),
    workers: int = typer.Option(2, "--workers", help="Processes for scene generation and shard preparation."),
    source_scenes: Optional[int] = typer.Option(
        None, "--source-scenes", show_default="300", help="Procedural source (GTAV-format) scenes."),
    target_scenes: Optional[int] = typer.Option(
        None, "--target-scenes", show_default="100",
        help="Procedural target train scenes (16 are used, labelled)."),
    val_scenes: Optional[int] = typer.Option(
        None, "--val-scenes", show_default="50", help="Procedural target val scenes."),
    scene_size: str = typer.Option(
        "256x128", "--scene-size", metavar="WxH", help="Size of the generated target scenes."),
    oracle: bool = typer.Option(False, "--oracle", help="Also train the perfect-selection upper bound (weight 1 on "
                                "realistic, 0 on deviating source pixels) and show the share of its gain each row "
                                "captures."),
    add_scheme: Optional[List[str]] = typer.Option(
        None, "--add-scheme", help="Also train this scheme, e.g. self-training or w19+self-training (repeatable; "
                                   "a self-training row costs about twice a joint one)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No live progress bars."),
    json_path: Optional[str] = json_option(
        "Also write the summary (OUT/quickstart.json) to PATH ('-': standard output)."),
    source_images: Optional[int] = old_spelling("--source-images"),
    target_images: Optional[int] = old_spelling("--target-images"),
    val_images: Optional[int] = old_spelling("--val-images"),
) -> None:
    """Generate scenes, train target-only / joint / w1 / w19 (and the oracle), evaluate, draw weights, report.

    What the schemes are and what the numbers mean: docs/method.md.
    """
    from hrseg.cli.report import print_report
    from hrseg.quickstart import QuickstartConfig, run_quickstart
    from hrseg.training.schemes import QUICKSTART_SCHEMES

    with user_errors():
        json_target(json_path)
        n_source = given({"--source-scenes": source_scenes, "--source-images": source_images},
                         QuickstartConfig.source_images)[0]
        n_target = given({"--target-scenes": target_scenes, "--target-images": target_images},
                         QuickstartConfig.target_images)[0]
        n_val = given({"--val-scenes": val_scenes, "--val-images": val_images}, QuickstartConfig.val_images)[0]
        extra = tuple(s for s in add_scheme or () if s not in QUICKSTART_SCHEMES)
        cfg = QuickstartConfig(out=str(out), seeds=seeds, schemes=QUICKSTART_SCHEMES + extra, iters=iters, device=device, jobs=jobs, threads=threads,
                               workers=workers, oracle=oracle, source_images=n_source, target_images=n_target, val_images=n_val,
                               scene_size=parse_size(scene_size, "--scene-size", "256x128"),
                               show_progress=not no_progress)
        result = run_quickstart(cfg)
        print_report(result.report)
        md, js = result.report_files
        console.print(f"report: {md}, {js}" + (f", {result.report_page}" if result.report_page else ""))
        for scheme, gallery in result.galleries.items():
            console.print(f"weight maps ({scheme}): {gallery.index}")
        s = result.seconds
        console.print(f"wall time {s['total']:.0f} s (prepare {s['prepare']:.0f}, train {s['train']:.0f}, "
                      f"evaluate {s['evaluate']:.0f}, visualize {s['visualize']:.0f})")
        emit_json(result.to_dict(), json_path)  # OUT/quickstart.json is the library's


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root application."""
    app.command("quickstart")(quickstart_command)
