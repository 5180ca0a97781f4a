"""A user's own dataset needs no code: a folder of images, label PNGs and a class table, through the CLI only."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from hrseg.data.labels import CLASS_NAMES, LABEL_TO_TRAIN, PALETTE, colorize
from hrseg.data.png import encode_png
from hrseg.data.readers import DATASETS, decode, list_split
from hrseg.data.scenes import draw_scene
from hrseg.errors import HrsegError
from tests.cli_fixtures import invoke, text

SIZE = (64, 32)


def make_folder(root: Path, train: int = 6, val: int = 3) -> Path:
    """Scenes as a user would have them: JPEG/PNG images in sub-folders, colour labels (train), id labels (val)."""
    rows = [f'[[classes]]\nname = "{name}"\nid = {i}\ncolor = {list(map(int, PALETTE[i]))}\n'
            for i, name in enumerate(CLASS_NAMES)]
    rows.append('[[classes]]\nname = "sky-ish"\ntrain_as = "sky"\nid = 200\n')
    root.mkdir(parents=True)
    (root / "classes.toml").write_text("\n".join(rows))
    for split, count in (("train", train), ("val", val)):
        for i in range(count):
            scene = draw_scene(7, "target", i + (100 if split == "val" else 0), SIZE)
            train_ids = LABEL_TO_TRAIN[scene.label_ids]
            image = root / "images" / split / f"seq{i % 2}" / f"frame{i}.png"
            label = root / "labels" / split / f"seq{i % 2}" / f"frame{i}.png"
            image.parent.mkdir(parents=True, exist_ok=True)
            label.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(image), scene.image[:, :, ::-1])
            label.write_bytes(encode_png(colorize(train_ids)) if split == "train" else encode_png(train_ids))
    return root


def test_the_folder_format_reads_colour_and_id_labels_through_its_table(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "mine", train=2, val=2)
    assert "folder" in DATASETS and DATASETS["folder"].evaluated_splits == ("val",)
    for split in ("train", "val"):
        listing = list_split("folder", root, split)
        assert [s.name for s in listing.samples] == [f"images/{split}/seq0/frame0.png", f"images/{split}/seq1/frame1.png"]
        d = decode("folder", listing.samples[0])
        scene = draw_scene(7, "target", 100 if split == "val" else 0, SIZE)
        assert np.array_equal(d.label, LABEL_TO_TRAIN[scene.label_ids]) and d.skip is None
    (root / "classes.toml").write_text('[[classes]]\nname = "lawn"\nid = 1\n')
    from hrseg.data.formats.folder import load_table

    load_table.cache_clear()
    with pytest.raises(HrsegError, match=r"classes.toml: classes\[0\]: 'lawn' is not a Cityscapes class"):
        list_split("folder", root, "train")


def test_a_folder_dataset_prepares_trains_and_evaluates_through_the_cli(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "mine")
    data, run = tmp_path / "DATA", tmp_path / "run"
    res = invoke("prepare", "folder", "--root", root, "--out", data, "--name", "mine", "--size", "64x32",
                 "--workers", "1")
    assert res.exit_code == 0, text(res)
    manifest = json.loads((data / "mine" / "val" / "manifest.json").read_text())
    assert manifest["dataset"] == "mine" and manifest["num_images"] == 3 and manifest["has_full_labels"]
    res = invoke("train", "--scheme", "target-only", "--data", data, "--target", "mine", "--out", run,
                 "--iters", "2", "--batch-size", "2", "--crop", "32x16", "--width", "0.0625", "--device", "cpu",
                 "--no-progress")
    assert res.exit_code == 0, text(res)
    res = invoke("eval", "--run", run, "--device", "cpu", "--no-progress", "--json", tmp_path / "eval.json")
    assert res.exit_code == 0, text(res)
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["dataset"] == "mine" and report["split"] == "val" and report["num_images"] == 3
    assert 0.0 <= report["miou"] <= 100.0
    refused = invoke("prepare", "gtav", "--root", root, "--out", data, "--name", "x")
    assert refused.exit_code == 2 and "--name 'x': gtav is not renamed" in text(refused)
