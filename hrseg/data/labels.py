"""Cityscapes label definitions, trainId mappings, palettes and evaluation subsets.

GTAV labels use Cityscapes labelIds, SYNTHIA has its own ids; everything is
mapped to the 19 Cityscapes trainIds, with 255 as the ignore label.
"""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

IGNORE_INDEX = 255
NUM_CLASSES = 19


class Label(NamedTuple):
    name: str
    id: int
    train_id: int
    category: str
    category_id: int
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]


LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, "void", 0, False, True, (0, 0, 0)),
    Label("ego vehicle", 1, 255, "void", 0, False, True, (0, 0, 0)),
    Label("rectification border", 2, 255, "void", 0, False, True, (0, 0, 0)),
    Label("out of roi", 3, 255, "void", 0, False, True, (0, 0, 0)),
    Label("static", 4, 255, "void", 0, False, True, (0, 0, 0)),
    Label("dynamic", 5, 255, "void", 0, False, True, (111, 74, 0)),
    Label("ground", 6, 255, "void", 0, False, True, (81, 0, 81)),
    Label("road", 7, 0, "flat", 1, False, False, (128, 64, 128)),
    Label("sidewalk", 8, 1, "flat", 1, False, False, (244, 35, 232)),
    Label("parking", 9, 255, "flat", 1, False, True, (250, 170, 160)),
    Label("rail track", 10, 255, "flat", 1, False, True, (230, 150, 140)),
    Label("building", 11, 2, "construction", 2, False, False, (70, 70, 70)),
    Label("wall", 12, 3, "construction", 2, False, False, (102, 102, 156)),
    Label("fence", 13, 4, "construction", 2, False, False, (190, 153, 153)),
    Label("guard rail", 14, 255, "construction", 2, False, True, (180, 165, 180)),
    Label("bridge", 15, 255, "construction", 2, False, True, (150, 100, 100)),
    Label("tunnel", 16, 255, "construction", 2, False, True, (150, 120, 90)),
    Label("pole", 17, 5, "object", 3, False, False, (153, 153, 153)),
    Label("polegroup", 18, 255, "object", 3, False, True, (153, 153, 153)),
    Label("traffic light", 19, 6, "object", 3, False, False, (250, 170, 30)),
    Label("traffic sign", 20, 7, "object", 3, False, False, (220, 220, 0)),
    Label("vegetation", 21, 8, "nature", 4, False, False, (107, 142, 35)),
    Label("terrain", 22, 9, "nature", 4, False, False, (152, 251, 152)),
    Label("sky", 23, 10, "sky", 5, False, False, (70, 130, 180)),
    Label("person", 24, 11, "human", 6, True, False, (220, 20, 60)),
    Label("rider", 25, 12, "human", 6, True, False, (255, 0, 0)),
    Label("car", 26, 13, "vehicle", 7, True, False, (0, 0, 142)),
    Label("truck", 27, 14, "vehicle", 7, True, False, (0, 0, 70)),
    Label("bus", 28, 15, "vehicle", 7, True, False, (0, 60, 100)),
    Label("caravan", 29, 255, "vehicle", 7, True, True, (0, 0, 90)),
    Label("trailer", 30, 255, "vehicle", 7, True, True, (0, 0, 110)),
    Label("train", 31, 16, "vehicle", 7, True, False, (0, 80, 100)),
    Label("motorcycle", 32, 17, "vehicle", 7, True, False, (0, 0, 230)),
    Label("bicycle", 33, 18, "vehicle", 7, True, False, (119, 11, 32)),
    Label("license plate", -1, -1, "vehicle", 7, False, True, (0, 0, 142)),
)

TRAIN_LABELS: tuple[Label, ...] = tuple(
    sorted((lab for lab in LABELS if 0 <= lab.train_id < IGNORE_INDEX), key=lambda lab: lab.train_id)
)
CLASS_NAMES: tuple[str, ...] = tuple(lab.name for lab in TRAIN_LABELS)

# uint8 lookup tables, indexable by a whole label image: table[label_png]
LABEL_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
for _lab in LABELS:
    if _lab.id >= 0:
        LABEL_TO_TRAIN[_lab.id] = _lab.train_id if _lab.train_id >= 0 else IGNORE_INDEX

TRAIN_TO_LABEL = np.zeros(256, dtype=np.uint8)  # ignore -> 0 ("unlabeled"), as cityscapesScripts expects
for _lab in TRAIN_LABELS:
    TRAIN_TO_LABEL[_lab.train_id] = _lab.id

KNOWN_LABEL_IDS = np.zeros(256, dtype=bool)
for _lab in LABELS:
    if _lab.id >= 0:
        KNOWN_LABEL_IDS[_lab.id] = True

# trainId -> RGB; ignore is black
PALETTE = np.zeros((256, 3), dtype=np.uint8)
for _lab in TRAIN_LABELS:
    PALETTE[_lab.train_id] = _lab.color

# labelId -> RGB, for writing GTAV-style palettised label PNGs
LABEL_PALETTE = np.zeros((256, 3), dtype=np.uint8)
for _lab in LABELS:
    if _lab.id >= 0:
        LABEL_PALETTE[_lab.id] = _lab.color

SYNTHIA_ID_TO_TRAIN: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9,
    1: 10, 10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18,
}
SYNTHIA_TO_TRAIN = np.full(65536, IGNORE_INDEX, dtype=np.uint8)
for _sid, _tid in SYNTHIA_ID_TO_TRAIN.items():
    SYNTHIA_TO_TRAIN[_sid] = _tid

# Evaluated trainIds per protocol: 19 (Cityscapes), 16 and 13 (SYNTHIA).
EVAL_CLASSES: dict[int, tuple[int, ...]] = {
    19: tuple(range(19)),
    16: tuple(c for c in range(19) if c not in (9, 14, 16)),
    13: tuple(c for c in range(19) if c not in (3, 4, 5, 9, 14, 16)),
}


def eval_classes(num: int) -> tuple[int, ...]:
    if num not in EVAL_CLASSES:
        raise ValueError(f"unknown class protocol {num}; choose one of {sorted(EVAL_CLASSES)}")
    return EVAL_CLASSES[num]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """trainId map (H, W) -> RGB image (H, W, 3); 255 (ignore) is black. The one palette colouring."""
    return PALETTE[np.asarray(train_ids, dtype=np.uint8)]


def blend(image: np.ndarray, overlay: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """``overlay`` (e.g. :func:`colorize`'s colours) over an RGB ``image``; what predict's overlays and the panels show."""
    return cv2.addWeighted(overlay, alpha, image, 1.0 - alpha, 0.0)
