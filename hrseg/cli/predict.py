"""CLI for `hrseg predict`: segment your own images, folders, globs and videos with a run or an exported model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional

import typer
from rich.table import Table

from hrseg.cli.common import (FLIP, OVERLAP, SCALE, SLIDE, WINDOW, emit_json, json_option, json_target, parse_size,
                              tta_changes, user_errors)
from hrseg.console import console
from hrseg.errors import HrsegError

SHOWN_SKIPPED = 10
OUT_PANEL = "Outputs"
NATIVE = "native"


def result_table(result: dict[str, Any]) -> Table:
    counts = result["counts"]
    table = Table(title=f"predictions in {result['out_dir']} ({result['device']}"
                        f"{', ' + result['amp'] if result['amp'] else ''})")
    for col in ("images", "videos", "frames", "skipped", "seconds", "img/s"):
        table.add_column(col, justify="right")
    table.add_row(str(counts["images"]), str(counts["videos"]), str(counts["pictures"] - counts["images"]),
                  str(counts["skipped"]), f"{result['seconds']:.1f}", f"{result['images_per_second']:.1f}")
    return table


def print_skipped(skipped: list[dict[str, str]]) -> None:
    for item in skipped[:SHOWN_SKIPPED]:
        console.print(f"[yellow]skipped[/] {item['input']}: {item['reason']}", highlight=False, soft_wrap=True)
    if len(skipped) > SHOWN_SKIPPED:
        console.print(f"[yellow]... {len(skipped) - SHOWN_SKIPPED} more skipped[/] (all listed in the JSON index)")


def size_option(text: Optional[str], model_size: Optional[tuple[int, int]], model: Path) -> Optional[tuple[int, int]]:
    """``--size``: WxH, 'native' (each image at its own size) or, not given, the model's own working size."""
    if text is None:
        if model_size is None:
            raise HrsegError(f"--size: {model} does not say what size it works at (its prepared data is gone); "
                             "give --size WxH (the size its target images were prepared at) or --size native")
        return model_size
    if text.lower() == NATIVE:
        return None
    return parse_size(text, "--size")


def predict_command(
    model: Path = typer.Argument(..., help="A run folder, a checkpoint file or a model exported with hrseg export."),
    inputs: List[str] = typer.Argument(..., help="Images (PNG, JPEG, ...), folders (recursive), globs, videos."),
    out: Path = typer.Option(..., "--out", help="Output folder: labelIds/, colour/, overlay/, predictions.json."),
    checkpoint: Optional[str] = typer.Option(
        None, "--checkpoint", help="With a run folder: a checkpoint name in RUN/checkpoints or a file "
                                   "(default: final.pt, else last.pt)."),
    network: str = typer.Option(
        "student", "--model", help="student (the trained S) or teacher (a self-training run's mean teacher)."),
    size: Optional[str] = typer.Option(
        None, "--size", metavar="WxH|native",
        help="Working size every input is resized to before the model sees it (default: the size the model was "
             "evaluated at); 'native': each image at its own size. Outputs are always at the input's size."),
    resize: str = typer.Option("area", "--resize", help="How inputs are resized to the working size: area | bilinear."),
    slide: bool = SLIDE, window: Optional[str] = WINDOW, overlap: float = OVERLAP,
    scales: Optional[List[float]] = SCALE, flip: bool = FLIP,
    label_ids: bool = typer.Option(True, "--label-ids/--no-label-ids", rich_help_panel=OUT_PANEL,
                                   help="Cityscapes labelId PNGs (labelIds/), as the official tools read them."),
    colour: bool = typer.Option(True, "--colour/--no-colour", "--color/--no-color", rich_help_panel=OUT_PANEL,
                                help="Colour PNGs in the Cityscapes palette (colour/)."),
    overlay: bool = typer.Option(True, "--overlay/--no-overlay", rich_help_panel=OUT_PANEL,
                                 help="The colours blended over the input (overlay/); for a video, an overlay video."),
    frames: bool = typer.Option(False, "--frames/--no-frames", rich_help_panel=OUT_PANEL,
                                help="For a video, also every frame's PNGs of the kinds above."),
    alpha: float = typer.Option(0.5, "--alpha", rich_help_panel=OUT_PANEL, help="Weight of the colours in an overlay."),
    batch_size: int = typer.Option(4, "--batch-size", help="Images per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision (default: on with CUDA)."),
    workers: int = typer.Option(4, "--workers", help="Threads decoding and writing files."),
    threads: int = typer.Option(0, "--threads", help="CPU threads for torch (0 = torch's default)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Live progress bar."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace files in --out that hrseg did not write, and remove hrseg's files of "
                                   "earlier runs there that this run does not write again (nothing else)."),
    max_pixels: Optional[int] = typer.Option(
        None, "--max-pixels", show_default="100000000",
        help="Largest input in pixels; bigger ones (decompression bombs) are skipped with the reason."),
    json_path: Optional[str] = json_option("Also write the index (predictions.json) to PATH ('-': standard output)."),
) -> None:
    """Segment your own images, folders, globs and videos with a trained run or an exported model.

    Unreadable inputs are listed and skipped; the rest are segmented. The README, "Your own images", shows it.
    """
    import torch

    from hrseg.export import load_model
    from hrseg.inference import OutputSpec, predict
    from hrseg.inference.sources import MAX_PIXELS
    from hrseg.device import resolve_device

    from hrseg.atomic import ensure_dir

    with user_errors():
        json_target(json_path)
        ensure_dir(out)  # a file or a read-only folder fails here, before the model is loaded
        if threads < 0:
            raise HrsegError(f"--threads: must be >= 0, got {threads}")
        if threads > 0:
            torch.set_num_threads(threads)
        changes = tta_changes(slide=slide, window=window, overlap=overlap, scales=scales, flip=flip)
        dev = resolve_device(device)
        loaded = load_model(model, checkpoint=checkpoint, device=dev, network=network)
        options = loaded.options(size=size_option(size, loaded.size, model), resize=resize, **changes)
        spec = OutputSpec(label_ids=label_ids, colour=colour, overlay=overlay, frames=frames, alpha=alpha)
        result = predict(loaded.segmenter, inputs, out, options, spec, batch_size=batch_size, device=str(dev),
                         amp=amp, workers=workers, show_progress=progress, overwrite=overwrite,
                         model=loaded.describe(), max_pixels=MAX_PIXELS if max_pixels is None else max_pixels)
        summary = result.to_dict()  # the index says which model made the files
        console.print(result_table(summary))
        print_skipped(summary["skipped"])
        console.print(f"index: {result.index}", highlight=False)
        emit_json(summary, json_path)
        if result.images == 0:
            first = summary["skipped"][0] if summary["skipped"] else {"input": "", "reason": "no input"}
            raise HrsegError(f"nothing could be predicted: {len(summary['skipped'])} input(s) skipped; "
                             f"first {first['input']}: {first['reason']}")


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root application."""
    app.command("predict")(predict_command)
