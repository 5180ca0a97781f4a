"""Preemption under torchrun: SIGKILL a worker mid-run, --max-restarts restarts the group, --auto-resume
continues from last.pt, and the final weights equal an uninterrupted run's bit for bit.

Both on one "node" (two processes) and on two "nodes" on this machine (two torchrun
agents, one process each, c10d rendezvous on localhost). CPU / gloo, a tiny network,
six iterations: seconds, not minutes.
"""

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

#: kills rank HRSEG_TEST_KILL_RANK with SIGKILL before iteration HRSEG_TEST_KILL_AT + 1 of the first attempt,
#: then runs `hrseg` exactly as the command line would
WORKER = textwrap.dedent(
    """
    import os, signal, sys
    from hrseg.training.trainer import Trainer

    victim, at = int(os.environ.get("HRSEG_TEST_KILL_RANK", "-1")), int(os.environ.get("HRSEG_TEST_KILL_AT", "0"))
    marker = os.environ.get("HRSEG_TEST_KILL_MARKER", "")
    real_step = Trainer.step

    def step(self, p):
        if self.iteration == at and self.dist.rank == victim and not os.path.exists(marker):
            open(marker, "w").close()  # once: after the restart, whichever process is rank 1 trains on
            os.kill(os.getpid(), signal.SIGKILL)
        return real_step(self, p)

    Trainer.step = step
    from hrseg.cli.main import main
    main(sys.argv[1:])
    """
)
ITERS, KILL_AT = 6, 5  # last.pt at 2 and 4: the restarted group continues from 4


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("torchrun") / "worker.py"
    path.write_text(WORKER)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _train_args(data: Path, out: Path) -> list[str]:
    return ["train", "--scheme", "joint", "--data", str(data), "--out", str(out), "--width", "0.0625",
            "--crop", "32x16", "--batch-size", "1", "--target-images", "4", "--iters", str(ITERS),
            "--checkpoint-every", "2", "--val-every", "3", "--val-images", "2", "--device", "cpu",
            "--threads", "1", "--no-progress", "--auto-resume"]


def _env(kill_rank: int, marker: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
            "HRSEG_TEST_KILL_RANK": str(kill_rank), "HRSEG_TEST_KILL_AT": str(KILL_AT),
            "HRSEG_TEST_KILL_MARKER": str(marker)}


def _torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


def _single_node(worker: Path, data: Path, out: Path, kill_rank: int) -> subprocess.CompletedProcess[str]:
    cmd = _torchrun("--nnodes=1", "--nproc_per_node=2", "--max-restarts=2", "--rdzv-backend=c10d",
                    f"--rdzv-endpoint=127.0.0.1:{_free_port()}", str(worker), *_train_args(data, out))
    return subprocess.run(cmd, env=_env(kill_rank, out.parent / "killed"), capture_output=True, text=True,
                          timeout=600)


def _models(run: Path, name: str) -> dict[str, dict[str, torch.Tensor]]:
    return torch.load(run / "checkpoints" / name, weights_only=True)["models"]


def _assert_bit_identical(a: Path, b: Path, name: str) -> None:
    ma, mb = _models(a, name), _models(b, name)
    assert ma.keys() == mb.keys()
    for net in ma:
        assert ma[net].keys() == mb[net].keys()
        for key, value in ma[net].items():
            assert torch.equal(value, mb[net][key]), f"{name}: {net}.{key} differs from the uninterrupted run"


def _assert_resumed_once(run: Path) -> None:
    history = json.loads((run / "config_history.json").read_text())
    assert [(h["event"], h["iteration"]) for h in history] == [("start", 0), ("resume", 4)]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["iteration"] == ITERS


@pytest.fixture(scope="module")
def reference(worker: Path, data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run on two processes, never interrupted."""
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = _single_node(worker, data, out, kill_rank=-1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_the_run_ends_bit_identical(worker: Path, data: Path, reference: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = _single_node(worker, data, out, kill_rank=0)  # rank 0: the one holding the folder's lock
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "failed (exitcode: -9) local_rank: 0" in proc.stderr  # the agent saw the SIGKILL and restarted
    # one restart was enough: the new attempt did not trip over the dead one's addresses in the store
    assert proc.stderr.count("failed (exitcode:") == 1, proc.stderr[-3000:]
    _assert_resumed_once(out)
    _assert_bit_identical(reference, out, "final.pt")
    _assert_bit_identical(reference, out, "best.pt")  # the best validation survived the restart too


@pytest.mark.slow
def test_two_nodes_on_one_machine_survive_a_killed_worker(worker: Path, data: Path, reference: Path,
                                                           tmp_path: Path) -> None:
    out, port = tmp_path / "run", _free_port()
    common = ["--nnodes=2", "--nproc_per_node=1", "--max-restarts=3", "--rdzv-backend=c10d",
              f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=hrseg-test"]
    # the worker on the other node than rank 0's; with several agents, the store they share must not outlive a
    # restart (torch keeps it by default, with the dead attempt's addresses in it)
    env = {**_env(1, tmp_path / "killed"), "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    nodes = [subprocess.Popen(_torchrun(*common, f"--rdzv-conf=is_host={host}", str(worker),
                                        *_train_args(data, out)),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for host in ("true", "false")]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=300))
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    for node, (_, err) in zip(nodes, outputs):
        assert node.returncode == 0, err[-3000:]
    assert "failed (exitcode: -9)" in outputs[0][1] + outputs[1][1]  # one node's agent saw the SIGKILL
    _assert_resumed_once(out)
    _assert_bit_identical(reference, out, "final.pt")
