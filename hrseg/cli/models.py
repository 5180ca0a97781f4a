"""CLI for `hrseg models`: every network with its parameter count and output shapes."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from hrseg.cli.common import emit_json, parse_size, user_errors
from hrseg.console import console


def _shape(shape: list[int]) -> str:
    return "x".join(str(d) for d in shape)


def models_command(
    input_size: str = typer.Option("1024x512", "--input-size", help="Input image size WIDTHxHEIGHT."),
    width: float = typer.Option(1.0, "--width", help="Channel width multiplier (1.0 = the paper's networks)."),
    num_classes: int = typer.Option(19, "--num-classes", min=1, help="Number of segmentation classes."),
    image_input: bool = typer.Option(
        False, "--image-input", help="Weighting networks on the RGB image (the W^1 (Image) ablation)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Also print the result as JSON on stdout."),
    out: Path | None = typer.Option(None, "--out", help="Write the JSON result to this file."),
) -> None:
    """List every network (S, W^1/W^19 per level, G, D) with parameter count and output shapes.

    Shapes come from running the networks on PyTorch's meta device: instant, no memory.
    """
    from hrseg.models.factory import describe_models

    with user_errors():
        size = parse_size(input_size, "--input-size")
        rows = describe_models(size, width=width, num_classes=num_classes, image_input=image_input)
        result = {
            "input_size": list(size),
            "width": width,
            "num_classes": num_classes,
            "weighting_input": "image" if image_input else "prediction",
            "models": [row.to_dict() for row in rows],
        }
        table = Table(title=f"hrseg networks at {size[0]}x{size[1]}, width {width:g} (shapes C x H x W, batch 1)")
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
        emit_json(result, out, stdout=as_json)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root application."""
    app.command("models")(models_command)
