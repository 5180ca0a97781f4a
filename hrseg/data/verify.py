"""Checking prepared splits: whole shards against the manifest, and every row against its checksum.

``hrseg prepare verify`` uses ``verify_split``; ``prepare`` itself uses
``check_shard`` before it keeps a shard it finds on disk (it never trusts a
file it did not just write).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np

from hrseg.data.checksums import row_checksum
from hrseg.data.labels import NUM_CLASSES
from hrseg.data.shards import MANIFEST_NAME, Manifest, ShardInfo, count_class_pixels, sha256_file
from hrseg.errors import HrsegError

SHARD_GLOB = "shard-*.h5"
MAX_LISTED = 3


@dataclass
class VerifyReport:
    """What `hrseg prepare verify` found; ``problems`` lists one line per bad file."""

    split_dir: str
    num_images: int
    num_shards: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"ok": self.ok}


def stored_checksums(f: h5py.File) -> tuple[np.ndarray, list[str]] | None:
    """(rows x fields uint32 table, field names) of an open shard; None for format-1 shards."""
    if "checksums" not in f:
        return None
    ds = f["checksums"]
    fields = str(ds.attrs.get("fields", "")).split(",")
    table = np.asarray(ds[()], dtype=np.uint32)
    if table.ndim != 2 or table.shape[1] != len(fields) or not all(k in f for k in fields):
        raise ValueError("the checksum table does not match the shard's datasets")
    return table, fields


def row_bytes(f: h5py.File, field: str, row: int) -> np.ndarray | bytes:
    """A row as its checksum was computed (names: the UTF-8 bytes without padding)."""
    value = f[field][row]
    return bytes(value) if field == "names" else value


def shard_name_of(f: h5py.File, row: int) -> str:
    try:
        return bytes(f["names"][row]).rstrip(b"\0").decode("utf-8", "replace")
    except (OSError, KeyError, ValueError, IndexError):
        return "?"


def find_damage(path: str | Path) -> list[str] | None:
    """One line per damaged row of a shard (checking every stored checksum); None without checksums.

    A shard HDF5 cannot even read is one line too (never an exception).
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            stored = stored_checksums(f)
            if stored is None:
                return None
            table, fields = stored
            rows = int(f["labels"].shape[0])
            if table.shape[0] != rows:
                return [f"{path}: {table.shape[0]} checksums for {rows} images"]
            damaged: list[str] = []
            for row in range(rows):
                bad = [k for j, k in enumerate(fields) if row_checksum(row_bytes(f, k, row)) != int(table[row, j])]
                if bad:
                    damaged.append(f"image {shard_name_of(f, row)} (row {row}): {', '.join(bad)} damaged")
            return damaged
    except (OSError, KeyError, ValueError, IndexError) as exc:
        return [f"unreadable ({exc})"]


def check_shard(path: str | Path, expected_sha256: str | None) -> tuple[str, str | None]:
    """(sha256, problem or None) for a shard found on disk; with no expected sha256 every row is checked."""
    path = Path(path)
    digest = sha256_file(path)
    if expected_sha256 is not None and digest == expected_sha256:
        return digest, None
    damage = find_damage(path)
    if damage is None:
        return digest, "written by an older hrseg without checksums"
    if expected_sha256 is not None and not damage:
        return digest, "its sha256 differs from the manifest's (modified after writing)"
    if damage:
        more = f" and {len(damage) - MAX_LISTED} more" if len(damage) > MAX_LISTED else ""
        return digest, "damaged: " + "; ".join(damage[:MAX_LISTED]) + more
    return digest, None


def find_split_dirs(root: str | Path) -> list[Path]:
    """Every directory under ``root`` (or root itself) that holds a manifest or shards, sorted."""
    root = Path(root)
    if (root / MANIFEST_NAME).is_file() or any(root.glob(SHARD_GLOB)):
        return [root]
    found = {p.parent for p in root.rglob(MANIFEST_NAME)} | {p.parent for p in root.rglob(SHARD_GLOB)}
    return sorted(p for p in found if not p.name.startswith("."))


def iter_verify(split_dir: str | Path) -> Iterator[tuple[ShardInfo, str | None]]:
    """Yield (shard, problem or None) for every shard of a split, checking bytes and content."""
    split_dir = Path(split_dir)
    manifest = Manifest.load(split_dir)
    w, h = manifest.size
    for info in manifest.shards:
        path = split_dir / info.file
        if not path.is_file():
            yield info, f"{path}: missing"
            continue
        digest = sha256_file(path)
        if digest != info.sha256:
            damage = find_damage(path) or []
            listed = f"; {'; '.join(damage[:MAX_LISTED])}" if damage else ""
            yield info, f"{path}: checksum mismatch (corrupted or modified after writing){listed}"
            continue
        try:
            with h5py.File(path, "r") as f:
                labels = f["labels"]
                if labels.shape != (info.count, h, w) or f["images"].shape != (info.count, h, w, 3):
                    yield info, f"{path}: shapes {f['images'].shape}/{labels.shape} do not match the manifest"
                    continue
                if manifest.has_realism and "realism" not in f:
                    yield info, f"{path}: no realism dataset although the manifest has realism"
                    continue
                if manifest.has_full_labels and "full_labels" not in f:
                    yield info, f"{path}: no full_labels dataset although the manifest has them"
                    continue
                for i in range(info.count):
                    f["images"][i]
                    labels[i]
        except (OSError, KeyError) as exc:
            yield info, f"{path}: unreadable ({exc})"
            continue
        yield info, None


def verify_split(split_dir: str | Path) -> VerifyReport:
    """Re-read every shard of a split against its manifest (checksums, shapes, class pixel counts).

    A folder with shards but no manifest (an interrupted ``prepare``, or a
    deleted manifest) and a manifest that cannot be read are problems of the
    report, not exceptions, so ``verify DATA`` lists every split.
    """
    split_dir = Path(split_dir)
    try:
        manifest = Manifest.load(split_dir)
    except HrsegError as exc:
        shards = len(list(split_dir.glob(SHARD_GLOB)))
        problem = str(exc)
        if not (split_dir / MANIFEST_NAME).exists():
            problem = (f"{split_dir}: {shards} shard(s) but no {MANIFEST_NAME} (an interrupted or damaged "
                       "prepare); run the prepare command again")
        return VerifyReport(str(split_dir), 0, shards, [problem])
    problems = [p for _, p in iter_verify(split_dir) if p is not None]
    if not problems:
        pixels = np.zeros(NUM_CLASSES, dtype=np.int64)
        for path in manifest.shard_paths(split_dir):
            with h5py.File(path, "r") as f:
                pixels += count_class_pixels(f["labels"][()])
        if pixels.tolist() != list(manifest.class_pixels):
            problems.append(f"{split_dir / MANIFEST_NAME}: class pixel counts do not match the shards")
    return VerifyReport(str(split_dir), manifest.num_images, len(manifest.shards), problems)
