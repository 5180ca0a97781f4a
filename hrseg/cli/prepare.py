"""CLI for `hrseg prepare {gtav,cityscapes,synthia,synthetic,verify}`: decode once into HDF5 shards."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from hrseg.cli.common import emit_json, given, json_option, json_target, old_spelling, parse_size, user_errors
from hrseg.console import console
from hrseg.errors import HrsegError

MAX_MESSAGES = 20

prepare_app = typer.Typer(
    help="Decode datasets once into HDF5 shards (resumable, parallel); generate procedural scenes; verify.",
    no_args_is_help=True,
)


def _summary(results: list, json_path: Optional[str]) -> None:
    from hrseg.data.prepare import stats_rows

    table = Table(title="prepare summary")
    table.add_column("count")
    for res in results:
        table.add_column(f"{res.manifest.dataset}/{res.manifest.split}", justify="right")
    rows = [stats_rows(res) for res in results]
    for i, (key, _) in enumerate(rows[0] if rows else []):
        table.add_row(key, *(r[i][1] for r in rows))
    console.print(table)
    for res in results:
        console.print(f"{res.manifest.dataset}/{res.manifest.split}: {res.split_dir}", highlight=False)
        for line in res.messages[:MAX_MESSAGES]:
            console.print(f"[yellow]skipped/fixed[/] {line}", highlight=False, soft_wrap=True)
        if len(res.messages) > MAX_MESSAGES:
            console.print(f"[yellow]... {len(res.messages) - MAX_MESSAGES} more[/] (all listed in the manifest)")
    emit_json({"splits": [dict(r.manifest.to_dict(), split_dir=str(r.split_dir), seconds=r.seconds,
                                reused_shards=r.reused_shards, built_shards=r.built_shards)
                          for r in results]}, json_path)


def _run_dataset(
    dataset: str, root: Path, out: Path, size: Optional[str], splits: list[str], workers: Optional[int],
    shard_size: int, compression: str, resize: str, overwrite: bool, json_path: Optional[str],
) -> None:
    from hrseg.data.prepare import PrepareConfig, default_workers, prepare

    with user_errors():
        json_target(json_path)
        cfg = PrepareConfig(
            dataset=dataset, root=root, out=out, splits=tuple(splits),
            size=parse_size(size, "--size") if size else None,
            resize=resize, workers=workers or default_workers(), shard_size=shard_size, compression=compression,
            overwrite=overwrite,
        )
        _summary(prepare(cfg), json_path)


ROOT = typer.Option(..., "--root", help="Dataset root folder (the layout is checked).")
OUT = typer.Option(..., "--out", help="Prepared data folder (DATA); writes DATA/<dataset>/<split>/.")
SIZE = typer.Option(None, "--size", metavar="WxH",
                    help="Size the images are stored at "
                         "(default: GTAV 1280x720, Cityscapes 1024x512, SYNTHIA 1280x760).")
WORKERS = typer.Option(None, "--workers", help="Worker processes (default: CPU count, at most 8).")
SHARD_SIZE = typer.Option(256, "--shard-size", help="Input images per shard.")
COMPRESSION = typer.Option("none", "--compression", help="none | lzf | gzip.")
RESIZE = typer.Option("area", "--resize", help="Image interpolation: area | bilinear (labels: nearest).")
OVERWRITE = typer.Option(False, "--overwrite", help="Rebuild a split prepared with other options.")
JSON = json_option("Write the summary as JSON to PATH ('-': standard output).")


@prepare_app.command("gtav")
def gtav(
    root: Path = ROOT, out: Path = OUT, size: Optional[str] = SIZE, workers: Optional[int] = WORKERS,
    shard_size: int = SHARD_SIZE, compression: str = COMPRESSION, resize: str = RESIZE,
    overwrite: bool = OVERWRITE, json_path: Optional[str] = JSON,
) -> None:
    """GTAV: images/ + labels/ (palettised labelIds) [+ realism/] -> DATA/gtav/train."""
    _run_dataset("gtav", root, out, size, [], workers, shard_size, compression, resize, overwrite, json_path)


@prepare_app.command("cityscapes")
def cityscapes(
    root: Path = ROOT, out: Path = OUT, size: Optional[str] = SIZE,
    split: list[str] = typer.Option([], "--split", help="train | val | test (repeatable; default train and val)."),
    workers: Optional[int] = WORKERS, shard_size: int = SHARD_SIZE, compression: str = COMPRESSION,
    resize: str = RESIZE, overwrite: bool = OVERWRITE, json_path: Optional[str] = JSON,
) -> None:
    """Cityscapes: leftImg8bit/ + gtFine/*_labelIds.png -> DATA/cityscapes/<split> (val keeps full-size labels)."""
    _run_dataset("cityscapes", root, out, size, split, workers, shard_size, compression, resize, overwrite, json_path)


@prepare_app.command("synthia")
def synthia(
    root: Path = ROOT, out: Path = OUT, size: Optional[str] = SIZE, workers: Optional[int] = WORKERS,
    shard_size: int = SHARD_SIZE, compression: str = COMPRESSION, resize: str = RESIZE,
    overwrite: bool = OVERWRITE, json_path: Optional[str] = JSON,
) -> None:
    """SYNTHIA-RAND-CITYSCAPES: RGB/ + GT/LABELS/ (16-bit) -> DATA/synthia/train."""
    _run_dataset("synthia", root, out, size, [], workers, shard_size, compression, resize, overwrite, json_path)


@prepare_app.command("synthetic")
def synthetic(
    out: Path = OUT,
    seed: int = typer.Option(0, "--seed", help="Seed of the scene generator."),
    source_scenes: Optional[int] = typer.Option(
        None, "--source-scenes", show_default="300", help="GTAV-format source scenes."),
    target_scenes: Optional[int] = typer.Option(
        None, "--target-scenes", show_default="100", help="Cityscapes-format train scenes."),
    val_scenes: Optional[int] = typer.Option(
        None, "--val-scenes", show_default="50", help="Cityscapes-format val scenes."),
    scene_size: Optional[str] = typer.Option(
        None, "--scene-size", metavar="WxH", show_default="256x128",
        help="Size of the generated target scenes (source: same width, 16:9)."),
    size: Optional[str] = typer.Option(
        None, "--size", metavar="WxH",
        help="Size the target scenes are stored at (default: half of --scene-size)."),
    workers: int = typer.Option(
        1, "--workers", help="Worker processes (default 1: at the default size, starting them costs more than it saves)."),
    shard_size: int = typer.Option(64, "--shard-size", help="Input images per shard."),
    compression: str = COMPRESSION, overwrite: bool = OVERWRITE, json_path: Optional[str] = JSON,
    source_images: Optional[int] = old_spelling("--source-images"),
    target_images: Optional[int] = old_spelling("--target-images"),
    val_images: Optional[int] = old_spelling("--val-images"),
    prepared_size: Optional[str] = old_spelling("--prepared-size"),
) -> None:
    """Generate procedural two-domain scenes (GTAV + Cityscapes formats) under DATA/raw and prepare them."""
    from hrseg.data.synthetic import SceneConfig, SyntheticPrepareConfig, prepare_synthetic

    with user_errors():
        json_target(json_path)
        n_source = given({"--source-scenes": source_scenes, "--source-images": source_images}, 300)[0]
        n_target = given({"--target-scenes": target_scenes, "--target-images": target_images}, 100)[0]
        n_val = given({"--val-scenes": val_scenes, "--val-images": val_images}, 50)[0]
        scene = parse_size(scene_size or "256x128", "--scene-size", "256x128")
        text, size_flag = given({"--size": size, "--prepared-size": prepared_size}, None)
        if size is not None and scene_size is None:
            raise HrsegError(f"--size {size}: here --size is the size the scenes are stored at (it used to be "
                             "the generated size); give the generated size too, e.g. --scene-size 256x128 "
                             f"--size {size}")
        stored = parse_size(text, size_flag, "128x64") if text else None
        if stored is not None and (stored[0] > scene[0] or stored[1] > scene[1]):
            raise HrsegError(f"{size_flag} {text}: larger than the scenes (--scene-size {scene[0]}x{scene[1]}); "
                             "scenes are stored at their size or smaller (the generated size is --scene-size)")
        scenes = SceneConfig(seed=seed, source_images=n_source, target_images=n_target, val_images=n_val,
                             size=scene)
        cfg = SyntheticPrepareConfig(
            out=out, scenes=scenes, prepared_size=stored,
            workers=workers, shard_size=shard_size, compression=compression, overwrite=overwrite,
        )
        result = prepare_synthetic(cfg)
        state = "generated" if result["generated"] else "already generated (kept)"
        console.print(f"scenes {state} in {out / 'raw'} ({result['generate_seconds']:.1f} s)")
        _summary(result["results"], json_path)  # type: ignore[arg-type]


@prepare_app.command("verify")
def verify(
    data: Path = typer.Argument(..., help="A prepared DATA folder or one split folder."),
    json_path: Optional[str] = JSON,
) -> None:
    """Re-read every shard against its manifest (checksums, shapes, class pixel counts)."""
    from hrseg.data.shards import find_split_dirs, verify_split

    with user_errors():
        json_target(json_path)
        if not data.exists():
            raise HrsegError(f"{data}: does not exist")
        splits = find_split_dirs(data)
        if not splits:
            raise HrsegError(f"{data}: no manifest.json found; nothing prepared here")
        table = Table(title=f"verify {data}")
        for col in ("split", "images", "shards", "status"):
            table.add_column(col)
        reports = []
        for split_dir in splits:
            rep = verify_split(split_dir)
            reports.append(rep)
            table.add_row(str(split_dir), str(rep.num_images), str(rep.num_shards),
                          "[green]ok[/]" if rep.ok else f"[red]{len(rep.problems)} problem(s)[/]")
        console.print(table)
        for rep in reports:
            for line in rep.problems:
                console.print(f"[red]bad[/] {line}", highlight=False, soft_wrap=True)
        emit_json({"splits": [r.to_dict() for r in reports]}, json_path)
        bad = [r for r in reports if not r.ok]
        if bad:
            raise HrsegError(f"{data}: {sum(len(r.problems) for r in bad)} problem(s); first: {bad[0].problems[0]}")


def register(app: typer.Typer) -> None:
    """Add `hrseg prepare ...` to the root application."""
    app.add_typer(prepare_app, name="prepare")
