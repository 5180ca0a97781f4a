"""Glue shared by the CLI modules: error reporting and JSON output."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any, Iterator

import typer

from hrseg.atomic import write_json
from hrseg.console import console
from hrseg.errors import HrsegError


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn an HrsegError into one red line on stderr and exit code 2."""
    try:
        yield
    except HrsegError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(code=130) from None


def parse_size(text: str, option: str, example: str = "1024x512") -> tuple[int, int]:
    """'1024x512' -> (1024, 512): width x height, the Cityscapes convention; errors name ``option``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise HrsegError(f"{option} {text!r}: expected WIDTHxHEIGHT such as {example}") from None
    if w < 1 or h < 1:
        raise HrsegError(f"{option} {text!r}: width and height must be positive")
    return w, h


def emit_json(obj: Any, path: Path | None, *, stdout: bool = False) -> None:
    """Write machine-readable output to ``path`` (atomically) and/or stdout."""
    if path is not None:
        write_json(path, obj)
    if stdout:
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")
