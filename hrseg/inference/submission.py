"""Cityscapes test-set submissions: full-resolution labelId PNGs named for the server, and their zip.

What the server wants, as its own tools describe it: the pixel-level
evaluation script of cityscapesScripts (``evalPixelLevelSemanticLabeling``,
``getPrediction``) walks one results folder recursively and, for a ground
truth file ``<city>_<seq>_<frame>_gtFine_labelIds.png``, takes the single
file whose name matches ``<city>_<seq>_<frame>*.png``; it stops with an error
when there is none or more than one. The prediction must be a single-channel
image of the ground truth's size (2048x1024 for Cityscapes) whose pixel
values are Cityscapes *labelIds* (not trainIds). The benchmark server applies
the same rule to the contents of one uploaded zip, and its maintainers answer
"not all predictions were found" when a name breaks the pattern or an image
has no (or several) predictions: exactly one file per test image.

So every prediction here becomes ``<city>/<city>_<seq>_<frame>_pred_labelIds.png``
(the layout ``hrseg eval --save-predictions`` uses), and the zip holds exactly
the files of this submission, never a stale file left in the folder.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable

import cv2
import numpy as np

from hrseg.atomic import atomic_path, write_bytes
from hrseg.data.labels import IGNORE_INDEX, NUM_CLASSES, TRAIN_TO_LABEL
from hrseg.errors import HrsegError

CITYSCAPES_SIZE = (2048, 1024)  # W, H of every Cityscapes image
LABEL_IDS_DIR = "labelIds"
ZIP_NAME = "cityscapes-submission.zip"
_NAME = re.compile(r"^(?P<city>[A-Za-z]+(?:-[A-Za-z]+)*)_(?P<seq>\d{6})_(?P<frame>\d{6})(?:_leftImg8bit)?(?:\.png)?$")


@dataclass(frozen=True)
class SubmissionResult:
    folder: Path  # the labelIds tree
    zip: Path | None
    count: int
    files: tuple[str, ...]  # paths inside the zip

    def to_dict(self) -> dict[str, object]:
        return {"folder": str(self.folder), "zip": None if self.zip is None else str(self.zip), "count": self.count}


def submission_name(name: str) -> PurePosixPath:
    """Path inside the submission for a Cityscapes image name.

    ``leftImg8bit/test/berlin/berlin_000123_000019_leftImg8bit.png`` ->
    ``berlin/berlin_000123_000019_pred_labelIds.png``.
    """
    base = PurePosixPath(name.replace("\\", "/")).name
    m = _NAME.match(base)
    if not m:
        raise HrsegError(
            f"{name}: not a Cityscapes image name (expected CITY_SEQUENCE_FRAME_leftImg8bit.png, "
            "e.g. berlin_000123_000019_leftImg8bit.png)"
        )
    core = f"{m['city']}_{m['seq']}_{m['frame']}"
    return PurePosixPath(m["city"]) / f"{core}_pred_labelIds.png"


class SubmissionWriter:
    """Collects trainId predictions one at a time (a test set does not fit in memory at full resolution)."""

    def __init__(self, out_dir: str | os.PathLike[str], size: tuple[int, int] = CITYSCAPES_SIZE) -> None:
        self.out_dir = Path(out_dir)
        self.folder = self.out_dir / LABEL_IDS_DIR
        self.size = size
        self.files: dict[PurePosixPath, str] = {}

    def add(self, name: str, train_ids: np.ndarray) -> Path:
        """Write one prediction; wrong sizes, unknown classes and second predictions for a frame are refused."""
        rel = submission_name(name)
        if rel in self.files:
            raise HrsegError(f"{name}: a second prediction for {rel.name[:-len('_pred_labelIds.png')]} "
                             f"(first from {self.files[rel]}); the server accepts exactly one per image")
        ids = np.asarray(train_ids)
        w, h = self.size
        if ids.shape != (h, w):
            got = f"{ids.shape[1]}x{ids.shape[0]}" if ids.ndim == 2 else str(ids.shape)
            raise HrsegError(f"{name}: prediction is {got}, the server needs {w}x{h} "
                             "(upsample the logits to full resolution before argmax)")
        if ids.dtype != np.uint8:
            raise HrsegError(f"{name}: prediction has dtype {ids.dtype}; expected uint8 trainIds")
        bad = np.unique(ids[(ids >= NUM_CLASSES) & (ids != IGNORE_INDEX)])
        if bad.size:
            raise HrsegError(f"{name}: trainIds {bad[:5].tolist()} are not Cityscapes classes (0..18, 255)")
        ok, buf = cv2.imencode(".png", TRAIN_TO_LABEL[ids])
        if not ok:
            raise RuntimeError("OpenCV could not encode a PNG")
        path = self.folder / rel
        write_bytes(path, buf.tobytes())
        self.files[rel] = name
        return path

    def finish(self, zip_path: str | os.PathLike[str] | None = None, *, expected: int | None = None,
               make_zip: bool = True) -> SubmissionResult:
        """Zip exactly the files added (``OUT/cityscapes-submission.zip`` by default), atomically.

        ``expected``: the number of images in the split (1525 for the Cityscapes
        test set); a different count is refused before anything is zipped.
        """
        if not self.files:
            raise HrsegError(f"{self.out_dir}: no predictions to submit")
        if expected is not None and len(self.files) != expected:
            raise HrsegError(f"{self.out_dir}: {len(self.files)} predictions, but the split has {expected} images; "
                             "the server needs one per test image")
        names = tuple(sorted(rel.as_posix() for rel in self.files))
        target = None
        if make_zip:
            target = Path(zip_path) if zip_path is not None else self.out_dir / ZIP_NAME
            with atomic_path(target) as tmp:
                # PNGs are already deflated; storing them keeps zipping 1525 full-size files fast
                with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                    for arc in names:
                        zf.write(self.folder / arc, arcname=arc)
        return SubmissionResult(self.folder, target, len(names), names)


def write_submission(predictions: Iterable[tuple[str, np.ndarray]], out_dir: str | os.PathLike[str], *,
                     zip_path: str | os.PathLike[str] | None = None, expected: int | None = None,
                     size: tuple[int, int] = CITYSCAPES_SIZE) -> SubmissionResult:
    """(Cityscapes image name, trainIds at full resolution) pairs -> labelId PNGs + zip for the server."""
    writer = SubmissionWriter(out_dir, size=size)
    for name, ids in predictions:
        writer.add(name, ids)
    return writer.finish(zip_path, expected=expected)
