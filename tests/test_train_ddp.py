"""DistributedDataParallel through torchrun: 2 CPU processes (gloo) finish with identical weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.data_fixtures import cached_synthetic_data

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from hrseg.training.config import TrainConfig
    from hrseg.training.distributed import unwrap
    from hrseg.training.distributed import DistInfo
    from hrseg.training.trainer import Trainer
    from hrseg.evaluation.validation import SplitValidator

    cfg = TrainConfig.from_dict(json.loads(sys.argv[1]))
    trainer = Trainer(cfg, validator=SplitValidator(cfg.resolved()))
    result = trainer.run()
    rank = trainer.dist.rank
    state = {name: unwrap(net).state_dict() for name, net in trainer.nets.items()}
    # the final weights scored by one process over the whole split: what the sharded validation must equal
    alone = SplitValidator(cfg.resolved())(unwrap(trainer.nets["segmenter"]).eval(), DistInfo()).miou
    torch.save({"state": state, "world": trainer.dist.world_size, "status": result.status, "alone": alone},
               os.path.join(sys.argv[2], f"rank{rank}.pt"))
    trainer.close()
    """
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_processes_end_with_identical_weights(data: Path, tmp_path: Path) -> None:
    from hrseg.training.config import TrainConfig, override

    cfg = override(TrainConfig(scheme="w1"), {
        "model.width": 0.0625, "model.pretrained": "none", "weighting.width": 0.125, "gan.width": 0.0625,
        "gan.enabled": True, "weighting.normalize": "running", "data.batch_size": 1, "data.crop": (64, 32), "optim.iters": 3,
        "run.device": "cpu", "run.progress": False, "run.checkpoint_every": 2,
        "run.keep_checkpoints": True, "run.val_every": 2, "data.data": str(data), "run.out": str(tmp_path / "run"),
    })
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
           str(script), json.dumps(cfg.to_dict()), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2 and r0["status"] == r1["status"] == "finished"
    assert set(r0["state"]) == {"segmenter", "weighting", "generator", "discriminator"}
    for net, params in r0["state"].items():
        for name, tensor in params.items():
            assert torch.equal(tensor, r1["state"][net][name]), f"{net}.{name} differs between ranks"
    # the ranks did train (weights moved since the iteration-2 checkpoint) and only rank 0 wrote the run
    final = torch.load(tmp_path / "run" / "checkpoints" / "final.pt", weights_only=True)
    earlier = torch.load(tmp_path / "run" / "checkpoints" / "iter_000002.pt", weights_only=True)
    assert final["world_size"] == 2 and len(final["rng"]) == 2 and earlier["iteration"] == 2
    seg_final, seg_earlier = final["models"]["segmenter"], earlier["models"]["segmenter"]
    assert not all(torch.equal(seg_final[k], seg_earlier[k]) for k in seg_final)
    for name, tensor in r0["state"]["segmenter"].items():
        assert torch.equal(tensor, seg_final[name])
    assert final["data"]["positions"]["target"] == 3
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in records if "kind" not in r] == [1, 2, 3]  # one writer: no duplicated lines
    vals = [r for r in records if r.get("kind") == "val"]
    assert [r["iter"] for r in vals] == [2, 3] and all(r["val_images"] == 4 for r in vals)
    # sharded over the two ranks, summed: the score one process gets on the whole split
    assert vals[-1]["val_miou"] == pytest.approx(r0["alone"], abs=1e-12) and r0["alone"] == r1["alone"]
