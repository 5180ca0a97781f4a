"""predict owns its output folder and survives hostile inputs (issue 18, cases 3, 6, 7, 8, 9, 10, 16)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from hrseg.errors import HrsegError
from hrseg.inference.predictor import predict
from hrseg.inference.sources import read_image, UnreadableInput
from hrseg.inference.tta import InferenceOptions, infer, predict_train_ids
from tests.inference_fixtures import ContextModel, PaletteModel, block_ids, painted_image, write_image

REPO = Path(__file__).resolve().parents[1]


def _predict(inputs, out: Path, **kw):  # type: ignore[no-untyped-def]
    return predict(PaletteModel(), inputs, out, InferenceOptions(), device="cpu", workers=1, show_progress=False,
                   **kw)


def _img(path: Path, seed: int = 0, hw: tuple[int, int] = (16, 32)) -> Path:
    write_image(path, painted_image(block_ids(*hw, seed=seed)))
    return path


def test_names_never_collide_and_the_index_says_so(tmp_path: Path) -> None:  # case 3
    src = tmp_path / "in"
    for i, name in enumerate(["x.png", "x.jpg", "x_png.png"]):
        _img(src / name, seed=i)
    result = _predict([src], tmp_path / "out")
    names = [r["name"] for r in result.inputs]
    assert names == ["x_jpg", "x_png", "x_png~2"], names
    labels = [r["outputs"]["labelIds"] for r in result.inputs]
    assert len(set(labels)) == 3 and all((tmp_path / "out" / p).is_file() for p in labels)
    assert [r.get("name_note") for r in result.inputs] == [
        None, None, "renamed to x_png~2: x_png is another input's name"]


def test_outputs_stay_under_out_whatever_the_pattern(tmp_path: Path) -> None:  # case 8
    _img(tmp_path / "a" / "b" / "c" / "sub" / "p.png")
    _img(tmp_path / "elsewhere" / "q.png", seed=1)
    out = tmp_path / "out"
    pattern = str(tmp_path / "a" / "b" / "c" / "*" / ".." / ".." / ".." / ".." / "elsewhere" / "q.png")
    result = _predict([pattern], out)
    assert result.images == 1
    written = [p for p in tmp_path.rglob("*_pred_labelIds.png")]
    assert written and all(out in p.parents for p in written), written


def test_out_is_never_read_as_input(tmp_path: Path) -> None:  # case 9
    folder = tmp_path / "photos"
    _img(folder / "one.png")
    with pytest.raises(HrsegError, match="is the output folder or inside it; outputs are never read as input"):
        _predict([folder], folder)
    out = folder / "pred"
    for _ in range(3):  # each rerun segments the one photo, never its own outputs
        assert _predict([folder], out, overwrite=False).images == 1
    assert _predict([str(folder / "**" / "*.png")], out).images == 1


def test_self_referential_symlinks_are_skipped_with_a_reason(tmp_path: Path) -> None:  # case 7
    folder = tmp_path / "in"
    _img(folder / "good.png")
    os.symlink("loop.png", folder / "loop.png")
    os.symlink("selfdir", tmp_path / "selfdir")
    for args in ([folder], [str(folder / "*.png")], [folder, tmp_path / "selfdir"]):
        result = _predict(args, tmp_path / f"out{len(args)}{isinstance(args[0], str)}")
        assert result.images == 1
        assert any("symbolic link loop" in s.reason for s in result.skipped), result.skipped


def _png_header(width: int, height: int) -> bytes:
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + len(ihdr).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")


def test_bombs_and_huge_files_are_skipped_and_the_run_goes_on(tmp_path: Path) -> None:  # case 6
    folder = tmp_path / "in"
    bomb = folder / "a_bomb.png"
    bomb.parent.mkdir(parents=True)
    bomb.write_bytes(_png_header(15000, 15000) + b"\x00" * 64)
    sparse = folder / "b_sparse.png"
    with sparse.open("wb") as f:  # 20 GB, sparse: nothing is read
        f.truncate(20 * 2**30)
    _img(folder / "c_good.png")
    result = _predict([folder], tmp_path / "out")
    assert result.images == 1 and [r["name"] for r in result.inputs] == ["c_good"]
    reasons = {Path(s.input).name: s.reason for s in result.skipped}
    assert reasons["a_bomb.png"] == ("image is 15000x15000 = 225,000,000 pixels, more than the limit of "
                                     "100,000,000 (--max-pixels)")
    assert reasons["b_sparse.png"].startswith("file is 20,480 MiB, more than an image")
    index = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert index["complete"] is True and index["counts"]["skipped"] == 2
    with pytest.raises(UnreadableInput, match="more than the limit of 100"):
        read_image(_img(tmp_path / "small.png"), max_pixels=100)


def test_the_argmax_is_the_same_without_the_full_size_scores() -> None:  # case 6: bit for bit
    model = ContextModel(num_classes=7)
    x = torch.randn(2, 3, 12, 20, generator=torch.Generator().manual_seed(0))
    sizes = [(123, 301), (40, 77)]
    for opts in (InferenceOptions(), InferenceOptions(scales=(0.75, 1.0), flip=True)):
        want = [s.argmax(0).to(torch.uint8) for s in infer(model, x, opts, sizes)]
        got = predict_train_ids(model, x, opts, sizes)
        assert all(torch.equal(a, b) for a, b in zip(want, got))


def test_memory_stays_bounded_for_a_48_megapixel_output(tmp_path: Path) -> None:  # case 6: the ceiling
    """19 float32 score planes at 8000x6000 are 3.6 GB; the bounded argmax peaks at a few planes (< 1.2 GB)."""
    script = textwrap.dedent("""\
        import resource, torch
        from hrseg.inference.tta import InferenceOptions, predict_train_ids
        from tests.inference_fixtures import PaletteModel
        torch.set_num_threads(1)
        x = torch.randn(1, 3, 60, 80)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        [ids] = predict_train_ids(PaletteModel(), x, InferenceOptions(), [(6000, 8000)])
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024, tuple(ids.shape))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    grown_mb, shape = done.stdout.split(" ", 1)
    assert shape.strip() == "(6000, 8000)"
    assert int(grown_mb) < 1200, grown_mb


def test_the_index_is_written_first_marked_incomplete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A killed rerun leaves an index that says so, listing every file it may have written (case 10)."""
    from hrseg.inference import predictor

    _img(tmp_path / "in" / "a.png")
    _img(tmp_path / "in" / "b.png", seed=1)
    out = tmp_path / "out"
    _predict([tmp_path / "in" / "a.png"], out, model={"model": "first"})
    seen = {}

    def killed(self, sources):  # type: ignore[no-untyped-def]
        seen.update(json.loads((out / "predictions.json").read_text()))
        raise KeyboardInterrupt

    monkeypatch.setattr(predictor._Run, "images", killed)
    with pytest.raises(KeyboardInterrupt):
        _predict([tmp_path / "in"], out, model={"model": "second"})
    index = json.loads((out / "predictions.json").read_text())
    assert index == seen and index["complete"] is False and index["model"] == {"model": "second"}
    assert "labelIds/b_pred_labelIds.png" in index["files"] and "labelIds/a_pred_labelIds.png" in index["files"]
    monkeypatch.undo()
    # the killed run's files are still hrseg's: the next run replaces them without --overwrite
    assert _predict([tmp_path / "in"], out).images == 2
    assert json.loads((out / "predictions.json").read_text())["complete"] is True


def test_two_predicts_into_one_folder_the_second_is_refused(tmp_path: Path) -> None:  # case 10
    out = tmp_path / "out"
    out.mkdir()
    with (out / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(HrsegError, match=r"another hrseg predict is writing into this folder \(its lock is held\)"):
            _predict([_img(tmp_path / "a.png")], out)


def test_predict_never_replaces_files_it_did_not_write(tmp_path: Path) -> None:  # case 16
    a = _img(tmp_path / "a.png")
    out = tmp_path / "out"
    (out / "overlay").mkdir(parents=True)
    mine = out / "overlay" / "a_overlay.png"
    mine.write_bytes(b"my own overlay")
    with pytest.raises(HrsegError, match=r"overlay/a_overlay.png exists and was not written by hrseg; pass --overwrite"):
        _predict([a], out)
    assert mine.read_bytes() == b"my own overlay" and not (out / "predictions.json").exists()
    (out / "predictions.json").write_text('{"my": "notes"}')
    mine.unlink()
    with pytest.raises(HrsegError, match=r"predictions.json exists and was not written by hrseg predict"):
        _predict([a], out)
    assert json.loads((out / "predictions.json").read_text()) == {"my": "notes"}
    # --overwrite replaces; and it removes only hrseg's own files of earlier runs
    (out / "notes.txt").write_text("keep me")
    assert _predict([a], out, overwrite=True).images == 1
    b = _img(tmp_path / "b.png", seed=1)
    assert _predict([b], out).images == 1  # a's files are kept (and listed) without --overwrite
    index = json.loads((out / "predictions.json").read_text())
    assert "labelIds/a_pred_labelIds.png" in index["files"] and (out / "labelIds" / "a_pred_labelIds.png").exists()
    assert _predict([b], out, overwrite=True).images == 1
    assert not (out / "labelIds" / "a_pred_labelIds.png").exists()
    assert (out / "notes.txt").read_text() == "keep me"
