"""The ``hrseg`` application: one sub-command per stage of the workflow."""

from __future__ import annotations

import sys
from typing import Any, Sequence

import typer
from typer.core import TyperGroup

from hrseg import __version__
from hrseg.cli import evaluate, export, models, predict, prepare, quickstart, report, train, visualize


def bare_json_to_stdout(args: Sequence[str]) -> list[str]:
    """``--json`` with no value (the switch ``train`` and ``models`` used to have) means ``--json -``.

    Every ``--json`` now takes a path or ``-``; a bare one at the end of the
    line or before another ``--option`` keeps its old meaning, stdout.
    """
    out: list[str] = []
    for i, arg in enumerate(args):
        out.append(arg)
        if arg == "--json" and (i + 1 == len(args) or args[i + 1].startswith("--")):
            out.append("-")
    return out


class _Hrseg(TyperGroup):
    def main(self, args: Sequence[str] | None = None, *rest: Any, **kwargs: Any) -> Any:
        return super().main(bare_json_to_stdout(list(sys.argv[1:] if args is None else args)), *rest, **kwargs)


app = typer.Typer(
    name="hrseg",
    cls=_Hrseg,
    help="Transfer learning for semantic segmentation with hierarchical region weighting. "
         "The method and what hrseg reconstructs of it: docs/method.md.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hrseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """hrseg: prepare data, train, evaluate, predict on your own images, export and visualise."""


for _module in (prepare, models, train, evaluate, predict, export, visualize, report, quickstart):
    _module.register(app)


def main(argv: Sequence[str] | None = None) -> None:
    app(args=None if argv is None else list(argv))
