"""The ``prepare`` pipeline: list a split, decode/resize/map it in parallel, write shards + manifest.

Why it is shaped like this:

- The sorted input list is cut into fixed ranges of ``shard_size`` inputs;
  shard k always holds the usable samples of range k. A shard's content is
  therefore independent of scheduling, interruptions and worker count.
- Each worker builds whole shards (decode, resize, write, checksum) so the
  expensive parts all run in parallel; progress comes back per image.
- A shard also stores its inputs, its options and its statistics (skips,
  defects, class pixels). Re-running the same command keeps every finished
  shard whose options and inputs match, and the manifest is rebuilt from the
  shards alone, so an interrupted-then-resumed run writes exactly the same
  manifest and shards as an uninterrupted one.
- A run with different byte-changing options over an existing split is
  refused unless ``overwrite`` is given.
"""

from __future__ import annotations

import errno
import json
import os
import queue
import struct
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import cv2
import h5py
import numpy as np

from hrseg.data.readers import SPLITS, Decoded, Listing, RawSample, decode, list_split
from hrseg.data.shards import (
    COMPRESSIONS,
    MANIFEST_NAME,
    Manifest,
    ShardInfo,
    ShardOptions,
    ShardSample,
    ShardWriter,
    count_class_pixels,
    sha256_file,
)
from hrseg.data.workers import pool_context, start_pool
from hrseg.errors import HrsegError

DEFAULT_SIZES: dict[str, tuple[int, int]] = {"gtav": (1280, 720), "cityscapes": (1024, 512), "synthia": (1280, 760)}
EVALUATED_SPLITS = {("cityscapes", "val")}
RESIZE_MODES = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR}
DEFAULT_SHARD_SIZE = 256
COUNT_KEYS = (
    "listed", "written", "missing_label", "missing_image", "corrupt", "blank",
    "label_resized", "unknown_label_ids", "unknown_label_pixels",
)


@dataclass(frozen=True)
class PrepareConfig:
    """One `hrseg prepare <dataset>` invocation."""

    dataset: str
    root: Path
    out: Path
    splits: tuple[str, ...] = ()
    size: tuple[int, int] | None = None  # (W, H); None: the dataset's usual training size
    resize: str = "area"
    workers: int = 1
    shard_size: int = DEFAULT_SHARD_SIZE
    compression: str = "none"
    overwrite: bool = False
    full_labels: bool | None = None  # None: keep them for evaluated splits (Cityscapes val)

    def resolved_splits(self) -> tuple[str, ...]:
        return self.splits or (("train", "val") if self.dataset == "cityscapes" else ("train",))

    def resolved_size(self) -> tuple[int, int]:
        return self.size or DEFAULT_SIZES[self.dataset]

    def keeps_full_labels(self, split: str) -> bool:
        return (self.dataset, split) in EVALUATED_SPLITS if self.full_labels is None else self.full_labels

    def validate(self) -> None:
        if self.dataset not in SPLITS:
            raise HrsegError(f"unknown dataset {self.dataset!r}")
        for split in self.resolved_splits():
            if split not in SPLITS[self.dataset]:
                raise HrsegError(f"--split {split}: {self.dataset} has the split(s) {', '.join(SPLITS[self.dataset])}")
        w, h = self.resolved_size()
        if w < 1 or h < 1:
            raise HrsegError(f"--size {w}x{h}: width and height must be positive")
        if self.resize not in RESIZE_MODES:
            raise HrsegError(f"--resize {self.resize}: choose one of {', '.join(RESIZE_MODES)}")
        if self.compression not in COMPRESSIONS:
            raise HrsegError(f"--compression {self.compression}: choose one of {', '.join(COMPRESSIONS)}")
        if self.workers < 1:
            raise HrsegError(f"--workers {self.workers}: must be at least 1")
        if self.shard_size < 1:
            raise HrsegError(f"--shard-size {self.shard_size}: must be at least 1")


@dataclass
class SplitResult:
    """What one split's preparation did; ``reused_shards`` is not part of the manifest on purpose."""

    split_dir: Path
    manifest: Manifest
    built_shards: int
    reused_shards: int
    seconds: float
    messages: list[str] = field(default_factory=list)
    processed: int = 0  # inputs decoded by this run (reused shards are not re-decoded)
    build_cpu_seconds: float = 0.0  # CPU time spent building shards, over all workers

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs to build one shard."""

    dataset: str
    path: Path
    samples: tuple[RawSample, ...]
    options: ShardOptions


ProgressFn = Callable[[int], None]
_worker_queue: Any = None


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


def shard_name(k: int) -> str:
    return f"shard-{k:05d}.h5"


def _resize_decoded(d: Decoded, options: ShardOptions) -> ShardSample:
    assert d.image is not None and d.label is not None
    w, h = options.size
    oh, ow = d.image.shape[:2]
    same = (ow, oh) == (w, h)
    image = d.image if same else cv2.resize(d.image, (w, h), interpolation=RESIZE_MODES[options.resize])
    label = d.label if same else cv2.resize(d.label, (w, h), interpolation=cv2.INTER_NEAREST)
    realism = None
    if d.realism is not None:
        realism = d.realism if same else cv2.resize(d.realism, (w, h), interpolation=cv2.INTER_NEAREST)
    full = d.label if options.full_labels else None
    return ShardSample(d.name, np.ascontiguousarray(image), np.ascontiguousarray(label), (oh, ow), realism, full)


def build_shard(task: ShardTask, on_image: ProgressFn | None = None) -> dict[str, Any]:
    """Decode a range of inputs and write its shard; returns the shard's statistics."""
    stats: dict[str, Any] = {"skipped": {}, "events": {}, "messages": [], "class_pixels": [0] * 19}
    pixels = np.zeros(19, dtype=np.int64)
    opts = task.options
    has_realism = any(s.realism is not None for s in task.samples)
    with ShardWriter(task.path, opts.size, compression=opts.compression, realism=has_realism,
                     full_size=opts.full_size if opts.full_labels else None) as writer:
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
        writer.put_extra("prepare_options", json.dumps(opts.to_dict(), sort_keys=True).encode())
        writer.put_extra("prepare_stats", json.dumps(stats, sort_keys=True).encode())
        writer.close()
    return stats


def _read_shard_state(path: Path) -> tuple[dict[str, Any], list[str], dict[str, Any]] | None:
    """(options, inputs, stats) stored in a finished shard, or None if it is not a usable shard."""
    try:
        with h5py.File(path, "r") as f:
            options = json.loads(bytes(f["prepare_options"][()]).decode())
            inputs = [bytes(b).rstrip(b"\0").decode() for b in f["prepare_inputs"][()]]
            stats = json.loads(bytes(f["prepare_stats"][()]).decode())
        return options, inputs, stats
    except (OSError, KeyError, ValueError):
        return None


def _stored_options(split_dir: Path) -> dict[str, Any] | None:
    manifest = split_dir / MANIFEST_NAME
    if manifest.is_file():
        try:
            return json.loads(manifest.read_text())["options"]
        except (OSError, ValueError, KeyError):
            return None
    for shard in sorted(split_dir.glob("shard-*.h5")):
        state = _read_shard_state(shard)
        if state is not None:
            return state[0]
    return None


def _describe_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k} {old.get(k)} -> {new[k]}" for k in keys) or "format"


def _clear_split(split_dir: Path) -> None:
    for p in list(split_dir.glob("shard-*.h5")) + list(split_dir.glob(".shard-*.tmp")):
        p.unlink()
    (split_dir / MANIFEST_NAME).unlink(missing_ok=True)


def _watch_parent(pid: int) -> None:
    """Exit when the process that started us is gone (killed runs must not leave idle workers behind)."""
    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass


def _init_worker(q: Any, parent_pid: int) -> None:
    global _worker_queue
    _worker_queue = q
    cv2.setNumThreads(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _timed_build(task: ShardTask, on_image: ProgressFn | None) -> float:
    """Build one shard; returns the CPU seconds it took (reported, never stored in the shard)."""
    c0 = time.process_time()
    build_shard(task, on_image)
    return time.process_time() - c0


def _worker_build(task: ShardTask) -> float:
    return _timed_build(task, lambda n: _worker_queue.put(n))


@dataclass
class WorkerPool:
    """Worker processes plus the queue on which they report each decoded image."""

    executor: ProcessPoolExecutor
    queue: Any

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def open_pool(workers: int) -> WorkerPool | None:
    """Start ``workers`` processes now (before any progress thread); None for in-process work."""
    if workers <= 1:
        return None
    q = pool_context().Queue()
    return WorkerPool(start_pool(workers, _init_worker, (q, os.getpid())), q)


def _run_tasks(tasks: list[ShardTask], pool: WorkerPool | None, on_image: ProgressFn) -> float:
    """Build the shards of ``tasks``, in this process or on the pool's workers; returns CPU seconds."""
    if pool is None or len(tasks) <= 1:
        return sum(_timed_build(task, on_image) for task in tasks)
    cpu = 0.0
    pending: set[Future[float]] = {pool.executor.submit(_worker_build, t) for t in tasks}
    try:
        while pending:
            done, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
            _drain(pool.queue, on_image)
            for fut in done:
                cpu += fut.result()  # re-raises a worker's error here
    except BaseException:
        for fut in pending:
            fut.cancel()
        wait(pending)  # let running shards finish or fail before the caller cleans up
        raise
    _drain(pool.queue, on_image)
    return cpu


def _drain(q: Any, on_image: ProgressFn) -> None:
    while True:
        try:
            on_image(q.get_nowait())
        except queue.Empty:
            return


def _full_size(listing: Listing) -> tuple[int, int]:
    sizes = [png_size(s.image) for s in listing.samples]
    return max(w for w, _ in sizes), max(h for _, h in sizes)


def prepare_split(
    cfg: PrepareConfig, split: str, on_start: Callable[[int], None] | None = None,
    on_image: ProgressFn | None = None, pool: WorkerPool | None = None, listing: Listing | None = None,
) -> SplitResult:
    """Prepare one split into ``OUT/<dataset>/<split>/``; see the module docstring for the guarantees."""
    t0 = time.perf_counter()
    if listing is None:
        listing = list_split(cfg.dataset, cfg.root, split)
    split_dir = cfg.out / cfg.dataset / split
    keep_full = cfg.keeps_full_labels(split)
    options = ShardOptions(
        size=cfg.resolved_size(), resize=cfg.resize, compression=cfg.compression, shard_size=cfg.shard_size,
        full_labels=keep_full, full_size=_full_size(listing) if keep_full else None,
    )
    want = json.loads(json.dumps(options.to_dict()))
    if split_dir.is_dir():
        stored = _stored_options(split_dir)
        if stored is not None and stored != want:
            if not cfg.overwrite:
                raise HrsegError(
                    f"{split_dir}: already prepared with other options ({_describe_diff(stored, want)}); "
                    "pass --overwrite to rebuild it, or choose another --out"
                )
            _clear_split(split_dir)
        elif cfg.overwrite:
            _clear_split(split_dir)
    split_dir.mkdir(parents=True, exist_ok=True)
    for stale in split_dir.glob(".shard-*.tmp"):  # left by a killed run
        stale.unlink()

    ranges = [listing.samples[i : i + cfg.shard_size] for i in range(0, len(listing.samples), cfg.shard_size)]
    for extra in split_dir.glob("shard-*.h5"):
        if extra.name not in {shard_name(k) for k in range(len(ranges))}:
            extra.unlink()
    tasks: list[ShardTask] = []
    for k, samples in enumerate(ranges):
        path = split_dir / shard_name(k)
        state = _read_shard_state(path) if path.is_file() else None
        if state is None or state[0] != want or state[1] != [s.name for s in samples]:
            tasks.append(ShardTask(cfg.dataset, path, tuple(samples), options))
    todo = sum(len(t.samples) for t in tasks)
    if tasks:  # the old manifest would describe shards about to change: no manifest until consistent again
        (split_dir / MANIFEST_NAME).unlink(missing_ok=True)
    if on_start is not None:
        on_start(todo)
    try:
        cpu = _run_tasks(tasks, pool, on_image or (lambda n: None))
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise HrsegError(
                f"{split_dir}: out of disk space while writing a shard; finished shards are kept, "
                "free some space and run the same command again"
            ) from None
        raise
    manifest = _assemble_manifest(cfg.dataset, split, listing, split_dir, options, len(ranges))
    manifest.save(split_dir)
    messages: list[str] = []
    for k in range(len(ranges)):
        state = _read_shard_state(split_dir / shard_name(k))
        assert state is not None
        messages.extend(state[2]["messages"])
    for reason, names in listing.skipped.items():
        messages.extend(f"{reason}: {cfg.root / n}" for n in names)
    return SplitResult(split_dir, manifest, built_shards=len(tasks), reused_shards=len(ranges) - len(tasks),
                       seconds=time.perf_counter() - t0, messages=messages, processed=todo, build_cpu_seconds=cpu)


def _assemble_manifest(
    dataset: str, split: str, listing: Listing, split_dir: Path, options: ShardOptions, num_shards: int
) -> Manifest:
    """Build the manifest from the finished shards only (so it never depends on how they were made)."""
    shards: list[ShardInfo] = []
    pixels = np.zeros(19, dtype=np.int64)
    skipped: dict[str, list[str]] = {k: list(v) for k, v in listing.skipped.items()}
    events: dict[str, int] = {}
    has_realism = False
    for k in range(num_shards):
        path = split_dir / shard_name(k)
        state = _read_shard_state(path)
        if state is None:
            raise HrsegError(f"{path}: shard unreadable right after writing; run the command again")
        stats = state[2]
        with h5py.File(path, "r") as f:
            count = int(f["labels"].shape[0])
            has_realism = has_realism or "realism" in f
        shards.append(ShardInfo(path.name, count, sha256_file(path)))
        pixels += np.asarray(stats["class_pixels"], dtype=np.int64)
        for reason, names in stats["skipped"].items():
            skipped.setdefault(reason, []).extend(names)
        for key, n in stats["events"].items():
            events[key] = events.get(key, 0) + int(n)
    written = sum(s.count for s in shards)
    counts = {key: 0 for key in COUNT_KEYS}
    counts["listed"] = len(listing.samples) + sum(len(v) for v in listing.skipped.values())
    counts["written"] = written
    for reason, names in skipped.items():
        counts[reason] = len(names)
    counts.update(events)
    if written == 0:
        raise HrsegError(f"--root {listing.root}: no usable image in {dataset} split {split!r} (all were skipped)")
    return Manifest(
        dataset=dataset, split=split, size=options.size, options=options, num_images=written, shards=shards,
        class_pixels=pixels.tolist(), has_realism=has_realism, has_full_labels=options.full_labels,
        skipped={k: sorted(v) for k, v in sorted(skipped.items())}, counts=counts,
    )


def prepare(cfg: PrepareConfig, show_progress: bool = True) -> list[SplitResult]:
    """Prepare every requested split of ``cfg``, with a rich progress bar showing images/s."""
    cfg.validate()
    # a wrong layout or an empty split is refused before any worker or progress bar starts
    listings = {split: list_split(cfg.dataset, cfg.root, split) for split in cfg.resolved_splits()}
    results: list[SplitResult] = []
    pool = open_pool(cfg.workers)
    try:
        for split, listing in listings.items():
            if show_progress:
                results.append(_with_progress(cfg, split, pool, listing))
            else:
                results.append(prepare_split(cfg, split, pool=pool, listing=listing))
    finally:
        if pool is not None:
            pool.close()
    return results


def _with_progress(cfg: PrepareConfig, split: str, pool: WorkerPool | None, listing: Listing) -> SplitResult:
    from hrseg.console import progress

    with progress() as bar:
        task = bar.add_task(f"{cfg.dataset}/{split}", total=None, rate="")
        start = time.perf_counter()
        done = 0

        def on_start(total: int) -> None:
            bar.update(task, total=total)

        def on_image(n: int) -> None:
            nonlocal done
            done += n
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=n, rate=f"{rate:.1f} img/s")

        return prepare_split(cfg, split, on_start=on_start, on_image=on_image, pool=pool, listing=listing)


def stats_rows(result: SplitResult) -> list[tuple[str, str]]:
    """(name, value) rows of every count, for the summary table the CLI prints."""
    m = result.manifest
    rows = [(key, str(m.counts.get(key, 0))) for key in COUNT_KEYS]
    rows += [("shards", str(len(m.shards))), ("shards reused", str(result.reused_shards)),
             ("size", f"{m.size[0]}x{m.size[1]}"), ("seconds", f"{result.seconds:.1f}"),
             ("cpu seconds", f"{result.build_cpu_seconds:.1f}"),
             ("images/s", f"{result.images_per_second:.1f}")]
    return rows


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))
