"""What the user pointed at: image files, folders, glob patterns and videos, as a deterministic list.

A bad input never stops the others: missing paths, empty files, patterns or
folders without media are collected with a reason here, and files that turn
out unreadable are reported by :func:`read_image` / :class:`VideoReader` where
they are decoded. Only when *nothing* usable is found is that an error.

Output names mirror each file's path relative to the deepest folder shared by
everything given (a folder argument counts as its own root, a file as its
parent's), so ``a/x.png`` and ``b/x.png`` become ``a/x`` and ``b/x`` instead
of overwriting each other.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence

import cv2
import numpy as np

from hrseg.errors import HrsegError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm"})
_MAGIC = re.compile(r"[*?[]")


class UnreadableInput(Exception):
    """A listed file that cannot be decoded; the message is the reason (the predictor skips it)."""


@dataclass(frozen=True)
class Source:
    """One image or video to segment."""

    path: Path  # absolute
    name: PurePosixPath  # output name: relative path without the extension, e.g. ``city/frame_01``
    kind: str  # "image" or "video"


@dataclass(frozen=True)
class Skipped:
    """An input left out, and why (shown to the user and written to the JSON index)."""

    input: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"input": self.input, "reason": self.reason}


@dataclass
class Inputs:
    sources: list[Source]
    skipped: list[Skipped]


def media_kind(path: Path) -> str | None:
    ext = path.suffix.lower()
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    return None


def _walk(folder: Path, exclude: frozenset[str]) -> list[Path]:
    """Media files under ``folder``, recursively, in a fixed order; hidden entries and ``exclude`` are left out."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and os.path.abspath(os.path.join(root, d)) not in exclude]
        found += [Path(root) / f for f in files if not f.startswith(".") and media_kind(Path(f)) is not None]
    return sorted(found, key=lambda p: p.relative_to(folder).parts)


def _glob_root(pattern: str) -> Path:
    """The folder part of a pattern before its first wildcard (``data/*/x*.png`` -> ``data``)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if _MAGIC.search(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _excluded(path: Path, exclude: frozenset[str]) -> bool:
    full = os.path.abspath(path)
    return any(full == e or full.startswith(e + os.sep) for e in exclude)


def _expand(arg: str, skipped: list[Skipped], exclude: frozenset[str]) -> list[tuple[Path, Path]]:
    """One user argument -> (file, root its output name is relative to) pairs."""
    path = Path(arg)
    if path.is_dir():
        files = _walk(path, exclude)
        if not files:
            skipped.append(Skipped(arg, "folder holds no images or videos"))
        return [(f, path) for f in files]
    if path.exists() or not _MAGIC.search(arg):
        if not path.exists():
            skipped.append(Skipped(arg, "does not exist"))
            return []
        return [(path, path.parent)]
    root = _glob_root(arg)
    pairs: list[tuple[Path, Path]] = []
    for hit in sorted(glob.glob(arg, recursive=True)):
        p = Path(hit)
        if _excluded(p, exclude):
            continue
        if p.is_dir():
            pairs += [(f, root) for f in _walk(p, exclude)]
        elif media_kind(p) is not None:
            pairs.append((p, root))
    if not pairs:
        skipped.append(Skipped(arg, "pattern matches no images or videos"))
    return pairs


def _names(pairs: list[tuple[Path, Path]]) -> list[PurePosixPath]:
    """Relative output names under the common root; same stem in one folder (x.png, x.jpg) keeps the extension."""
    roots = [os.path.abspath(r) for _, r in pairs]
    common = os.path.commonpath(roots) if roots else ""
    rel = [PurePosixPath(Path(os.path.relpath(os.path.abspath(f), common)).as_posix()) for f, _ in pairs]
    stems = [r.with_suffix("") for r in rel]
    counts: dict[PurePosixPath, int] = {}
    for s in stems:
        counts[s] = counts.get(s, 0) + 1
    return [s if counts[s] == 1 else r.with_name(r.name.replace(".", "_")) for s, r in zip(stems, rel)]


def _problem(f: Path) -> str | None:
    """Why a listed file cannot be used, found without decoding it (None: looks usable)."""
    if media_kind(f) is None:
        return f"not an image or video file (extension {f.suffix or 'none'!r})"
    try:
        size = f.stat().st_size
    except OSError as exc:
        return f"cannot read file ({exc.strerror or exc})"
    return "empty file (0 bytes)" if size == 0 else None


def collect_inputs(args: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                   exclude: Sequence[str | os.PathLike[str]] = ()) -> Inputs:
    """Expand files, folders (recursive) and globs into sources; problems become ``skipped`` entries.

    Folders and patterns never descend into ``exclude`` (the output folder, so
    predicting ``photos/`` into ``photos/pred`` twice does not segment its own
    overlays). Raises HrsegError only when nothing at all could be used,
    naming every argument and its problem.
    """
    skip_dirs = frozenset(os.path.abspath(e) for e in exclude)
    if isinstance(args, (str, os.PathLike)):
        args = [args]  # one path, not a sequence of characters
    if not args:
        raise HrsegError("no inputs given: name image files, folders, glob patterns or videos")
    skipped: list[Skipped] = []
    pairs: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    for arg in args:
        for f, root in _expand(os.fspath(arg), skipped, skip_dirs):
            key = f.resolve()
            if key in seen:
                continue
            seen.add(key)
            problem = _problem(f)
            if problem:
                skipped.append(Skipped(str(f), problem))
            else:
                pairs.append((f, root))
    if not pairs:
        detail = "; ".join(f"{s.input}: {s.reason}" for s in skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        raise HrsegError(f"no images or videos found: {detail}{more}")
    names = _names(pairs)
    sources = [Source(Path(os.path.abspath(f)), n, media_kind(f) or "") for (f, _), n in zip(pairs, names)]
    return Inputs(sources, skipped)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); grey, 16-bit and alpha images are converted; anything else is UnreadableInput."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UnreadableInput(f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise UnreadableInput("empty file (0 bytes)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UnreadableInput("not an image OpenCV can decode (corrupt or unsupported format)")
    return np.ascontiguousarray(image[:, :, ::-1])


class VideoReader:
    """Frames of a video as RGB arrays, with the fps and size the overlay video must keep."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            self._cap.release()
            raise UnreadableInput("not a video OpenCV can open (corrupt or unsupported codec)")
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if fps > 0 and np.isfinite(fps) else 25.0  # some containers do not record it
        self.frame_estimate = max(int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)

    def frames(self) -> Iterator[np.ndarray]:
        while True:
            ok, frame = self._cap.read()
            if not ok or frame is None:
                return
            yield np.ascontiguousarray(frame[:, :, ::-1])

    def close(self) -> None:
        self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
