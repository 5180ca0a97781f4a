"""Prediction PNGs in the Cityscapes result format, and scoring a folder of them.

cityscapesScripts' ``evalPixelLevelSemanticLabeling`` finds the prediction for
``<city>_<seq>_<frame>_gtFine_labelIds.png`` by searching its results root
recursively for exactly one file matching ``<city>_<seq>_<frame>*.png``. So
labelId PNGs go to ``DIR/labelIds/<city>/<city>_<seq>_<frame>_pred_labelIds.png``
and colour PNGs to a *separate* tree ``DIR/colour/`` (a colour file under the
results root would be a second match and the official script would refuse).
"""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

import cv2
import numpy as np

from hrseg.data.labels import KNOWN_LABEL_IDS, LABEL_TO_TRAIN, TRAIN_TO_LABEL, colorize
from hrseg.data.png import write_png
from hrseg.errors import HrsegError

LABEL_IDS_DIR = "labelIds"
COLOUR_DIR = "colour"
_CS_NAME = re.compile(r"^(?P<city>[A-Za-z-]+)_(?P<seq>\d{6})_(?P<frame>\d{6})_")


def relative_stem(name: str) -> PurePosixPath:
    """Dataset-relative image name -> path without the dataset's image folder and suffix.

    ``leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png`` ->
    ``frankfurt/frankfurt_000000_000294``; ``images/00001.png`` -> ``00001``.
    """
    path = PurePosixPath(name.replace("\\", "/"))
    parts = list(path.parts)
    if parts and parts[0] == "leftImg8bit":
        parts = parts[2:]  # drop "leftImg8bit/<split>"
    elif parts and parts[0] in ("images", "RGB"):
        parts = parts[1:]
    stem = PurePosixPath(*parts) if parts else PurePosixPath(path.name)
    base = stem.name
    for suffix in (".png", ".jpg", ".jpeg"):
        if base.lower().endswith(suffix):
            base = base[: -len(suffix)]
    if base.endswith("_leftImg8bit"):
        base = base[: -len("_leftImg8bit")]
    return stem.with_name(base)


def prediction_path(name: str, kind: str = "labelIds") -> PurePosixPath:
    """Relative path of the prediction PNG for a dataset image, under ``DIR``."""
    stem = relative_stem(name)
    if kind == "labelIds":
        return PurePosixPath(LABEL_IDS_DIR) / stem.with_name(stem.name + "_pred_labelIds.png")
    if kind == "colour":
        return PurePosixPath(COLOUR_DIR) / stem.with_name(stem.name + "_pred_color.png")
    raise ValueError(f"unknown prediction kind {kind!r}")


@dataclass(frozen=True)
class PredictionWriter:
    """Writes labelId (and optionally colour) PNGs for trainId predictions, atomically."""

    root: Path
    colour: bool = False

    def write(self, name: str, train_ids: np.ndarray) -> Path:
        ids = np.asarray(train_ids, dtype=np.uint8)
        target = self.root / prediction_path(name, "labelIds")
        write_png(target, TRAIN_TO_LABEL[ids])
        if self.colour:
            write_png(self.root / prediction_path(name, "colour"), colorize(ids))
        return target

    @property
    def label_ids_dir(self) -> Path:
        return self.root / LABEL_IDS_DIR


def _index_folder(folder: Path) -> dict[str, list[Path]]:
    """File name -> paths, for every PNG under ``folder`` (searched recursively, like the official script)."""
    found: dict[str, list[Path]] = {}
    for root, _dirs, files in os.walk(folder):
        for f in files:
            if f.lower().endswith(".png"):
                found.setdefault(f, []).append(Path(root) / f)
    return found


def find_prediction(index: dict[str, list[Path]], name: str, folder: Path) -> Path:
    """The one prediction PNG for dataset image ``name``.

    Cityscapes names match the official rule (``<city>_<seq>_<frame>*.png``);
    other names must be ``<stem>_pred_labelIds.png`` or ``<stem>.png``.
    """
    stem = relative_stem(name).name
    m = _CS_NAME.match(stem + "_")
    if m:
        pattern = f"{m['city']}_{m['seq']}_{m['frame']}*.png"
        hits = [p for f, paths in index.items() if fnmatch.fnmatch(f, pattern) for p in paths]
    else:
        hits = [p for f in (f"{stem}_pred_labelIds.png", f"{stem}.png") for p in index.get(f, [])]
    if not hits:
        expected = prediction_path(name).name
        raise HrsegError(f"{folder}: no prediction for {name} (expected a file named like {expected})")
    if len(hits) > 1:
        listed = ", ".join(str(h) for h in sorted(hits)[:3])
        raise HrsegError(f"{folder}: several predictions match {name}: {listed}")
    return hits[0]


def read_prediction(path: Path, expected_hw: tuple[int, int], ids: str = "label") -> np.ndarray:
    """A prediction PNG -> trainIds (H, W); wrong size, colour or unknown ids are user errors."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise HrsegError(f"{path}: cannot read this PNG")
    if raw.ndim != 2:
        raise HrsegError(f"{path}: prediction has {raw.shape[2]} channels; expected a single-channel id PNG")
    if raw.shape != tuple(expected_hw):
        raise HrsegError(
            f"{path}: prediction is {raw.shape[1]}x{raw.shape[0]} but the ground truth is "
            f"{expected_hw[1]}x{expected_hw[0]} (W x H); predictions must be at full label resolution"
        )
    if raw.dtype != np.uint8:
        raise HrsegError(f"{path}: prediction has dtype {raw.dtype}; expected 8-bit ids")
    if ids == "label":
        unknown = np.unique(raw[~KNOWN_LABEL_IDS[raw]])
        if unknown.size:
            raise HrsegError(f"{path}: unknown Cityscapes labelId(s) {unknown[:5].tolist()}")
        return LABEL_TO_TRAIN[raw]
    if ids == "train":
        from hrseg.data.labels import IGNORE_INDEX, NUM_CLASSES

        unknown = np.unique(raw[(raw >= NUM_CLASSES) & (raw != IGNORE_INDEX)])
        if unknown.size:
            raise HrsegError(f"{path}: trainId(s) {unknown[:5].tolist()} out of range; --ids train expects "
                             f"0-{NUM_CLASSES - 1} and {IGNORE_INDEX} (ignore)")
        return raw
    raise ValueError(f"ids must be 'label' or 'train', got {ids!r}")


def iter_predictions(folder: Path, names: Iterable[str]) -> Iterable[tuple[str, Path]]:
    """(name, prediction path) for each dataset image, failing early on the first missing one."""
    if not folder.is_dir():
        raise HrsegError(f"{folder}: prediction folder does not exist")
    index = _index_folder(folder)
    for name in names:
        yield name, find_prediction(index, name, folder)

