"""Building one shard in a worker, and reading back what a finished shard says about itself.

A shard carries its own bookkeeping next to the pixels: the names of its
inputs with each file's size and modification time, the options it was built
with, and the statistics building it found (skips, defects, class pixels),
all covered by one checksum. ``prepare`` decides from this alone whether a
shard on disk can be kept, so resuming never depends on how, or by which
worker, the shard was made.
"""

from __future__ import annotations

import json
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hrseg.data.readers import Decoded, RawSample, decode
from hrseg.data.resize import resize_image, resize_labels
from hrseg.data.shards import (
    EXTRA_CRC_ATTR,
    FORMAT,
    ShardInfo,
    ShardOptions,
    ShardSample,
    ShardWriter,
    count_class_pixels,
    extra_checksum,
)
from hrseg.data.verify import check_shard
from hrseg.data.workers import ProgressFn

EXTRA_KEYS = ("prepare_inputs", "prepare_fingerprints", "prepare_options", "prepare_stats")
Fingerprint = tuple[int, ...]


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to build one shard."""

    dataset: str
    path: Path
    samples: tuple[RawSample, ...]
    options: ShardOptions
    fingerprints: tuple[Fingerprint, ...] = ()


@dataclass
class BuiltShard:
    """What a worker reports for a shard it wrote (the parent hashes nothing itself)."""

    info: ShardInfo
    stats: dict[str, Any]
    has_realism: bool
    cpu_seconds: float = 0.0


@dataclass(frozen=True)
class ShardState:
    """The bookkeeping a finished shard carries: what it was built from, and what building it found."""

    options: dict[str, Any]
    inputs: list[str]
    fingerprints: list[Fingerprint]
    stats: dict[str, Any]
    count: int
    has_realism: bool


def png_size(path: Path) -> tuple[int, int]:
    """(W, H) from a PNG header, without decoding; (0, 0) when the header is unreadable."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(24)
    except OSError:
        return 0, 0
    if len(head) < 24 or head[12:16] != b"IHDR":
        return 0, 0
    w, h = struct.unpack(">II", head[16:24])
    return int(w), int(h)


def fingerprint(raw: RawSample) -> Fingerprint:
    """(size, mtime_ns) of the image, label and realism files; -1s for a missing one.

    Taken before the files are read, so a file changed while it is being
    prepared looks changed to the next run, never the other way round.
    """
    out: list[int] = []
    for path in (raw.image, raw.label, raw.realism):
        try:
            st = os.stat(path) if path is not None else None
        except OSError:
            st = None
        out += [st.st_size, st.st_mtime_ns] if st is not None else [-1, -1]
    return tuple(out)


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.h5"


def _resize_decoded(d: Decoded, options: ShardOptions) -> ShardSample:
    assert d.image is not None and d.label is not None
    size = (int(options.size[0]), int(options.size[1]))
    oh, ow = d.image.shape[:2]
    image, label, realism = d.image, d.label, d.realism
    if (ow, oh) != size:
        image, label = resize_image(image, size, options.resize), resize_labels(label, size)
        realism = None if realism is None else resize_labels(realism, size)
    full = d.label if options.full_labels else None
    return ShardSample(d.name, np.ascontiguousarray(image), np.ascontiguousarray(label), (oh, ow), realism, full)


def build_shard(task: ShardTask, on_image: ProgressFn | None = None) -> BuiltShard:
    """Decode a range of inputs and write its shard; returns its manifest entry and statistics."""
    stats: dict[str, Any] = {"skipped": {}, "events": {}, "messages": [], "class_pixels": [0] * 19}
    pixels = np.zeros(19, dtype=np.int64)
    opts = task.options
    has_realism = any(s.realism is not None for s in task.samples)
    try:
        with ShardWriter(task.path, opts.size, compression=opts.compression, realism=has_realism,
                         full_size=opts.full_size if opts.full_labels else None,
                         expected_rows=len(task.samples)) as writer:
            for raw in task.samples:
                d = decode(task.dataset, raw)
                if d.skip is not None:
                    stats["skipped"].setdefault(d.skip, []).append(d.name)
                    stats["messages"].append(f"{d.skip}: {d.detail}")
                else:
                    for key, n in d.events.items():
                        stats["events"][key] = stats["events"].get(key, 0) + n
                    if d.events.get("label_resized"):
                        stats["messages"].append(f"label_resized: {raw.label}: label size differs from its image")
                    if d.events.get("unknown_label_ids"):
                        stats["messages"].append(
                            f"unknown_label_ids: {raw.label}: {d.events['unknown_label_pixels']} pixels set to 255"
                        )
                    sample = _resize_decoded(d, opts)
                    pixels += count_class_pixels(sample.label)
                    writer.add(sample)
                if on_image is not None:
                    on_image(1)
            stats["class_pixels"] = pixels.tolist()
            writer.put_extra("prepare_inputs", [s.name for s in task.samples])
            writer.put_extra("prepare_fingerprints", json.dumps([list(f) for f in task.fingerprints]).encode())
            writer.put_extra("prepare_options", json.dumps(opts.to_dict(), sort_keys=True).encode())
            writer.put_extra("prepare_stats", json.dumps(stats, sort_keys=True).encode())
            info = writer.close()
    except OSError as exc:
        if exc.filename is None:  # say which shard, not which library call
            raise OSError(exc.errno, exc.strerror or str(exc), str(task.path)) from None
        raise
    return BuiltShard(info, stats, has_realism)


def _build_job(task: ShardTask, on_image: ProgressFn) -> BuiltShard:
    c0 = time.process_time()
    built = build_shard(task, on_image)
    built.cpu_seconds = time.process_time() - c0  # reported, never stored in the shard
    return built


def _check_job(job: tuple[Path, str | None, int], on_image: ProgressFn) -> tuple[str, str | None]:
    path, expected, count = job
    result = check_shard(path, expected)
    on_image(count)
    return result


def read_shard_state(path: Path) -> ShardState | None:
    """The bookkeeping of a finished shard of this format, or None if it is not one (then it is rebuilt)."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                return None
            crc = 0
            arrays = {}
            for key in EXTRA_KEYS:
                arrays[key] = f[key][()]
                crc = extra_checksum(key, arrays[key], crc)
            if int(f.attrs[EXTRA_CRC_ATTR]) != crc:
                return None
            return ShardState(
                options=json.loads(bytes(arrays["prepare_options"]).decode()),
                inputs=[bytes(b).rstrip(b"\0").decode() for b in arrays["prepare_inputs"]],
                fingerprints=[tuple(int(v) for v in fp) for fp in json.loads(bytes(arrays["prepare_fingerprints"]))],
                stats=json.loads(bytes(arrays["prepare_stats"]).decode()),
                count=int(f["labels"].shape[0]),
                has_realism="realism" in f,
            )
    except (OSError, KeyError, ValueError, TypeError, RuntimeError):
        return None


