"""The ``prepare`` pipeline: list a split, decode/resize/map it in parallel, write shards + manifest.

Why it is shaped like this:

- The sorted input list is cut into fixed ranges of ``shard_size`` inputs;
  shard k always holds the usable samples of range k. A shard's content is
  therefore independent of scheduling, interruptions and worker count.
- Each worker builds whole shards (decode, resize, write, checksum) so the
  expensive parts all run in parallel; progress comes back per image. The
  parent only lists, plans and writes the manifest from what the workers
  report (it hashes nothing itself).
- A shard also stores its inputs with their size and modification time, its
  options and its statistics (skips, defects, class pixels). A re-run keeps
  a shard only if its options and inputs are unchanged *and* its bytes check
  out (the manifest's sha256, or every row's checksum when an interrupted run
  left no manifest); anything else is rebuilt and said so. The manifest is
  rebuilt from the shards alone, so an interrupted-then-resumed run writes
  exactly the same manifest and shards as an uninterrupted one, and a re-run
  with nothing to do writes nothing at all (read-only media work).
- A run with different byte-changing options over an existing split is
  refused unless ``overwrite`` is given.
- A full disk, a read-only or misplaced ``--out`` are one-line errors; the
  shard being written is removed and finished shards are kept.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hrseg.data.readers import DATASETS, DatasetSpec, Listing, RawSample, list_split
from hrseg.data.resize import RESIZE_MODES
from hrseg.data.shardbuild import (
    Fingerprint,
    ShardState,
    ShardTask,
    _build_job,
    _check_job,
    build_shard,
    fingerprint,
    png_size,
    read_shard_state,
    shard_name,
)
from hrseg.data.shards import COMPRESSIONS, MANIFEST_NAME, Manifest, ShardInfo, ShardOptions
from hrseg.data.workers import ProgressFn, WorkerPool, open_pool, run_jobs
from hrseg.errors import HrsegError
from hrseg.locking import folder_lock

__all__ = ["PrepareConfig", "SplitResult", "ShardTask", "build_shard", "prepare", "prepare_split", "stats_rows",
           "default_workers", "RESIZE_MODES"]

DEFAULT_SHARD_SIZE = 256
COUNT_KEYS = (
    "listed", "written", "missing_label", "missing_image", "corrupt", "blank",
    "label_resized", "unknown_label_ids", "unknown_label_pixels",
)
SPACE_ERRORS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
ACCESS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS}
MAX_NAMED = 3
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class PrepareConfig:
    """One `hrseg prepare <dataset>` invocation."""

    dataset: str  # a format in readers.DATASETS
    root: Path
    out: Path
    splits: tuple[str, ...] = ()
    size: tuple[int, int] | None = None  # (W, H); None: the dataset's usual training size
    resize: str = "area"
    workers: int = 1
    shard_size: int = DEFAULT_SHARD_SIZE
    compression: str = "none"
    overwrite: bool = False
    full_labels: bool | None = None  # None: keep them for the format's evaluated splits (Cityscapes val)
    name: str | None = None  # the prepared folder DATA/<name>/ (None: the format's name)

    @property
    def spec(self) -> DatasetSpec:
        return DATASETS[self.dataset]

    @property
    def prepared_name(self) -> str:
        return self.name or self.dataset

    def resolved_splits(self) -> tuple[str, ...]:
        return self.splits or self.spec.default_splits

    def resolved_size(self) -> tuple[int, int]:
        return self.size or self.spec.default_size

    def keeps_full_labels(self, split: str) -> bool:
        return split in self.spec.evaluated_splits if self.full_labels is None else self.full_labels

    def validate(self) -> None:
        for split in self.resolved_splits():
            self.spec.check_split(split)
        if self.name is not None and not (self.spec.renamable and _NAME.fullmatch(self.name)):
            raise HrsegError(f"--name {self.name!r}: " + ("a folder name of letters, digits, '-' and '_'"
                                                         if self.spec.renamable else f"{self.dataset} is not renamed"))
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
        if self.out.exists() and not self.out.is_dir():
            raise HrsegError(f"--out {self.out}: is a file, not a folder; choose a folder for the prepared data")
        above = next((p for p in self.out.absolute().parents if p.exists()), None)
        if above is not None and not above.is_dir():
            raise HrsegError(f"--out {self.out}: {above} is a file, not a folder")


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



def _stored_root(split_dir: Path) -> str:
    """The folder an existing split was prepared from, as its manifest says ("" when unknown)."""
    try:
        root = json.loads((split_dir / MANIFEST_NAME).read_text()).get("root", "")
    except (OSError, ValueError, AttributeError):
        return ""
    return root if isinstance(root, str) else ""


def _stored_options(split_dir: Path) -> dict[str, Any] | None:
    manifest = split_dir / MANIFEST_NAME
    if manifest.is_file():
        try:
            return json.loads(manifest.read_text())["options"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    for shard in sorted(split_dir.glob("shard-*.h5")):
        state = read_shard_state(shard)
        if state is not None:
            return state.options
    return None


def _manifest_entries(split_dir: Path, want: dict[str, Any]) -> dict[str, ShardInfo]:
    """The shard entries of an existing manifest written with the same options (else none)."""
    try:
        manifest = Manifest.from_dict(json.loads((split_dir / MANIFEST_NAME).read_text()))
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {}
    if manifest.options.to_dict() != want:
        return {}
    return {s.file: s for s in manifest.shards}


def _describe_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = [k for k in new if old.get(k) != new[k]]
    return ", ".join(f"{k} {old.get(k)} -> {new[k]}" for k in keys) or "format"


def _clear_split(split_dir: Path) -> None:
    for p in list(split_dir.glob("shard-*.h5")) + list(split_dir.glob(".shard-*.tmp")):
        p.unlink()
    (split_dir / MANIFEST_NAME).unlink(missing_ok=True)


def _full_size(listing: Listing) -> tuple[int, int]:
    sizes = [png_size(s.image) for s in listing.samples]
    return max(w for w, _ in sizes), max(h for _, h in sizes)


def _changed_inputs(state: ShardState, fingerprints: list[Fingerprint]) -> list[str]:
    if len(state.fingerprints) != len(fingerprints):
        return state.inputs[:MAX_NAMED]
    return [name for name, old, new in zip(state.inputs, state.fingerprints, fingerprints) if old != new]


def _write_error(exc: BaseException, split_dir: Path) -> HrsegError:
    """One line for a failure while writing ``split_dir``: what, where, and that finished shards are kept."""
    if isinstance(exc, BrokenProcessPool):
        return HrsegError(
            f"{split_dir}: a worker process died while writing shards (is the disk full? "
            f"{_free_mb(split_dir)} MB free); finished shards are kept, run the same command again"
        )
    assert isinstance(exc, OSError)
    target = exc.filename or split_dir
    reason = exc.strerror or str(exc)
    if exc.errno in SPACE_ERRORS:
        return HrsegError(f"out of disk space writing {target}; finished shards are kept, "
                          "free some space and run the same command again")
    if exc.errno in ACCESS_ERRORS:
        return HrsegError(f"cannot write {target} ({reason}); choose another --out")
    return HrsegError(f"cannot write {target} ({reason})")


def _free_mb(path: Path) -> int:
    try:
        st = os.statvfs(path)
    except OSError:
        return -1
    return st.f_bavail * st.f_frsize >> 20


def _remove_partial(split_dir: Path) -> None:
    for tmp in split_dir.glob(".shard-*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


@dataclass
class _Plan:
    """What a run does with each shard range: keep (after checking), or build."""

    ranges: list[list[RawSample]]
    fingerprints: list[list[Fingerprint]]
    states: dict[int, ShardState] = field(default_factory=dict)
    check: list[int] = field(default_factory=list)
    build: list[int] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)


def _plan(cfg: PrepareConfig, listing: Listing, split_dir: Path, want: dict[str, Any]) -> _Plan:
    ranges = [listing.samples[i : i + cfg.shard_size] for i in range(0, len(listing.samples), cfg.shard_size)]
    plan = _Plan(ranges, [[fingerprint(s) for s in r] for r in ranges])
    for k, samples in enumerate(ranges):
        path = split_dir / shard_name(k)
        state = read_shard_state(path) if path.is_file() else None
        if state is None or state.options != want or state.inputs != [s.name for s in samples]:
            plan.build.append(k)
            if path.is_file() and state is None:
                plan.messages.append(f"rebuilt: {path}: not a complete shard of this hrseg version "
                                     "(written by an older one, or its bookkeeping is damaged)")
            continue
        changed = _changed_inputs(state, plan.fingerprints[k])
        if changed:
            plan.build.append(k)
            more = f" and {len(changed) - MAX_NAMED} more" if len(changed) > MAX_NAMED else ""
            plan.messages.append(f"rebuilt: {path}: input files changed since it was written "
                                 f"({', '.join(changed[:MAX_NAMED])}{more})")
        else:
            plan.states[k] = state
            plan.check.append(k)
    return plan


def prepare_split(
    cfg: PrepareConfig, split: str, on_start: Callable[[int], None] | None = None,
    on_image: ProgressFn | None = None, pool: WorkerPool | None = None, listing: Listing | None = None,
) -> SplitResult:
    """Prepare one split into ``OUT/<dataset>/<split>/``; see the module docstring for the guarantees."""
    t0 = time.perf_counter()
    if listing is None:
        listing = list_split(cfg.dataset, cfg.root, split)
    split_dir = cfg.out / cfg.prepared_name / split
    keep_full = cfg.keeps_full_labels(split)
    options = ShardOptions(
        size=cfg.resolved_size(), resize=cfg.resize, compression=cfg.compression, shard_size=cfg.shard_size,
        full_labels=keep_full, full_size=_full_size(listing) if keep_full else None,
    )
    want = json.loads(json.dumps(options.to_dict()))
    progress = on_image or (lambda n: None)
    try:
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
        plan = _plan(cfg, listing, split_dir, want)
        stored_root = _stored_root(split_dir) if split_dir.is_dir() else ""
        if stored_root and stored_root != str(Path(cfg.root).absolute()) and plan.build and not cfg.overwrite:
            raise HrsegError(
                f"{split_dir}: already prepared from {stored_root}, not from --root {cfg.root}; "
                "pass --overwrite to rebuild it from the new root, or choose another --out"
            )
        entries = _manifest_entries(split_dir, want)
        jobs = []
        for k in plan.check:
            entry = entries.get(shard_name(k))
            expected = entry.sha256 if entry is not None and entry.count == plan.states[k].count else None
            jobs.append((split_dir / shard_name(k), expected, len(plan.ranges[k])))
        checked_images = sum(len(plan.ranges[k]) for k in plan.check)
        if on_start is not None and checked_images:
            on_start(checked_images)
        infos: dict[int, ShardInfo] = {}
        for k, (digest, problem) in zip(list(plan.check), run_jobs(_check_job, jobs, pool, progress)):
            if problem is None:
                infos[k] = ShardInfo(shard_name(k), plan.states[k].count, digest)
            else:
                plan.check.remove(k)
                plan.build.append(k)
                plan.messages.append(f"rebuilt: {split_dir / shard_name(k)}: {problem}")
        plan.build.sort()
        tasks = [ShardTask(cfg.dataset, split_dir / shard_name(k), tuple(plan.ranges[k]), options,
                           tuple(plan.fingerprints[k])) for k in plan.build]
        todo = sum(len(t.samples) for t in tasks)
        if on_start is not None:
            on_start(checked_images + todo)
        _tidy(split_dir, len(plan.ranges), rebuilding=bool(tasks))
        built = run_jobs(_build_job, tasks, pool, progress)
    except (OSError, BrokenProcessPool) as exc:
        _remove_partial(split_dir)
        raise _write_error(exc, split_dir) from None
    for k, b in zip(plan.build, built):
        infos[k] = b.info
    stats = {k: plan.states[k].stats for k in plan.check} | {k: b.stats for k, b in zip(plan.build, built)}
    realism = any(plan.states[k].has_realism for k in plan.check) or any(b.has_realism for b in built)
    manifest = _assemble_manifest(cfg.prepared_name, split, listing, options, [infos[k] for k in range(len(plan.ranges))],
                                  [stats[k] for k in range(len(plan.ranges))], realism)
    manifest.root = str(Path(cfg.root).absolute())
    _save_if_changed(manifest, split_dir)
    messages = list(plan.messages)
    for k in range(len(plan.ranges)):
        messages.extend(stats[k]["messages"])
    for reason, names in listing.skipped.items():
        messages.extend(f"{reason}: {cfg.root / n}" for n in names)
    return SplitResult(split_dir, manifest, built_shards=len(tasks), reused_shards=len(plan.check),
                       seconds=time.perf_counter() - t0, messages=messages, processed=todo,
                       build_cpu_seconds=sum(b.cpu_seconds for b in built))


def _tidy(split_dir: Path, num_shards: int, rebuilding: bool) -> None:
    """Remove what a killed run or a shrunken input list left, and the manifest if shards will change.

    Touches nothing when there is nothing to remove (a complete split on read-only media stays as it is).
    """
    if not split_dir.is_dir():
        split_dir.mkdir(parents=True)
    for stale in split_dir.glob(".shard-*.tmp"):  # left by a killed run
        stale.unlink()
    names = {shard_name(k) for k in range(num_shards)}
    for extra in split_dir.glob("shard-*.h5"):
        if extra.name not in names:
            extra.unlink()
    if rebuilding:  # the old manifest would describe shards about to change: no manifest until consistent again
        (split_dir / MANIFEST_NAME).unlink(missing_ok=True)


def _save_if_changed(manifest: Manifest, split_dir: Path) -> None:
    path = split_dir / MANIFEST_NAME
    try:
        if json.loads(path.read_text()) == json.loads(json.dumps(manifest.to_dict())):
            return
    except (OSError, ValueError):
        pass
    try:
        manifest.save(split_dir)
    except OSError as exc:
        raise _write_error(OSError(exc.errno, exc.strerror or str(exc), str(path)), split_dir) from None


def _assemble_manifest(
    dataset: str, split: str, listing: Listing, options: ShardOptions, shards: list[ShardInfo],
    stats: list[dict[str, Any]], has_realism: bool,
) -> Manifest:
    """Build the manifest from what the shards hold (so it never depends on how they were made)."""
    pixels = np.zeros(19, dtype=np.int64)
    skipped: dict[str, list[str]] = {k: list(v) for k, v in listing.skipped.items()}
    events: dict[str, int] = {}
    for st in stats:
        pixels += np.asarray(st["class_pixels"], dtype=np.int64)
        for reason, names in st["skipped"].items():
            skipped.setdefault(reason, []).extend(names)
        for key, n in st["events"].items():
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
    with folder_lock(cfg.out, PREPARE_BUSY, read_only_ok=True):
        return _prepare_locked(cfg, listings, show_progress)


#: the refusal when another prepare holds the data folder
PREPARE_BUSY = "another hrseg prepare is writing into this data folder"


def _prepare_locked(cfg: PrepareConfig, listings: dict[str, Listing], show_progress: bool) -> list[SplitResult]:
    shards = sum(-(-len(listing.samples) // cfg.shard_size) for listing in listings.values())
    results: list[SplitResult] = []
    pool = open_pool(min(cfg.workers, shards))
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
        task = bar.add_task(f"{cfg.prepared_name}/{split}", total=None, rate="")
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
