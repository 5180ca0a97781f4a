"""Shard writer/reader, manifest round trip, verification, and failure atomicity."""

from __future__ import annotations

import errno
from pathlib import Path

import h5py
import numpy as np
import pytest

from hrseg.data import shards as shards_mod
from hrseg.data.shards import (
    Manifest,
    ShardOptions,
    ShardReader,
    ShardSample,
    ShardWriter,
    count_class_pixels,
    write_shard,
)
from hrseg.data.verify import verify_split
from hrseg.errors import HrsegError


def _samples(n: int, seed: int = 0, full: bool = False) -> list[ShardSample]:
    rng = np.random.default_rng(seed)
    return [
        ShardSample(
            name=f"images/{i:05d}.png",
            image=rng.integers(0, 256, (6, 10, 3), dtype=np.uint8),
            label=rng.choice(np.array([0, 5, 18, 255], np.uint8), (6, 10)),
            orig_size=(12, 20),
            realism=rng.choice(np.array([0, 1, 255], np.uint8), (6, 10)),
            full_label=rng.integers(0, 19, (11, 20), dtype=np.uint8) if full else None,
        )
        for i in range(n)
    ]


def _write_split(split_dir: Path, samples: list[ShardSample], per_shard: int = 2) -> Manifest:
    infos = [
        write_shard(split_dir / f"shard-{k:05d}.h5", samples[i : i + per_shard], compression="lzf")
        for k, i in enumerate(range(0, len(samples), per_shard))
    ]
    m = Manifest(
        dataset="gtav", split="train", size=(10, 6),
        options=ShardOptions(size=(10, 6), resize="area", compression="lzf", shard_size=per_shard, full_labels=False),
        num_images=len(samples), shards=infos,
        class_pixels=count_class_pixels(np.stack([s.label for s in samples])).tolist(), has_realism=True,
    )
    m.save(split_dir)
    return m


def test_shard_round_trip_and_fixed_layout(tmp_path: Path) -> None:
    samples = _samples(3, full=True)
    info = write_shard(tmp_path / "s.h5", samples, compression="gzip", full_size=(21, 12))
    assert info.count == 3 and info.file == "s.h5"
    with ShardReader(tmp_path / "s.h5") as r:
        assert len(r) == 3
        assert r.names() == [s.name for s in samples]
        assert r.dataset("images").chunks == (1, 6, 10, 3)  # one image per chunk
        for i, s in enumerate(samples):
            assert np.array_equal(r.read("images", i), s.image)
            assert np.array_equal(r.read("labels", i), s.label)
            assert np.array_equal(r.read("realism", i), s.realism)
            full = r.read("full_labels", i)
            assert full.shape == (12, 21)
            assert np.array_equal(full[:11, :20], s.full_label)
            assert (full[11:, :] == 255).all() and (full[:, 20:] == 255).all()
            assert tuple(r.read("orig_sizes", i)) == (12, 20)


def test_same_samples_give_identical_bytes(tmp_path: Path) -> None:
    a = write_shard(tmp_path / "a.h5", _samples(4), compression="gzip")
    b = write_shard(tmp_path / "b.h5", _samples(4), compression="gzip")
    c = write_shard(tmp_path / "c.h5", _samples(4, seed=1), compression="gzip")
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    assert a.sha256 == b.sha256 != c.sha256


def test_manifest_round_trip_and_errors(tmp_path: Path) -> None:
    m = _write_split(tmp_path / "gtav" / "train", _samples(5))
    loaded = Manifest.load(tmp_path / "gtav" / "train")
    assert loaded.to_dict() == m.to_dict()
    assert loaded.num_images == 5 and [s.count for s in loaded.shards] == [2, 2, 1]
    assert np.isclose(loaded.class_frequencies().sum(), 1.0)
    with pytest.raises(HrsegError, match="no manifest"):
        Manifest.load(tmp_path / "nowhere")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{not json")
    with pytest.raises(HrsegError, match="bad/manifest.json: not a valid"):
        Manifest.load(tmp_path / "bad")


def test_verify_passes_then_names_a_corrupted_shard(tmp_path: Path) -> None:
    split = tmp_path / "gtav" / "train"
    _write_split(split, _samples(5))
    assert verify_split(split).ok
    shard = split / "shard-00001.h5"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = verify_split(split)
    assert not report.ok
    assert len(report.problems) == 1 and "shard-00001.h5" in report.problems[0]
    (split / "shard-00002.h5").unlink()
    assert any("shard-00002.h5: missing" in p for p in verify_split(split).problems)


def test_out_of_disk_space_mid_shard_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real_add = ShardWriter.add

    def failing_add(self: ShardWriter, sample: ShardSample) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_add(self, sample)

    monkeypatch.setattr(shards_mod.ShardWriter, "add", failing_add)
    with pytest.raises(OSError) as exc:
        write_shard(tmp_path / "s.h5", _samples(4))
    assert exc.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # neither the shard nor its temporary file


def test_empty_shard_is_valid(tmp_path: Path) -> None:
    info = ShardWriter(tmp_path / "e.h5", (10, 6), realism=True).close()
    assert info.count == 0
    with h5py.File(tmp_path / "e.h5", "r") as f:
        assert f["images"].shape == (0, 6, 10, 3) and f["realism"].shape == (0, 6, 10)


def test_writer_rejects_wrong_sizes(tmp_path: Path) -> None:
    bad = _samples(1)[0]
    bad.label = bad.label[:, :5]
    with pytest.raises(ValueError, match="are not"):
        write_shard(tmp_path / "s.h5", [bad])
    assert not any(tmp_path.iterdir())


def test_count_class_pixels_ignores_255() -> None:
    labels = np.array([[0, 0, 18], [255, 255, 3]], dtype=np.uint8)
    counts = count_class_pixels(labels)
    assert counts.shape == (19,) and counts[0] == 2 and counts[18] == 1 and counts[3] == 1 and counts.sum() == 4
