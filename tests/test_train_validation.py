"""Validation while training: val lines, best.pt, no effect on what is trained, exact resume, eval of best.pt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hrseg.evaluation.validation import SplitValidator, train_with_validation
from hrseg.training.distributed import DistInfo
from hrseg.training.trainer import Trainer, train
from tests.cli_fixtures import invoke, stdout_json, text, joint_config as cfg_for
from tests.data_fixtures import cached_synthetic_data

@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def val_lines(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r.get("kind") == "val"]


def weights(run: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / name, weights_only=True)["models"]["segmenter"]


def test_validation_records_and_keeps_best_without_changing_training(data: Path, tmp_path: Path) -> None:
    plain = train(cfg_for(data, tmp_path / "plain"))
    result = train_with_validation(cfg_for(data, tmp_path / "val", **{"run.val_every": 4, "run.val_images": 3}))
    # validating draws no random number and moves no batch-norm statistic: the same weights, bit for bit
    a, b = weights(tmp_path / "plain", "final.pt"), weights(tmp_path / "val", "final.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = val_lines(tmp_path / "val")
    assert [r["iter"] for r in lines] == [4, 6]  # every 4 and at the last iteration
    assert all(r["val_images"] == 3 and r["val_split"] == "cityscapes/val" and set(r["val_iou"]) >= {"road"}
               for r in lines)
    best_line = max(lines, key=lambda r: r["val_miou"])
    assert result.best is not None and result.best["iteration"] == best_line["iter"]
    assert result.best["miou"] == pytest.approx(best_line["val_miou"])
    assert [r["val_best"] for r in lines] == [True, best_line["iter"] == 6]
    best = torch.load(tmp_path / "val" / "checkpoints" / "best.pt", weights_only=True)
    assert best["iteration"] == best_line["iter"] and best["best"]["miou"] == result.best["miou"]
    assert plain.best is None and not (tmp_path / "plain" / "checkpoints" / "best.pt").exists()

    # hrseg eval RUN --checkpoint best.pt scores exactly what validation scored (same images)
    out = invoke("eval", "--run", tmp_path / "val", "--checkpoint", "best.pt", "--max-images", 3,
                 "--device", "cpu", "--no-progress", "--json", "-")
    assert out.exit_code == 0, text(out)
    report = stdout_json(out)
    assert report["checkpoint"].endswith("best.pt")
    assert report["miou"] == pytest.approx(best_line["val_miou"], abs=1e-12)


def test_the_best_so_far_survives_a_resume(data: Path, tmp_path: Path) -> None:
    extra = {"run.val_every": 2, "run.val_images": 2}
    whole = train_with_validation(cfg_for(data, tmp_path / "whole", **extra))
    cfg = cfg_for(data, tmp_path / "cut", **extra)
    first = train_with_validation(cfg, stop_after=3)  # validated at 2; checkpoint written at 3 on the stop
    assert first.status == "interrupted" and first.best is not None and first.best["iteration"] == 2
    resumed = Trainer(cfg, resume=True, validator=SplitValidator(cfg.resolved()))
    try:
        assert resumed.best == first.best  # restored from last.pt, not re-found
        finished = resumed.run()
    finally:
        resumed.close()
    assert finished.best == whole.best
    assert val_lines(tmp_path / "cut") == [{**r, "val_seconds": c["val_seconds"]}
                                           for r, c in zip(val_lines(tmp_path / "whole"), val_lines(tmp_path / "cut"))]
    a, b = weights(tmp_path / "whole", "best.pt"), weights(tmp_path / "cut", "best.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sharded_validation_sums_to_the_whole_split(data: Path, tmp_path: Path) -> None:
    """Two ranks' shards (simulated: the collective is a no-op for one process) add up to one validation."""
    cfg = cfg_for(data, tmp_path / "run", **{"run.val_every": 1}).resolved()
    validator = SplitValidator(cfg)
    from hrseg.models import build_segmenter

    torch.manual_seed(0)
    seg = build_segmenter(cfg.model.arch, num_classes=19, width=cfg.model.width, pretrained="none").eval()
    whole = validator(seg, DistInfo())
    assert whole.images == 4 and 0 <= whole.miou <= 1
    from hrseg.evaluation import validation as v

    parts = []
    real = v.ddp.all_reduce_sum
    try:
        v.ddp.all_reduce_sum = lambda t, info, device="cpu": (parts.append(t.clone()), t)[1]  # type: ignore[assignment]
        for rank in (0, 1):
            validator(seg, DistInfo(rank=rank, world_size=2, launched=True))
    finally:
        v.ddp.all_reduce_sum = real  # type: ignore[assignment]
    from hrseg.evaluation.metrics import ConfusionMatrix

    summed = ConfusionMatrix(matrix=(parts[0] + parts[1]).numpy())
    assert summed.miou(19) == pytest.approx(whole.miou, abs=1e-12)
    assert not torch.equal(parts[0], parts[1])  # each rank scored other images


def test_validation_settings_are_checked(data: Path, tmp_path: Path) -> None:
    from hrseg.errors import HrsegError

    with pytest.raises(HrsegError, match="run.val_every"):
        cfg_for(data, tmp_path / "r", **{"run.val_every": -1}).validate()
    with pytest.raises(HrsegError, match="val_split"):
        SplitValidator(cfg_for(data, tmp_path / "r", **{"run.val_every": 1, "run.val_split": "nosuch"}).resolved())
