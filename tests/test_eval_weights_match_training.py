"""`hrseg eval --split source` and `hrseg visualize weights` must read the weights training used.

The regression: sharpening and its re-clamp were applied in the trainer, after
HierarchicalWeighting, so evaluation reported unsharpened weights (with
--weight-sharpen 4 --weight-clamp 5, training used 1.21 / 0.48 on realistic /
deviating pixels while eval reported 1.18 / 0.81). The test runs one real
training step, records the images S saw and the weight the source loss got,
and recomputes the weight on those images through evaluation's own path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hrseg.training.config import TrainConfig, override
from tests.data_fixtures import cached_synthetic_data
from tests.weight_fixtures import trained_and_evaluated_weights

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
    evaluated, trained, valid = trained_and_evaluated_weights(cfg, monkeypatch)
    assert valid.any()
    torch.testing.assert_close(evaluated[valid], trained[valid], rtol=1e-5, atol=1e-6)
    if clamp is not None:
        assert float(evaluated.max()) <= clamp + 1e-5
