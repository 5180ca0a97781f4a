"""Labelled image panels drawn with OpenCV, so the package needs no plotting stack.

Every function takes and returns RGB uint8 arrays (H, W, 3); writing them is
``hrseg.data.png.write_png``'s job (the one place that converts to OpenCV's BGR).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from hrseg.data.labels import CLASS_NAMES, IGNORE_INDEX, colorize

TITLE_HEIGHT = 22
GAP = 4
BACKGROUND = (24, 24, 24)
FONT = cv2.FONT_HERSHEY_SIMPLEX
COLORMAP = cv2.COLORMAP_VIRIDIS


@dataclass(frozen=True)
class Tile:
    """One captioned picture in a panel."""

    title: str
    image: np.ndarray  # RGB uint8 (H, W, 3)


def heatmap(values: np.ndarray, vmin: float = 0.0, vmax: float = 1.0,
            invalid: np.ndarray | None = None) -> np.ndarray:
    """Float map -> RGB viridis; ``invalid`` pixels (e.g. ignore label) are drawn grey.

    A fixed [vmin, vmax] lets the three level maps be compared by colour.
    """
    v = np.asarray(values, dtype=np.float32)
    span = max(vmax - vmin, 1e-12)
    scaled = np.clip((v - vmin) / span, 0.0, 1.0)
    scaled = np.nan_to_num(scaled, nan=0.0)
    bgr = cv2.applyColorMap((scaled * 255).astype(np.uint8), COLORMAP)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if invalid is not None:
        rgb[np.asarray(invalid, dtype=bool)] = (90, 90, 90)
    return rgb


def weight_over_image(image: np.ndarray, weight: np.ndarray, vmax: float) -> np.ndarray:
    """Darkens the image where the weight is low, so the selected areas stand out."""
    w = np.clip(np.nan_to_num(np.asarray(weight, np.float32)) / max(vmax, 1e-12), 0.0, 1.0)
    shade = 0.15 + 0.85 * w[..., None]
    return (image.astype(np.float32) * shade).round().clip(0, 255).astype(np.uint8)


def error_map(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Correct pixels dim grey, wrong ones red, ignored ones black."""
    out = np.full(gt.shape + (3,), 70, dtype=np.uint8)
    wrong = (gt != pred) & (gt != IGNORE_INDEX)
    out[wrong] = (230, 30, 30)
    out[gt == IGNORE_INDEX] = 0
    return out


def colorbar(width: int, vmin: float, vmax: float, label: str) -> np.ndarray:
    """A horizontal viridis strip with its range written on it."""
    strip = heatmap(np.tile(np.linspace(0, 1, width, dtype=np.float32), (14, 1)))
    canvas = np.full((TITLE_HEIGHT + 14, width, 3), BACKGROUND, dtype=np.uint8)
    canvas[TITLE_HEIGHT:] = strip
    text = f"{label}: {_fmt(vmin)} .. {_fmt(vmax)}"
    cv2.putText(canvas, text, (4, 15), FONT, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
    return canvas


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "nan"


def resize_to_width(image: np.ndarray, width: int, nearest: bool = False) -> np.ndarray:
    h, w = image.shape[:2]
    if w == width:
        return image
    height = max(1, round(h * width / w))
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return cv2.resize(image, (width, height), interpolation=interp)


def captioned(tile: Tile, width: int) -> np.ndarray:
    body = resize_to_width(tile.image, width, nearest=True)
    canvas = np.full((TITLE_HEIGHT + body.shape[0], width, 3), BACKGROUND, dtype=np.uint8)
    canvas[TITLE_HEIGHT:] = body
    title = tile.title
    while title and cv2.getTextSize(title, FONT, 0.45, 1)[0][0] > width - 6:
        title = title[:-2]
    cv2.putText(canvas, title, (4, 15), FONT, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
    return canvas


def grid(tiles: Sequence[Tile], columns: int = 3, tile_width: int = 320,
         header: str | None = None, footer: np.ndarray | None = None) -> np.ndarray:
    """Lay tiles out row by row, with an optional header line and footer strip."""
    if not tiles:
        raise ValueError("a panel needs at least one tile")
    cells = [captioned(t, tile_width) for t in tiles]
    cell_h = max(c.shape[0] for c in cells)
    rows = math.ceil(len(cells) / columns)
    width = columns * tile_width + (columns + 1) * GAP
    top = (TITLE_HEIGHT + GAP) if header else GAP
    foot = (footer.shape[0] + GAP) if footer is not None else 0
    height = top + rows * (cell_h + GAP) + foot
    canvas = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    if header:
        cv2.putText(canvas, header, (GAP, 17), FONT, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    for i, cell in enumerate(cells):
        r, c = divmod(i, columns)
        y = top + r * (cell_h + GAP)
        x = GAP + c * (tile_width + GAP)
        canvas[y : y + cell.shape[0], x : x + tile_width] = cell
    if footer is not None:
        y = top + rows * (cell_h + GAP)
        fw = min(footer.shape[1], width - 2 * GAP)
        canvas[y : y + footer.shape[0], GAP : GAP + fw] = footer[:, :fw]
    return canvas


def weight_panel(image: np.ndarray, label: np.ndarray, pred: np.ndarray,
                 levels: dict[str, np.ndarray], weight: np.ndarray,
                 realism: np.ndarray | None = None, title: str = "",
                 tile_width: int = 320) -> np.ndarray:
    """The weighting network's view of one source image.

    Level scores are sigmoids, drawn on a fixed 0..1 scale; the combined
    weight may be normalised above 1, so it gets its own scale (its 99th
    percentile) written in the caption.
    """
    ignore = label == IGNORE_INDEX
    tiles = [
        Tile("image", image),
        Tile("label", colorize(label)),
        Tile("prediction", colorize(pred)),
    ]
    for name, score in levels.items():
        tiles.append(Tile(f"{name} score, mean {_fmt(_masked_mean(score, ~ignore))}",
                          heatmap(score, 0.0, 1.0, invalid=ignore)))
    vmax = _robust_max(weight, ~ignore)
    tiles.append(Tile(f"combined weight (0..{_fmt(vmax)})", heatmap(weight, 0.0, vmax, invalid=ignore)))
    tiles.append(Tile("combined weight over image", weight_over_image(image, np.where(ignore, 0, weight), vmax)))
    if realism is not None:
        tiles.append(Tile("realism mask: white = realistic", _realism_tile(realism)))
    return grid(tiles, columns=3, tile_width=tile_width, header=title,
                footer=colorbar(min(3 * tile_width, 480), 0.0, 1.0, "level scores"))


def class_weight_panel(class_maps: dict[int, np.ndarray], label: np.ndarray, title: str = "",
                       tile_width: int = 240) -> np.ndarray:
    """W^19: the weight each class channel would give every pixel, for the classes present.

    The pixels of that class are outlined so one can see whether the channel
    scores its own class's realistic areas highly.
    """
    tiles = []
    for cls, score in class_maps.items():
        tile = heatmap(score, 0.0, 1.0)
        mask = (label == cls).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(tile, contours, -1, (255, 255, 255), 1)
        tiles.append(Tile(f"{CLASS_NAMES[cls]} ({_fmt(_masked_mean(score, mask.astype(bool)))})", tile))
    return grid(tiles, columns=4, tile_width=tile_width, header=title,
                footer=colorbar(min(4 * tile_width, 480), 0.0, 1.0, "class channel score"))


def prediction_panel(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, title: str = "",
                     tile_width: int = 320) -> np.ndarray:
    """Image, ground truth, prediction and where they disagree."""
    valid = gt != IGNORE_INDEX
    acc = float((gt[valid] == pred[valid]).mean()) if valid.any() else math.nan
    tiles = [
        Tile("image", image),
        Tile("ground truth", colorize(gt)),
        Tile("prediction", colorize(pred)),
        Tile(f"errors (red), pixel acc {_fmt(acc)}", error_map(gt, pred)),
    ]
    return grid(tiles, columns=2, tile_width=tile_width, header=title)


def _realism_tile(realism: np.ndarray) -> np.ndarray:
    out = np.full(realism.shape + (3,), 90, dtype=np.uint8)
    out[realism == 1] = 255
    out[realism == 0] = 0
    return out


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    v = np.asarray(values, np.float64)[np.asarray(mask, bool)]
    return float(v.mean()) if v.size else math.nan


def _robust_max(values: np.ndarray, mask: np.ndarray) -> float:
    v = np.asarray(values, np.float64)[np.asarray(mask, bool)]
    v = v[np.isfinite(v)]
    if not v.size:
        return 1.0
    top = float(np.percentile(v, 99))
    return top if top > 0 else max(float(v.max()), 1e-6)

