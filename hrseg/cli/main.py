"""The ``hrseg`` application: one sub-command per stage of the workflow."""

from __future__ import annotations

import typer

from hrseg import __version__
from hrseg.cli import evaluate, models, prepare, quickstart, report, train, visualize

app = typer.Typer(
    name="hrseg",
    help="Transfer learning for semantic segmentation with hierarchical region weighting.",
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
    """hrseg: prepare data, train, evaluate and visualise hierarchical weighting."""


for _module in (prepare, models, train, evaluate, visualize, report, quickstart):
    _module.register(app)


def main() -> None:
    app()
