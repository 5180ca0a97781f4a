"""The procedural scene generator: determinism, classes, realism at three levels, conflicting looks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hrseg.data.labels import LABEL_TO_TRAIN
from hrseg.data.synthetic import DEVIATING_LOOK, SceneConfig, draw_scene, generate_raw


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
    import cv2

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


def test_interrupted_generation_is_redone_and_its_shards_rebuilt(tmp_path: Path) -> None:
    from hrseg.data.shards import Manifest
    from hrseg.data.synthetic import SyntheticPrepareConfig, prepare_synthetic

    small = SceneConfig(seed=0, source_images=2, target_images=2, val_images=1, size=(64, 32))
    cfg = SyntheticPrepareConfig(out=tmp_path / "data", scenes=small, shard_size=2)
    first = prepare_synthetic(cfg, show_progress=False)
    assert first["generated"] is True
    again = prepare_synthetic(cfg, show_progress=False)
    assert again["generated"] is False and all(r.reused_shards == len(r.manifest.shards) for r in again["results"])
    # simulate a generation killed half-way: stamp gone, a stray extra image left behind
    (tmp_path / "data" / "raw" / "synthetic.json").unlink()
    stray = tmp_path / "data" / "raw" / "GTAV" / "images" / "00099.png"
    stray.write_bytes((tmp_path / "data" / "raw" / "GTAV" / "images" / "00001.png").read_bytes())
    redo = prepare_synthetic(cfg, show_progress=False)
    assert redo["generated"] is True and not stray.exists()
    assert Manifest.load(tmp_path / "data" / "gtav" / "train").num_images == 2
    assert all(r.reused_shards == 0 for r in redo["results"])
