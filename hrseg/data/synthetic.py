"""`hrseg prepare synthetic`: procedural scenes written in the exact GTAV and Cityscapes on-disk formats.

No real dataset can be downloaded where hrseg is built and tested, so the
scenes of ``scenes.py`` are written as a GTAV-format source (``images/``,
palettised ``labels/``, and ``realism/NNNNN.png``: 1 realistic, 0 deviating,
255 on ignored labels) and a Cityscapes-format target (``leftImg8bit/``,
``gtFine/``), then prepared through the same readers as the real datasets.
"""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from hrseg.atomic import write_bytes, write_json
from hrseg.data.labels import LABEL_PALETTE
from hrseg.data.png import encode_palette_png, write_png
from hrseg.data.scenes import GENERATOR, SOURCE_ASPECT, draw_scene
from hrseg.data.workers import start_pool
from hrseg.errors import HrsegError
from hrseg.locking import folder_lock

TRAIN_CITIES = ("aachen", "bochum", "bremen")
VAL_CITIES = ("frankfurt", "lindau", "munster")


@dataclass(frozen=True)
class SceneConfig:
    """What `hrseg prepare synthetic` generates (the raw, full-size scenes)."""

    seed: int = 0
    source_images: int = 300
    target_images: int = 100
    val_images: int = 50
    size: tuple[int, int] = (256, 128)  # (W, H) of target images; source: same width, 16:9

    @property
    def source_size(self) -> tuple[int, int]:
        w = self.size[0]
        return w, max(8, int(round(w * SOURCE_ASPECT)))

    def validate(self) -> None:
        w, h = self.size
        if w < 32 or h < 16:
            raise HrsegError(f"--size {w}x{h}: scenes need at least 32x16 pixels")
        for name in ("source_images", "target_images", "val_images"):
            if getattr(self, name) < 1:
                raise HrsegError(f"--{name.replace('_', '-')}: must be at least 1")


def cityscapes_name(split: str, index: int) -> tuple[str, str]:
    """(city, stem) like ``aachen``, ``aachen_000012_000019`` for the index-th image of a split."""
    cities = TRAIN_CITIES if split == "train" else VAL_CITIES
    city = cities[index % len(cities)]
    seq = index // len(cities)
    return city, f"{city}_{seq:06d}_{19:06d}"


def _write_source(args: tuple[Path, int, int, tuple[int, int]]) -> None:
    root, seed, i, size = args
    scene = draw_scene(seed, "source", i, size)
    name = f"{i + 1:05d}.png"
    write_png(root / "images" / name, scene.image)
    write_bytes(root / "labels" / name, encode_palette_png(scene.label_ids, LABEL_PALETTE))
    assert scene.realism is not None
    write_png(root / "realism" / name, scene.realism)


def _write_target(args: tuple[Path, int, int, tuple[int, int], str]) -> None:
    root, seed, i, size, split = args
    # val scenes come from their own index range so train and val never share a scene
    scene = draw_scene(seed, "target", i if split == "train" else 1_000_000 + i, size)
    city, stem = cityscapes_name(split, i)
    write_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", scene.image)
    write_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", scene.label_ids)
    write_png(root / "gtFine" / split / city / f"{stem}_gtFine_color.png", LABEL_PALETTE[scene.label_ids])


def _run(fn: Callable, jobs: list, pool: ProcessPoolExecutor | None, on_image: Callable[[int], None] | None) -> None:
    results = map(fn, jobs) if pool is None else pool.map(fn, jobs, chunksize=8)
    for _ in results:
        if on_image:
            on_image(1)


def generate_raw(
    cfg: SceneConfig, raw_dir: str | Path, workers: int = 1, overwrite: bool = False,
    on_image: Callable[[int], None] | None = None, pool: ProcessPoolExecutor | None = None,
) -> bool:
    """Write ``raw_dir/GTAV`` and ``raw_dir/cityscapes``; returns False if they were already complete.

    A ``synthetic.json`` stamp, written last, records the config; a raw folder
    made with another config is refused unless ``overwrite``. Pass a started
    ``pool`` when a progress display is running (see ``hrseg.data.workers``).
    """
    cfg.validate()
    raw = Path(raw_dir)
    stamp = raw / "synthetic.json"
    want = asdict(cfg) | {"size": list(cfg.size), "generator": GENERATOR}
    gtav, cs = raw / "GTAV", raw / "cityscapes"
    have = _read_stamp(stamp)
    if have == want:
        return False
    if have is None:
        # no stamp: the folders are not ours (a user's real data, say); hrseg never deletes them
        theirs = [d for d in (gtav, cs) if d.exists() or d.is_symlink()]
        if stamp.exists() or stamp.is_symlink():
            theirs.insert(0, stamp)
        if theirs:
            raise HrsegError(
                f"{theirs[0]}: exists and was not written by `hrseg prepare synthetic` (no {stamp.name} stamp); "
                "hrseg does not replace it, even with --overwrite: move it away or choose another --out"
            )
    elif have.get("complete", True) is not False and not overwrite:
        diff = ", ".join(f"{k} {have.get(k)} -> {v}" for k, v in want.items() if have.get(k) != v)
        raise HrsegError(f"{stamp}: scenes were generated with other options ({diff}); pass --overwrite")
    # ours: an interrupted generation (stamp says incomplete) or --overwrite; the stamp is written first so a
    # killed run is recognised as ours next time
    write_json(stamp, want | {"complete": False})
    for d in (gtav, cs):
        if d.is_symlink():
            d.unlink()
        elif d.exists():
            shutil.rmtree(d)
    for d in ("images", "labels", "realism"):
        (gtav / d).mkdir(parents=True, exist_ok=True)
    jobs_s = [(gtav, cfg.seed, i, cfg.source_size) for i in range(cfg.source_images)]
    jobs_t = [(cs, cfg.seed, i, cfg.size, "train") for i in range(cfg.target_images)]
    jobs_t += [(cs, cfg.seed, i, cfg.size, "val") for i in range(cfg.val_images)]
    own = pool is None and workers > 1
    if own:
        pool = start_pool(workers)
    try:
        _run(_write_source, jobs_s, pool, on_image)
        _run(_write_target, jobs_t, pool, on_image)
    finally:
        if own and pool is not None:
            pool.shutdown()
    write_json(stamp, want)
    return True


def _read_stamp(stamp: Path) -> dict[str, object] | None:
    """The stamp's content; None when there is none or it is not one of ours (not a JSON object)."""
    try:
        have = json.loads(stamp.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return have if isinstance(have, dict) and "generator" in have else None


@dataclass(frozen=True)
class SyntheticPrepareConfig:
    """`hrseg prepare synthetic`: generate scenes, then prepare shards through the real readers."""

    out: Path
    scenes: SceneConfig = SceneConfig()
    prepared_size: tuple[int, int] | None = None  # target (W, H) in shards; None: half the scene size
    workers: int = 1
    shard_size: int = 64
    compression: str = "none"
    overwrite: bool = False

    def target_prepared_size(self) -> tuple[int, int]:
        if self.prepared_size is not None:
            return self.prepared_size
        return max(16, self.scenes.size[0] // 2), max(8, self.scenes.size[1] // 2)

    def source_prepared_size(self) -> tuple[int, int]:
        w = self.target_prepared_size()[0]
        return w, max(8, int(round(w * SOURCE_ASPECT)))


def prepare_synthetic(cfg: SyntheticPrepareConfig, show_progress: bool = True) -> dict[str, object]:
    """Generate the scenes under ``out/raw`` and prepare ``gtav/train`` and ``cityscapes/{train,val}``."""
    from hrseg.data.prepare import PREPARE_BUSY

    if cfg.out.exists() and not cfg.out.is_dir():
        raise HrsegError(f"--out {cfg.out}: is a file, not a folder; choose a folder for the prepared data")
    with folder_lock(cfg.out, PREPARE_BUSY):
        return _prepare_synthetic_locked(cfg, show_progress)


def _prepare_synthetic_locked(cfg: SyntheticPrepareConfig, show_progress: bool) -> dict[str, object]:
    from hrseg.data.prepare import PrepareConfig, prepare

    t0 = time.perf_counter()
    raw = cfg.out / "raw"
    total = cfg.scenes.source_images + cfg.scenes.target_images + cfg.scenes.val_images
    if show_progress:
        from hrseg.console import progress

        pool = start_pool(cfg.workers) if cfg.workers > 1 else None  # fork before the progress thread
        try:
            with progress() as bar:
                task = bar.add_task("generate scenes", total=total, rate="")
                start = time.perf_counter()

                def tick(n: int) -> None:
                    done = bar.tasks[task].completed + n
                    bar.update(task, advance=n, rate=f"{done / max(time.perf_counter() - start, 1e-9):.1f} img/s")

                generated = generate_raw(cfg.scenes, raw, cfg.workers, cfg.overwrite, tick, pool)
                bar.update(task, completed=total, rate="kept" if not generated else bar.tasks[task].fields["rate"])
        finally:
            if pool is not None:
                pool.shutdown()
    else:
        generated = generate_raw(cfg.scenes, raw, cfg.workers, cfg.overwrite)
    t_gen = time.perf_counter() - t0
    # freshly generated scenes change the inputs' fingerprints, so shards made from an earlier generation are
    # rebuilt; splits prepared with other options or from other data are refused without --overwrite
    common = dict(out=cfg.out, workers=cfg.workers, shard_size=cfg.shard_size,
                  compression=cfg.compression, overwrite=cfg.overwrite)
    results = prepare(PrepareConfig(dataset="gtav", root=raw / "GTAV", size=cfg.source_prepared_size(), **common),
                      show_progress)
    results += prepare(PrepareConfig(dataset="cityscapes", root=raw / "cityscapes", splits=("train", "val"),
                                     size=cfg.target_prepared_size(), **common), show_progress)
    return {"generated": generated, "generate_seconds": t_gen, "results": results,
            "seconds": time.perf_counter() - t0}

