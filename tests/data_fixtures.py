"""Tiny generated datasets for every test suite (import these helpers; keep their signatures stable).

``make_synthetic_data`` runs the real pipeline (procedural scenes written in
the GTAV and Cityscapes formats, then ``prepare``) at toy sizes, so tests of
training, evaluation and visualisation exercise exactly what users get.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np

from hrseg.data.labels import LABEL_PALETTE
from hrseg.data.png import encode_palette_png
from hrseg.data.synthetic import SceneConfig, SyntheticPrepareConfig, draw_scene, prepare_synthetic

_CACHE: dict[tuple, Path] = {}


def make_synthetic_data(
    tmp_path: Path,
    seed: int = 0,
    source_images: int = 12,
    target_images: int = 8,
    val_images: int = 4,
    size: tuple[int, int] = (64, 32),
    prepared_size: tuple[int, int] | None = None,
    shard_size: int = 4,
    workers: int = 1,
) -> Path:
    """Generate scenes and prepare them under ``tmp_path/"data"``; returns that DATA dir.

    DATA holds ``gtav/train`` (with realism masks), ``cityscapes/train`` and
    ``cityscapes/val`` (with full-resolution labels, = ``size``). Shards are
    at ``prepared_size`` (default: ``size`` itself for the target, the same
    width at 16:9 for the source, e.g. 64x32 and 64x36), several shards per
    split so multi-shard indexing is exercised.
    """
    out = Path(tmp_path) / "data"
    cfg = SyntheticPrepareConfig(
        out=out,
        scenes=SceneConfig(seed=seed, source_images=source_images, target_images=target_images,
                           val_images=val_images, size=size),
        prepared_size=prepared_size or size,
        workers=workers,
        shard_size=shard_size,
    )
    prepare_synthetic(cfg, show_progress=False)
    return out


def cached_synthetic_data(tmp_path_factory, **kwargs) -> Path:  # type: ignore[no-untyped-def]
    """``make_synthetic_data`` once per test session and argument set (pass pytest's tmp_path_factory).

    Treat the returned DATA dir as read-only; copy it (``copy_data``) before modifying.
    """
    key = tuple(sorted(kwargs.items()))
    if key not in _CACHE or not _CACHE[key].is_dir():
        _CACHE[key] = make_synthetic_data(tmp_path_factory.mktemp("synthetic-data"), **kwargs)
    return _CACHE[key]


def copy_data(data_dir: Path, dest: Path) -> Path:
    """A private, writable copy of a DATA dir."""
    shutil.copytree(data_dir, dest)
    return dest


def write_gtav_pair(root: Path, index: int, seed: int = 0, size: tuple[int, int] = (48, 27)) -> tuple[Path, Path]:
    """One GTAV-format pair (``images/NNNNN.png``, palettised ``labels/NNNNN.png``) under ``root``."""
    scene = draw_scene(seed, "source", index, size)
    name = f"{index + 1:05d}.png"
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    img_path, lab_path = root / "images" / name, root / "labels" / name
    cv2.imwrite(str(img_path), scene.image[:, :, ::-1])
    lab_path.write_bytes(encode_palette_png(scene.label_ids, LABEL_PALETTE))
    return img_path, lab_path


def make_gtav_root(root: Path, count: int = 6, seed: int = 0, size: tuple[int, int] = (48, 27)) -> Path:
    """A tiny GTAV-format folder (no realism masks, like the real download)."""
    for i in range(count):
        write_gtav_pair(root, i, seed, size)
    return root


def make_cityscapes_root(
    root: Path, split: str = "train", count: int = 4, seed: int = 0, size: tuple[int, int] = (48, 24)
) -> Path:
    """A tiny Cityscapes-format split (``leftImg8bit``/``gtFine`` labelIds) under ``root``."""
    from hrseg.data.synthetic import cityscapes_name

    for i in range(count):
        scene = draw_scene(seed, "target", i, size)
        city, stem = cityscapes_name(split, i)
        left = root / "leftImg8bit" / split / city
        gt = root / "gtFine" / split / city
        left.mkdir(parents=True, exist_ok=True)
        gt.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(left / f"{stem}_leftImg8bit.png"), scene.image[:, :, ::-1])
        cv2.imwrite(str(gt / f"{stem}_gtFine_labelIds.png"), scene.label_ids)
    return root


def make_synthia_root(root: Path, count: int = 4, seed: int = 0, size: tuple[int, int] = (48, 28)) -> Path:
    """A tiny SYNTHIA-RAND-CITYSCAPES folder: ``RGB/`` and 16-bit 3-channel ``GT/LABELS/``."""
    from hrseg.data.labels import LABEL_TO_TRAIN, SYNTHIA_ID_TO_TRAIN

    train_to_synthia = np.zeros(256, dtype=np.uint16)  # 0 = SYNTHIA void
    for sid, tid in SYNTHIA_ID_TO_TRAIN.items():
        train_to_synthia[tid] = sid
    (root / "RGB").mkdir(parents=True, exist_ok=True)
    (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    for i in range(count):
        scene = draw_scene(seed, "source", i, size)
        ids = train_to_synthia[LABEL_TO_TRAIN[scene.label_ids]]
        gt = np.zeros((*ids.shape, 3), dtype=np.uint16)
        gt[:, :, 2] = ids  # OpenCV's last channel: the class id
        gt[:, :, 1] = np.uint16(i + 1)  # instance ids live in another channel; must be ignored
        name = f"{i:07d}.png"
        cv2.imwrite(str(root / "RGB" / name), scene.image[:, :, ::-1])
        cv2.imwrite(str(root / "GT" / "LABELS" / name), gt)
    return root


def private_tmpfs_works() -> bool:
    """Whether a private mount namespace (``unshare -rm``) can mount a tiny tmpfs: the real full-disk tests."""
    if not shutil.which("unshare") or not shutil.which("mount"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /tmp && true"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0
