"""How an image is brought to the working size: the one table prepare, prediction and evaluation share.

An input predicted at run time must be resized the way ``hrseg prepare``
resized the training images, or the model sees a different picture; one table
keeps the modes from drifting apart. Labels and masks are always nearest.
"""

from __future__ import annotations

import cv2
import numpy as np

#: image interpolation by name (``--resize``)
RESIZE_MODES: dict[str, int] = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR}


def resize_image(image: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """``image`` at ``size`` (W, H) with the named interpolation; returned as is when already that size."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return cv2.resize(image, tuple(size), interpolation=RESIZE_MODES[mode])


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label map or mask at ``size`` (W, H), nearest neighbour (no invented class values)."""
    if (labels.shape[1], labels.shape[0]) == tuple(size):
        return labels
    return cv2.resize(labels, tuple(size), interpolation=cv2.INTER_NEAREST)
