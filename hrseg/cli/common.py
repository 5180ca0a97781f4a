"""Glue shared by the CLI modules: error reporting, JSON output, sizes, spellings and test-time options.

One language across commands: ``--json PATH`` (``-`` for standard output)
everywhere; ``--size WxH`` wherever a value is an image size; on/off flags
shown as flags. Old spellings stay as hidden options; :func:`given` tells which
spelling was typed, so an error names the flag the user wrote.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, TypeVar

import typer
from rich.markup import escape

from hrseg.atomic import is_space_error, write_json
from hrseg.console import console
from hrseg.errors import HrsegError

T = TypeVar("T")
STDOUT = "-"
JSON_HELP = "Write the result as JSON to PATH ('-': standard output)."


#: config key -> the `hrseg train` flag that sets it. The library's errors name config keys (they hold for
#: --set, TOML files and Python callers alike); the CLI shows the flag a user typed instead, from this one table.
CONFIG_FLAGS: dict[str, str] = {
    "data.data": "--data",
    "run.out": "--out",
    "model.arch": "--arch",
    "model.width": "--width",
    "model.pretrained": "--pretrained",
    "model.bn": "--bn",
    "gan.enabled": "--gan",
    "weighting.network": "--weight-network",
    "weighting.input": "--weight-input",
    "weighting.combine": "--weight-combine",
    "weighting.normalize": "--weight-normalize",
    "weighting.clamp": "--weight-clamp",
    "weighting.sharpen": "--weight-sharpen",
    "weighting.width": "--weight-width",
    "gan.width": "--gan-width",
    "data.source": "--source",
    "data.target": "--target",
    "data.target_images": "--target-images",
    "data.target_fraction": "--target-fraction",
    "optim.iters": "--iters",
    "data.batch_size": "--batch-size",
    "data.crop": "--crop",
    "optim.lr": "--lr",
    "run.seed": "--seed",
    "run.device": "--device",
    "run.amp": "--amp",
    "run.compile": "--compile",
    "data.workers": "--workers",
    "run.threads": "--threads",
    "run.checkpoint_every": "--checkpoint-every",
    "run.save_every": "--save-every",
    "run.tensorboard": "--tensorboard",
    "run.tensorboard_every": "--tensorboard-every",
    "run.val_every": "--val-every",
    "run.val_images": "--val-images",
    "run.loggers": "--logger",
    "finetune.source_iters": "--finetune-source-iters",
    "image_select.road_share": "--select-road-share",
    "image_select.nonroad_keep": "--select-nonroad-keep",
    "run.progress": "--progress",
}
_TYPE_ERROR = re.compile(r"^[a-z_]+\.[a-z_]+: expected ")
_KEY = re.compile(r"(?<![\w./-])([a-z_]+\.[a-z_]+)(?![\w.])")


def in_flags(message: str, keys: Sequence[str] | None = None) -> str:
    """``message`` with each config key written as its flag: every key of the table, or only ``keys``
    (those the user set by flag; a key set with ``--set`` or a file stays a key)."""
    wanted = CONFIG_FLAGS if keys is None else {k: CONFIG_FLAGS[k] for k in keys if k in CONFIG_FLAGS}
    return _KEY.sub(lambda m: wanted.get(m.group(1), m.group(1)), message)


@contextlib.contextmanager
def flag_errors(keys: Sequence[str]) -> Iterator[None]:
    """Library errors inside the block name the flags the user typed for ``keys`` instead of the keys."""
    try:
        yield
    except HrsegError as exc:
        if _TYPE_ERROR.match(str(exc)):  # a value of the wrong type came from --set or a file: flags are typed
            raise
        raise HrsegError(in_flags(str(exc), keys)) from None


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Turn an HrsegError into one red line on stderr and exit code 2."""
    try:
        yield
    except HrsegError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]")
        raise typer.Exit(code=130) from None
    except OSError as exc:  # a write that did not go through atomic_path (a video, a log): still one line
        if not is_space_error(exc):
            raise
        where = f" writing {exc.filename}" if exc.filename else ""
        console.print(f"[bold red]error:[/] out of disk space{where}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=2) from None


def parse_size(text: str, option: str, example: str = "1024x512") -> tuple[int, int]:
    """'1024x512' -> (1024, 512): width x height, the Cityscapes convention; errors name ``option``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise HrsegError(f"{option} {text!r}: expected WIDTHxHEIGHT such as {example}") from None
    if w < 1 or h < 1:
        raise HrsegError(f"{option} {text!r}: width and height must be positive")
    return w, h


def json_option(help_text: str = JSON_HELP) -> Any:
    """The ``--json PATH|-`` option every command has."""
    return typer.Option(None, "--json", metavar="PATH|-", help=help_text)


def json_target(value: Optional[str], option: str = "--json") -> Optional[str]:
    """Check a ``--json`` value before the work starts (a long training must not fail at its end).

    A value that looks like another option means ``--json`` was given without
    one, as older versions allowed: say so instead of writing a file named ``--x``.
    """
    if value is None or value == STDOUT:
        return value
    if value.startswith("-"):
        raise HrsegError(f"{option} {value!r}: expected a file path, or '-' for standard output "
                         f"({option} takes a value: {option} - prints the JSON)")
    if Path(value).is_dir():
        raise HrsegError(f"{option} {value}: is a folder; give a file name such as {Path(value) / 'result.json'}")
    return value


def emit_json(obj: Any, target: str | Path | None) -> Optional[Path]:
    """Write machine-readable output to a file (atomically) or, for ``-``, to stdout; returns the file."""
    if target is None:
        return None
    if str(target) == STDOUT:
        sys.stdout.write(json.dumps(obj, indent=2) + "\n")
        sys.stdout.flush()
        return None
    write_json(target, obj)
    return Path(target)


def given(spellings: dict[str, Optional[T]], default: T) -> tuple[T, str]:
    """The value of an option that has a current name and old hidden ones, and the name that was typed.

    ``spellings`` maps each flag (current first) to its parsed value, None when
    not given. Two spellings of one option given together are refused.
    """
    typed = [(flag, value) for flag, value in spellings.items() if value is not None]
    if len(typed) > 1:
        raise HrsegError(f"{typed[0][0]} and {typed[1][0]} are the same option; give it once")
    if typed:
        return typed[0][1], typed[0][0]
    return default, next(iter(spellings))


def old_spelling(name: str, help_text: str = "") -> Any:
    """A hidden option kept so an old spelling still works (listed in the CHANGELOG)."""
    return typer.Option(None, name, hidden=True, help=help_text)


# -- test-time options, shared by `hrseg predict` and `hrseg eval` --------------------------------------

TTA_PANEL = "Test-time options"
SLIDE = typer.Option(False, "--slide/--no-slide", rich_help_panel=TTA_PANEL,
                     help="Sliding-window inference: overlapping windows, logits averaged where they overlap.")
WINDOW = typer.Option(None, "--window", metavar="WxH", rich_help_panel=TTA_PANEL,
                      help="Window of --slide (default: the run's training crop).")
OVERLAP = typer.Option(1 / 3, "--overlap", show_default="1/3", rich_help_panel=TTA_PANEL,
                       help="Share of a window its neighbour overlaps, in [0, 1).")
SCALE = typer.Option(None, "--scale", metavar="FACTOR", rich_help_panel=TTA_PANEL,
                     help="Test-time scale of the working size (repeatable: --scale 0.75 --scale 1 --scale 1.25); "
                          "probabilities averaged over scales.")
FLIP = typer.Option(False, "--flip/--no-flip", rich_help_panel=TTA_PANEL,
                    help="Also average the horizontally mirrored image.")


def tta_changes(*, slide: bool, window: Optional[str], overlap: float, scales: Optional[Sequence[float]],
                flip: bool) -> dict[str, Any]:
    """The test-time flags as InferenceOptions fields (errors name the flags)."""
    changes: dict[str, Any] = {"slide": slide, "overlap": overlap, "flip": flip}
    if window is not None:
        changes["window"] = parse_size(window, "--window", "512x256")
    if scales:
        bad = [s for s in scales if not (math.isfinite(s) and s > 0)]
        if bad:
            raise HrsegError(f"--scale: every scale must be a positive number, got {bad[0]}")
        if len(set(scales)) != len(scales):
            raise HrsegError(f"--scale: a scale is given twice in {list(scales)}")
        changes["scales"] = tuple(float(s) for s in scales)
    return changes


# -- help: on/off flags are flags ---------------------------------------------------------------------

def _show_flags_as_flags() -> None:
    """Typer 0.2x prints ``<bool>`` beside on/off flags in help, as if they took a value; drop it."""
    try:
        from typer.core import TyperOption
    except ImportError:  # pragma: no cover - typer moved it; help then looks as typer draws it
        return
    original = getattr(TyperOption, "display_type_rich", None)
    if original is None or getattr(original, "_hrseg_flags", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> Any:
        return None if getattr(self, "is_flag", False) else original(self, ctx)

    display_type_rich._hrseg_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_show_flags_as_flags()


def run_argument(help_text: str = "Run folder.") -> Any:
    """The run every command takes first, positionally (``hrseg eval RUN``)."""
    return typer.Argument(None, help=help_text, show_default=False, metavar="RUN")


def old_run_option() -> Any:
    """``--run RUN``, the older spelling: still accepted, hidden from --help."""
    return typer.Option(None, "--run", hidden=True)


def the_run(positional: Optional[Path], option: Optional[Path], command: str,
            required: bool = True) -> Optional[Path]:
    """The run folder given either way; both (differing) or, when ``required``, neither is a one-line error."""
    if positional is not None and option is not None and Path(positional) != Path(option):
        raise HrsegError(f"{command}: the run is given twice ({positional} and --run {option}); give it once")
    run = positional if positional is not None else option
    if run is None and required:
        raise HrsegError(f"{command}: give the run folder: hrseg {command} RUN")
    return run

