"""Checkpoint rotation and temps of killed writes (issue 18, case 13 and the first-checkpoint minor case)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hrseg.atomic import atomic_path
from hrseg.errors import HrsegError
from hrseg.training.rundir import RunDir
from hrseg.training.trainer import Trainer
from tests.cli_fixtures import invoke, text, tiny_run
from tests.data_fixtures import cached_synthetic_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory, prepared_size=(32, 16))


def test_previous_and_last_are_always_two_files_and_killed_temps_are_cleaned(data: Path, tmp_path: Path) -> None:
    from hrseg.training.config import override
    from hrseg.training.presets import quick_config
    from hrseg.training.trainer import train
    from tests.cli_fixtures import TINY

    run = tmp_path / "run"
    cfg = override(quick_config("target-only", str(data), str(run)),
                   {**TINY, "optim.iters": 5, "run.checkpoint_every": 1})
    assert train(cfg, stop_after=3).status == "interrupted"
    ck = run / "checkpoints"
    assert (ck / "previous.pt").stat().st_ino != (ck / "last.pt").stat().st_ino
    # what a kill -9 in the middle of writing last.pt left before: a hidden full-size temp, and (old rotation)
    # previous.pt and last.pt as two names of one file
    os.unlink(ck / "previous.pt")
    os.link(ck / "last.pt", ck / "previous.pt")
    temp = ck / ".last.pt.k1ll3d.pt.tmp"
    shutil.copy(ck / "last.pt", temp)
    trainer = Trainer(RunDir(run).config(), resume=True)
    try:
        assert not temp.exists(), "the temp of a killed write is removed when the run is taken up again"
        trainer.save()
    finally:
        trainer.close()
    assert (ck / "previous.pt").stat().st_ino != (ck / "last.pt").stat().st_ino
    assert sorted(p.name for p in ck.iterdir() if p.name.startswith(".")) == []


def test_replacing_a_name_with_its_own_file_leaves_no_temp(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_text("x")
    os.link(a, b)
    with atomic_path(b) as tmp:
        tmp.unlink()
        os.link(a, tmp)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


def test_a_kill_between_the_renames_names_previous(data: Path, tmp_path: Path) -> None:
    run = tiny_run(data, tmp_path / "run", **{"optim.iters": 2, "run.checkpoint_every": 1})
    (run / "checkpoints" / "last.pt").unlink()
    (run / "checkpoints" / "final.pt").unlink()
    with pytest.raises(HrsegError, match=r"no checkpoints/last.pt \(a checkpoint write was interrupted\); continue "
                                         r"from previous.pt with hrseg train --resume .* --from previous.pt"):
        RunDir(run).load_resumable()


def test_a_kill_in_the_first_checkpoint_write_gives_one_advice(data: Path, tmp_path: Path) -> None:
    run = tiny_run(data, tmp_path / "run")
    for p in (run / "checkpoints").iterdir():
        p.unlink()
    (run / "checkpoints" / ".last.pt.k1ll3d.pt.tmp").write_bytes(b"half")
    resume = invoke("train", "--resume", run, "--device", "cpu", "--no-progress")
    assert resume.exit_code == 2
    assert "stopped before its first checkpoint); start it again with the same command and --overwrite" in text(resume)
    fresh = invoke("train", "--scheme", "target-only", "--data", data, "--out", run, "--device", "cpu",
                   "--no-progress", "--iters", "1")
    assert fresh.exit_code == 2 and "holds a run that stopped before its first checkpoint; pass --overwrite" \
        in text(fresh), text(fresh)


def test_a_pickle_is_refused_without_torchs_advice_to_load_it_unsafely(tmp_path: Path) -> None:  # minor case
    from hrseg.training.checkpoint import load_checkpoint

    path = tmp_path / "evil.pt"
    import torch

    torch.save({"format": "hrseg-checkpoint/1", "obj": Path("/")}, path)
    for load in (lambda: load_checkpoint(path), lambda: __import__("hrseg.export").export.load_model(path)):
        with pytest.raises(HrsegError) as exc:
            load()
        message = str(exc.value)
        assert "weights_only" not in message and "trust" not in message and "\n" not in message, message
        assert "it holds Python objects (pathlib.PosixPath), not only tensors and plain data" in message
