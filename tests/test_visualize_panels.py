"""OpenCV panels and the HTML index: layout, colour scales, escaping."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hrseg.data.labels import PALETTE
from hrseg.data.png import write_png
from hrseg.visualization.gallery import GalleryItem, Metric, write_gallery
from hrseg.visualization.panels import (
    Style,
    Tile,
    auto_tile_width,
    captioned,
    class_weight_panel,
    wrap_text,
    error_map,
    grid,
    heatmap,
    prediction_panel,
    weight_over_image,
    weight_panel,
)


def test_heatmap_uses_a_fixed_scale_and_greys_out_invalid_pixels() -> None:
    values = np.array([[0.0, 0.5, 1.0, 2.0]], np.float32)
    invalid = np.array([[False, False, False, True]])
    rgb = heatmap(values, 0.0, 1.0, invalid=invalid)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert not np.array_equal(rgb[0, 0], rgb[0, 2])
    assert tuple(rgb[0, 3]) == (90, 90, 90)
    # viridis: low is dark purple, high is bright yellow
    assert rgb[0, 0].sum() < rgb[0, 2].sum() and rgb[0, 2, 0] > 200 and rgb[0, 2, 2] < 100


def test_weight_over_image_darkens_low_weight_areas() -> None:
    image = np.full((2, 2, 3), 200, np.uint8)
    out = weight_over_image(image, np.array([[0.0, 1.0], [0.5, 3.0]]), vmax=1.0)
    assert out[0, 1].tolist() == [200] * 3 and out[1, 1].tolist() == [200] * 3
    assert out[0, 0, 0] < out[1, 0, 0] < 200


def test_error_map_marks_wrong_pixels_and_skips_ignore() -> None:
    gt = np.array([[0, 1, 255]], np.uint8)
    pred = np.array([[0, 2, 3]], np.uint8)
    err = error_map(gt, pred)
    assert err[0].tolist() == [[70, 70, 70], [230, 30, 30], [0, 0, 0]]


def test_weight_panel_lays_out_every_tile(tmp_path: Path) -> None:
    h, w = 32, 64
    image = np.zeros((h, w, 3), np.uint8)
    label = np.full((h, w), 13, np.uint8)  # car
    levels = {k: np.full((h, w), 0.5, np.float32) for k in ("pixel", "region", "image")}
    panel = weight_panel(image, label, label, levels, np.ones((h, w)), realism=np.ones((h, w), np.uint8),
                         title="x", tile_width=100)
    # 3 columns of 100 px, 3 rows (9 tiles) plus header and colour bar
    assert panel.shape[1] == 3 * 100 + 4 * 4
    path = tmp_path / "p.png"
    write_png(path, panel)
    back = cv2.imread(str(path))[..., ::-1]
    assert np.array_equal(back, panel)
    car = PALETTE[13]
    assert (np.all(panel == car, axis=-1)).sum() >= 2 * 100 * 50 - 10  # label and prediction tiles are car-coloured


def test_prediction_panel_and_grid_shapes() -> None:
    gt = np.zeros((10, 20), np.uint8)
    panel = prediction_panel(np.zeros((10, 20, 3), np.uint8), gt, gt, title="t", tile_width=40)
    assert panel.shape[1] == 2 * 40 + 3 * 4
    assert grid([Tile("a", np.zeros((5, 5, 3), np.uint8))], columns=1, tile_width=5).shape[1] == 5 + 2 * 4


def test_index_links_every_panel_and_escapes_names(tmp_path: Path) -> None:
    items = [GalleryItem("a<b>.png", "a.png", {"auc": 0.7}), GalleryItem("c", "c d.png", {"auc": None})]
    index = write_gallery(tmp_path, "weights & more", items, [Metric("auc", "AUC <x>", True)], {"run": "<r>"})
    text = index.read_text()
    assert '<img src="a.png"' in text and 'src="c d.png"' in text
    assert "a&lt;b&gt;.png" in text and "weights &amp; more" in text and "&lt;r&gt;" in text and "AUC &lt;x&gt;" in text
    assert "<b>.png" not in text and "<x>" not in text
    assert 'data-auc="0.7"' in text and 'data-auc=""' in text  # the page sorts by these
    assert "http://" not in text and "https://" not in text  # nothing fetched from the network
    listed = json.loads((tmp_path / "gallery.json").read_text())
    assert listed["panels"] == ["a.png", "c d.png"]
    assert listed["items"][0]["numbers"] == {"auc": 0.7} and listed["items"][1]["numbers"] == {"auc": None}


def _scene(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    label = np.zeros((h, w), np.uint8)  # road
    label[h // 2 : h * 3 // 4, w // 3 : w // 2] = 13  # a car
    label[: h // 8, : w // 8] = 255
    return image, label


@pytest.mark.parametrize("size", [(1280, 720), (128, 72)])
def test_panels_scale_with_the_image(size: tuple[int, int]) -> None:
    w, h = size
    image, label = _scene(w, h)
    levels = {k: np.full((h, w), 0.5, np.float32) for k in ("pixel", "region", "image")}
    panel = weight_panel(image, label, label, levels, np.full((h, w), 2.0), title="t")
    tile = auto_tile_width(w)
    assert tile == (640 if w == 1280 else 320)
    assert panel.shape[1] == 3 * tile + 4 * Style(tile).gap
    # the legend names the classes present: its swatches carry the class colours under the tiles
    legend_rows = panel[-Style(tile).line_height * 2 :]
    for cls in (0, 13):
        assert np.all(legend_rows == PALETTE[cls], axis=-1).any()
    # the bigger the tile, the bigger the text and the thicker the lines
    assert Style(640).line_height > Style(320).line_height and Style(640).thickness == 2


def test_outlines_are_continuous_lines_at_real_resolution() -> None:
    """At 1280x720 a class outline drawn before downscaling turned into dots; now it is drawn at tile size."""
    h, w = 720, 1280
    label = np.zeros((h, w), np.uint8)
    label[200:500, 300:900] = 13
    panel = class_weight_panel({13: np.zeros((h, w), np.float32)}, label, tile_width=480)
    white = np.all(panel >= 250, axis=-1)
    rows = np.flatnonzero(white.any(axis=1))
    # the car box's top edge is a horizontal white run spanning its width (480/1280 of 600 px), at least 2 px thick
    runs = [r for r in rows if white[r].sum() >= 0.9 * 600 * 480 / 1280]
    assert len(runs) >= 2 * 2  # top and bottom edges, each at least 2 rows


def test_long_titles_wrap_instead_of_being_cut() -> None:
    style = Style(320)
    text = "frankfurt/frankfurt_000000_000019  (w19, iteration 40000) and more words to wrap"
    lines = wrap_text(text, 200, style)
    assert len(lines) > 1 and all(style.text_width(ln) <= 200 for ln in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")  # nothing lost (a long name may be split)
    assert "".join(wrap_text("x" * 200, 100, style)) == "x" * 200  # one long word is broken, not cut
    gt = np.zeros((10, 20), np.uint8)
    short = prediction_panel(np.zeros((10, 20, 3), np.uint8), gt, gt, title="t")
    long = prediction_panel(np.zeros((10, 20, 3), np.uint8), gt, gt, title=" ".join(["word"] * 80))
    assert long.shape[0] > short.shape[0] + Style(320).line_height


def test_every_score_tile_has_a_colour_bar_with_its_range() -> None:
    st = Style(320)
    plain = captioned(Tile("a", np.zeros((10, 20, 3), np.uint8)), 320, st)
    scored = captioned(Tile("a", np.zeros((10, 20, 3), np.uint8), scale=(0.0, 3.8)), 320, st)
    assert scored.shape[0] > plain.shape[0] + st.bar_height
    bar = scored[plain.shape[0] + st.pad : plain.shape[0] + st.pad + st.bar_height]
    assert np.array_equal(bar[:, 0], heatmap(np.zeros((st.bar_height, 1)))[:, 0])  # viridis low at the left
    assert np.array_equal(bar[:, -1], heatmap(np.ones((st.bar_height, 1)))[:, 0])  # and high at the right
