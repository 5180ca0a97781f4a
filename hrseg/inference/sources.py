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
    note: str | None = None  # why the name is not the plain one (a clash), for the index


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
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except (OSError, RuntimeError):
            skipped.append(Skipped(arg, "symbolic link loop or dangling link"))
            return []
    if exclude and _excluded(path, exclude):
        skipped.append(Skipped(arg, "is the output folder or inside it; outputs are never read as input "
                                    "(choose an --out outside the inputs)"))
        return []
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


def _names(pairs: list[tuple[Path, Path]]) -> tuple[list[PurePosixPath], list[str | None]]:
    """Relative output names under the common root that cannot collide, and a note for each renamed one.

    The common root also holds every file itself (a pattern like ``a/*/../../b/x.png`` ends elsewhere than its
    fixed prefix), so no name climbs out of the output folder. Same stem in one folder (x.png, x.jpg) keeps the
    extension (``x_png``, ``x_jpg``); a name still taken (``x_png.png`` beside them) gets ``~2``, ``~3``, ...
    """
    files = [os.path.abspath(f) for f, _ in pairs]
    roots = [os.path.abspath(r) for _, r in pairs] + [os.path.dirname(f) for f in files]
    common = os.path.commonpath(roots) if roots else ""
    rel = [PurePosixPath(Path(os.path.relpath(f, common)).as_posix()) for f in files]
    stems = [r.with_suffix("") for r in rel]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem.as_posix().casefold()] = counts.get(stem.as_posix().casefold(), 0) + 1
    wanted = [s if counts[s.as_posix().casefold()] == 1 else r.with_name(r.name.replace(".", "_"))
              for s, r in zip(stems, rel)]
    taken: set[str] = set()
    names: list[PurePosixPath] = []
    notes: list[str | None] = []
    for want in wanted:
        name, k = want, 1
        while name.as_posix().casefold() in taken:  # casefold: one name on case-insensitive file systems too
            k += 1
            name = want.with_name(f"{want.name}~{k}")
        taken.add(name.as_posix().casefold())
        names.append(name)
        notes.append(None if name == want else f"renamed to {name.as_posix()}: {want.as_posix()} is another input's name")
    return names, notes


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
            try:
                key = f.resolve(strict=True)
            except (OSError, RuntimeError) as exc:  # a link to itself, a dangling link
                reason = "symbolic link loop" if isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == 40 \
                    else f"cannot read file ({getattr(exc, 'strerror', None) or exc})"
                skipped.append(Skipped(str(f), reason))
                continue
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
    names, notes = _names(pairs)
    sources = [Source(Path(os.path.abspath(f)), n, media_kind(f) or "", note)
               for (f, _), n, note in zip(pairs, names, notes)]
    return Inputs(sources, skipped)


#: the most pixels one input may have (a decompression bomb is refused before it is decoded): 100 MP holds
#: every camera's photos (48 MP phones, 61 MP full frame); ~20 bytes a pixel are then in memory at once
MAX_PIXELS = 100_000_000
BYTES_PER_PIXEL_ON_DISK = 8  # no image file of N pixels is larger than this times N (16-bit RGBA, uncompressed)


def image_header_size(head: bytes) -> tuple[int, int] | None:
    """(W, H) from a PNG, JPEG or BMP header without decoding; None when the format is not one of those."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24 and head[12:16] == b"IHDR":
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:2] == b"BM" and len(head) >= 26:
        return abs(int.from_bytes(head[18:22], "little", signed=True)), \
            abs(int.from_bytes(head[22:26], "little", signed=True))
    if head[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(head):
            if head[i] != 0xFF:
                i += 1
                continue
            marker = head[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                i += 1 if marker == 0xFF else 2
                continue
            length = int.from_bytes(head[i + 2:i + 4], "big")
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                return int.from_bytes(head[i + 7:i + 9], "big"), int.from_bytes(head[i + 5:i + 7], "big")
            i += 2 + length
    return None


def read_image(path: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """RGB uint8 (H, W, 3); grey, 16-bit and alpha images are converted; anything else is UnreadableInput.

    The size is checked before anything large is read or decoded: a file larger than any image of
    ``max_pixels`` could be, or a header announcing more pixels, is refused with the numbers.
    """
    try:
        size = path.stat().st_size
        if size > max_pixels * BYTES_PER_PIXEL_ON_DISK:
            raise UnreadableInput(f"file is {size / 2**20:,.0f} MiB, more than an image of at most "
                                  f"{max_pixels:,} pixels can be (--max-pixels)")
        with path.open("rb") as f:
            head = f.read(1 << 16)
            wh = image_header_size(head)
            if wh is not None and wh[0] * wh[1] > max_pixels:
                raise UnreadableInput(f"image is {wh[0]}x{wh[1]} = {wh[0] * wh[1]:,} pixels, more than the limit "
                                      f"of {max_pixels:,} (--max-pixels)")
            data = head + f.read()
    except OSError as exc:
        raise UnreadableInput(f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise UnreadableInput("empty file (0 bytes)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise UnreadableInput(f"OpenCV cannot decode it ({str(exc).strip().splitlines()[-1]})") from None
    if image is None:
        raise UnreadableInput("not an image OpenCV can decode (corrupt or unsupported format)")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise UnreadableInput(f"image is {image.shape[1]}x{image.shape[0]} pixels, more than the limit of "
                              f"{max_pixels:,} (--max-pixels)")
    return np.ascontiguousarray(image[:, :, ::-1])


class VideoReader:
    """Frames of a video as RGB arrays, with the fps and size the overlay video must keep."""

    def __init__(self, path: Path, max_pixels: int = MAX_PIXELS) -> None:
        self.path = path
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            self._cap.release()
            raise UnreadableInput("not a video OpenCV can open (corrupt or unsupported codec)")
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if self.width * self.height > max_pixels:
            self._cap.release()
            raise UnreadableInput(f"frames are {self.width}x{self.height} pixels, more than the limit of "
                                  f"{max_pixels:,} (--max-pixels)")
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
