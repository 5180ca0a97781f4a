"""OpenCV panels and the HTML index: layout, colour scales, escaping."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hrseg.data.labels import PALETTE
from hrseg.data.png import write_png
from hrseg.visualization.html import GalleryItem, write_index
from hrseg.visualization.panels import (
    Tile,
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
    items = [GalleryItem("a<b>.png", ("a.png",)), GalleryItem("c", ("c d.png",), {"auc": "0.7"})]
    index = write_index(tmp_path / "index.html", "weights & more", items, {"run": "<r>"})
    text = index.read_text()
    assert '<img src="a.png"' in text and 'src="c d.png"' in text
    assert "a&lt;b&gt;.png" in text and "weights &amp; more" in text and "&lt;r&gt;" in text
    assert "<b>" not in text
