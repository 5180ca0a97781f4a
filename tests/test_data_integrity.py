"""Damaged shards are found where they are read: checksums per row, one-line errors naming shard and image."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from data_fixtures import cached_synthetic_data, copy_data
from hrseg.cli.main import app
from hrseg.data.checksums import BLOCK_BYTES, row_checksum
from hrseg.data.dataset import ShardDataset, ShardReadError, UnverifiedShardsWarning, open_split
from hrseg.data.shards import FORMAT, Manifest, ShardSample, ShardWriter, write_shard
from hrseg.errors import HrsegError


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def flip_row(shard: Path, key: str, row: int, byte: int = 5, mask: int = 0x55) -> None:
    """Flip one byte inside row ``row`` of dataset ``key`` in place, where HDF5 stored it on disk."""
    with h5py.File(shard, "r") as f:
        offset = f[key].id.get_chunk_info(row).byte_offset
    with open(shard, "r+b") as fh:
        fh.seek(offset + byte)
        value = fh.read(1)[0]
        fh.seek(offset + byte)
        fh.write(bytes([value ^ mask]))


def _names(split: Path, shard: str) -> list[str]:
    with h5py.File(split / shard, "r") as f:
        return [bytes(b).rstrip(b"\0").decode() for b in f["names"][()]]


# --- the checksum itself -------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(7,), (4096,), (720, 1280, 3), (13, 17), (1, BLOCK_BYTES + 3)])
def test_checksum_catches_every_single_byte_change(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    row = rng.integers(0, 256, shape, dtype=np.uint8)
    base = row_checksum(row)
    assert base == row_checksum(row.copy()) == row_checksum(row.tobytes())  # arrays and bytes agree
    flat = row.reshape(-1)
    for pos in list(rng.choice(flat.size, size=min(50, flat.size), replace=False)) + [0, flat.size - 1]:
        for mask in (0x01, 0x80, 0xFF):
            damaged = flat.copy()
            damaged[pos] ^= mask
            assert row_checksum(damaged) != base, (pos, mask)


def test_checksum_catches_zeroed_and_swapped_blocks() -> None:
    row = np.random.default_rng(1).integers(0, 256, 4 * BLOCK_BYTES, dtype=np.uint8)
    base = row_checksum(row)
    zeroed = row.copy()
    zeroed[BLOCK_BYTES : 2 * BLOCK_BYTES] = 0
    swapped = np.concatenate([row[BLOCK_BYTES : 2 * BLOCK_BYTES], row[:BLOCK_BYTES], row[2 * BLOCK_BYTES :]])
    shifted = np.roll(row, 8)
    assert len({base, row_checksum(zeroed), row_checksum(swapped), row_checksum(shifted)}) == 4


def test_every_row_field_has_a_stored_checksum(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = [ShardSample(f"images/{i}.png", rng.integers(0, 256, (6, 10, 3), dtype=np.uint8),
                           rng.integers(0, 19, (6, 10), dtype=np.uint8), (12, 20),
                           rng.integers(0, 2, (6, 10), dtype=np.uint8), rng.integers(0, 19, (8, 9), dtype=np.uint8))
               for i in range(3)]
    write_shard(tmp_path / "s.h5", samples, full_size=(9, 8))
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert f.attrs["format"] == FORMAT
        fields = f["checksums"].attrs["fields"].split(",")
        assert fields == ["names", "orig_sizes", "images", "labels", "realism", "full_labels"]
        table = f["checksums"][()]
        for i in range(3):
            for j, key in enumerate(fields):
                value = bytes(f[key][i]) if key == "names" else f[key][i]
                assert table[i, j] == row_checksum(value)


def test_reserved_space_is_given_back_and_bytes_do_not_change(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    samples = [ShardSample(f"i{i}", rng.integers(0, 256, (30, 40, 3), dtype=np.uint8),
                           rng.integers(0, 19, (30, 40), dtype=np.uint8), (30, 40)) for i in range(3)]

    def write(path: Path, expected_rows: int) -> bytes:
        with ShardWriter(path, (40, 30), expected_rows=expected_rows) as w:
            for s in samples:
                w.add(s)
            w.close()
        return path.read_bytes()

    reserved, plain = write(tmp_path / "r.h5", 3), write(tmp_path / "p.h5", 0)
    assert reserved == plain  # the unused part of the reservation was cut off again


# --- ShardDataset refuses damaged rows -----------------------------------------------------------


@pytest.mark.parametrize(("key", "what"), [("images", "pixels"), ("labels", "label"),
                                           ("full_labels", "full-resolution label")])
def test_a_flipped_byte_in_a_chunk_is_a_one_line_error_naming_shard_and_image(
    data: Path, tmp_path: Path, key: str, what: str
) -> None:
    copy = copy_data(data, tmp_path / "data")
    split = copy / "cityscapes" / "val"
    name = _names(split, "shard-00000.h5")[1]
    flip_row(split / "shard-00000.h5", key, 1)
    ds = open_split(copy, "cityscapes", "val", fields=("image", "label", "full_label", "name"))
    ds[0], ds[2], ds[3]  # the other images still load
    with pytest.raises(ShardReadError) as exc:
        ds[1]
    msg = str(exc.value)
    assert "\n" not in msg
    assert f"shard-00000.h5: {what} of image {name} (row 1) is damaged" in msg
    assert "hrseg prepare verify" in msg


def test_a_damaged_name_is_refused_too(data: Path, tmp_path: Path) -> None:
    copy = copy_data(data, tmp_path / "data")
    split = copy / "gtav" / "train"
    with h5py.File(split / "shard-00001.h5", "r") as f:
        offset = f["names"].id.get_chunk_info(0).byte_offset
    with open(split / "shard-00001.h5", "r+b") as fh:  # names live in one chunk of 64 rows: row 2 starts at 512
        fh.seek(offset + 2 * 256)
        fh.write(b"X")
    ds = ShardDataset(split, fields=("name",))
    assert ds[4]["name"] == _names(data / "gtav" / "train", "shard-00001.h5")[0]
    with pytest.raises(ShardReadError, match=r"shard-00001.h5: the name of image row 2 is damaged"):
        ds[6]


def test_compressed_shards_are_checked_as_well(tmp_path: Path) -> None:
    from data_fixtures import make_gtav_root
    from hrseg.data.prepare import PrepareConfig, prepare

    root = make_gtav_root(tmp_path / "GTAV", count=3)
    prepare(PrepareConfig(dataset="gtav", root=root, out=tmp_path / "d", size=(24, 14), compression="lzf",
                          shard_size=3), show_progress=False)
    split = tmp_path / "d" / "gtav" / "train"
    flip_row(split / "shard-00000.h5", "images", 2, byte=30)
    ds = ShardDataset(split)
    ds[0], ds[1]
    with pytest.raises(ShardReadError, match=r"shard-00000.h5: pixels of image images/00003.png \(row 2\) is (damaged|unr)"):
        ds[2]


def test_the_error_stays_one_line_through_dataloader_workers(data: Path, tmp_path: Path) -> None:
    copy = copy_data(data, tmp_path / "data")
    split = copy / "cityscapes" / "train"
    flip_row(split / "shard-00000.h5", "images", 0)
    loader = DataLoader(ShardDataset(split), batch_size=2, num_workers=1)
    with pytest.raises(HrsegError) as exc:
        for _ in loader:
            pass
    assert "\n" not in str(exc.value) and "Traceback" not in str(exc.value)
    assert str(exc.value).startswith(f"{split / 'shard-00000.h5'}: pixels of image ")


def test_verify_false_skips_the_checks(data: Path, tmp_path: Path) -> None:
    copy = copy_data(data, tmp_path / "data")
    split = copy / "cityscapes" / "train"
    clean = ShardDataset(data / "cityscapes" / "train")[0]["image"]
    flip_row(split / "shard-00000.h5", "images", 0, byte=0, mask=0x01)
    item = ShardDataset(split, verify=False)[0]["image"]
    assert not torch.equal(item, clean) and int((item != clean).sum()) == 1


# --- the manifest and the shards must agree ------------------------------------------------------


def _edit_manifest(split: Path, fn) -> None:  # type: ignore[no-untyped-def]
    path = split / "manifest.json"
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def test_a_manifest_whose_shard_count_is_wrong_is_a_one_line_error(data: Path, tmp_path: Path) -> None:
    copy = copy_data(data, tmp_path / "data")
    split = copy / "cityscapes" / "train"

    def more(d: dict) -> None:  # type: ignore[type-arg]
        d["shards"][0]["count"] += 1
        d["num_images"] += 1

    _edit_manifest(split, more)
    ds = ShardDataset(split)
    ds[5]  # shard 1 is fine
    with pytest.raises(ShardReadError, match=r"shard-00000.h5: holds 4 images but the manifest says 5"):
        ds[0]

    def inconsistent(d: dict) -> None:  # type: ignore[type-arg]
        d["num_images"] += 3

    _edit_manifest(split, inconsistent)
    with pytest.raises(HrsegError, match=r"manifest.json: its shards hold 9 images in total but num_images says 12"):
        Manifest.load(split)
    res = CliRunner().invoke(app, ["prepare", "verify", str(split)], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "num_images says 12" in res.output and "Traceback" not in res.output


# --- shards from before checksums ---------------------------------------------------------------


def test_old_format_shards_still_load_with_one_warning(data: Path, tmp_path: Path) -> None:
    copy = copy_data(data, tmp_path / "data")
    split = copy / "cityscapes" / "train"
    for shard in split.glob("shard-*.h5"):
        with h5py.File(shard, "a") as f:
            del f["checksums"]
            f.attrs["format"] = "hrseg-shards/1"
    _edit_manifest(split, lambda d: d.update(format="hrseg-shards/1"))
    with pytest.warns(UnverifiedShardsWarning, match="without per-image checksums.*prepare command again"):
        ds = open_split(copy, "cityscapes", "train")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = ds.subset([0, 1]).with_fields(("image",))  # once per split, not per dataset object
    expect = ShardDataset(data / "cityscapes" / "train")
    assert torch.equal(again[1]["image"], expect[1]["image"])
    assert torch.equal(ds[7]["label"], expect[7]["label"])


# --- train and eval stop instead of using damaged pixels ----------------------------------------


TINY = {
    "model.width": 0.0625, "data.batch_size": 2, "data.crop": (32, 16), "optim.iters": 2, "run.device": "cpu",
    "run.progress": False, "data.target_images": 4,
}


def test_train_and_eval_stop_with_one_line_on_a_damaged_chunk(data: Path, tmp_path: Path) -> None:
    from hrseg.training.config import override
    from hrseg.training.presets import quick_config
    from hrseg.training.trainer import train

    run = tmp_path / "run"
    train(override(quick_config("target-only", str(data), str(run)), TINY))
    copy = copy_data(data, tmp_path / "data")
    val = copy / "cityscapes" / "val"
    name = _names(val, "shard-00000.h5")[3]
    flip_row(val / "shard-00000.h5", "images", 3)
    res = CliRunner().invoke(app, ["eval", "--run", str(run), "--data", str(copy), "--split", "val", "--device", "cpu"],
                             env={"COLUMNS": "300"})
    assert res.exit_code == 2, res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {val / 'shard-00000.h5'}: pixels of image {name} (row 3) is damaged (it does not "
                      "match the checksum prepare wrote); run hrseg prepare verify, then the same hrseg prepare "
                      "command again to rebuild it"]
    assert "Traceback" not in res.output
    target = copy / "cityscapes" / "train"
    for shard in target.glob("shard-*.h5"):
        for row in range(4):
            flip_row(shard, "labels", row)
    with pytest.raises(ShardReadError, match=r"cityscapes/train/shard-0000[01].h5: label of image .* is damaged"):
        train(override(quick_config("target-only", str(copy), str(tmp_path / "run2")), TINY))


def test_shard_reader_read_all_checks_every_row(data: Path, tmp_path: Path) -> None:
    from hrseg.data.shards import ShardReader

    copy = copy_data(data, tmp_path / "data")
    shard = copy / "cityscapes" / "val" / "shard-00000.h5"
    with ShardReader(shard) as r:
        sizes = r.read_all("orig_sizes")
        assert sizes.shape == (4, 2) and (sizes == (32, 64)).all()
    with h5py.File(shard, "r") as f:
        offset = f["orig_sizes"].id.get_chunk_info(0).byte_offset
    with open(shard, "r+b") as fh:  # orig_sizes rows are 8 bytes in one chunk: row 2 starts at 16
        fh.seek(offset + 16)
        fh.write(b"\x07")
    with ShardReader(shard) as r, pytest.raises(HrsegError, match=r"shard-00000.h5: orig_sizes of row 2 is damaged"):
        r.read_all("orig_sizes")


@pytest.mark.parametrize("shape", [(3,), (4096,), (720, 1280, 3), (300, 1001)])
def test_reading_in_pieces_gives_the_same_checksum_and_bytes(tmp_path: Path, shape: tuple[int, ...]) -> None:
    import os

    from hrseg.data.checksums import pread_checksum

    row = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    (tmp_path / "f").write_bytes(b"xyz" + row.tobytes())
    fd = os.open(tmp_path / "f", os.O_RDONLY)
    try:
        out = np.empty(shape, np.uint8)
        assert pread_checksum(fd, out, 3) == (row.nbytes, row_checksum(row))
        assert np.array_equal(out, row)
    finally:
        os.close(fd)
