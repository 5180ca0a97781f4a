"""CLI for `hrseg quickstart`: the whole comparison on procedural scenes in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hrseg.cli.common import emit_json, parse_size, user_errors
from hrseg.console import console


def quickstart_command(
    out: Path = typer.Option(Path("hrseg-quickstart"), "--out", help="Working folder (data, runs, pictures, report)."),
    seeds: int = typer.Option(3, "--seeds", help="Training seeds per scheme (the table shows mean ± std)."),
    iters: Optional[int] = typer.Option(None, "--iters", help="Iterations per run (default: the quick budget)."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    jobs: int = typer.Option(2, "--jobs", help="Runs trained at the same time (worker processes); 1: one by one."),
    threads: int = typer.Option(1, "--threads", help="torch CPU threads (1 is fastest for the small model)."),
    workers: int = typer.Option(2, "--workers", help="Processes for scene generation and shard preparation."),
    source_images: int = typer.Option(300, "--source-images", help="Procedural source (GTAV-format) scenes."),
    target_images: int = typer.Option(100, "--target-images", help="Procedural target train scenes (16 are used)."),
    val_images: int = typer.Option(50, "--val-images", help="Procedural target val scenes."),
    scene_size: str = typer.Option("256x128", "--scene-size", help="WxH of the generated target scenes."),
    oracle: bool = typer.Option(False, "--oracle", help="Also train the perfect-selection upper bound (weight 1 on "
                                "realistic, 0 on deviating source pixels) and show the share of its gain each row "
                                "captures."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No live progress bars."),
) -> None:
    """Generate scenes, train target-only / joint / w1 / w19 (and the oracle), evaluate, draw weights, report."""
    from hrseg.cli.report import print_report
    from hrseg.quickstart import QuickstartConfig, run_quickstart

    with user_errors():
        cfg = QuickstartConfig(out=str(out), seeds=seeds, iters=iters, device=device, jobs=jobs, threads=threads,
                               workers=workers, oracle=oracle,
                               source_images=source_images, target_images=target_images, val_images=val_images,
                               scene_size=parse_size(scene_size, "--scene-size", "256x128"),
                               show_progress=not no_progress)
        result = run_quickstart(cfg)
        print_report(result.report)
        md, js = result.report_files
        console.print(f"report: {md}, {js}")
        for scheme, gallery in result.galleries.items():
            console.print(f"weight maps ({scheme}): {gallery.index}")
        s = result.seconds
        console.print(f"wall time {s['total']:.0f} s (prepare {s['prepare']:.0f}, train {s['train']:.0f}, "
                      f"evaluate {s['evaluate']:.0f}, visualize {s['visualize']:.0f})")
        emit_json(result.to_dict(), out / "quickstart.json")


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root application."""
    app.command("quickstart")(quickstart_command)
