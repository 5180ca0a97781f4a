"""Readers of the real layouts (GTAV, Cityscapes, SYNTHIA) and their defect handling."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from data_fixtures import make_cityscapes_root, make_gtav_root, make_synthia_root, write_gtav_pair
from hrseg.data.labels import LABEL_PALETTE, LABEL_TO_TRAIN
from hrseg.data.png import PngError, decode_palette_indices, encode_palette_png
from hrseg.data.readers import decode, list_split
from hrseg.errors import HrsegError


def test_palette_png_round_trip_keeps_indices_that_share_a_colour() -> None:
    ids = np.array([[17, 18, 0, 1], [2, 3, 7, 200]], dtype=np.uint8)  # pole/polegroup, 0-3 all black
    data = encode_palette_png(ids, LABEL_PALETTE)
    assert data[25] == 3  # IHDR colour type: palettised, like GTAV's labels
    assert np.array_equal(decode_palette_indices(data), ids)
    colours = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert np.array_equal(colours, LABEL_PALETTE[ids])  # standard decoders see the GTAV colours
    with pytest.raises(PngError, match="truncated"):
        decode_palette_indices(data[:-20])
    with pytest.raises(PngError, match="not a PNG"):
        decode_palette_indices(b"GIF89a")


def test_gtav_lists_the_intersection_and_counts_missing_files(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=5)
    (root / "labels" / "00002.png").unlink()
    (root / "images" / "00004.png").unlink()
    listing = list_split("gtav", root, "train")
    assert [s.name for s in listing.samples] == ["images/00001.png", "images/00003.png", "images/00005.png"]
    assert listing.skipped == {"missing_label": ["images/00002.png"], "missing_image": ["labels/00004.png"]}


def test_gtav_decode_maps_label_ids_to_train_ids(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=1)
    sample = list_split("gtav", root, "train").samples[0]
    d = decode("gtav", sample)
    ids = decode_palette_indices((root / "labels" / "00001.png").read_bytes())
    assert d.skip is None and d.events == {}
    assert np.array_equal(d.label, LABEL_TO_TRAIN[ids])
    assert np.array_equal(d.image, cv2.imread(str(root / "images" / "00001.png"))[:, :, ::-1])


def test_size_mismatched_pair_is_resized_nearest_and_counted(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=1, size=(48, 27))
    lab_path = root / "labels" / "00001.png"
    ids = decode_palette_indices(lab_path.read_bytes())
    bigger = cv2.resize(ids, (50, 29), interpolation=cv2.INTER_NEAREST)  # GTAV: a few pixels off
    lab_path.write_bytes(encode_palette_png(bigger, LABEL_PALETTE))
    d = decode("gtav", list_split("gtav", root, "train").samples[0])
    assert d.events == {"label_resized": 1}
    assert d.label.shape == (27, 48)
    expected = cv2.resize(LABEL_TO_TRAIN[bigger], (48, 27), interpolation=cv2.INTER_NEAREST)
    assert np.array_equal(d.label, expected)


def test_unknown_label_ids_become_ignore_and_are_counted(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=1)
    lab_path = root / "labels" / "00001.png"
    ids = decode_palette_indices(lab_path.read_bytes())
    ids[:2, :5] = 77
    ids[5, 5] = 34
    lab_path.write_bytes(encode_palette_png(ids, LABEL_PALETTE))
    d = decode("gtav", list_split("gtav", root, "train").samples[0])
    assert d.events == {"unknown_label_ids": 1, "unknown_label_pixels": 11}
    assert (d.label[:2, :5] == 255).all() and d.label[5, 5] == 255


def test_blank_and_corrupt_images_are_skipped_with_their_path(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=3)
    cv2.imwrite(str(root / "images" / "00002.png"), np.zeros((27, 48, 3), np.uint8))
    data = (root / "images" / "00003.png").read_bytes()
    (root / "images" / "00003.png").write_bytes(data[: len(data) // 2])
    samples = list_split("gtav", root, "train").samples
    blank, corrupt = decode("gtav", samples[1]), decode("gtav", samples[2])
    assert blank.skip == "blank" and "00002.png" in blank.detail
    assert corrupt.skip == "corrupt" and str(root / "images" / "00003.png") in corrupt.detail
    lab = (root / "labels" / "00001.png")
    lab.write_bytes(lab.read_bytes()[:40])
    bad_label = decode("gtav", samples[0])
    assert bad_label.skip == "corrupt" and str(lab) in bad_label.detail


def test_missing_root_and_wrong_layout_name_the_expected_folders(tmp_path: Path) -> None:
    with pytest.raises(HrsegError, match="does not exist"):
        list_split("gtav", tmp_path / "nope", "train")
    (tmp_path / "x" / "images").mkdir(parents=True)
    with pytest.raises(HrsegError, match=r"not a GTAV layout; expected folders images/, labels/ \(missing labels/\)"):
        list_split("gtav", tmp_path / "x", "train")
    with pytest.raises(HrsegError, match=r"leftImg8bit/val/, gtFine/val/"):
        list_split("cityscapes", tmp_path / "x", "val")
    with pytest.raises(HrsegError, match=r"RGB/, GT/LABELS/"):
        list_split("synthia", tmp_path / "x", "train")
    with pytest.raises(HrsegError, match="--split val: gtav has the split"):
        list_split("gtav", tmp_path / "x", "val")


def test_empty_split_is_a_user_error(tmp_path: Path) -> None:
    for d in ("images", "labels"):
        (tmp_path / "GTAV" / d).mkdir(parents=True)
    with pytest.raises(HrsegError, match="split 'train' is empty"):
        list_split("gtav", tmp_path / "GTAV", "train")
    make_cityscapes_root(tmp_path / "cs", "train", count=2)
    (tmp_path / "cs" / "leftImg8bit" / "val").mkdir(parents=True)
    (tmp_path / "cs" / "gtFine" / "val").mkdir(parents=True)
    with pytest.raises(HrsegError, match="split 'val' is empty"):
        list_split("cityscapes", tmp_path / "cs", "val")


def test_cityscapes_pairs_by_name_and_reports_orphans(tmp_path: Path) -> None:
    root = make_cityscapes_root(tmp_path / "cs", "train", count=4)
    listing = list_split("cityscapes", root, "train")
    assert [s.name for s in listing.samples] == sorted(s.name for s in listing.samples)
    assert listing.samples[0].name.startswith("leftImg8bit/train/aachen/aachen_000000_000019")
    victim = listing.samples[1]
    assert victim.label is not None
    victim.label.unlink()
    again = list_split("cityscapes", root, "train")
    assert again.skipped == {"missing_label": [victim.name]} and len(again.samples) == 3
    d = decode("cityscapes", again.samples[0])
    raw = cv2.imread(str(again.samples[0].label), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(d.label, LABEL_TO_TRAIN[raw])


def test_cityscapes_test_split_without_labels_reads_as_ignore(tmp_path: Path) -> None:
    root = make_cityscapes_root(tmp_path / "cs", "test", count=1)
    import shutil

    shutil.rmtree(root / "gtFine")
    sample = list_split("cityscapes", root, "test").samples[0]
    assert sample.label is None and (decode("cityscapes", sample).label == 255).all()


def test_synthia_reads_the_last_opencv_channel_of_16_bit_labels(tmp_path: Path) -> None:
    root = make_synthia_root(tmp_path / "SYNTHIA", count=2)
    raw = cv2.imread(str(root / "GT" / "LABELS" / "0000000.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.ndim == 3
    d = decode("synthia", list_split("synthia", root, "train").samples[0])
    from hrseg.data.labels import SYNTHIA_TO_TRAIN

    assert np.array_equal(d.label, SYNTHIA_TO_TRAIN[raw[:, :, -1]])
    assert set(np.unique(d.label).tolist()) - {255} and d.events == {}
    raw[0, 0, 2] = 60  # not a SYNTHIA class
    cv2.imwrite(str(root / "GT" / "LABELS" / "0000000.png"), raw)
    d = decode("synthia", list_split("synthia", root, "train").samples[0])
    assert d.events == {"unknown_label_ids": 1, "unknown_label_pixels": 1} and d.label[0, 0] == 255


def test_realism_masks_must_cover_every_gtav_image(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=2)
    (root / "realism").mkdir()
    cv2.imwrite(str(root / "realism" / "00001.png"), np.ones((27, 48), np.uint8))
    with pytest.raises(HrsegError, match="realism masks exist for some images but not all"):
        list_split("gtav", root, "train")
    write_gtav_pair(root, 1)
    cv2.imwrite(str(root / "realism" / "00002.png"), np.zeros((27, 48), np.uint8))
    listing = list_split("gtav", root, "train")
    assert all(s.realism is not None for s in listing.samples)
