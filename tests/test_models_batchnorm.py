"""Batch-norm modes: frozen statistics survive training, sync gives whole-batch statistics across 2 gloo ranks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from hrseg.errors import HrsegError
from hrseg.models.batchnorm import (
    BN_MODES,
    CpuSyncBatchNorm2d,
    FrozenBatchNorm2d,
    apply_bn_mode,
    count_batchnorm,
)
from hrseg.models.deeplabv2 import DeepLabV2
from hrseg.models.fcn import FCN8s
from hrseg.models.pspnet import PSPNet

BN_BUFFERS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _trained_stats_model(seed: int = 0) -> DeepLabV2:
    """A tiny DeepLabV2 whose batch norms hold non-trivial statistics and affine values, as after ImageNet."""
    torch.manual_seed(seed)
    seg = DeepLabV2(num_classes=3, width=0.0625)
    with torch.no_grad():
        for m in seg.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.num_batches_tracked.fill_(11)
    return seg


def _bn_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every batch-norm tensor (statistics and affine values), plain or frozen."""
    state = {
        f"{name}.{key}": getattr(m, key).detach().clone()
        for name, m in model.named_modules()
        if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d))
        for key in BN_BUFFERS
    }
    assert len(state) == 5 * 104
    return state


def test_modes_and_train_is_a_no_op() -> None:
    assert BN_MODES == ("train", "frozen", "sync")
    seg = _trained_stats_model()
    assert apply_bn_mode(seg, "train") is seg
    assert count_batchnorm(seg) == 104 == sum(isinstance(m, nn.BatchNorm2d) for m in seg.modules())


def test_frozen_keeps_state_dict_keys_values_and_loads_both_ways() -> None:
    plain = _trained_stats_model()
    before = plain.state_dict()
    frozen = apply_bn_mode(_trained_stats_model(), "frozen")
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules()) == 104
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    after = frozen.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    # a checkpoint of either kind loads strictly into the other
    other = _trained_stats_model(seed=1)
    other.load_state_dict(after, strict=True)
    fresh_frozen = apply_bn_mode(_trained_stats_model(seed=2), "frozen")
    fresh_frozen.load_state_dict(before, strict=True)
    assert torch.equal(fresh_frozen.backbone.layer4[2].bn3.running_var, before["backbone.layer4.2.bn3.running_var"])


def test_frozen_affine_values_are_not_parameters() -> None:
    frozen = apply_bn_mode(_trained_stats_model(), "frozen")
    names = [n for n, _ in frozen.named_parameters()]
    assert not any(".bn" in n or "downsample.1" in n for n in names)
    assert all(p.requires_grad for p in frozen.parameters())
    frozen.requires_grad_(True)  # a trainer toggling gradients cannot make them trainable again
    assert not any(b.requires_grad for b in frozen.buffers())


def test_frozen_statistics_and_affine_do_not_move_under_sgd_in_train_mode() -> None:
    frozen = apply_bn_mode(_trained_stats_model(), "frozen")
    bn_before = _bn_state(frozen)
    conv_before = frozen.backbone.layer2[0].conv2.weight.detach().clone()
    frozen.train()
    assert not any(m.training for m in frozen.modules() if isinstance(m, FrozenBatchNorm2d))
    assert frozen.training and frozen.backbone.layer1.training
    opt = torch.optim.SGD(frozen.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        image = torch.randn(2, 3, 40, 48, generator=g) * 3 + 1  # far from the stored statistics
        labels = torch.randint(0, 3, (2, 40, 48), generator=g)
        loss = nn.functional.cross_entropy(frozen(image).logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    bn_after = _bn_state(frozen)
    assert all(torch.equal(bn_after[k], bn_before[k]) for k in bn_before)
    assert not torch.equal(frozen.backbone.layer2[0].conv2.weight, conv_before)  # the network did train


def test_plain_batchnorm_statistics_do_move_under_the_same_steps() -> None:
    """The control for the frozen test: without freezing, one train-mode forward changes the statistics."""
    plain = _trained_stats_model()
    before = _bn_state(plain)
    plain.train()(torch.randn(2, 3, 40, 48) * 3 + 1)
    after = _bn_state(plain)
    assert not torch.equal(after["backbone.bn1.running_mean"], before["backbone.bn1.running_mean"])


def test_frozen_gives_identical_outputs_in_train_and_eval_mode_equal_to_plain_eval() -> None:
    plain = _trained_stats_model().eval()
    frozen = apply_bn_mode(_trained_stats_model(), "frozen")
    image = torch.randn(2, 3, 33, 47, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        train_out = frozen.train()(image)
        eval_out = frozen.eval()(image)
        reference = plain(image)
    assert torch.equal(train_out.logits, eval_out.logits)
    assert torch.equal(train_out.features, eval_out.features)
    torch.testing.assert_close(train_out.logits, reference.logits, rtol=1e-5, atol=1e-6)


def test_frozen_on_a_submodule_leaves_the_rest_training() -> None:
    torch.manual_seed(0)
    psp = PSPNet(num_classes=3, width=0.0625)
    psp.backbone = apply_bn_mode(psp.backbone, "frozen")  # the ImageNet part only; the head's BN still trains
    psp.train()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in psp.backbone.modules())
    head_bn = psp.bottleneck[1]
    assert isinstance(head_bn, nn.BatchNorm2d) and head_bn.training


def test_bad_modes_are_refused() -> None:
    with pytest.raises(HrsegError, match=r"--bn: unknown mode 'batch' \(choose from train, frozen, sync\)"):
        apply_bn_mode(_trained_stats_model(), "batch")
    torch.manual_seed(0)
    fcn = FCN8s(num_classes=3, width=0.0625)
    for mode in ("frozen", "sync"):
        with pytest.raises(HrsegError, match=f"--bn {mode}: FCN8s has no batch-norm layers"):
            apply_bn_mode(fcn, mode)
    assert apply_bn_mode(fcn, "train") is fcn


def test_sync_needs_a_process_group() -> None:
    assert not torch.distributed.is_initialized()
    with pytest.raises(HrsegError, match="--bn sync: .*needs a torch.distributed process group .*torchrun"):
        apply_bn_mode(_trained_stats_model(), "sync")


def test_sync_layer_outside_distributed_is_plain_batchnorm_with_the_same_parameters() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    reference = nn.BatchNorm2d(4)
    reference.load_state_dict(bn.state_dict())
    sync = CpuSyncBatchNorm2d.from_batchnorm(bn)
    assert sync.weight is bn.weight and sync.bias is bn.bias
    assert list(sync.state_dict()) == list(reference.state_dict())
    x = torch.randn(3, 4, 5, 6) * 2 + 1
    torch.testing.assert_close(sync.train()(x), reference.train()(x))
    torch.testing.assert_close(sync.running_var, reference.running_var)
    torch.testing.assert_close(sync.eval()(x), reference.eval()(x))


# Each rank holds half of a batch of 4 whose halves have very different statistics;
# the layers are built identically on both ranks from a fixed seed.
SYNC_WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from hrseg.models.batchnorm import apply_bn_mode

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    full = torch.randn(4, 3, 5, 6)
    full[2:] = full[2:] * 3 + 2
    grad_weights = torch.randn(4, 3, 5, 6)
    half = slice(2 * rank, 2 * rank + 2)

    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    net = apply_bn_mode(nn.Sequential(bn), "sync").train()
    x = full[half].clone().requires_grad_(True)
    y = net(x)
    (y * grad_weights[half]).sum().backward()
    layer = net[0]
    result = {"layer": type(layer).__name__, "y": y.detach(), "x_grad": x.grad,
              "weight_grad": layer.weight.grad, "bias_grad": layer.bias.grad,
              "running_mean": layer.running_mean, "running_var": layer.running_var,
              "num_batches_tracked": layer.num_batches_tracked}

    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    model = apply_bn_mode(model, "sync")
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
    out_weights = torch.randn(4, 2, 5, 6)
    for _ in range(2):
        opt.zero_grad()
        (ddp(full[half]) * out_weights[half]).mean().backward()
        opt.step()
    result["ddp_state"] = {k: v.clone() for k, v in model.state_dict().items()}

    # a network that is not on the CPU (meta stands in for a GPU here) gets PyTorch's SyncBatchNorm
    off_cpu = nn.BatchNorm2d(3, device="meta")
    converted = apply_bn_mode(nn.Sequential(off_cpu), "sync")[0]
    result["off_cpu_layer"] = type(converted).__module__ + "." + type(converted).__name__
    result["off_cpu_same_weight"] = converted.weight is off_cpu.weight
    torch.save(result, f"{sys.argv[1]}/rank{rank}.pt")
    dist.destroy_process_group()
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def sync_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    out = tmp_path_factory.mktemp("sync")
    script = out / "worker.py"
    script.write_text(SYNC_WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(script), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (torch.load(out / "rank0.pt", weights_only=True), torch.load(out / "rank1.pt", weights_only=True))


def _reference_inputs() -> tuple[torch.Tensor, torch.Tensor, nn.BatchNorm2d]:
    """What the worker builds, in one process: the whole batch and the same layer."""
    torch.manual_seed(0)
    full = torch.randn(4, 3, 5, 6)
    full[2:] = full[2:] * 3 + 2
    grad_weights = torch.randn(4, 3, 5, 6)
    bn = nn.BatchNorm2d(3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    return full, grad_weights, bn


def test_sync_gives_whole_batch_statistics_on_two_gloo_ranks(sync_ranks: tuple[dict, dict]) -> None:
    r0, r1 = sync_ranks
    assert r0["layer"] == r1["layer"] == "CpuSyncBatchNorm2d"
    assert r0["off_cpu_layer"] == "torch.nn.modules.batchnorm.SyncBatchNorm" and r0["off_cpu_same_weight"]
    full, _, bn = _reference_inputs()
    bn.train()(full)  # plain BatchNorm on the concatenated halves
    for r in (r0, r1):
        torch.testing.assert_close(r["running_mean"], bn.running_mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["running_var"], bn.running_var, rtol=1e-5, atol=1e-6)
        assert int(r["num_batches_tracked"]) == 1
    # the control: each rank's half alone has other statistics, so the test can tell the two apart
    _, _, half_bn = _reference_inputs()
    half_bn.train()(full[:2])
    assert (half_bn.running_mean - bn.running_mean).abs().max() > 0.05
    assert (half_bn.running_var - bn.running_var).abs().max() > 0.05


def test_sync_outputs_and_gradients_equal_one_batch_norm_over_the_whole_batch(sync_ranks: tuple[dict, dict]) -> None:
    r0, r1 = sync_ranks
    full, grad_weights, bn = _reference_inputs()
    x = full.clone().requires_grad_(True)
    y = bn.train()(x)
    (y * grad_weights).sum().backward()
    torch.testing.assert_close(torch.cat([r0["y"], r1["y"]]), y.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.cat([r0["x_grad"], r1["x_grad"]]), x.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(r0["weight_grad"] + r1["weight_grad"], bn.weight.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(r0["bias_grad"] + r1["bias_grad"], bn.bias.grad, rtol=1e-4, atol=1e-5)


def test_sync_under_ddp_trains_like_one_process_on_the_whole_batch(sync_ranks: tuple[dict, dict]) -> None:
    r0, r1 = sync_ranks
    full, _, _ = _reference_inputs()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out_weights = torch.randn(4, 2, 5, 6)
    for _ in range(2):
        opt.zero_grad()
        (model(full) * out_weights).mean().backward()  # equal halves: the mean of the two ranks' means
        opt.step()
    reference = model.state_dict()
    assert list(r0["ddp_state"]) == list(reference)
    for key, value in reference.items():
        assert torch.equal(r0["ddp_state"][key], r1["ddp_state"][key]), key
        torch.testing.assert_close(r0["ddp_state"][key], value, rtol=1e-4, atol=1e-5, msg=key)
