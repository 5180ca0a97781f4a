"""Every command owns what it writes: a file or folder hrseg did not write is never replaced (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hrseg.data.prepare import PrepareConfig, prepare
from hrseg.data.synthetic import SceneConfig, SyntheticPrepareConfig, prepare_synthetic
from hrseg.errors import HrsegError
from tests.data_fixtures import write_gtav_pair

SMALL = SceneConfig(seed=0, source_images=2, target_images=2, val_images=1, size=(64, 32))


def _synthetic(out: Path, overwrite: bool = False) -> dict:
    return prepare_synthetic(SyntheticPrepareConfig(out=out, scenes=SMALL, shard_size=2, overwrite=overwrite),
                             show_progress=False)


def test_prepare_synthetic_never_deletes_raw_data_it_did_not_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    real = data / "raw" / "GTAV"
    write_gtav_pair(real, 0)
    (data / "raw" / "cityscapes" / "leftImg8bit").mkdir(parents=True)
    mine = data / "raw" / "cityscapes" / "leftImg8bit" / "mine.png"
    mine.write_bytes(b"user data")
    before = sorted(p.relative_to(data) for p in data.rglob("*"))
    for overwrite in (False, True):
        with pytest.raises(HrsegError, match=r"raw/GTAV: exists and was not written by `hrseg prepare synthetic`"):
            _synthetic(data, overwrite)
    assert sorted(p.relative_to(data) for p in data.rglob("*") if p.name != ".lock") == before
    assert mine.read_bytes() == b"user data"


def test_a_killed_generation_is_ours_and_redone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _synthetic(data)
    stamp = data / "raw" / "synthetic.json"
    stamp.write_text(json.dumps(json.loads(stamp.read_text()) | {"complete": False}))  # as a kill leaves it
    assert _synthetic(data)["generated"] is True
    assert "complete" not in json.loads(stamp.read_text())


def test_prepare_synthetic_keeps_splits_prepared_from_other_data(tmp_path: Path) -> None:
    """A split prepared from the user's real data, at the size synthetic would use or another, is refused."""
    data = tmp_path / "data"
    real = tmp_path / "real-gtav"
    for i in range(2):
        write_gtav_pair(real, i, seed=7, size=(64, 36))
    prepare(PrepareConfig(dataset="gtav", root=real, out=data, size=(32, 18), shard_size=2), show_progress=False)
    split = data / "gtav" / "train"
    before = {p.name: p.read_bytes() for p in split.iterdir()}
    with pytest.raises(HrsegError, match=r"gtav/train: already prepared from .*real-gtav.*--overwrite"):
        _synthetic(data)
    assert {p.name: p.read_bytes() for p in split.iterdir()} == before
    prepare(PrepareConfig(dataset="gtav", root=real, out=data, size=(40, 22), shard_size=2, overwrite=True),
            show_progress=False)
    before = {p.name: p.read_bytes() for p in split.iterdir()}
    with pytest.raises(HrsegError, match=r"gtav/train: already prepared with other options .*--overwrite"):
        _synthetic(data)
    assert {p.name: p.read_bytes() for p in split.iterdir()} == before
    result = _synthetic(data, overwrite=True)  # the user asked for it: rebuilt from the scenes
    assert result["results"][0].manifest.root == str((data / "raw" / "GTAV").absolute())


def test_two_prepares_into_one_folder_the_second_is_refused(tmp_path: Path) -> None:  # case 17
    import fcntl

    data = tmp_path / "data"
    data.mkdir()
    real = tmp_path / "real-gtav"
    write_gtav_pair(real, 0)
    with (data / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        for attempt in (lambda: _synthetic(data),
                        lambda: prepare(PrepareConfig(dataset="gtav", root=real, out=data, size=(32, 18)),
                                        show_progress=False)):
            with pytest.raises(HrsegError, match=r"another hrseg prepare is writing into this data folder "
                                                 r"\(its lock is held\); wait for it or use another --out"):
                attempt()
    assert sorted(p.name for p in data.iterdir()) == [".lock"]
    assert _synthetic(data)["generated"] is True  # the lock is free again: works, and takes its own lock in turn
