"""Dataset formats as a registry (``DATASETS``: one ``DatasetSpec`` each), and GTAV, Cityscapes, SYNTHIA.

A format is its spec: name, splits, default stored size, the splits evaluated
at full resolution, how a split's files are listed and how a label file turns
into trainIds. ``prepare``, ``hrseg prepare <format>`` (one generated command
per spec) and this module's :func:`list_split` / :func:`decode` read it, so a
new format is one module in ``hrseg/data/formats/`` that calls
:func:`register_dataset` (``formats/folder.py``: any folder of images and label
PNGs with a class table).

Listing (which files form a split) and decoding (one image/label pair to
RGB + trainIds) are separate so ``prepare`` can list in the parent and decode
in worker processes. Real downloads have defects; instead of failing on the
first one, every defect is counted under a fixed reason name and the affected
files are listed, and ``prepare`` prints all counts at the end:

- ``missing_label`` / ``missing_image``: the pair is incomplete (GTAV: only
  the intersection of ``images/`` and ``labels/`` is used);
- ``corrupt``: the image or label cannot be decoded (truncated or empty file,
  a label that is not an 8-bit PNG, e.g. a JPEG renamed ``.png``); skipped;
- ``blank``: the image has a single colour (GTAV 15188, 17705); skipped;
- ``label_resized``: label and image sizes differ; the label is resized
  (nearest) to the image;
- ``unknown_label_ids``: the label holds ids outside the table; those pixels
  become 255 (``unknown_label_pixels`` counts them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from hrseg.data.labels import IGNORE_INDEX, KNOWN_LABEL_IDS, LABEL_TO_TRAIN, SYNTHIA_TO_TRAIN
from hrseg.data.png import PNG_SIGNATURE, PngError, decode_palette_indices
from hrseg.errors import HrsegError
from hrseg.registry import Registry

SYNTHIA_KNOWN_IDS = np.zeros(65536, dtype=bool)
SYNTHIA_KNOWN_IDS[:23] = True  # SYNTHIA's classes 0 (void) .. 22


@dataclass(frozen=True)
class RawSample:
    """Paths of one pair; ``name`` is the image path relative to the dataset root."""

    name: str
    image: Path
    label: Path | None
    realism: Path | None = None
    classes: Path | None = None  # the class table a format reads labels with (folder format)


@dataclass
class Listing:
    """The samples of a split, sorted by name, and the files that could not be paired."""

    dataset: str
    split: str
    root: Path
    samples: list[RawSample]
    skipped: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Decoded:
    """One decoded pair at original resolution, or the reason it was skipped."""

    name: str
    image: np.ndarray | None = None  # (H, W, 3) uint8 RGB
    label: np.ndarray | None = None  # (H, W) uint8 trainIds
    realism: np.ndarray | None = None  # (H, W) uint8
    skip: str | None = None
    detail: str = ""
    events: dict[str, int] = field(default_factory=dict)


def _require_dirs(root: Path, dataset: str, dirs: list[Path]) -> None:
    if not root.is_dir():
        raise HrsegError(f"--root {root}: directory does not exist")
    missing = [d for d in dirs if not d.is_dir()]
    if missing:
        expected = ", ".join(str(d.relative_to(root)) + "/" for d in dirs)
        raise HrsegError(
            f"--root {root}: not a {dataset} layout; expected folders {expected} "
            f"(missing {', '.join(str(d.relative_to(root)) + '/' for d in missing)})"
        )


def _pngs(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.glob("*.png") if p.is_file()}


def list_gtav(root: Path) -> Listing:
    """``images/NNNNN.png`` + ``labels/NNNNN.png`` (+ optional ``realism/``): their intersection."""
    images, labels, realism = root / "images", root / "labels", root / "realism"
    _require_dirs(root, "GTAV", [images, labels])
    imgs, labs = _pngs(images), _pngs(labels)
    reals = _pngs(realism) if realism.is_dir() else {}
    samples = [
        RawSample(f"images/{n}", imgs[n], labs[n], reals.get(n))
        for n in sorted(imgs.keys() & labs.keys())
    ]
    skipped: dict[str, list[str]] = {}
    if imgs.keys() - labs.keys():
        skipped["missing_label"] = [f"images/{n}" for n in sorted(imgs.keys() - labs.keys())]
    if labs.keys() - imgs.keys():
        skipped["missing_image"] = [f"labels/{n}" for n in sorted(labs.keys() - imgs.keys())]
    if reals and len(reals.keys() & {Path(s.name).name for s in samples}) != len(samples):
        raise HrsegError(f"{realism}: realism masks exist for some images but not all; remove the folder or complete it")
    return Listing("gtav", "train", root, samples, skipped)


def list_cityscapes(root: Path, split: str) -> Listing:
    """``leftImg8bit/SPLIT/CITY/*_leftImg8bit.png`` + ``gtFine/SPLIT/CITY/*_gtFine_labelIds.png``."""
    left, gt = root / "leftImg8bit" / split, root / "gtFine" / split
    required = [left] if split == "test" else [left, gt]
    _require_dirs(root, "Cityscapes", required)
    samples: list[RawSample] = []
    skipped: dict[str, list[str]] = {}
    found_labels: set[Path] = set()
    for img in sorted(left.glob("*/*_leftImg8bit.png")):
        city = img.parent.name
        stem = img.name[: -len("_leftImg8bit.png")]
        lab = gt / city / f"{stem}_gtFine_labelIds.png"
        name = str(img.relative_to(root))
        if lab.is_file():
            found_labels.add(lab)
            samples.append(RawSample(name, img, lab))
        elif split == "test":
            samples.append(RawSample(name, img, None))
        else:
            skipped.setdefault("missing_label", []).append(name)
    if gt.is_dir():
        orphans = sorted(set(gt.glob("*/*_gtFine_labelIds.png")) - found_labels)
        if orphans:
            skipped["missing_image"] = [str(p.relative_to(root)) for p in orphans]
    return Listing("cityscapes", split, root, samples, skipped)


def list_synthia(root: Path) -> Listing:
    """``RGB/*.png`` + ``GT/LABELS/*.png`` (16-bit, class id in the last OpenCV channel)."""
    rgb, labels = root / "RGB", root / "GT" / "LABELS"
    _require_dirs(root, "SYNTHIA-RAND-CITYSCAPES", [rgb, labels])
    imgs, labs = _pngs(rgb), _pngs(labels)
    samples = [RawSample(f"RGB/{n}", imgs[n], labs[n]) for n in sorted(imgs.keys() & labs.keys())]
    skipped: dict[str, list[str]] = {}
    if imgs.keys() - labs.keys():
        skipped["missing_label"] = [f"RGB/{n}" for n in sorted(imgs.keys() - labs.keys())]
    if labs.keys() - imgs.keys():
        skipped["missing_image"] = [f"GT/LABELS/{n}" for n in sorted(labs.keys() - imgs.keys())]
    return Listing("synthia", "train", root, samples, skipped)


def list_split(dataset: str, root: str | Path, split: str) -> Listing:
    """The sorted samples of ``dataset``/``split`` under ``root``; layout problems are user errors."""
    root = Path(root)
    spec = DATASETS[dataset]
    spec.check_split(split)
    listing = spec.list(root, split)
    if not listing.samples:
        raise HrsegError(f"--root {root}: {dataset} split {split!r} is empty (no image/label pairs found)")
    return listing


def _read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if not data:
        raise PngError("empty file (0 bytes)")
    return data


def _decode_rgb(data: bytes) -> np.ndarray | None:
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return None
    return None if img is None else np.ascontiguousarray(img[:, :, ::-1])


def _png_header(data: bytes) -> tuple[int, int]:
    """(bit depth, colour type) of PNG bytes; anything else (a JPEG named .png ...) is a PngError."""
    if not data.startswith(PNG_SIGNATURE):
        raise PngError("not a PNG file (bad signature; e.g. a JPEG saved under a .png name)")
    if len(data) < 33 or data[12:16] != b"IHDR":
        raise PngError("PNG without a valid IHDR header")
    return data[24], data[25]


def _imdecode_unchanged(data: bytes) -> np.ndarray:
    try:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        raw = None
    if raw is None:
        raise PngError("corrupt PNG data")
    return raw


def _labelid_png(data: bytes, palettised: bool) -> np.ndarray:
    """Cityscapes labelIds from an 8-bit PNG: palette indices (GTAV) or grey values (Cityscapes)."""
    depth, colour = _png_header(data)
    if depth > 8:
        kind = {0: "grey", 2: "colour", 3: "palettised", 4: "grey+alpha", 6: "colour+alpha"}.get(colour, "")
        raise PngError(f"label PNG is {depth}-bit {kind}; labelIds must be 8-bit palettised or 8-bit grey")
    if palettised:
        return decode_palette_indices(data)
    raw = _imdecode_unchanged(data)
    if raw.ndim != 2:
        raise PngError("Cityscapes labelIds PNG must be single-channel")
    return raw


def _to_train(ids: np.ndarray, known: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, int]:
    return table[ids], int(ids.size - np.count_nonzero(known[ids]))


def gtav_labels(data: bytes, sample: RawSample) -> tuple[np.ndarray, int]:
    return _to_train(_labelid_png(data, palettised=True), KNOWN_LABEL_IDS, LABEL_TO_TRAIN)


def cityscapes_labels(data: bytes, sample: RawSample) -> tuple[np.ndarray, int]:
    return _to_train(_labelid_png(data, palettised=False), KNOWN_LABEL_IDS, LABEL_TO_TRAIN)


def synthia_labels(data: bytes, sample: RawSample) -> tuple[np.ndarray, int]:
    """16-bit PNG, the class id in the last OpenCV channel."""
    _png_header(data)
    raw = _imdecode_unchanged(data)
    return _to_train(raw[:, :, -1] if raw.ndim == 3 else raw, SYNTHIA_KNOWN_IDS, SYNTHIA_TO_TRAIN)


@dataclass(frozen=True)
class DatasetSpec:
    """One on-disk dataset format: everything prepare, the readers and ``hrseg prepare <name>`` need."""

    name: str  # `hrseg prepare NAME`, and the prepared folder DATA/NAME/ unless renamed (--name)
    title: str  # in messages: "not a GTAV layout"
    help: str  # the prepare command's help: the layout it reads
    splits: tuple[str, ...]
    default_size: tuple[int, int]  # (W, H) the images are stored at unless --size
    list: Callable[[Path, str], Listing]  # (root, split) -> the split's samples
    labels: Callable[[bytes, RawSample], tuple[np.ndarray, int]]  # label file -> (trainIds, unknown pixels)
    evaluated_splits: tuple[str, ...] = ()  # prepared with full-resolution labels (what eval scores)
    default_splits: tuple[str, ...] = ("train",)  # prepared when no --split is given
    renamable: bool = False  # --name: several datasets of this format side by side

    def check_split(self, split: str) -> str:
        if split not in self.splits:
            raise HrsegError(f"--split {split}: {self.name} has the split(s) {', '.join(self.splits)}")
        return split


DATASETS: Registry[DatasetSpec] = Registry("dataset format", "hrseg prepare")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a format; ``hrseg prepare`` gains a command of its name."""
    return DATASETS.add(spec.name, spec)


register_dataset(DatasetSpec(
    "gtav", "GTAV", "GTAV: images/ + labels/ (palettised labelIds) [+ realism/] -> DATA/gtav/train.",
    ("train",), (1280, 720), lambda root, split: list_gtav(root), gtav_labels))
register_dataset(DatasetSpec(
    "cityscapes", "Cityscapes",
    "Cityscapes: leftImg8bit/ + gtFine/*_labelIds.png -> DATA/cityscapes/<split> (val keeps full-size labels).",
    ("train", "val", "test"), (1024, 512), list_cityscapes, cityscapes_labels, evaluated_splits=("val",),
    default_splits=("train", "val")))
register_dataset(DatasetSpec(
    "synthia", "SYNTHIA-RAND-CITYSCAPES", "SYNTHIA-RAND-CITYSCAPES: RGB/ + GT/LABELS/ (16-bit) -> DATA/synthia/train.",
    ("train",), (1280, 760), lambda root, split: list_synthia(root), synthia_labels))


def is_blank(image: np.ndarray) -> bool:
    """A single-colour image (GTAV ships two black frames); nothing to learn from it."""
    flat = image.reshape(-1, image.shape[-1])
    return bool((flat == flat[0]).all())


def decode(dataset: str, sample: RawSample) -> Decoded:
    """Decode one pair to RGB + trainIds at original resolution, counting defects instead of failing."""
    out = Decoded(sample.name)
    try:
        image = _decode_rgb(_read_bytes(sample.image))
    except (OSError, PngError) as exc:
        return Decoded(sample.name, skip="corrupt", detail=f"{sample.image}: {exc}")
    if image is None:
        return Decoded(sample.name, skip="corrupt", detail=f"{sample.image}: cannot decode image")
    if is_blank(image):
        return Decoded(sample.name, skip="blank", detail=f"{sample.image}: blank image")
    h, w = image.shape[:2]
    if sample.label is None:
        label = np.full((h, w), IGNORE_INDEX, dtype=np.uint8)
    else:
        try:
            label, unknown = DATASETS[dataset].labels(_read_bytes(sample.label), sample)
        except (OSError, PngError) as exc:
            return Decoded(sample.name, skip="corrupt", detail=f"{sample.label}: {exc}")
        if unknown:
            out.events["unknown_label_ids"] = 1
            out.events["unknown_label_pixels"] = unknown
        if label.shape != (h, w):
            out.events["label_resized"] = 1
            label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    realism = None
    if sample.realism is not None:
        try:
            realism = cv2.imdecode(np.frombuffer(_read_bytes(sample.realism), np.uint8), cv2.IMREAD_GRAYSCALE)
        except (OSError, PngError, cv2.error):
            realism = None
        if realism is None:
            return Decoded(sample.name, skip="corrupt", detail=f"{sample.realism}: cannot decode realism mask")
        if realism.shape != (h, w):
            realism = cv2.resize(realism, (w, h), interpolation=cv2.INTER_NEAREST)
    out.image, out.label, out.realism = image, np.ascontiguousarray(label), realism
    return out


import hrseg.data.formats  # noqa: E402,F401  (registers every format module in hrseg/data/formats/)
