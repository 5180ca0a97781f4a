"""`prepare`: pixel-exact shards, deterministic bytes, resume after a crash or a kill, option changes, ENOSPC."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest

from data_fixtures import make_gtav_root, make_synthetic_data
from hrseg.data import shardbuild as shardbuild_mod
from hrseg.data import shards as shards_mod
from hrseg.data.labels import LABEL_TO_TRAIN
from hrseg.data.png import decode_palette_indices
from hrseg.data.prepare import PrepareConfig, prepare
from hrseg.data.shards import Manifest, ShardReader
from hrseg.data.verify import verify_split
from hrseg.errors import HrsegError


def _split_files(split_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(split_dir.iterdir())}


def _gtav_cfg(root: Path, out: Path, **kw: object) -> PrepareConfig:
    base: dict = dict(dataset="gtav", root=root, out=out, size=(24, 14), shard_size=2, workers=1)
    base.update(kw)
    return PrepareConfig(**base)


def test_synthetic_shards_are_pixel_exact_against_the_pngs(tmp_path: Path) -> None:
    data = make_synthetic_data(tmp_path, source_images=5, target_images=3, val_images=3,
                               size=(64, 32), prepared_size=(32, 16), shard_size=2)
    raw = data / "raw"
    gtav = Manifest.load(data / "gtav" / "train")
    assert gtav.size == (32, 18) and gtav.has_realism and gtav.num_images == 5
    for info in gtav.shards:
        with ShardReader(data / "gtav" / "train" / info.file) as r:
            for i, name in enumerate(r.names()):
                stem = Path(name).name
                ids = decode_palette_indices((raw / "GTAV" / "labels" / stem).read_bytes())
                expect = cv2.resize(LABEL_TO_TRAIN[ids], (32, 18), interpolation=cv2.INTER_NEAREST)
                assert np.array_equal(r.read("labels", i), expect)
                realism = cv2.imread(str(raw / "GTAV" / "realism" / stem), cv2.IMREAD_GRAYSCALE)
                assert np.array_equal(r.read("realism", i), cv2.resize(realism, (32, 18), interpolation=cv2.INTER_NEAREST))
                image = cv2.imread(str(raw / "GTAV" / name))[:, :, ::-1]
                assert np.array_equal(r.read("images", i), cv2.resize(image, (32, 18), interpolation=cv2.INTER_AREA))
                assert tuple(r.read("orig_sizes", i)) == (36, 64)
    val = Manifest.load(data / "cityscapes" / "val")
    assert val.has_full_labels and val.options.full_size == (64, 32) and not val.has_realism
    with ShardReader(data / "cityscapes" / "val" / val.shards[0].file) as r:
        name = r.name(0)
        gt = name.replace("leftImg8bit/", "gtFine/", 1).replace("_leftImg8bit.png", "_gtFine_labelIds.png")
        ids = cv2.imread(str(raw / "cityscapes" / gt), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(r.read("full_labels", 0), LABEL_TO_TRAIN[ids])  # evaluation resolution
        assert np.array_equal(r.read("labels", 0), cv2.resize(LABEL_TO_TRAIN[ids], (32, 16), interpolation=cv2.INTER_NEAREST))
    assert not Manifest.load(data / "cityscapes" / "train").has_full_labels
    pixels = np.zeros(19, dtype=np.int64)
    for path in gtav.shard_paths(data / "gtav" / "train"):
        with h5py.File(path, "r") as f:
            pixels += np.bincount(f["labels"][()].ravel(), minlength=256)[:19]
    assert pixels.tolist() == gtav.class_pixels


def test_two_workers_write_the_same_bytes_as_one(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=7)
    prepare(_gtav_cfg(root, tmp_path / "one"), show_progress=False)
    prepare(_gtav_cfg(root, tmp_path / "two", workers=2), show_progress=False)
    assert _split_files(tmp_path / "one" / "gtav" / "train") == _split_files(tmp_path / "two" / "gtav" / "train")


def test_crash_after_k_shards_then_resume_equals_an_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=7)
    prepare(_gtav_cfg(root, tmp_path / "clean"), show_progress=False)
    real_build = shardbuild_mod.build_shard
    built: list[str] = []

    def crashing_build(task, on_image=None):  # type: ignore[no-untyped-def]
        if len(built) == 2:
            raise KeyboardInterrupt
        built.append(task.path.name)
        return real_build(task, on_image)

    monkeypatch.setattr(shardbuild_mod, "build_shard", crashing_build)
    with pytest.raises(KeyboardInterrupt):
        prepare(_gtav_cfg(root, tmp_path / "resumed"), show_progress=False)
    split = tmp_path / "resumed" / "gtav" / "train"
    assert sorted(p.name for p in split.iterdir()) == ["shard-00000.h5", "shard-00001.h5"]  # no manifest yet
    monkeypatch.setattr(shardbuild_mod, "build_shard", real_build)
    [result] = prepare(_gtav_cfg(root, tmp_path / "resumed"), show_progress=False)
    assert (result.reused_shards, result.built_shards) == (2, 2)
    assert _split_files(split) == _split_files(tmp_path / "clean" / "gtav" / "train")


def test_killed_process_then_rerun_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=40, size=(192, 108))
    args = ["--root", str(root), "--size", "96x54", "--shard-size", "1", "--workers", "2"]
    env = dict(os.environ, COLUMNS="120")
    subprocess.run([sys.executable, "-m", "hrseg", "prepare", "gtav", "--out", str(tmp_path / "clean"), *args],
                   check=True, capture_output=True, env=env, timeout=300)
    split = tmp_path / "killed" / "gtav" / "train"
    proc = subprocess.Popen([sys.executable, "-m", "hrseg", "prepare", "gtav", "--out", str(tmp_path / "killed"), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(split.glob("shard-*.h5"))) < 3 and proc.poll() is None:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "prepare finished before it could be killed"
    assert not (split / "manifest.json").exists()
    time.sleep(1.5)  # orphaned workers notice the dead parent within a second and exit
    for shard in split.glob("shard-*.h5"):  # every visible shard is complete
        with h5py.File(shard, "r") as f:
            assert f["labels"].shape[0] == 1
    subprocess.run([sys.executable, "-m", "hrseg", "prepare", "gtav", "--out", str(tmp_path / "killed"), *args],
                   check=True, capture_output=True, env=env, timeout=300)
    assert not list(split.glob(".*"))  # temporary files of the killed run were cleaned up
    assert _split_files(split) == _split_files(tmp_path / "clean" / "gtav" / "train")


def test_rerun_reuses_everything_and_a_changed_option_is_refused(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=5)
    out = tmp_path / "data"
    prepare(_gtav_cfg(root, out), show_progress=False)
    before = _split_files(out / "gtav" / "train")
    [again] = prepare(_gtav_cfg(root, out), show_progress=False)
    assert (again.reused_shards, again.built_shards) == (3, 0)
    assert _split_files(out / "gtav" / "train") == before
    with pytest.raises(HrsegError, match=r"already prepared with other options \(size \[24, 14\] -> \[20, 12\]\).*--overwrite"):
        prepare(_gtav_cfg(root, out, size=(20, 12)), show_progress=False)
    with pytest.raises(HrsegError, match="compression none -> gzip"):
        prepare(_gtav_cfg(root, out, compression="gzip"), show_progress=False)
    assert _split_files(out / "gtav" / "train") == before  # refusing touched nothing
    [rebuilt] = prepare(_gtav_cfg(root, out, size=(20, 12), overwrite=True), show_progress=False)
    assert rebuilt.manifest.size == (20, 12) and rebuilt.built_shards == 3
    assert verify_split(out / "gtav" / "train").ok


def test_new_input_files_rebuild_only_the_affected_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=5)
    out = tmp_path / "data"
    prepare(_gtav_cfg(root, out), show_progress=False)
    from data_fixtures import write_gtav_pair

    write_gtav_pair(root, 5)  # a sixth pair lands in the last range

    def interrupted(task, on_image=None):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(shardbuild_mod, "build_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(_gtav_cfg(root, out), show_progress=False)
    assert not (out / "gtav" / "train" / "manifest.json").exists()  # never a manifest that mismatches its shards
    monkeypatch.undo()
    [res] = prepare(_gtav_cfg(root, out), show_progress=False)
    assert (res.reused_shards, res.built_shards) == (2, 1) and res.manifest.num_images == 6


def test_out_of_disk_space_keeps_finished_shards_and_no_partial_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=6)
    calls = {"n": 0}
    real_add = shards_mod.ShardWriter.add

    def full_disk(self, sample):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:  # the second image of the second shard
            raise OSError(errno.ENOSPC, "No space left on device")
        real_add(self, sample)

    monkeypatch.setattr(shards_mod.ShardWriter, "add", full_disk)
    with pytest.raises(HrsegError, match="out of disk space.*run the same command again"):
        prepare(_gtav_cfg(root, tmp_path / "data"), show_progress=False)
    split = tmp_path / "data" / "gtav" / "train"
    assert sorted(p.name for p in split.iterdir()) == ["shard-00000.h5"]
    monkeypatch.setattr(shards_mod.ShardWriter, "add", real_add)
    [res] = prepare(_gtav_cfg(root, tmp_path / "data"), show_progress=False)
    assert res.reused_shards == 1 and verify_split(split).ok


def test_defects_are_skipped_listed_and_counted_in_the_manifest(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=6)
    data = (root / "images" / "00002.png").read_bytes()
    (root / "images" / "00002.png").write_bytes(data[:100])  # truncated
    cv2.imwrite(str(root / "images" / "00003.png"), np.full((27, 48, 3), 7, np.uint8))  # blank
    (root / "labels" / "00006.png").unlink()
    [res] = prepare(_gtav_cfg(root, tmp_path / "data"), show_progress=False)
    m = res.manifest
    assert m.num_images == 3
    assert m.skipped == {"blank": ["images/00003.png"], "corrupt": ["images/00002.png"],
                         "missing_label": ["images/00006.png"]}
    assert m.counts["listed"] == 6 and m.counts["written"] == 3 and m.counts["corrupt"] == 1
    assert any(str(root / "images" / "00002.png") in line for line in res.messages)
    assert [s.count for s in m.shards] == [1, 1, 1]

