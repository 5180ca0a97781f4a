"""Unlabelled target images: the third domain, MinEnt, the mean teacher, ClassMix, selection combined, UDA."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from hrseg.data.dataset import ShardReadError, open_split
from hrseg.data.labels import IGNORE_INDEX
from hrseg.errors import HrsegError
from hrseg.training import losses
from hrseg.training.config import TrainConfig, override
from hrseg.training.mixing import classmix_mask, colour_jitter, gaussian_blur, paste
from hrseg.training.rundir import RunDir
from hrseg.training.sampling import pick_subset
from hrseg.training.schemes import SCHEMES, plan
from hrseg.training.selftrain import ema_update, make_teacher, mixed_batch, pseudo_labels, teacher_momentum
from hrseg.training.trainer import Trainer, train
from tests.cli_fixtures import invoke, text
from tests.data_fixtures import cached_synthetic_data, copy_data
from tests.test_train_resume import _all_state, _assert_same_tensors

TINY = {
    "model.width": 0.0625, "model.pretrained": "none", "weighting.width": 0.125, "data.batch_size": 2,
    "data.crop": (64, 32), "optim.lr": 0.01, "run.device": "cpu", "run.progress": False, "optim.iters": 3,
    "data.target_images": 4, "run.checkpoint_every": 2,
}
NEW_SCHEMES = ("source-only", "minent", "self-training", "w19+self-training", "oracle+self-training")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def cfg_for(data: Path, out: Path, scheme: str = "w19+self-training", **extra: object) -> TrainConfig:
    return override(TrainConfig(scheme=scheme), {**TINY, "data.data": str(data), "run.out": str(out), **extra})


# --- the mean teacher --------------------------------------------------------------------------


def test_ema_update_moves_the_teacher_by_exactly_the_momentum() -> None:
    torch.manual_seed(0)
    student = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    teacher = make_teacher(student)
    assert not teacher.training and not any(q.requires_grad for q in teacher.parameters())
    with torch.no_grad():
        for q in student.parameters():
            q.add_(torch.randn_like(q))
    student.train()(torch.randn(2, 3, 8, 8))  # batch-norm statistics and step counter move too
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    ema_update(teacher, student, 0.9)
    s = student.state_dict()
    for key, t in teacher.state_dict().items():
        if t.is_floating_point():
            expected = 0.9 * before[key] + 0.1 * s[key]
            assert torch.allclose(t, expected, rtol=0, atol=1e-6), key
            assert not torch.equal(t, s[key]) and not torch.equal(t, before[key]), key
        else:
            assert torch.equal(t, s[key]), key  # counters are copied


def test_teacher_momentum_follows_dacs_schedule() -> None:
    assert teacher_momentum(0, 0.99) == 0.0  # the first update copies S
    assert teacher_momentum(1, 0.99) == 0.5
    assert teacher_momentum(9, 0.99) == pytest.approx(0.9)
    assert teacher_momentum(10_000, 0.99) == 0.99


def test_a_training_step_moves_the_teacher_by_the_momentum(data: Path, tmp_path: Path) -> None:
    cfg = cfg_for(data, tmp_path / "r", scheme="self-training", **{"unlabelled.teacher_momentum": 0.7})
    trainer = Trainer(cfg)
    try:
        trainer.iteration = 5  # momentum min(1 - 1/6, 0.7) = 0.7
        teacher, student = trainer.nets["teacher"], trainer.nets["segmenter"]
        before = {k: v.clone() for k, v in teacher.state_dict().items()}
        old_student = {k: v.clone() for k, v in student.state_dict().items()}
        trainer.step(plan(cfg, 5))
        moved = 0
        for key, t in teacher.state_dict().items():
            new = student.state_dict()[key]
            assert torch.allclose(t, 0.7 * before[key] + 0.3 * new, rtol=0, atol=1e-6), key
            moved += int(not torch.equal(new, old_student[key]))
        assert moved > 0  # S did train this step, so the check above is not trivial
    finally:
        trainer.close()


# --- pseudo-labels, ClassMix, augmentation ------------------------------------------------------


def test_pseudo_labels_ignore_low_confidence_pixels() -> None:
    logits = torch.zeros(2, 3, 1, 2)
    logits[0, 1, 0, 0] = 10.0  # image 0, pixel 0: class 1 at ~0.9999
    logits[0, 2, 0, 1] = 1.0  # image 0, pixel 1: class 2 at ~0.58
    logits[1, 0] = 10.0  # image 1: class 0, confident everywhere
    pl = pseudo_labels(logits, threshold=0.968)
    assert pl.label.tolist() == [[[1, IGNORE_INDEX]], [[0, 0]]]
    assert pl.argmax.tolist() == [[[1, 2]], [[0, 0]]]
    assert pl.quality.tolist() == [0.5, 1.0]
    kept = pseudo_labels(logits, threshold=0.968, keep_unconfident=True)  # DACS exactly: nothing ignored
    assert kept.label.tolist() == [[[1, 2]], [[0, 0]]] and kept.quality.tolist() == [0.5, 1.0]


def test_classmix_pastes_half_of_the_classes_and_labels_follow_the_pixels() -> None:
    gen = torch.Generator().manual_seed(0)
    src_label = torch.tensor([[[0, 0, 1, 1], [2, 2, 3, IGNORE_INDEX]], [[4, 4, 4, 4], [5, 5, 6, 6]]])
    mask = classmix_mask(src_label, gen)
    for b, n_classes in ((0, 4), (1, 3)):
        pasted = torch.unique(src_label[b][mask[b]]).tolist()
        assert len(pasted) == math.ceil(n_classes / 2)
        assert IGNORE_INDEX not in pasted
        assert bool((mask[b] == torch.isin(src_label[b], torch.tensor(pasted))).all())  # whole classes

    class Fixed(nn.Module):  # a teacher that predicts class 7 confidently everywhere, 8 on the last column
        def forward(self, x: torch.Tensor) -> object:
            z = torch.zeros(x.shape[0], 19, *x.shape[-2:])
            z[:, 7] = 20.0
            z[..., 3] = 0.0
            z[:, 8, :, 3] = 20.0
            return type("Out", (), {"logits": z})()

    src_image = src_label.float().unsqueeze(1).expand(-1, 3, -1, -1).clone()  # pixel value = its label
    tgt_image = torch.full((2, 3, 2, 4), -1.0)
    cfg = override(TrainConfig(), {"unlabelled.jitter": 0.0, "unlabelled.blur": False}).unlabelled
    mixed = mixed_batch(Fixed(), tgt_image, {"image": src_image, "label": src_label}, cfg,
                        torch.Generator().manual_seed(1), torch.no_grad)
    from_source = mixed.image[:, 0] >= 0
    assert torch.equal(from_source, mixed.pasted) and bool(from_source.any()) and bool((~from_source).any())
    assert torch.equal(mixed.label[from_source], src_label[from_source])
    expected_pl = torch.tensor([7, 7, 7, 8]).expand(2, 2, 4)
    assert torch.equal(mixed.label[~from_source], expected_pl[~from_source])
    w = mixed.weight(torch.full((2, 2, 4), 3.0))  # pasted: the source weight; target: the quality (1 here)
    assert torch.equal(w[from_source], torch.full_like(w[from_source], 3.0))
    assert torch.equal(w[~from_source], torch.ones_like(w[~from_source]))


def test_paste_takes_source_where_masked() -> None:
    mask = torch.tensor([[[True, False]]])
    assert paste(mask, torch.ones(1, 3, 1, 2), torch.zeros(1, 3, 1, 2))[0, :, 0].tolist() == [[1, 0]] * 3
    assert paste(mask, torch.tensor([[[5, 5]]]), torch.tensor([[[9, 9]]])).tolist() == [[[5, 9]]]


def test_strong_augmentation_changes_images_reproducibly() -> None:
    x = torch.randn(3, 3, 16, 32)
    a = colour_jitter(x, 0.2, 1.0, torch.Generator().manual_seed(3))
    b = colour_jitter(x, 0.2, 1.0, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.allclose(a, x, atol=1e-3)
    assert torch.equal(colour_jitter(x, 0.2, 0.0, torch.Generator().manual_seed(3)), x)  # probability 0
    blurred = gaussian_blur(x, torch.Generator().manual_seed(0), prob=1.0)
    assert blurred.shape == x.shape and blurred.std() < x.std()  # smoothing lowers the spread of noise


def test_minent_is_normalised_entropy() -> None:
    assert losses.entropy_loss(torch.zeros(2, 19, 4, 4)).item() == pytest.approx(1.0)
    confident = torch.zeros(2, 19, 4, 4)
    confident[:, 3] = 30.0
    assert losses.entropy_loss(confident).item() < 1e-6


# --- the third domain ------------------------------------------------------------------------------


def test_unlabelled_subset_is_the_rest_all_or_n_and_recorded(data: Path, tmp_path: Path) -> None:
    subsets = {}
    for name, amount in (("rest", "rest"), ("all", "all"), ("n", 2)):
        cfg = cfg_for(data, tmp_path / name, scheme="minent", **{"optim.iters": 1, "data.unlabelled_target": amount})
        train(cfg)
        subsets[name] = json.loads((tmp_path / name / "data_subset.json").read_text())
    labelled = set(subsets["rest"]["target"]["indices"])
    rest = subsets["rest"]["unlabelled_target"]["indices"]
    assert sorted(labelled | set(rest)) == list(range(8)) and not labelled & set(rest)
    assert subsets["all"]["unlabelled_target"]["indices"] == list(range(8))
    two = subsets["n"]["unlabelled_target"]["indices"]
    assert len(two) == 2 and set(two) <= set(rest)


def test_unlabelled_settings_are_checked(data: Path, tmp_path: Path) -> None:
    with pytest.raises(HrsegError, match="no unlabelled image left"):
        train(cfg_for(data, tmp_path / "a", scheme="minent", **{"data.target_images": None}))
    for scheme, match in (("w19", "self-training row"), ("joint", "source-only, minent"),
                          ("target-only", "source-only, minent")):
        with pytest.raises(HrsegError, match=match):
            cfg_for(data, tmp_path / "b", scheme=scheme, **{"data.target_images": 0}).validate()
    with pytest.raises(HrsegError, match="unlabelled.mix"):
        cfg_for(data, tmp_path / "c", **{"unlabelled.mix": "cutmix"}).validate()
    with pytest.raises(HrsegError, match="data.unlabelled_target"):
        cfg_for(data, tmp_path / "d", **{"data.unlabelled_target": "some"}).validate()


def _damage_labels(data: Path, rows: list[int]) -> None:
    """Overwrite the stored labels of target-train images ``rows``: any read of them fails its checksum."""
    ds = open_split(data, "cityscapes", "train", fields=("label",))
    for index in rows:
        shard, row = ds.locate(index)
        with h5py.File(data / "cityscapes" / "train" / ds.manifest.shards[shard].file, "r+") as f:
            f["labels"][row] = (np.asarray(f["labels"][row]) + 1) % 19
    ds.close()


def test_uda_trains_w19_without_reading_any_target_label(data: Path, tmp_path: Path) -> None:
    broken = copy_data(data, tmp_path / "data")
    _damage_labels(broken, list(range(8)))  # every target-train label is unreadable now
    with pytest.raises(ShardReadError, match="label of image"):  # the damage is detected where read ...
        train(cfg_for(broken, tmp_path / "t", scheme="target-only", **{"optim.iters": 1}))
    run = tmp_path / "uda"  # ... and UDA never reads one, W^19 included
    result = train(cfg_for(broken, run, **{"data.target_images": 0, "optim.iters": 3}))
    assert result.status == "finished" and result.target_images == 0
    records = list(RunDir(run).metrics())
    assert all({"w_cls", "self_training", "source", "pseudo_quality"} <= set(r) for r in records)
    assert all("target" not in r for r in records)
    assert json.loads((run / "data_subset.json").read_text())["unlabelled_target"]["indices"] == list(range(8))


def test_few_labels_never_read_the_unlabelled_images_labels(data: Path, tmp_path: Path) -> None:
    broken = copy_data(data, tmp_path / "data")
    labelled = pick_subset(8, 4, None, 0, "")
    _damage_labels(broken, [i for i in range(8) if i not in labelled])
    result = train(cfg_for(broken, tmp_path / "r", **{"data.unlabelled_target": "all", "optim.iters": 3}))
    assert result.status == "finished" and result.target_images == 4


# --- resume and DDP ------------------------------------------------------------------------------


def test_resume_with_the_teacher_is_bit_exact(data: Path, tmp_path: Path) -> None:
    extra = {"optim.iters": 5, "data.workers": 1}
    train(cfg_for(data, tmp_path / "full", **extra))
    assert train(cfg_for(data, tmp_path / "part", **extra), stop_after=3).iteration == 3
    train(RunDir(tmp_path / "part").config(), resume=True)
    a, b = _all_state(tmp_path / "full"), _all_state(tmp_path / "part")
    assert "teacher" in a["models"] and a["data"]["positions"]["unlabelled"] == 5
    for key in ("models", "optimizers", "rng", "data"):
        _assert_same_tensors(a[key], b[key], key)
    strip = lambda r: {k: v for k, v in r.items() if k != "images_per_s"}  # noqa: E731
    assert [strip(r) for r in RunDir(tmp_path / "full").metrics()] == \
        [strip(r) for r in RunDir(tmp_path / "part").metrics()]


def test_unlabelled_terms_start_at_unlabelled_start_and_resume_exactly_across_it(data: Path, tmp_path: Path) -> None:
    extra = {"optim.iters": 6, "data.workers": 1, "unlabelled.start": 3, "data.target_images": 0}
    cfg = cfg_for(data, tmp_path / "full", **extra)
    assert [plan(cfg, i).unlabelled for i in range(6)] == [None] * 3 + ["self-training"] * 3
    assert [plan(cfg, i).source_weight for i in range(6)] == ["none"] * 3 + ["w"] * 3  # UDA: source only first
    train(cfg)
    records = list(RunDir(tmp_path / "full").metrics())
    assert [("self_training" in r, "w_cls" in r) for r in records] == [(False, False)] * 3 + [(True, True)] * 3
    assert train(cfg_for(data, tmp_path / "part", **extra), stop_after=2).iteration == 2
    train(RunDir(tmp_path / "part").config(), resume=True)
    a, b = _all_state(tmp_path / "full"), _all_state(tmp_path / "part")
    assert a["data"]["positions"]["unlabelled"] == 3  # drawn from the start iteration on only
    for key in ("models", "optimizers", "rng", "data"):
        _assert_same_tensors(a[key], b[key], key)
    with pytest.raises(HrsegError, match="unlabelled.start"):
        cfg_for(data, tmp_path / "x", **{**extra, "unlabelled.start": 6}).validate()


def test_two_gloo_processes_self_train_with_identical_teachers(data: Path, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.test_train_ddp import WORKER, _free_port

    cfg = cfg_for(data, tmp_path / "run", **{"data.batch_size": 1, "optim.iters": 3})
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), json.dumps(cfg.to_dict()),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert set(r0["state"]) == {"segmenter", "weighting", "teacher"}
    for net in r0["state"]:
        for name, tensor in r0["state"][net].items():
            assert torch.equal(tensor, r1["state"][net][name]), f"{net}.{name} differs between ranks"
    final = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=True)
    assert final["data"]["positions"]["unlabelled"] == 3 and len(final["rng"]) == 2
    assert final["rng"][0]["generators"]["mix"].ne(final["rng"][1]["generators"]["mix"]).any()


# --- every new scheme through the CLI -----------------------------------------------------------


@pytest.mark.parametrize("scheme", NEW_SCHEMES)
@pytest.mark.parametrize("labelled", [4, 0])
def test_every_new_scheme_trains_and_evaluates_through_the_cli(scheme: str, labelled: int, data: Path,
                                                               tmp_path: Path) -> None:
    run = tmp_path / "run"
    if SCHEMES[scheme].public:
        chosen: tuple[object, ...] = ("--scheme", scheme)
    else:  # the oracle rows are study instruments: not offered by --scheme, reachable through a config file
        (tmp_path / "oracle.toml").write_text(f'scheme = "{scheme}"\n')
        chosen = ("--config", tmp_path / "oracle.toml")
    res = invoke("train", *chosen, "--data", data, "--out", run, "--iters", "2", "--batch-size", "2",
                 "--crop", "64x32", "--width", "0.0625", "--weight-width", "0.125", "--target-images", labelled,
                 "--device", "cpu", "--no-progress")
    assert res.exit_code == 0, text(res)
    assert json.loads((run / "summary.json").read_text())["status"] == "finished"
    res = invoke("eval", "--run", run, "--device", "cpu", "--no-progress")
    assert res.exit_code == 0, text(res)
    assert (run / "eval" / "val.json").is_file()
    teacher = invoke("eval", "--run", run, "--model", "teacher", "--device", "cpu", "--no-progress")
    if "self-training" in scheme:
        assert teacher.exit_code == 0, text(teacher)
        report = json.loads((run / "eval" / "val-teacher.json").read_text())
        assert report["model"] == "teacher" and 0 <= report["miou"] <= 1
        student = json.loads((run / "eval" / "val.json").read_text())
        assert "model" not in student
    else:
        assert teacher.exit_code == 2 and "holds no teacher network" in text(teacher)


def test_predict_with_the_teacher_uses_the_teacher_weights(data: Path, tmp_path: Path) -> None:
    from hrseg.export import load_model

    run = tmp_path / "run"
    train(cfg_for(data, run, **{"optim.iters": 2}))
    student, teacher = load_model(run), load_model(run, network="teacher")
    final = _all_state(run)
    for name, tensor in teacher.segmenter.state_dict().items():
        assert torch.equal(tensor, final["models"]["teacher"][name])
    assert any(not torch.equal(a, b) for a, b in zip(student.segmenter.state_dict().values(),
                                                       teacher.segmenter.state_dict().values()))
    image = tmp_path / "in.png"
    import cv2

    cv2.imwrite(str(image), np.zeros((32, 64, 3), np.uint8))
    res = invoke("predict", run, image, "--out", tmp_path / "pred", "--model", "teacher", "--device", "cpu",
                 "--no-progress")
    assert res.exit_code == 0, text(res)
    index = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert index["model"]["kind"] == "run (teacher)"
