"""Labelled image panels drawn with OpenCV, so the package needs no plotting stack.

Every function takes and returns RGB uint8 arrays (H, W, 3); writing them is
``hrseg.data.png.write_png``'s job (the one place that converts to OpenCV's BGR).

Sizes follow the picture: a tile is as wide as its image (between
``MIN_TILE`` and ``MAX_TILE`` pixels), and fonts, line widths and margins are
derived from the tile width (:class:`Style`), so a panel of 1280x720 images
reads like one of 128x72 images, only larger. Outlines are drawn after the
image is resized to the tile, never before (a 1 px line shrunk 4x turns into
dots). Titles wrap instead of being cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import cv2
import numpy as np

from hrseg.data.labels import CLASS_NAMES, IGNORE_INDEX, PALETTE, colorize

BACKGROUND = (24, 24, 24)
TEXT = (235, 235, 235)
FONT = cv2.FONT_HERSHEY_SIMPLEX
COLORMAP = cv2.COLORMAP_VIRIDIS
BASE_TILE = 320  # the tile width the base sizes below are chosen for
MIN_TILE, MAX_TILE = 320, 640


@dataclass(frozen=True)
class Style:
    """Font, line and margin sizes for one tile width (all scale with it)."""

    tile_width: int = BASE_TILE

    @property
    def scale(self) -> float:
        return self.tile_width / BASE_TILE

    @property
    def font(self) -> float:
        return 0.45 * self.scale

    @property
    def thickness(self) -> int:
        return max(1, round(self.scale))

    @property
    def gap(self) -> int:
        return max(4, round(4 * self.scale))

    @property
    def pad(self) -> int:
        return max(3, round(4 * self.scale))

    @property
    def line_height(self) -> int:
        (_, h), base = cv2.getTextSize("Ag", FONT, self.font, self.thickness)
        return h + base + self.pad

    @property
    def bar_height(self) -> int:
        return max(8, round(12 * self.scale))

    def text_width(self, text: str, font: float | None = None) -> int:
        return cv2.getTextSize(text, FONT, font or self.font, self.thickness)[0][0]


def auto_tile_width(image_width: int) -> int:
    """A tile as wide as the image, within [MIN_TILE, MAX_TILE]: small images are enlarged, large ones kept legible."""
    return int(min(max(image_width, MIN_TILE), MAX_TILE))


@dataclass(frozen=True)
class Tile:
    """One captioned picture in a panel.

    ``scale``: (vmin, vmax) of a heatmap, drawn as a colour bar with its range
    under the picture. ``outline``: a boolean mask whose border is drawn in
    white at the tile's resolution. ``smooth``: resample with area averaging
    (photographs) instead of nearest neighbour (label maps, heatmaps).
    """

    title: str
    image: np.ndarray  # RGB uint8 (H, W, 3)
    scale: tuple[float, float] | None = None
    outline: np.ndarray | None = None
    smooth: bool = False


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


def _fmt(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "nan"


def wrap_text(text: str, width: int, style: Style, font: float | None = None) -> list[str]:
    """Words onto lines no wider than ``width`` pixels; a single word too long is split by characters."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if style.text_width(candidate, font) <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for ch in word:  # a word wider than the line: break it where it no longer fits
                if line and style.text_width(line + ch, font) > width:
                    lines.append(line)
                    line = ""
                line += ch
        lines.append(line)
    return [ln for ln in lines if ln] or [""]


def _text_block(lines: Sequence[str], width: int, style: Style, font: float | None = None,
                color: tuple[int, int, int] = TEXT) -> np.ndarray:
    f = font or style.font
    (_, h), base = cv2.getTextSize("Ag", FONT, f, style.thickness)
    step = h + base + style.pad
    canvas = np.full((step * len(lines) + style.pad, width, 3), BACKGROUND, dtype=np.uint8)
    for i, line in enumerate(lines):
        cv2.putText(canvas, line, (style.pad, style.pad + h + i * step), FONT, f, color, style.thickness,
                    cv2.LINE_AA)
    return canvas


def colorbar(width: int, vmin: float, vmax: float, label: str = "", style: Style | None = None) -> np.ndarray:
    """A horizontal viridis strip with its range written under its ends (and an optional label between)."""
    st = style or Style(max(width, 1))
    font = st.font * 0.9
    strip = heatmap(np.tile(np.linspace(0, 1, width, dtype=np.float32), (st.bar_height, 1)))
    lo, hi = _fmt(vmin), _fmt(vmax)
    (_, h), base = cv2.getTextSize("Ag", FONT, font, st.thickness)
    text_h = h + base + st.pad
    canvas = np.full((st.bar_height + text_h, width, 3), BACKGROUND, dtype=np.uint8)
    canvas[: st.bar_height] = strip
    y = st.bar_height + st.pad // 2 + h
    cv2.putText(canvas, lo, (0, y), FONT, font, TEXT, st.thickness, cv2.LINE_AA)
    hi_w = st.text_width(hi, font)
    cv2.putText(canvas, hi, (width - hi_w - 1, y), FONT, font, TEXT, st.thickness, cv2.LINE_AA)
    if label:  # between the two ends, when it fits
        x = (width - st.text_width(label, font)) // 2
        if x > st.text_width(lo, font) + 2 * st.pad and x + st.text_width(label, font) < width - hi_w - 2 * st.pad:
            cv2.putText(canvas, label, (x, y), FONT, font, TEXT, st.thickness, cv2.LINE_AA)
    return canvas


def resize_to_width(image: np.ndarray, width: int, nearest: bool = False) -> np.ndarray:
    h, w = image.shape[:2]
    if w == width:
        return image
    height = max(1, round(h * width / w))
    if nearest or width > w:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA
    return cv2.resize(image, (width, height), interpolation=interp)


def _draw_outline(body: np.ndarray, mask: np.ndarray, style: Style) -> None:
    small = cv2.resize(np.asarray(mask, np.uint8), (body.shape[1], body.shape[0]), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(body, contours, -1, (255, 255, 255), max(2, style.thickness + 1), cv2.LINE_AA)


def captioned(tile: Tile, width: int, style: Style | None = None) -> np.ndarray:
    """Title (wrapped), picture resized to ``width``, then the colour bar of a heatmap."""
    st = style or Style(width)
    body = resize_to_width(tile.image, width, nearest=not tile.smooth).copy()
    if tile.outline is not None:
        _draw_outline(body, tile.outline, st)
    parts = [_text_block(wrap_text(tile.title, width - 2 * st.pad, st), width, st), body]
    if tile.scale is not None:
        parts.append(np.full((st.pad, width, 3), BACKGROUND, dtype=np.uint8))
        parts.append(colorbar(width, tile.scale[0], tile.scale[1], style=st))
    return np.concatenate(parts, axis=0)


def legend(classes: Iterable[int], width: int, style: Style) -> np.ndarray:
    """Colour swatch and name for each class, laid out left to right and wrapped to ``width``."""
    font = style.font
    (_, h), base = cv2.getTextSize("Ag", FONT, font, style.thickness)
    row_h = h + base + style.pad
    sw = h + base
    entries = [(int(c), CLASS_NAMES[c] if c != IGNORE_INDEX else "ignored") for c in classes
               if 0 <= int(c) < len(CLASS_NAMES) or c == IGNORE_INDEX]
    placed: list[tuple[int, int, int, str]] = []
    x, y = style.pad, 0
    for cls, name in entries:
        w = sw + style.pad + style.text_width(name, font) + 3 * style.pad
        if x + w > width and x > style.pad:
            x, y = style.pad, y + row_h
        placed.append((x, y, cls, name))
        x += w
    canvas = np.full((y + row_h + style.pad, width, 3), BACKGROUND, dtype=np.uint8)
    for x, y, cls, name in placed:
        top = y + style.pad
        color = tuple(int(v) for v in PALETTE[cls])  # ignore: black, as colorize draws it
        cv2.rectangle(canvas, (x, top), (x + sw, top + sw), color, -1)
        cv2.rectangle(canvas, (x, top), (x + sw, top + sw), (120, 120, 120), 1)
        cv2.putText(canvas, name, (x + sw + style.pad, top + h), FONT, font, TEXT, style.thickness, cv2.LINE_AA)
    return canvas


def present_classes(*maps: np.ndarray) -> list[int]:
    """trainIds found in any of the label maps, sorted, ignore (255) last when present."""
    found: set[int] = set()
    for m in maps:
        found.update(int(v) for v in np.unique(m))
    return sorted(c for c in found if c < len(CLASS_NAMES)) + ([IGNORE_INDEX] if IGNORE_INDEX in found else [])


def grid(tiles: Sequence[Tile], columns: int = 3, tile_width: int | None = None,
         header: str | None = None, footer: np.ndarray | Sequence[np.ndarray] | None = None,
         style: Style | None = None) -> np.ndarray:
    """Lay tiles out row by row, with an optional (wrapped) header and footer strips.

    ``tile_width`` None: :func:`auto_tile_width` of the first tile's image.
    """
    if not tiles:
        raise ValueError("a panel needs at least one tile")
    tw = tile_width or auto_tile_width(tiles[0].image.shape[1])
    st = style or Style(tw)
    gap = st.gap
    cells = [captioned(t, tw, st) for t in tiles]
    width = columns * tw + (columns + 1) * gap
    blocks: list[np.ndarray] = []
    if header:
        blocks.append(_text_block(wrap_text(header, width - 2 * st.pad, st, st.font * 1.2), width, st,
                                  st.font * 1.2, (255, 255, 255)))
    else:
        blocks.append(np.full((gap, width, 3), BACKGROUND, dtype=np.uint8))
    for start in range(0, len(cells), columns):
        row = cells[start : start + columns]
        row_h = max(c.shape[0] for c in row)
        strip = np.full((row_h + gap, width, 3), BACKGROUND, dtype=np.uint8)
        for i, cell in enumerate(row):
            x = gap + i * (tw + gap)
            strip[: cell.shape[0], x : x + tw] = cell
        blocks.append(strip)
    feet = [] if footer is None else ([footer] if isinstance(footer, np.ndarray) else list(footer))
    for f in feet:
        fw = min(f.shape[1], width - 2 * gap)
        strip = np.full((f.shape[0] + gap, width, 3), BACKGROUND, dtype=np.uint8)
        strip[: f.shape[0], gap : gap + fw] = f[:, :fw]
        blocks.append(strip)
    return np.concatenate(blocks, axis=0)


def weight_panel(image: np.ndarray, label: np.ndarray, pred: np.ndarray,
                 levels: dict[str, np.ndarray], weight: np.ndarray,
                 realism: np.ndarray | None = None, title: str = "",
                 tile_width: int | None = None) -> np.ndarray:
    """The weighting network's view of one source image.

    Level scores are sigmoids, drawn on a fixed 0..1 scale; the combined
    weight may be normalised above 1, so it gets its own scale (its 99th
    percentile), written under its tile like every other scale.
    """
    tw = tile_width or auto_tile_width(image.shape[1])
    st = Style(tw)
    ignore = label == IGNORE_INDEX
    tiles = [
        Tile("image", image, smooth=True),
        Tile("label", colorize(label)),
        Tile("prediction", colorize(pred)),
    ]
    for name, score in levels.items():
        tiles.append(Tile(f"{name} score, mean {_fmt(_masked_mean(score, ~ignore))}",
                          heatmap(score, 0.0, 1.0, invalid=ignore), scale=(0.0, 1.0)))
    vmax = _robust_max(weight, ~ignore)
    tiles.append(Tile(f"combined weight, mean {_fmt(_masked_mean(weight, ~ignore))}",
                      heatmap(weight, 0.0, vmax, invalid=ignore), scale=(0.0, vmax)))
    tiles.append(Tile(f"combined weight over image (dark = 0, bright = {_fmt(vmax)} or more)",
                      weight_over_image(image, np.where(ignore, 0, weight), vmax), smooth=True))
    if realism is not None:
        tiles.append(Tile("realism mask: white = realistic, black = deviating", _realism_tile(realism)))
    width = 3 * tw + 4 * st.gap - 2 * st.gap
    return grid(tiles, columns=3, tile_width=tw, header=title, style=st,
                footer=legend(present_classes(label, pred), width, st))


def class_weight_panel(class_maps: dict[int, np.ndarray], label: np.ndarray, title: str = "",
                       tile_width: int | None = None) -> np.ndarray:
    """W^19: the weight each class channel would give every pixel, for the classes present.

    The pixels of that class are outlined so one can see whether the channel
    scores its own class's realistic areas highly.
    """
    tw = tile_width or max(240, auto_tile_width(label.shape[1]) * 3 // 4)
    tiles = [Tile(f"{CLASS_NAMES[cls]} (mean on its pixels {_fmt(_masked_mean(score, label == cls))})",
                  heatmap(score, 0.0, 1.0), scale=(0.0, 1.0), outline=label == cls)
             for cls, score in class_maps.items()]
    return grid(tiles, columns=4, tile_width=tw, header=title)


def prediction_panel(image: np.ndarray, gt: np.ndarray, pred: np.ndarray, title: str = "",
                     tile_width: int | None = None) -> np.ndarray:
    """Image, ground truth, prediction and where they disagree, with a legend of the classes shown."""
    tw = tile_width or auto_tile_width(image.shape[1])
    st = Style(tw)
    valid = gt != IGNORE_INDEX
    acc = float((gt[valid] == pred[valid]).mean()) if valid.any() else math.nan
    tiles = [
        Tile("image", image, smooth=True),
        Tile("ground truth", colorize(gt)),
        Tile("prediction", colorize(pred)),
        Tile(f"errors (red), pixel accuracy {_fmt(acc)}", error_map(gt, pred)),
    ]
    width = 2 * tw + 3 * st.gap - 2 * st.gap
    return grid(tiles, columns=2, tile_width=tw, header=title, style=st,
                footer=legend(present_classes(gt, pred), width, st))


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
