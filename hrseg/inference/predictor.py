"""Segment user images, folders and videos with an already-loaded segmenter, writing files and an index.

Images of the same working size are batched (after resizing to
``options.size`` every image qualifies); files are decoded and written by a
few threads (OpenCV releases the GIL) while the model runs. Per-image work is
in :mod:`hrseg.inference.engine`.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch

from hrseg.atomic import write_json
from hrseg.device import resolve_amp, resolve_device
from hrseg.errors import HrsegError
from hrseg.console import progress, rate
from hrseg.inference.engine import Engine, working_image
from hrseg.inference.outputs import OutputSpec, OutputWriter
from hrseg.inference.sources import Skipped, Source, UnreadableInput, VideoReader, collect_inputs, read_image
from hrseg.inference.tta import InferenceOptions
from hrseg.models.common import eval_mode

INDEX_NAME = "predictions.json"
INDEX_FORMAT = "hrseg-predictions/1"
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

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        kinds = [i["kind"] for i in self.inputs]
        return {
            "format": INDEX_FORMAT,
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
                 bar: Any, task: int, skipped: list[Skipped]) -> None:
        self.engine, self.writer, self.batch_size, self.pool = engine, writer, batch_size, pool
        self.bar, self.task = bar, task
        self.records: dict[Path, dict[str, Any]] = {}
        self.writes: deque[Future[None]] = deque()
        self.skipped = skipped
        self.pictures = 0

    def _advance(self, n: int) -> None:
        self.bar.update(self.task, advance=n, rate=rate(self.bar, self.task))

    def _read(self, source: Source) -> _Pending:
        t0 = time.perf_counter()
        rgb = read_image(source.path)
        return _Pending(source, rgb, working_image(rgb, self.engine.options), time.perf_counter() - t0)

    def _write(self, item: _Pending, ids: np.ndarray, share: float) -> None:
        t0 = time.perf_counter()
        outputs = self.writer.write_image(item.source.name, item.rgb, ids)
        h, w = item.rgb.shape[:2]
        self.records[item.source.path] = {
            "input": str(item.source.path), "name": item.source.name.as_posix(), "kind": "image",
            "size": [w, h], "outputs": outputs,
            "seconds": round(item.seconds + share + time.perf_counter() - t0, 4),
        }

    def _flush(self, items: list[_Pending]) -> None:
        t0 = time.perf_counter()
        preds = self.engine([i.work for i in items], [i.rgb.shape[:2] for i in items])
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
            reader = VideoReader(source.path)
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
            "outputs": outputs, "seconds": round(time.perf_counter() - t0, 4),
        }

    def _video_batch(self, sink: Any, frames: list[np.ndarray]) -> None:
        work = [working_image(f, self.engine.options) for f in frames]
        for frame, ids in zip(frames, self.engine(work, [f.shape[:2] for f in frames])):
            sink.add(frame, ids)
        self.pictures += len(frames)
        self._advance(len(frames))


def _estimate_frames(sources: list[Source], skipped: list[Skipped], spec: OutputSpec) -> tuple[list[Source], int]:
    """Videos that open and get an output, and their frame count as the container records it (for the bar)."""
    ok, total = [], 0
    for s in sources:
        if not (spec.overlay or spec.frames):
            skipped.append(Skipped(str(s.path), "nothing to write for a video: needs the overlay or per-frame outputs"))
            continue
        try:
            with VideoReader(s.path) as reader:
                total += reader.frame_estimate
            ok.append(s)
        except UnreadableInput as exc:
            skipped.append(Skipped(str(s.path), str(exc)))
    return ok, total


def predict(segmenter: Callable[[torch.Tensor], Any], inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
            out_dir: str | os.PathLike[str], options: InferenceOptions | None = None,
            outputs: OutputSpec | None = None, *, batch_size: int = 4, device: str = "auto",
            amp: bool | None = None, workers: int = 4, show_progress: bool = True,
            index_name: str = INDEX_NAME) -> PredictResult:
    """Segment every image and video in ``inputs``; write the chosen files and a JSON index under ``out_dir``.

    ``options.size`` should be the resolution the model was trained at (the
    caller knows it; None feeds images at their own size). Unreadable inputs
    are listed in the result and the index, never fatal to the others; only
    finding nothing at all is an error. A module ``segmenter`` is moved to
    ``device`` and put in eval mode for the call.
    """
    opts = (options or InferenceOptions()).validate()
    spec = (outputs or OutputSpec()).validate()
    if batch_size < 1:
        raise HrsegError(f"--batch-size: must be >= 1, got {batch_size}")
    if workers < 1:
        raise HrsegError(f"--workers: must be >= 1, got {workers}")
    root = Path(out_dir)
    found = collect_inputs(inputs, exclude=[root])
    skipped = list(found.skipped)
    dev = resolve_device(device)
    amp_dtype = resolve_amp(dev, amp)
    images = [s for s in found.sources if s.kind == "image"]
    videos, frames = _estimate_frames([s for s in found.sources if s.kind == "video"], skipped, spec)
    if isinstance(segmenter, torch.nn.Module):
        segmenter.to(dev)
    t0 = time.perf_counter()
    with eval_mode(segmenter):
        with ThreadPoolExecutor(workers) as pool, progress(disable=not show_progress) as bar:
            task = bar.add_task(f"predict {root.name or root}", total=len(images) + frames, rate="")
            run = _Run(Engine(segmenter, opts, dev, amp_dtype), OutputWriter(root, spec), batch_size, pool,
                       bar, task, skipped)
            run.images(images)
            for v in videos:
                run.video(v)
    order = [s.path for s in found.sources]
    result = PredictResult(
        out_dir=root, index=root / index_name, inputs=[run.records[p] for p in order if p in run.records],
        skipped=run.skipped, images=run.pictures, seconds=time.perf_counter() - t0, device=str(dev),
        amp=None if amp_dtype is None else str(amp_dtype).removeprefix("torch."),
        options=opts.to_dict(), outputs=spec.to_dict(),
    )
    write_json(result.index, result.to_dict())
    return result
