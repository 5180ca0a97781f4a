"""CLI for `hrseg visualize weights|predictions`: labelled PNG panels and an index.html."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from hrseg.cli.common import emit_json, json_option, json_target, old_run_option, run_argument, the_run, user_errors
from hrseg.console import console

visualize_app = typer.Typer(help="Draw weight maps or predictions of a run as PNG panels with an index.html.",
                            no_args_is_help=True)

_RUN = run_argument("Run folder to draw.")
_OLD_RUN = old_run_option()
_OUT = typer.Option(..., "--out", help="Output folder for the PNGs, index.html and gallery.json.")
_NUM = typer.Option(8, "--num", help="Number of images, spread evenly over the split.")
_CKPT = typer.Option(None, "--checkpoint",
                     help="Checkpoint name in RUN/checkpoints or a file (default: final.pt, else last.pt).")
_DATA = typer.Option(None, "--data", help="Prepared data dir (default: the run's).")
_DEVICE = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N.")
_PROGRESS = typer.Option(True, "--progress/--no-progress", help="Live progress bar.")
_JSON = json_option("Also write the list of panels (OUT/gallery.json) to PATH ('-': standard output).")
_OVERWRITE = typer.Option(False, "--overwrite", help="Replace files in --out that hrseg did not write.")


def _print(kind: str, gallery: object) -> None:
    from hrseg.visualization.render import Gallery

    assert isinstance(gallery, Gallery)
    table = Table(title=f"{kind} panels")
    table.add_column("panel")
    for p in gallery.panels:
        table.add_row(str(p))
    console.print(table)
    console.print(f"open {gallery.index}")


def _run(kind: str, run: Optional[Path], out: Path, num: int, split: str, checkpoint: Optional[Path],
         data: Optional[Path], device: str, progress: bool, json_path: Optional[str], overwrite: bool = False,
         old_run: Optional[Path] = None) -> None:
    from hrseg.visualization.render import VisualizeOptions, visualize_predictions, visualize_weights

    with user_errors():
        json_target(json_path)
        run = the_run(run, old_run, f"visualize {kind}")
        opts = VisualizeOptions(out=str(out), num=num, split=split,
                                checkpoint=str(checkpoint) if checkpoint else None,
                                data=str(data) if data else None, device=device, show_progress=progress,
                                overwrite=overwrite)
        fn = visualize_weights if kind == "weights" else visualize_predictions
        gallery = fn(run, opts)
        _print(kind, gallery)  # OUT/gallery.json is the library's
        emit_json(gallery.to_dict(), json_path)


@visualize_app.command("weights")
def weights_command(run: Optional[Path] = _RUN, out: Path = _OUT, num: int = _NUM,
                    split: str = typer.Option("source", "--split", help="'source' or dataset/split."),
                    checkpoint: Optional[Path] = _CKPT, data: Optional[Path] = _DATA, device: str = _DEVICE,
                    progress: bool = _PROGRESS, json_path: Optional[str] = _JSON,
                    overwrite: bool = _OVERWRITE, old_run: Optional[Path] = _OLD_RUN) -> None:
    """Per source image: image, label, prediction, pixel/region/image scores, combined weight (W^19: per class).

    What the levels and the combined weight are: docs/method.md.
    """
    _run("weights", run, out, num, split, checkpoint, data, device, progress, json_path, overwrite, old_run)


@visualize_app.command("predictions")
def predictions_command(run: Optional[Path] = _RUN, out: Path = _OUT, num: int = _NUM,
                        split: str = typer.Option("val", "--split", help="Target split or dataset/split."),
                        checkpoint: Optional[Path] = _CKPT, data: Optional[Path] = _DATA,
                        device: str = _DEVICE, progress: bool = _PROGRESS, json_path: Optional[str] = _JSON,
                        overwrite: bool = _OVERWRITE, old_run: Optional[Path] = _OLD_RUN) -> None:
    """Per target image: image, ground truth, prediction and its errors."""
    _run("predictions", run, out, num, split, checkpoint, data, device, progress, json_path, overwrite, old_run)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root application."""
    app.add_typer(visualize_app, name="visualize")
