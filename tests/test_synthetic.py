"""The procedural scene generator: determinism, classes, realism at three levels, conflicting looks.

The design under test: a deviating source area wears the target look of the class that shares its
place in target scenes, and nothing else (noise, blur, lighting) sets it apart; the realism mask
marks exactly those areas; deviating areas outnumber realistic ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hrseg.data.labels import LABEL_TO_TRAIN
from hrseg.data.scenes import DEVIATING_LOOK, GENERATOR, draw_scene
from hrseg.data.synthetic import SceneConfig, generate_raw
from hrseg.errors import HrsegError


def test_scenes_are_deterministic_for_a_seed() -> None:
    a = draw_scene(7, "source", 3, (96, 54))
    b = draw_scene(7, "source", 3, (96, 54))
    c = draw_scene(8, "source", 3, (96, 54))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label_ids, b.label_ids)
    assert np.array_equal(a.realism, b.realism)
    assert not np.array_equal(a.image, c.image)
    assert draw_scene(7, "target", 3, (96, 48)).realism is None


def test_generation_does_not_depend_on_worker_count(tmp_path: Path) -> None:
    cfg = SceneConfig(seed=1, source_images=3, target_images=2, val_images=1, size=(64, 32))
    generate_raw(cfg, tmp_path / "one", workers=1)
    generate_raw(cfg, tmp_path / "two", workers=2)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*.png"))
    assert len(files) == 3 * 3 + 3 * 3  # GTAV images/labels/realism; Cityscapes image, labelIds, color
    for rel in files:
        assert (tmp_path / "one" / rel).read_bytes() == (tmp_path / "two" / rel).read_bytes()
    assert generate_raw(cfg, tmp_path / "one") is False  # already complete: kept


def test_at_least_ten_classes_and_some_ignored_pixels() -> None:
    counts = np.zeros(256, dtype=np.int64)
    for i in range(30):
        counts += np.bincount(LABEL_TO_TRAIN[draw_scene(0, "target", i, (128, 64)).label_ids].ravel(), minlength=256)
    present = [c for c in range(19) if counts[c] > 0]
    assert len(present) >= 10, present
    assert {0, 1, 2, 5, 6, 7, 8, 9, 10, 11, 13} <= set(present)
    assert counts[255] > 0  # "static" clutter is ignored like in the real datasets


def test_realism_varies_at_image_region_and_instance_level() -> None:
    shares, mixed = [], 0
    for i in range(40):
        s = draw_scene(0, "source", i, (128, 72))
        assert s.realism is not None
        assert set(np.unique(s.realism).tolist()) <= {0, 1, 255}
        ignored = LABEL_TO_TRAIN[s.label_ids] == 255
        assert np.array_equal(s.realism == 255, ignored)
        valid = s.realism[~ignored]
        share = float((valid == 1).mean())
        shares.append(share)
        if 0.25 < share < 0.75:
            mixed += 1
    shares_arr = np.array(shares)
    assert (shares_arr > 0.8).sum() >= 5 and (shares_arr < 0.3).sum() >= 5  # image level
    assert mixed >= 5  # regions within images differ
    # instance level: some objects differ from the region around them (not one big blob per image)
    s = draw_scene(0, "source", 1, (128, 72))
    n_components = cv2.connectedComponents((s.realism == 0).astype(np.uint8))[0] - 1
    assert n_components >= 2


def _mean_colour(domain: str, cls: int, realism_value: int | None, n: int = 40) -> np.ndarray:
    acc, cnt = np.zeros(3), 0
    for i in range(n):
        s = draw_scene(0, domain, i, (128, 72))
        m = LABEL_TO_TRAIN[s.label_ids] == cls
        if realism_value is not None:
            m &= s.realism == realism_value
        acc += s.image[m].astype(np.float64).sum(axis=0)
        cnt += int(m.sum())
    return acc / max(cnt, 1)


def test_deviating_areas_take_the_target_look_of_another_class() -> None:
    for cls in (0, 2, 13):  # road, building, car
        target_own = _mean_colour("target", cls, None)
        target_other = _mean_colour("target", DEVIATING_LOOK[cls], None)
        realistic = _mean_colour("source", cls, 1)
        deviating = _mean_colour("source", cls, 0)
        assert np.linalg.norm(realistic - target_own) < np.linalg.norm(realistic - target_other)
        assert np.linalg.norm(deviating - target_other) < np.linalg.norm(deviating - target_own)
    assert all(DEVIATING_LOOK[c] != c for c in range(19))


def _place_histograms(n: int, size: tuple[int, int] = (256, 128), grid: tuple[int, int] = (32, 16)) -> np.ndarray:
    """Per trainId, how often it covers each cell of a coarse grid over ``n`` target scenes."""
    hist = np.zeros((19, grid[1], grid[0]))
    for i in range(n):
        train = LABEL_TO_TRAIN[draw_scene(0, "target", i, size).label_ids]
        for c in range(19):
            hist[c] += cv2.resize((train == c).astype(np.float32), grid, interpolation=cv2.INTER_AREA)
    return hist


def test_a_deviating_area_wears_the_look_of_the_class_that_shares_its_place() -> None:
    hist = _place_histograms(120)
    counts = hist.sum(axis=(1, 2))
    dist = hist / np.maximum(counts[:, None, None], 1e-9)
    common = [c for c in range(19) if counts[c] >= 100]
    assert len(common) >= 12
    for c in common:
        overlap = {b: float(np.sqrt(dist[c] * dist[b]).sum()) for b in common if b != c}
        # the chosen look overlaps as much as the best (near-ties, e.g. sky: building or vegetation, allowed)
        assert overlap[DEVIATING_LOOK[c]] >= 0.95 * max(overlap.values()), (c, DEVIATING_LOOK[c], overlap)
    # a class sitting on or beside another takes that one's look: road looks like car, building like vegetation
    assert DEVIATING_LOOK[0] == 13 and DEVIATING_LOOK[2] == 8 and DEVIATING_LOOK[13] in (14, 15)


def _noise(domain: str, select, n: int = 30) -> float:  # type: ignore[no-untyped-def]
    """Mean absolute horizontal step inside flat areas: sensor noise (the car look has no texture)."""
    steps = []
    for i in range(n):
        s = draw_scene(0, domain, i, (128, 72) if domain == "source" else (128, 64))
        inside = cv2.erode(select(s).astype(np.uint8), np.ones((3, 5), np.uint8)) > 0
        step = np.abs(np.diff(s.image.astype(np.float32), axis=1))
        step = step[inside[:, 1:] & inside[:, :-1]]
        steps.append(step[step < 25])  # drop the rare edges (window band, shadow border)
    return float(np.concatenate(steps).mean())


def test_nothing_but_the_look_sets_deviating_areas_apart() -> None:
    wearing_car = [c for c, look in DEVIATING_LOOK.items() if look == 13]
    target = _noise("target", lambda s: LABEL_TO_TRAIN[s.label_ids] == 13)
    realistic = _noise("source", lambda s: (LABEL_TO_TRAIN[s.label_ids] == 13) & (s.realism == 1))
    deviating = _noise("source", lambda s: np.isin(LABEL_TO_TRAIN[s.label_ids], wearing_car) & (s.realism == 0))
    assert target > 2.0  # there is sensor noise to compare
    assert abs(realistic - target) < 0.1 * target
    assert abs(deviating - target) < 0.1 * target  # no cleaner "renderer" pixels


def test_the_mask_marks_exactly_the_pixels_that_wear_another_look() -> None:
    # per pixel: is its colour nearer the target mean of its own class or of its deviating look?
    means = {c: _mean_colour("target", c, None) for c in {0, 2, DEVIATING_LOOK[0], DEVIATING_LOOK[2]}}
    for cls in (0, 2):  # road, building
        own, other = means[cls], means[DEVIATING_LOOK[cls]]
        hits = {0: [0, 0], 1: [0, 0]}
        for i in range(20):
            s = draw_scene(0, "source", i, (128, 72))
            blur = cv2.blur(s.image.astype(np.float64), (3, 3))  # average the sensor noise away
            m = LABEL_TO_TRAIN[s.label_ids] == cls
            m = cv2.erode(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
            nearer_own = np.linalg.norm(blur - own, axis=2) < np.linalg.norm(blur - other, axis=2)
            for r in (0, 1):
                sel = m & (s.realism == r)
                hits[r][0] += int((nearer_own[sel] == bool(r)).sum())
                hits[r][1] += int(sel.sum())
        for r in (0, 1):
            assert hits[r][1] > 500
            assert hits[r][0] / hits[r][1] > 0.8, (cls, r, hits)


def test_deviating_areas_outnumber_realistic_ones() -> None:
    real = dev = 0
    for i in range(60):
        s = draw_scene(0, "source", i, (96, 54))
        real += int((s.realism == 1).sum())
        dev += int((s.realism == 0).sum())
    assert 0.5 < dev / (real + dev) < 0.7


def test_interrupted_generation_is_redone_and_its_shards_rebuilt(tmp_path: Path) -> None:
    from hrseg.data.shards import Manifest
    from hrseg.data.synthetic import SyntheticPrepareConfig, prepare_synthetic

    small = SceneConfig(seed=0, source_images=2, target_images=2, val_images=1, size=(64, 32))
    cfg = SyntheticPrepareConfig(out=tmp_path / "data", scenes=small, shard_size=2)
    first = prepare_synthetic(cfg, show_progress=False)
    assert first["generated"] is True
    again = prepare_synthetic(cfg, show_progress=False)
    assert again["generated"] is False and all(r.reused_shards == len(r.manifest.shards) for r in again["results"])
    # simulate a generation killed half-way: stamp still marked incomplete, a stray extra image left behind
    stamp = tmp_path / "data" / "raw" / "synthetic.json"
    stamp.write_text(json.dumps(json.loads(stamp.read_text()) | {"complete": False}))
    stray = tmp_path / "data" / "raw" / "GTAV" / "images" / "00099.png"
    stray.write_bytes((tmp_path / "data" / "raw" / "GTAV" / "images" / "00001.png").read_bytes())
    redo = prepare_synthetic(cfg, show_progress=False)
    assert redo["generated"] is True and not stray.exists()
    assert Manifest.load(tmp_path / "data" / "gtav" / "train").num_images == 2
    assert all(r.reused_shards == 0 for r in redo["results"])


def test_scenes_of_an_older_generator_are_refused_not_mixed(tmp_path: Path) -> None:
    cfg = SceneConfig(seed=0, source_images=1, target_images=1, val_images=1, size=(64, 32))
    generate_raw(cfg, tmp_path)
    stamp = tmp_path / "synthetic.json"
    assert json.loads(stamp.read_text())["generator"] == GENERATOR
    stamp.write_text(json.dumps(json.loads(stamp.read_text()) | {"generator": "hrseg-scenes/1"}))
    with pytest.raises(HrsegError, match="generator hrseg-scenes/1 -> " + GENERATOR + ".*--overwrite"):
        generate_raw(cfg, tmp_path)
    assert generate_raw(cfg, tmp_path, overwrite=True) is True
