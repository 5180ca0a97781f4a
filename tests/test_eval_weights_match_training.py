"""`hrseg eval --split source` and `hrseg visualize weights` must read the weights training used.

The regression: sharpening and its re-clamp were applied in the trainer, after
HierarchicalWeighting, so evaluation reported unsharpened weights (with
--weight-sharpen 4 --weight-clamp 5, training used 1.21 / 0.48 on realistic /
deviating pixels while eval reported 1.18 / 0.81). The test runs one real
training step, records the images S saw and the weight the source loss got,
and recomputes the weight on those images through evaluation's own path.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

import hrseg.evaluation.weighting as eval_weighting
from hrseg.evaluation.weighting import weight_maps
from hrseg.training import losses
from hrseg.training.config import TrainConfig, override
from hrseg.training.schemes import plan
from hrseg.training.trainer import Trainer
from tests.data_fixtures import cached_synthetic_data

TINY = {
    "model.width": 0.0625, "model.pretrained": "none", "weighting.width": 0.125, "data.batch_size": 2,
    "data.crop": (64, 32), "optim.lr": 0.01, "optim.iters": 1, "run.device": "cpu", "run.progress": False,
    "gan.enabled": False,
}
OPTIONS = [("batch", 1.0, None), ("batch", 4.0, 5.0), ("none", 2.0, None), ("running", 4.0, 5.0), ("batch", 1.0, 3.0)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


@pytest.mark.parametrize("combine", ["product", "mean", "ratio"])
@pytest.mark.parametrize(("normalize", "sharpen", "clamp"), OPTIONS)
def test_source_eval_reports_the_weights_training_used(
    combine: str, normalize: str, sharpen: float, clamp: float | None, data: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = override(TrainConfig(scheme="w19"), {
        **TINY, "data.data": str(data), "run.out": str(tmp_path / "run"), "weighting.combine": combine,
        "weighting.normalize": normalize, "weighting.sharpen": sharpen, "weighting.clamp": clamp,
    })
    trainer = Trainer(cfg)
    try:
        for net in trainer.nets.values():
            net.eval()  # no dropout: evaluation's S must see exactly what training's S saw
        seg, weighting = trainer.nets["segmenter"], trainer.nets["weighting"]
        before = copy.deepcopy(seg), copy.deepcopy(weighting)  # the step updates both; score the state it used
        seen: dict[str, torch.Tensor] = {}
        forward, real_loss = seg.forward, losses.weighted_source_loss

        def recording_forward(x: torch.Tensor) -> object:
            seen.setdefault("images", x.detach().clone())
            return forward(x)

        def recording_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
            assert weight is not None
            seen.setdefault("labels", labels.clone())
            seen.setdefault("weight", weight.detach().float().clone())
            return real_loss(logits, labels, weight)

        monkeypatch.setattr(seg, "forward", recording_forward)
        monkeypatch.setattr(losses, "weighted_source_loss", recording_loss)
        trainer.step(plan(cfg, 0))
    finally:
        trainer.close()
    monkeypatch.undo()
    # the recorded images are normalised already: evaluation's own normalisation must leave them as they are
    monkeypatch.setattr(eval_weighting, "normalize", lambda x: x)
    n_s = cfg.data.batch_size
    maps = weight_maps(before[0], before[1], seen["images"][:n_s], seen["labels"], cfg.weighting.input)
    valid = seen["labels"] != 255
    assert valid.any()
    torch.testing.assert_close(maps.weight[valid], seen["weight"][valid], rtol=1e-5, atol=1e-6)
    if clamp is not None:
        assert float(maps.weight.max()) <= clamp + 1e-5
