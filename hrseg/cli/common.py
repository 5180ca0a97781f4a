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


def emit_json(obj: Any, path: Path | None, *, stdout: bool = False) -> None:
    """Write machine-readable output to ``path`` (atomically) and/or stdout."""
    if path is not None:
        write_json(path, obj)
    if stdout:
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")
