"""Batch-norm modes in training (--bn train|frozen|sync), their config checks, and the DeepLab-v2 presets."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from hrseg.cli.main import app
from hrseg.errors import HrsegError
from hrseg.models.batchnorm import FrozenBatchNorm2d
from hrseg.models.registry import SEGMENTERS
from hrseg.training import distributed as ddp
from hrseg.training.build import apply_bn, build_networks, build_optimizers
from hrseg.training.config import TrainConfig, override
from hrseg.training.presets import PRESET_BUDGETS, PRESETS, build_config
from hrseg.training.rundir import RunDir
from hrseg.training.trainer import Trainer, train
from tests.data_fixtures import cached_synthetic_data

TINY = {
    "model.arch": "pspnet-r50", "model.aux": True, "model.width": 0.0625, "model.pretrained": "none",
    "weighting.width": 0.125, "gan.width": 0.0625, "data.batch_size": 2, "data.crop": (64, 32), "optim.lr": 1e-3,
    "run.device": "cpu", "run.progress": False,
}
SMALL = ["--width", "0.0625", "--pretrained", "none", "--crop", "64x32", "--batch-size", "2", "--device", "cpu",
         "--no-progress", "--iters", "1"]
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def cfg_for(data: Path, out: Path, scheme: str = "target-only", **extra: Any) -> TrainConfig:
    base = {**TINY, "model.bn": "frozen", "data.data": str(data), "run.out": str(out), "optim.iters": 3}
    return override(TrainConfig(scheme=scheme), {**base, **extra})


def _bn_state(module: nn.Module) -> dict[str, torch.Tensor]:
    keys = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    names = {n for n, m in module.named_modules() if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))}
    return {k: v.clone() for k, v in module.state_dict().items() if k.rpartition(".")[0] in names
            and k.rpartition(".")[2] in keys}


def _same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


# --- frozen ------------------------------------------------------------------------------------

def test_frozen_keeps_the_backbone_statistics_and_affine_while_the_head_batch_norm_trains(
    data: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    trainer = Trainer(cfg_for(data, run))
    try:
        seg = trainer.nets["segmenter"]
        frozen = [m for m in seg.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
        assert frozen and not any(isinstance(m, nn.BatchNorm2d) for m in seg.backbone.modules())
        head = {n: m for n, m in seg.named_modules() if isinstance(m, nn.BatchNorm2d)}
        assert head and not any(n.startswith("backbone.") for n in head)  # PSPNet's head BNs still train
        # statistics such as an ImageNet file holds, so "unchanged" cannot pass by staying at 0 / 1
        gen = torch.Generator().manual_seed(0)
        for m in frozen:
            m.running_mean.normal_(0.0, 0.2, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.uniform_(0.5, 1.5, generator=gen)
            m.bias.normal_(0.0, 0.1, generator=gen)
        backbone_before = _bn_state(seg.backbone)
        head_before = _bn_state(seg)
        conv_before = seg.backbone.conv1.weight.detach().clone()
        optimised = {id(p) for g in trainer.opts["segmenter"].param_groups for p in g["params"]}
        assert not any(id(t) in optimised for m in frozen for t in (m.weight, m.bias))
        assert all(id(m.weight) in optimised for m in head.values())
        assert trainer.run().status == "finished"
        backbone_after = _bn_state(seg.backbone)
        head_after = _bn_state(seg)
    finally:
        trainer.close()
    _same(backbone_before, backbone_after, "backbone batch norm")
    assert not torch.equal(conv_before, seg.backbone.conv1.weight)  # the backbone itself did train
    moved = [k for k in head_before if not k.startswith("backbone.") and k.endswith(("running_mean", "weight"))
             and not torch.equal(head_before[k], head_after[k])]
    assert moved, "the head's batch norms should have trained"
    # the checkpoint holds BatchNorm2d's keys: a plain network (inference) loads it with the frozen values
    final = torch.load(run / "checkpoints" / "final.pt", weights_only=True)["models"]["segmenter"]
    for key, value in backbone_before.items():
        assert torch.equal(final[f"backbone.{key}"], value), key
    loaded = RunDir(run).load_for_inference()
    bn1 = loaded.segmenter.backbone.bn1
    assert type(bn1) is nn.BatchNorm2d and torch.equal(bn1.running_var, backbone_before["bn1.running_var"])


def test_train_mode_control_moves_the_backbone_statistics(data: Path, tmp_path: Path) -> None:
    trainer = Trainer(cfg_for(data, tmp_path / "run", **{"model.bn": "train", "optim.iters": 1}))
    try:
        before = trainer.nets["segmenter"].backbone.bn1.running_mean.clone()
        trainer.run()
        assert not torch.equal(before, trainer.nets["segmenter"].backbone.bn1.running_mean)
    finally:
        trainer.close()


def test_frozen_resume_is_bitwise_equal_to_an_uninterrupted_run(data: Path, tmp_path: Path) -> None:
    extra = {"optim.iters": 4, "run.checkpoint_every": 2, "gan.enabled": True}
    full = train(cfg_for(data, tmp_path / "full", scheme="w19", **extra))
    assert full.status == "finished"
    part = train(cfg_for(data, tmp_path / "part", scheme="w19", **extra), stop_after=2)
    assert part.status == "interrupted" and part.iteration == 2
    resumed = train(RunDir(tmp_path / "part").config(), resume=True)
    assert resumed.status == "finished" and resumed.iteration == 4
    a = torch.load(tmp_path / "full" / "checkpoints" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoints" / "final.pt", weights_only=True)
    for key in ("models", "optimizers", "schedulers", "scaler", "rng", "data"):
        _same(a[key], b[key], key)


# --- sync under torchrun -----------------------------------------------------------------------

SYNC_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from hrseg.models.batchnorm import CpuSyncBatchNorm2d
    from hrseg.training.config import TrainConfig
    from hrseg.training.distributed import unwrap
    from hrseg.training.trainer import Trainer

    cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
    trainer = Trainer(cfg)
    seg = unwrap(trainer.nets["segmenter"])
    first = {}

    def record(module, inputs, output):  # the first training forward of backbone.bn1
        if not first:
            first["input"] = inputs[0].detach().clone()
            first["running_mean"] = module.running_mean.clone()

    seg.backbone.bn1.register_forward_hook(record)
    result = trainer.run()
    state = {name: unwrap(net).state_dict() for name, net in trainer.nets.items()}
    layers = [type(m).__name__ for m in seg.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    torch.save({"state": state, "status": result.status, "layers": layers, "first": first,
                "enabled": trainer.dist.enabled, "backend": trainer.dist.backend},
               os.path.join(sys.argv[2], f"rank{trainer.dist.rank}.pt"))
    trainer.close()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sync_under_torchrun_uses_whole_batch_statistics_and_keeps_ranks_identical(data: Path, tmp_path: Path) -> None:
    cfg = cfg_for(data, tmp_path / "run", scheme="joint", **{
        "model.bn": "sync", "optim.iters": 3, "optim.lr": 0.01, "run.checkpoint_every": 2,
        "run.keep_checkpoints": True,
    })
    script = tmp_path / "worker.py"
    script.write_text(SYNC_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           str(script), json.dumps(cfg.to_dict()), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["status"] == r1["status"] == "finished" and r0["backend"] == "gloo"
    assert r0["layers"] and set(r0["layers"]) == {"CpuSyncBatchNorm2d"}  # every BN of S, head included
    _same(r0["state"], r1["state"], "ranks")
    # after the first step, bn1's running mean is 0.1 x the mean over BOTH ranks' images, not one rank's
    inputs = torch.cat([r0["first"]["input"], r1["first"]["input"]])
    whole = 0.1 * inputs.mean(dim=(0, 2, 3))
    own = 0.1 * r0["first"]["input"].mean(dim=(0, 2, 3))
    for r in (r0, r1):
        torch.testing.assert_close(r["first"]["running_mean"], whole, rtol=1e-4, atol=1e-6)
    assert (own - whole).abs().max() > 1e-4  # the two ranks' images differ, so the check can tell
    final = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=True)
    earlier = torch.load(tmp_path / "run" / "checkpoints" / "iter_000002.pt", weights_only=True)
    seg_final, seg_earlier = final["models"]["segmenter"], earlier["models"]["segmenter"]
    assert final["world_size"] == 2 and not all(torch.equal(seg_final[k], seg_earlier[k]) for k in seg_final)
    _same(seg_final, r0["state"]["segmenter"], "checkpoint")


def test_torchrun_with_one_process_joins_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(key, value)
    info = ddp.init_from_env("cpu")
    try:
        assert info.enabled and info.launched and info.backend == "gloo" and info.world_size == 1
        assert torch.distributed.is_initialized()
        assert ddp.all_reduce_mean(torch.tensor([3.0]), info).item() == 3.0
    finally:
        ddp.shutdown(info)
    assert not torch.distributed.is_initialized()
    monkeypatch.delenv("MASTER_ADDR")
    assert not ddp.init_from_env("cpu").enabled  # a stray RANK alone is not a launch


# --- refusals ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scheme", "joint", "--arch", "pspnet-r50", "--bn", "sync"],
         "--bn sync: synchronised batch norm needs a torch.distributed process group"),
        (["--scheme", "joint", "--arch", "fcn8s-vgg16", "--bn", "frozen"],
         "--bn frozen: fcn8s-vgg16 has no batch-norm layers; use --bn train"),
        (["--scheme", "joint", "--arch", "fcn8s-vgg16", "--bn", "sync"], "fcn8s-vgg16 has no batch-norm layers"),
        (["--scheme", "joint", "--arch", "deeplabv2-r101", "--bn", "frozen", "--width", "1"],
         "--bn frozen: needs --pretrained imagenet or a weight file"),
        (["--scheme", "joint", "--bn", "half"], "Invalid value for '--bn'"),
        (["--scheme", "joint", "--set", "model.bn=half"], "model.bn: must be one of train, frozen, sync, got 'half'"),
    ],
)
def test_bad_bn_settings_exit_2_with_one_line(extra: list[str], message: str, data: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "r"), *SMALL, *extra])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "r").exists()


def test_bn_flag_reaches_the_run_config_and_frozen_without_weights_warns(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "r"
    result = runner.invoke(app, ["train", "--scheme", "target-only", "--arch", "pspnet-r50", "--bn", "frozen",
                                 "--data", str(data), "--out", str(run), *SMALL])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["model"]["bn"] == "frozen"
    assert "frozen at mean 0 / variance 1" in " ".join(result.output.split())


def test_configs_without_a_bn_key_still_load_as_train() -> None:
    old = TrainConfig(scheme="joint").to_dict()
    del old["model"]["bn"]
    assert TrainConfig.from_dict(old).model.bn == "train"


# --- presets -----------------------------------------------------------------------------------

def test_every_segmenter_has_a_preset_budget_and_deeplab_rows_follow_the_da_recipe() -> None:
    assert set(PRESET_BUDGETS) == set(SEGMENTERS.names())
    assert all(PRESETS[n].config().model.bn == "frozen" for n in PRESETS if n.startswith("deeplabv2-"))
    rows = {n: PRESETS[n].config().resolved().validate()  # the DA literature's rows (the ADVENT/DACS ones have theirs)
            for n in ("deeplabv2-target-only", "deeplabv2-joint", "deeplabv2-w19")}
    assert {c.scheme for c in rows.values()} == {"target-only", "joint", "w19"}
    for cfg in rows.values():
        assert (cfg.model.arch, cfg.model.pretrained, cfg.model.bn) == ("deeplabv2-r101", "imagenet", "frozen")
        assert (cfg.optim.lr, cfg.data.crop, cfg.data.batch_size, cfg.run.amp) == (2.5e-4, (1024, 512), 1, True)
    assert rows["deeplabv2-w19"].gan.enabled and not rows["deeplabv2-joint"].gan.enabled
    listed = runner.invoke(app, ["train", "--list-presets", "--json"])
    assert listed.exit_code == 0
    presets = json.loads(listed.stdout[listed.stdout.index("{"):])
    assert all(presets[name]["config"]["model"]["bn"] == "frozen" for name in rows)


@pytest.mark.parametrize("name", ["deeplabv2-target-only", "deeplabv2-joint", "deeplabv2-w19"])
def test_deeplab_presets_build_at_full_width_with_a_frozen_backbone(name: str) -> None:
    cfg = override(PRESETS[name].config(), {"model.pretrained": "none"}).resolved()  # no download; meta device
    with torch.device("meta"):
        nets = build_networks(cfg)
        seg = apply_bn(cfg, nets["segmenter"], warn=False)
    frozen = [m for m in seg.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) == 104 and not any(isinstance(m, nn.BatchNorm2d) for m in seg.modules())  # ResNet-101's BNs
    params = [p for g in build_optimizers(cfg, nets)["segmenter"].param_groups for p in g["params"]]
    assert sum(p.numel() for p in params) == sum(p.numel() for p in seg.parameters())
    assert sum(p.numel() for p in seg.backbone.parameters()) == 44_549_160 - 2_049_000 - 105_344  # - fc - BN affine
    expected = {"target-only": {"segmenter"}, "joint": {"segmenter"},
                "w19": {"segmenter", "weighting", "generator", "discriminator"}}[cfg.scheme]
    assert set(nets) == expected
    if "generator" in nets:
        assert nets["generator"].stem[0].in_channels == 2048


def test_frozen_needs_a_backbone_attribute(tmp_path: Path) -> None:
    cfg = override(TrainConfig(scheme="joint"), {"model.bn": "frozen", "model.width": 0.0625})
    with pytest.raises(HrsegError, match="has no ImageNet backbone to freeze"):
        apply_bn(cfg, nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), warn=False)
    with pytest.raises(HrsegError, match="needs model.pretrained"):
        build_config(scheme="joint", flags={"model.arch": "pspnet-r50", "model.bn": "frozen"})
