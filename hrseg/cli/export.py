"""CLI for `hrseg export`: a run's segmenter in one file, to share or to predict with."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from hrseg.cli.common import emit_json, json_option, json_target, parse_size, user_errors
from hrseg.console import console


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def export_command(
    run: Path = typer.Argument(..., help="Run folder to export."),
    out: Path = typer.Option(..., "--out", help="Model file to write, e.g. model.pt."),
    checkpoint: Optional[str] = typer.Option(
        None, "--checkpoint", help="Checkpoint name in RUN/checkpoints or a file (default: final.pt, else last.pt)."),
    half: bool = typer.Option(False, "--half/--no-half", help="Store the weights as float16 (half the file)."),
    size: Optional[str] = typer.Option(
        None, "--size", metavar="WxH",
        help="Working size to record (default: the size the run's target images were prepared at)."),
    overwrite: bool = typer.Option(False, "--overwrite",
                                   help="Replace an existing file at --out that is not an earlier export."),
    json_path: Optional[str] = json_option(),
) -> None:
    """Export a run's segmentation network with what is needed to use it (hrseg predict MODEL.pt ...).

    The file loads with torch.load(weights_only=True): weights, architecture, width, classes,
    normalisation, working size, class names and the run's config.
    """
    from hrseg.export import export_model

    with user_errors():
        json_target(json_path)
        result = export_model(run, out, checkpoint=checkpoint, half=half,
                              size=parse_size(size, "--size") if size else None, overwrite=overwrite)
        table = Table(title=f"exported {result.checkpoint} (iteration {result.iteration})")
        table.add_column("file")
        table.add_column("parameters", justify="right")
        table.add_column("dtype")
        table.add_column("working size")
        table.add_column("size on disk", justify="right")
        table.add_row(str(result.path), f"{result.parameters:,}", result.dtype, f"{result.size[0]}x{result.size[1]}",
                      _mib(result.bytes))
        console.print(table)
        emit_json(result.to_dict(), json_path)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root application."""
    app.command("export")(export_command)
