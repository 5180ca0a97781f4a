"""CLI for `hrseg prepare {gtav,cityscapes,synthia,synthetic,verify}`: decode once into HDF5 shards."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.table import Table

from hrseg.cli.common import emit_json, given, json_option, json_target, old_spelling, parse_size, user_errors
from hrseg.console import console
from hrseg.data.readers import DATASETS, DatasetSpec
from hrseg.errors import HrsegError

MAX_MESSAGES = 20
WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.ENOTDIR, errno.EEXIST,
                getattr(errno, "EDQUOT", errno.ENOSPC)}

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
    name: Optional[str] = None,
) -> None:
    from hrseg.data.prepare import PrepareConfig, default_workers, prepare

    with user_errors():
        json_target(json_path)
        cfg = PrepareConfig(
            dataset=dataset, root=root, out=out, splits=tuple(splits),
            size=parse_size(size, "--size") if size else None,
            resize=resize, workers=workers or default_workers(), shard_size=shard_size, compression=compression,
            overwrite=overwrite, name=name,
        )
        _summary(prepare(cfg), json_path)


ROOT = typer.Option(..., "--root", help="Dataset root folder (the layout is checked).")
OUT = typer.Option(..., "--out", help="Prepared data folder (DATA); writes DATA/<dataset>/<split>/.")
WORKERS = typer.Option(None, "--workers", help="Worker processes (default: CPU count, at most 8).")
SHARD_SIZE = typer.Option(256, "--shard-size", help="Input images per shard.")
COMPRESSION = typer.Option("none", "--compression", help="none | lzf | gzip.")
RESIZE = typer.Option("area", "--resize", help="Image interpolation: area | bilinear (labels: nearest).")
OVERWRITE = typer.Option(False, "--overwrite", help="Rebuild a split prepared with other options.")
JSON = json_option("Write the summary as JSON to PATH ('-': standard output).")


def _dataset_command(spec: DatasetSpec) -> Callable[..., None]:
    """`hrseg prepare <format>`, generated from the format's DatasetSpec."""
    w, h = spec.default_size
    many = len(spec.splits) > 1

    def command(
        root: Path = ROOT, out: Path = OUT,
        size: Optional[str] = typer.Option(None, "--size", metavar="WxH",
                                           help=f"Size the images are stored at (default {w}x{h})."),
        split: list[str] = typer.Option(
            [], "--split", hidden=not many,
            help=f"{' | '.join(spec.splits)} (repeatable; default {' and '.join(spec.default_splits)})."),
        name: Optional[str] = typer.Option(
            None, "--name", hidden=not spec.renamable,
            help=f"The prepared folder DATA/NAME/ (default {spec.name}); train with --target NAME."),
        workers: Optional[int] = WORKERS, shard_size: int = SHARD_SIZE, compression: str = COMPRESSION,
        resize: str = RESIZE, overwrite: bool = OVERWRITE, json_path: Optional[str] = JSON,
    ) -> None:
        _run_dataset(spec.name, root, out, size, split, workers, shard_size, compression, resize, overwrite,
                     json_path, name)

    command.__doc__ = spec.help
    command.__name__ = f"prepare_{spec.name}"
    return command


for _spec in DATASETS.values():
    prepare_app.command(_spec.name)(_dataset_command(_spec))


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
        if out.exists() and not out.is_dir():
            raise HrsegError(f"--out {out}: is a file, not a folder; choose a folder for the prepared data")
        try:
            result = prepare_synthetic(cfg)
        except OSError as exc:  # writing the generated scenes: a full disk, a read-only or misplaced --out
            if exc.errno not in WRITE_ERRNOS:
                raise
            if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise HrsegError(f"out of disk space writing {exc.filename or out}; free some space and run "
                                 "the same command again (what is finished is kept)") from None
            raise HrsegError(f"cannot write {exc.filename or out} ({exc.strerror}); choose another --out") from None
        state = "generated" if result["generated"] else "already generated (kept)"
        console.print(f"scenes {state} in {out / 'raw'} ({result['generate_seconds']:.1f} s)")
        _summary(result["results"], json_path)  # type: ignore[arg-type]


@prepare_app.command("verify")
def verify(
    data: Path = typer.Argument(..., help="A prepared DATA folder or one split folder."),
    json_path: Optional[str] = JSON,
) -> None:
    """Re-read every shard against its manifest (checksums, shapes, class pixel counts).

    A folder holding shards without a manifest (an interrupted prepare, a
    deleted manifest) is reported as a problem, never skipped.
    """
    from hrseg.data.verify import find_split_dirs, verify_split

    with user_errors():
        json_target(json_path)
        if not data.exists():
            raise HrsegError(f"{data}: does not exist")
        splits = find_split_dirs(data)
        if not splits:
            raise HrsegError(f"{data}: no manifest.json or shard found; nothing prepared here")
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
