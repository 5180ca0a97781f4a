"""`prepare` never trusts what it did not write, and every bad input or full disk is one line."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from data_fixtures import make_cityscapes_root, make_gtav_root, write_gtav_pair
from hrseg.cli.main import app
from hrseg.data import filespace
from hrseg.data import shardbuild as shardbuild_mod
from hrseg.data.prepare import PrepareConfig, prepare
from hrseg.data.verify import verify_split
from hrseg.errors import HrsegError
from tests.data_fixtures import private_tmpfs_works
from test_data_integrity import flip_row

runner = CliRunner()
REPO = Path(__file__).resolve().parents[1]


def _run(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["prepare", *args], env={"COLUMNS": "300"})


def _cfg(root: Path, out: Path, **kw: object) -> PrepareConfig:
    base: dict = dict(dataset="gtav", root=root, out=out, size=(24, 14), shard_size=2, workers=1)
    base.update(kw)
    return PrepareConfig(**base)


def _files(split: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(split.iterdir())}


def _one_line_error(output: str) -> str:
    """The one error line (after at most a progress bar), with no traceback."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in output and len(lines) <= 2, output
    return errors[0]


# --- case 1: a corrupted shard is rebuilt, never kept and re-hashed ------------------------------


def test_rerun_rebuilds_a_corrupted_shard_that_verify_reports(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=5)
    clean = tmp_path / "clean"
    prepare(_cfg(root, clean), show_progress=False)
    out = tmp_path / "data"
    prepare(_cfg(root, out), show_progress=False)
    split = out / "gtav" / "train"
    flip_row(split / "shard-00001.h5", "labels", 1)
    res = _run("verify", str(out))
    assert res.exit_code == 2
    assert "shard-00001.h5: checksum mismatch" in res.output and "images/00004.png (row 1): labels damaged" in res.output
    [again] = prepare(_cfg(root, out), show_progress=False)
    assert (again.built_shards, again.reused_shards) == (1, 2)
    assert any(m.startswith(f"rebuilt: {split / 'shard-00001.h5'}: damaged: image images/00004.png") for m in again.messages)
    assert _files(split) == _files(clean / "gtav" / "train")
    assert verify_split(split).ok


def test_a_damaged_shard_left_by_an_interrupted_run_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=6)
    prepare(_cfg(root, tmp_path / "clean"), show_progress=False)
    real_build = shardbuild_mod.build_shard

    def crash_on_third(task, on_image=None):  # type: ignore[no-untyped-def]
        if task.path.name == "shard-00002.h5":
            raise KeyboardInterrupt
        return real_build(task, on_image)

    monkeypatch.setattr(shardbuild_mod, "build_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        prepare(_cfg(root, tmp_path / "data"), show_progress=False)
    split = tmp_path / "data" / "gtav" / "train"
    assert not (split / "manifest.json").exists()  # so only the rows' own checksums can tell
    flip_row(split / "shard-00000.h5", "images", 0)
    monkeypatch.undo()
    [res] = prepare(_cfg(root, tmp_path / "data"), show_progress=False)
    assert (res.built_shards, res.reused_shards) == (2, 1)
    assert any("shard-00000.h5: damaged: image images/00001.png (row 0): images damaged" in m for m in res.messages)
    assert _files(split) == _files(tmp_path / "clean" / "gtav" / "train")


# --- case 2: changed inputs are noticed ----------------------------------------------------------


def test_a_fixed_corrupt_image_is_picked_up_on_rerun(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=4)
    image = root / "images" / "00003.png"
    good = image.read_bytes()
    image.write_bytes(good[:80])
    [first] = prepare(_cfg(root, tmp_path / "data"), show_progress=False)
    assert first.manifest.skipped == {"corrupt": ["images/00003.png"]} and first.manifest.num_images == 3
    image.write_bytes(good)
    [second] = prepare(_cfg(root, tmp_path / "data"), show_progress=False)
    assert second.manifest.skipped == {} and second.manifest.num_images == 4
    assert (second.built_shards, second.reused_shards) == (1, 1)
    assert any("shard-00001.h5: input files changed since it was written (images/00003.png)" in m
               for m in second.messages)


def test_a_label_rewritten_with_the_same_size_is_noticed_by_its_mtime(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=2)
    prepare(_cfg(root, tmp_path / "data"), show_progress=False)
    label = root / "labels" / "00002.png"
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    [res] = prepare(_cfg(root, tmp_path / "data"), show_progress=False)
    assert res.built_shards == 1


# --- cases 6 and 8: empty files and a JPEG label are corrupt, listed, skipped --------------------


def test_zero_byte_and_non_png_files_are_listed_as_corrupt(tmp_path: Path) -> None:
    root = make_cityscapes_root(tmp_path / "cs", "train", count=5)
    images = sorted((root / "leftImg8bit" / "train").rglob("*.png"))
    labels = sorted((root / "gtFine" / "train").rglob("*.png"))
    images[0].write_bytes(b"")
    labels[1].write_bytes(b"")
    ids = cv2.imread(str(labels[2]), cv2.IMREAD_UNCHANGED)
    labels[2].write_bytes(cv2.imencode(".jpg", ids)[1].tobytes())  # a JPEG under the PNG name
    for _ in range(2):  # and the same again on a re-run
        res = _run("cityscapes", "--root", str(root), "--out", str(tmp_path / "data"), "--split", "train",
                   "--size", "24x12", "--workers", "1")
        assert res.exit_code == 0, res.output
        assert "Traceback" not in res.output and "OpenCV" not in res.output
        assert f"corrupt: {images[0]}: empty file (0 bytes)" in res.output
        assert f"corrupt: {labels[1]}: empty file (0 bytes)" in res.output
        assert f"corrupt: {labels[2]}: not a PNG file (bad signature" in res.output
    manifest = json.loads((tmp_path / "data" / "cityscapes" / "train" / "manifest.json").read_text())
    assert manifest["num_images"] == 2 and manifest["counts"]["corrupt"] == 3


# --- case 7: a full disk -------------------------------------------------------------------------


def test_full_disk_when_reserving_a_shard_is_one_line_and_keeps_finished_shards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=6)
    calls = {"n": 0}
    real = os.posix_fallocate

    def full_after_one(fd: int, offset: int, length: int) -> None:
        calls["n"] += 1
        if calls["n"] >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, offset, length)

    monkeypatch.setattr(filespace.os, "posix_fallocate", full_after_one)
    split = tmp_path / "data" / "gtav" / "train"
    with pytest.raises(HrsegError) as exc:
        prepare(_cfg(root, tmp_path / "data"), show_progress=False)
    assert str(exc.value) == (f"out of disk space writing {split / 'shard-00001.h5'}; finished shards are kept, "
                              "free some space and run the same command again")
    assert sorted(p.name for p in split.iterdir()) == ["shard-00000.h5"]
    monkeypatch.undo()
    [res] = prepare(_cfg(root, tmp_path / "data"), show_progress=False)
    assert res.reused_shards == 1 and verify_split(split).ok


@pytest.mark.skipif(not private_tmpfs_works(), reason="needs a private mount namespace (unshare -rm) for a tiny tmpfs")
def test_a_really_full_disk_and_a_read_only_out_with_one_and_two_workers(tmp_path: Path) -> None:
    """A 2 MiB tmpfs and a read-only bind mount in a private namespace: the real errors, no simulation."""
    root = make_gtav_root(tmp_path / "GTAV", count=32, size=(192, 108))  # 8 shards of ~370 kB: 3 MB
    mnt, ro = tmp_path / "mnt", tmp_path / "ro"
    mnt.mkdir()
    ro.mkdir()
    prepare(_cfg(root, ro, size=(96, 54), shard_size=4), show_progress=False)  # complete, then made read-only
    args = f"--root {root} --size 192x108 --shard-size 4"
    script = textwrap.dedent(f"""\
        set -u
        mount -t tmpfs -o size=2m tmpfs {mnt}
        mount --bind {ro} {ro} && mount -o remount,ro,bind {ro}
        for w in 1 2; do
          python -m hrseg prepare gtav {args} --out {mnt}/d$w --workers $w > {mnt}/../full$w.txt 2>&1
          echo "full$w rc=$?"; ls -a {mnt}/d$w/gtav/train | tr '\\n' ' ' > {mnt}/../ls$w.txt; rm -rf {mnt}/d$w
        done
        python -m hrseg prepare gtav {args} --out {ro}/new > {tmp_path}/ro_new.txt 2>&1; echo "ro_new rc=$?"
        python -m hrseg prepare gtav --root {root} --size 96x54 --shard-size 4 --out {ro} --workers 2 \\
            > {tmp_path}/ro_again.txt 2>&1; echo "ro_again rc=$?"
    """)
    env = dict(os.environ, COLUMNS="300", PYTHONPATH=str(REPO))
    done = subprocess.run(["unshare", "-rm", "bash", "-c", script], capture_output=True, text=True, timeout=300,
                          env=env)
    codes = dict(line.split(" rc=") for line in done.stdout.split("\n") if " rc=" in line)
    for w in ("1", "2"):
        out = (tmp_path / f"full{w}.txt").read_text()
        assert codes[f"full{w}"] == "2", out
        line = _one_line_error(out)
        assert line.startswith(f"error: out of disk space writing {mnt}/d{w}/gtav/train/shard-0000"), line
        listed = (tmp_path / f"ls{w}.txt").read_text().split()
        assert not [n for n in listed if n.endswith(".tmp")] and "shard-00000.h5" in listed  # finished kept
    assert codes["ro_new"] == "2"
    assert "Read-only file system" in _one_line_error((tmp_path / "ro_new.txt").read_text())
    assert codes["ro_again"] == "0", (tmp_path / "ro_again.txt").read_text()  # nothing to write: fine


# --- case 9 and minors: --out, --json, verify, no needless writes --------------------------------


def test_out_that_is_a_file_or_read_only_and_json_that_is_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=2)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    base = ["gtav", "--root", str(root), "--size", "24x14", "--workers", "1"]
    line = _one_line_error(_run(*base, "--out", str(a_file)).output)
    assert line == f"error: --out {a_file}: is a file, not a folder; choose a folder for the prepared data"
    line = _one_line_error(_run(*base, "--out", str(a_file / "sub")).output)
    assert line == f"error: --out {a_file / 'sub'}: {a_file} is a file, not a folder"
    line = _one_line_error(_run("synthetic", "--out", str(a_file), "--source-scenes", "1").output)
    assert "is a file, not a folder" in line
    line = _one_line_error(_run(*base, "--out", str(tmp_path / "data"), "--json", str(tmp_path)).output)
    assert line.startswith(f"error: --json {tmp_path}: is a folder; give a file name")
    assert not (tmp_path / "data").exists()  # refused before any work
    assert _run("verify", str(tmp_path), "--json", str(tmp_path)).exit_code == 2

    import hrseg.atomic

    def read_only(*a: object, **k: object) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(k.get("dir") or a))

    monkeypatch.setattr(hrseg.atomic.tempfile, "mkstemp", read_only)
    line = _one_line_error(_run(*base, "--out", str(tmp_path / "ro")).output)
    assert str(tmp_path / "ro" / "gtav" / "train") in line and "(Read-only file system)" in line


def test_verify_reports_a_split_whose_manifest_is_gone(tmp_path: Path) -> None:
    make_cityscapes_root(tmp_path / "cs", "train", count=2)
    make_cityscapes_root(tmp_path / "cs", "val", count=2)
    out = tmp_path / "data"
    assert _run("cityscapes", "--root", str(tmp_path / "cs"), "--out", str(out), "--size", "24x12",
                "--workers", "1").exit_code == 0
    (out / "cityscapes" / "val" / "manifest.json").unlink()
    res = _run("verify", str(out))
    assert res.exit_code == 2
    assert f"{out / 'cityscapes' / 'val'}: 1 shard(s) but no manifest.json" in res.output
    assert str(out / "cityscapes" / "train") in res.output  # the good split is still listed


def test_a_rerun_with_nothing_to_do_writes_nothing(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=5)
    prepare(_cfg(root, tmp_path / "data", workers=2), show_progress=False)
    split = tmp_path / "data" / "gtav" / "train"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in split.iterdir()}
    dir_mtime = split.stat().st_mtime_ns
    [res] = prepare(_cfg(root, tmp_path / "data", workers=2), show_progress=False)
    assert (res.built_shards, res.reused_shards) == (0, 3)
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in split.iterdir()} == before
    assert split.stat().st_mtime_ns == dir_mtime


def test_shards_of_the_old_format_are_rebuilt_and_said_so(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=3)
    prepare(_cfg(root, tmp_path / "data"), show_progress=False)
    split = tmp_path / "data" / "gtav" / "train"
    with h5py.File(split / "shard-00000.h5", "a") as f:
        f.attrs["format"] = "hrseg-shards/1"
    [res] = prepare(_cfg(root, tmp_path / "data"), show_progress=False)
    assert res.built_shards == 1
    assert any(m.startswith(f"rebuilt: {split / 'shard-00000.h5'}: not a complete shard of this hrseg version")
               for m in res.messages)


def test_ids_train_predictions_outside_0_18_and_255_are_refused(tmp_path: Path) -> None:
    from hrseg.evaluation.predictions import read_prediction

    pred = np.zeros((4, 6), np.uint8)
    pred[0, :3] = (18, 255, 3)
    cv2.imwrite(str(tmp_path / "ok.png"), pred)
    assert np.array_equal(read_prediction(tmp_path / "ok.png", (4, 6), ids="train"), pred)
    pred[1, 1], pred[2, 2] = 19, 254
    cv2.imwrite(str(tmp_path / "bad.png"), pred)
    with pytest.raises(HrsegError, match=r"bad.png: trainId\(s\) \[19, 254\] out of range; --ids train expects "
                                         r"0-18 and 255 \(ignore\)"):
        read_prediction(tmp_path / "bad.png", (4, 6), ids="train")


def test_a_sixteen_bit_label_is_named_for_what_it_is(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=2)
    cv2.imwrite(str(root / "labels" / "00001.png"), np.full((27, 48), 7, np.uint16))
    [res] = prepare(_cfg(root, tmp_path / "data"), show_progress=False)
    [line] = [m for m in res.messages if "00001.png" in m]
    assert line.endswith("label PNG is 16-bit grey; labelIds must be 8-bit palettised or 8-bit grey")


# --- workers: started up front, without re-running the caller's script ---------------------------


def test_workers_all_start_up_front_and_do_not_rerun_the_main_script(tmp_path: Path) -> None:
    script = tmp_path / "main_script.py"
    marker = tmp_path / "imports.txt"
    script.write_text(textwrap.dedent(f"""\
        import os
        with open({str(marker)!r}, "a") as fh:
            fh.write(f"{{os.getpid()}}\\n")
        from hrseg.data.workers import start_pool
        if __name__ == "__main__":
            pool = start_pool(3)
            pids = {{p.pid for p in pool._processes.values()}}
            print(len(pids))
            pool.shutdown()
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"  # every worker exists before the first job
    assert len(marker.read_text().split()) == 1  # the script ran once, in the parent only


def test_two_workers_still_write_exactly_what_one_writes(tmp_path: Path) -> None:
    root = make_gtav_root(tmp_path / "GTAV", count=5)
    write_gtav_pair(root, 9)
    prepare(_cfg(root, tmp_path / "one"), show_progress=False)
    prepare(_cfg(root, tmp_path / "two", workers=2), show_progress=False)
    assert _files(tmp_path / "one" / "gtav" / "train") == _files(tmp_path / "two" / "gtav" / "train")
