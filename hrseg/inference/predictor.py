"""Segment user images, folders and videos with an already-loaded segmenter, writing files and an index.

Images of the same working size are batched (after resizing to
``options.size`` every image qualifies); files are decoded and written by a
few threads (OpenCV releases the GIL) while the model runs. Per-image work is
in :mod:`hrseg.inference.engine`.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from hrseg.atomic import write_json
from hrseg.locking import folder_lock
from hrseg.ownership import check_folder, json_mark, json_owned, read_index, remove_own
from hrseg.device import resolve_amp, resolve_device
from hrseg.errors import HrsegError
from hrseg.console import progress, rate
from hrseg.inference.engine import Engine, working_image
from hrseg.inference.outputs import KINDS, OutputSpec, OutputWriter
from hrseg.inference.sources import (MAX_PIXELS, Skipped, Source, UnreadableInput, VideoReader, collect_inputs,
                                     read_image)
from hrseg.inference.tta import InferenceOptions
from hrseg.models.common import eval_mode

INDEX_NAME = "predictions.json"
INDEX_FORMAT = "hrseg-predictions/1"
WRITTEN_BY = "hrseg predict"
_marked = json_owned(WRITTEN_BY)


def index_is_ours(path: Path) -> bool:
    """An index hrseg wrote: marked, or (written before the mark existed) of the predictions format."""
    if _marked(path):
        return True
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("format") == INDEX_FORMAT
    except (OSError, ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        return False
T = TypeVar("T")


@dataclass
class PredictResult:
    """What :func:`predict` did; ``to_dict()`` is the JSON index."""

    out_dir: Path
    index: Path
    inputs: list[dict[str, Any]]
    skipped: list[Skipped]
    images: int  # pictures segmented: images plus video frames
    seconds: float
    device: str
    amp: str | None
    options: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] | None = None  # which model made the files (its source, checkpoint, iteration)
    files: list[str] = field(default_factory=list)  # every file hrseg owns in the folder (``dir/``: a tree)
    complete: bool = True

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        kinds = [i["kind"] for i in self.inputs]
        return {
            **json_mark(WRITTEN_BY),
            "format": INDEX_FORMAT,
            "complete": self.complete,
            "model": self.model,
            "out_dir": str(self.out_dir),
            "device": self.device,
            "amp": self.amp,
            "options": self.options,
            "outputs": self.outputs,
            "counts": {"images": kinds.count("image"), "videos": kinds.count("video"),
                       "pictures": self.images, "skipped": len(self.skipped)},
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "inputs": self.inputs,
            "skipped": [s.to_dict() for s in self.skipped],
            "files": self.files,
        }


def _prefetch(pool: ThreadPoolExecutor, fn: Callable[[Source], T], items: Iterable[Source],
              depth: int) -> Iterator[tuple[Source, "Future[T]"]]:
    """Yields (item, future) in order while up to ``depth`` items are being read ahead."""
    it = iter(items)
    queue: deque[tuple[Source, Future[T]]] = deque()
    for item in it:
        queue.append((item, pool.submit(fn, item)))
        if len(queue) >= depth:
            break
    while queue:
        item, fut = queue.popleft()
        nxt = next(it, None)
        if nxt is not None:
            queue.append((nxt, pool.submit(fn, nxt)))
        yield item, fut


@dataclass
class _Pending:
    source: Source
    rgb: np.ndarray
    work: np.ndarray
    seconds: float


class _Run:
    """One predict() call: the loops over images and videos and the bookkeeping for the index."""

    def __init__(self, engine: Engine, writer: OutputWriter, batch_size: int, pool: ThreadPoolExecutor,
                 bar: Any, task: int, skipped: list[Skipped], max_pixels: int = MAX_PIXELS) -> None:
        self.engine, self.writer, self.batch_size, self.pool = engine, writer, batch_size, pool
        self.max_pixels = max_pixels
        self.bar, self.task = bar, task
        self.records: dict[Path, dict[str, Any]] = {}
        self.writes: deque[Future[None]] = deque()
        self.skipped = skipped
        self.pictures = 0

    def _advance(self, n: int) -> None:
        self.bar.update(self.task, advance=n, rate=rate(self.bar, self.task))

    def _read(self, source: Source) -> _Pending:
        t0 = time.perf_counter()
        try:
            rgb = read_image(source.path, self.max_pixels)
            work = working_image(rgb, self.engine.options)
        except MemoryError:
            raise UnreadableInput("not enough memory to decode it") from None
        return _Pending(source, rgb, work, time.perf_counter() - t0)

    def _write(self, item: _Pending, ids: np.ndarray, share: float) -> None:
        t0 = time.perf_counter()
        outputs = self.writer.write_image(item.source.name, item.rgb, ids)
        h, w = item.rgb.shape[:2]
        self.records[item.source.path] = {
            "input": str(item.source.path), "name": item.source.name.as_posix(), "kind": "image",
            "size": [w, h], "outputs": outputs,
            "seconds": round(item.seconds + share + time.perf_counter() - t0, 4),
            **({"name_note": item.source.note} if item.source.note else {}),
        }

    def _flush(self, items: list[_Pending]) -> None:
        t0 = time.perf_counter()
        try:
            preds = self.engine([i.work for i in items], [i.rgb.shape[:2] for i in items])
        except (MemoryError, RuntimeError) as exc:  # out of memory: alone it may fit; else skip it, go on
            if not _out_of_memory(exc):
                raise
            if len(items) > 1:
                for item in items:
                    self._flush([item])
                return
            self.skipped.append(Skipped(str(items[0].source.path), f"out of memory segmenting it "
                                        f"({items[0].rgb.shape[1]}x{items[0].rgb.shape[0]} pixels)"))
            self._advance(1)
            return
        share = (time.perf_counter() - t0) / len(items)
        for item, ids in zip(items, preds):
            self.writes.append(self.pool.submit(self._write, item, ids, share))
        while len(self.writes) > 2 * self.batch_size:
            self.writes.popleft().result()
        self.pictures += len(items)
        self._advance(len(items))

    def images(self, sources: list[Source]) -> None:
        buckets: dict[tuple[int, ...], list[_Pending]] = {}
        for source, fut in _prefetch(self.pool, self._read, sources, depth=2 * self.batch_size):
            try:
                item = fut.result()
            except UnreadableInput as exc:
                self.skipped.append(Skipped(str(source.path), str(exc)))
                self._advance(1)
                continue
            bucket = buckets.setdefault(item.work.shape, [])
            bucket.append(item)
            if len(bucket) >= self.batch_size:
                self._flush(buckets.pop(item.work.shape))
            elif sum(len(b) for b in buckets.values()) > 2 * self.batch_size:  # many sizes: bound memory
                self._flush(buckets.pop(max(buckets, key=lambda k: len(buckets[k]))))
        for key in list(buckets):
            self._flush(buckets.pop(key))
        while self.writes:
            self.writes.popleft().result()

    def video(self, source: Source) -> None:
        t0 = time.perf_counter()
        try:
            reader = VideoReader(source.path, self.max_pixels)
        except UnreadableInput as exc:
            self.skipped.append(Skipped(str(source.path), str(exc)))
            return
        sink = self.writer.open_video(source.name, reader.fps)
        try:
            with reader:
                frames: list[np.ndarray] = []
                for frame in reader.frames():
                    frames.append(frame)
                    if len(frames) == self.batch_size:
                        self._video_batch(sink, frames)
                        frames = []
                if frames:
                    self._video_batch(sink, frames)
            if sink.frames == 0:
                sink.abort()
                self.skipped.append(Skipped(str(source.path), "no frame could be decoded"))
                return
            outputs = sink.commit()
        except BaseException:
            sink.abort()
            raise
        self.records[source.path] = {
            "input": str(source.path), "name": source.name.as_posix(), "kind": "video",
            "size": [reader.width, reader.height], "fps": reader.fps, "frames": sink.frames,
            "outputs": outputs, "video_codec": sink.codec, "seconds": round(time.perf_counter() - t0, 4),
            **({"name_note": source.note} if source.note else {}),
        }

    def _video_batch(self, sink: Any, frames: list[np.ndarray]) -> None:
        work = [working_image(f, self.engine.options) for f in frames]
        for frame, ids in zip(frames, self.engine(work, [f.shape[:2] for f in frames])):
            sink.add(frame, ids)
        self.pictures += len(frames)
        self._advance(len(frames))


def _out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or "out of memory" in str(exc).lower() or "can't allocate" in str(exc)


def _estimate_frames(sources: list[Source], skipped: list[Skipped], spec: OutputSpec,
                     max_pixels: int = MAX_PIXELS) -> tuple[list[Source], int]:
    """Videos that open and get an output, and their frame count as the container records it (for the bar)."""
    ok, total = [], 0
    for s in sources:
        if not (spec.overlay or spec.frames):
            skipped.append(Skipped(str(s.path), "nothing to write for a video: needs the overlay or per-frame outputs"))
            continue
        try:
            with VideoReader(s.path, max_pixels) as reader:
                total += reader.frame_estimate
            ok.append(s)
        except UnreadableInput as exc:
            skipped.append(Skipped(str(s.path), str(exc)))
    return ok, total


def planned_files(writer: OutputWriter, sources: Sequence[Source]) -> list[str]:
    """The files (and, ending in ``/``, the frame trees) a run writes for ``sources``, relative to its folder."""
    files = []
    for s in sources:
        if s.kind == "image":
            files += [writer.relpath(kind, s.name).as_posix() for kind in writer.spec.kinds()]
        else:
            if writer.spec.overlay:
                files.append(writer.video_relpath(s.name).as_posix())
            if writer.spec.frames:
                files += [(PurePosixPath(kind) / s.name).as_posix() + "/" for kind in writer.spec.kinds()]
    return files


def _own_files(index: dict[str, Any] | None) -> list[str]:
    """The files an earlier index says hrseg wrote (an index of before ``files`` existed: from its inputs)."""
    if index is None:
        return []
    files = index.get("files")
    if isinstance(files, list):
        return [f for f in files if isinstance(f, str)]
    out = []
    for record in index.get("inputs") or []:
        for value in (record.get("outputs") or {}).values() if isinstance(record, dict) else ():
            if isinstance(value, str):
                out.append(value)
    return out


def _expand_trees(root: Path, files: Iterable[str]) -> list[str]:
    """``dir/`` entries replaced by the files under them (a video's frames)."""
    out = []
    for f in files:
        if f.endswith("/"):
            tree = root / f
            if tree.is_dir():
                out += [p.relative_to(root).as_posix() for p in tree.rglob("*") if p.is_file()]
        else:
            out.append(f)
    return out


def predict(segmenter: Callable[[torch.Tensor], Any], inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
            out_dir: str | os.PathLike[str], options: InferenceOptions | None = None,
            outputs: OutputSpec | None = None, *, batch_size: int = 4, device: str = "auto",
            amp: bool | None = None, workers: int = 4, show_progress: bool = True,
            index_name: str = INDEX_NAME, overwrite: bool = False, model: dict[str, Any] | None = None,
            max_pixels: int = MAX_PIXELS) -> PredictResult:
    """Segment every image and video in ``inputs``; write the chosen files and a JSON index under ``out_dir``.

    ``options.size`` should be the resolution the model was trained at (the
    caller knows it; None feeds images at their own size). Unreadable inputs
    (and images over ``max_pixels``) are listed in the result and the index,
    never fatal to the others; only finding nothing at all is an error. A
    module ``segmenter`` is moved to ``device`` and put in eval mode for the call.

    The folder is owned the way a run folder is: one predict at a time (a
    lock), files hrseg did not write are never replaced without ``overwrite``,
    and the index is written first, marked incomplete, listing every file the
    run may write, so a killed run's files are still known as hrseg's.
    ``overwrite`` also removes hrseg's files of earlier runs that this one
    does not write again; nothing else is ever removed.
    """
    opts = (options or InferenceOptions()).validate()
    spec = (outputs or OutputSpec()).validate()
    if batch_size < 1:
        raise HrsegError(f"--batch-size: must be >= 1, got {batch_size}")
    if workers < 1:
        raise HrsegError(f"--workers: must be >= 1, got {workers}")
    if max_pixels < 1:
        raise HrsegError(f"--max-pixels: must be >= 1, got {max_pixels}")
    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise HrsegError(f"--out {root}: is a file, not a folder")
    # the output trees are never read back, even when --out is an input folder itself
    found = collect_inputs(inputs, exclude=[root] + [root / kind for kind in KINDS])
    with folder_lock(root, "another hrseg predict is writing into this folder"):
        return _predict_locked(segmenter, found, root, opts, spec, batch_size, device, amp, workers,
                               show_progress, index_name, overwrite, model, max_pixels)


def _predict_locked(segmenter: Callable[[torch.Tensor], Any], found: Any, root: Path, opts: InferenceOptions,
                    spec: OutputSpec, batch_size: int, device: str, amp: bool | None, workers: int,
                    show_progress: bool, index_name: str, overwrite: bool, model: dict[str, Any] | None,
                    max_pixels: int) -> PredictResult:
    index = root / index_name
    earlier = read_index(index, index_is_ours)
    if earlier is None and (index.exists() or index.is_symlink()) and not overwrite:
        raise HrsegError(f"--out {root}: {index_name} exists and was not written by hrseg predict; "
                         "pass --overwrite to replace it, or choose another --out")
    writer = OutputWriter(root, spec)
    planned = planned_files(writer, found.sources)
    own = set(_expand_trees(root, _own_files(earlier)))
    check_folder(root, own, [p for p in planned if not p.endswith("/")], overwrite)
    if overwrite:
        remove_own(root, own, keep=planned)
        own = set()
    kept = sorted(own - set(planned))
    skipped = list(found.skipped)
    dev = resolve_device(device)
    amp_dtype = resolve_amp(dev, amp)
    images = [s for s in found.sources if s.kind == "image"]
    videos, frames = _estimate_frames([s for s in found.sources if s.kind == "video"], skipped, spec, max_pixels)

    def result(run: _Run | None, seconds: float, complete: bool, files: list[str]) -> PredictResult:
        order = [s.path for s in found.sources]
        records = run.records if run is not None else {}
        return PredictResult(
            out_dir=root, index=index, inputs=[records[p] for p in order if p in records],
            skipped=run.skipped if run is not None else skipped, images=run.pictures if run is not None else 0,
            seconds=seconds, device=str(dev), amp=None if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
            options=opts.to_dict(), outputs=spec.to_dict(), model=model, files=files, complete=complete,
        )

    write_json(index, result(None, 0.0, False, sorted(set(planned) | set(kept))).to_dict())
    if isinstance(segmenter, torch.nn.Module):
        segmenter.to(dev)
    t0 = time.perf_counter()
    with eval_mode(segmenter):
        with ThreadPoolExecutor(workers) as pool, progress(disable=not show_progress) as bar:
            task = bar.add_task(f"predict {root.name or root}", total=len(images) + frames, rate="")
            run = _Run(Engine(segmenter, opts, dev, amp_dtype), writer, batch_size, pool, bar, task, skipped,
                       max_pixels)
            run.images(images)
            for v in videos:
                run.video(v)
    written = [f for r in run.records.values() for f in r["outputs"].values()]
    done = result(run, time.perf_counter() - t0, True, sorted(set(written) | set(kept)))
    write_json(index, done.to_dict())
    return done
