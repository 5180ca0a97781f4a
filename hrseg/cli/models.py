"""CLI for `hrseg models`: every network with its parameter count and output shapes."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from hrseg.cli.common import emit_json, given, json_option, json_target, old_spelling, parse_size, user_errors
from hrseg.console import console
from hrseg.errors import HrsegError

MIN_SIZE = 64  # the networks' smallest input (five stride-2 stages, D's six)


def _shape(shape: list[int]) -> str:
    return "x".join(str(d) for d in shape)


def models_command(
    size: Optional[str] = typer.Option(None, "--size", metavar="WxH", show_default="1024x512",
                                       help="Input image size."),
    width: float = typer.Option(1.0, "--width", help="Channel width multiplier (1.0 = the paper's networks)."),
    num_classes: int = typer.Option(19, "--num-classes", min=1, help="Number of segmentation classes."),
    image_input: bool = typer.Option(
        False, "--image-input", help="Weighting networks on the RGB image (the W^1 (Image) ablation)."
    ),
    json_path: Optional[str] = json_option(),
    input_size: Optional[str] = old_spelling("--input-size"),
    out: Optional[str] = old_spelling("--out"),
) -> None:
    """List every network (S, W^1/W^19 per level, G, D) with parameter count and output shapes.

    Shapes come from running the networks on PyTorch's meta device: instant, no memory.
    """
    from hrseg.models.describe import describe_models

    with user_errors():
        text, size_flag = given({"--size": size, "--input-size": input_size}, "1024x512")
        json_target(json_path)
        json_target(out, "--out")  # the old spelling of --json PATH; both may be given (file and stdout)
        w, h = parse_size(text, size_flag)
        if min(w, h) < MIN_SIZE:
            raise HrsegError(f"{size_flag} {text!r}: {w}x{h} is too small; the networks need at least "
                             f"{MIN_SIZE}x{MIN_SIZE}")
        rows = describe_models((w, h), width=width, num_classes=num_classes, image_input=image_input)
        result = {
            "input_size": [w, h],
            "width": width,
            "num_classes": num_classes,
            "weighting_input": "image" if image_input else "prediction",
            "models": [row.to_dict() for row in rows],
        }
        table = Table(title=f"hrseg networks at {w}x{h}, width {width:g} (shapes C x H x W, batch 1)")
        table.add_column("network", style="bold")
        table.add_column("parameters", justify="right")
        table.add_column("input")
        table.add_column("outputs")
        for row in rows:
            table.add_row(
                row.name,
                f"{row.params:,}",
                "\n".join(f"{k} {_shape(v[1:])}" for k, v in row.input.items()),
                "\n".join(f"{k} {_shape(v[1:])}" for k, v in row.output.items()),
            )
        console.print(table)
        emit_json(result, json_path)
        emit_json(result, out)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root application."""
    app.command("models")(models_command)
