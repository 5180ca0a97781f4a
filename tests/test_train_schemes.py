"""Every scheme and every Table-1 preset trains a few iterations on tiny procedural data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hrseg.data.dataset import open_split
from hrseg.training.config import TrainConfig, override
from hrseg.training.presets import PRESETS, quick_config
from hrseg.training.schemes import SCHEMES
from hrseg.training.sampling import road_share
from hrseg.loader import load_model
from hrseg.training.rundir import RunDir
from hrseg.training.trainer import train
from tests.data_fixtures import cached_synthetic_data

TINY = {
    "model.width": 0.0625, "model.pretrained": "none", "weighting.width": 0.125, "gan.width": 0.0625,
    "data.batch_size": 2, "data.crop": (64, 32), "optim.iters": 3, "optim.lr": 0.01, "run.amp": False,
    "run.device": "cpu", "run.progress": False, "run.checkpoint_every": 2,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def tiny(cfg: TrainConfig, data: Path, out: Path, **extra: object) -> TrainConfig:
    return override(cfg, {**TINY, "data.data": str(data), "run.out": str(out), **extra})


def _check_run(run: Path, cfg: TrainConfig) -> list[dict]:
    records = list(RunDir(run).metrics())
    assert [r["iter"] for r in records] == list(range(1, cfg.optim.iters + 1))
    for r in records:
        assert all(isinstance(v, float) and v == v for k, v in r.items() if k not in ("iter", "phase"))
        assert r["lr"] > 0 and r["images_per_s"] > 0
    payload = torch.load(run / "checkpoints" / "final.pt", weights_only=True)
    assert payload["iteration"] == cfg.optim.iters
    assert json.loads((run / "config.json").read_text()) == cfg.resolved().to_dict()
    loaded = load_model(run)
    assert not loaded.segmenter.training
    with torch.no_grad():
        out = loaded.segmenter(torch.zeros(1, 3, 32, 64))
    assert out.logits.shape == (1, 19, 32, 64)
    assert (loaded.weighting is not None) == (SCHEMES[cfg.scheme].weighting is not None)
    return records


@pytest.mark.parametrize("scheme", SCHEMES.names())
def test_every_scheme_trains(scheme: str, data: Path, tmp_path: Path) -> None:
    row = SCHEMES[scheme]
    gan, weighted = row.gan, row.weighting is not None  # "ours" with its default GAN
    cfg = tiny(TrainConfig(scheme=scheme), data, tmp_path / scheme)
    if scheme == "finetune":
        cfg = override(cfg, {"optim.iters": 4, "finetune.source_iters": 2})
    if scheme == "image-select":
        cfg = override(cfg, {"image_select.road_share": 0.1})
    if row.unlabelled is not None:  # leave some target images unlabelled
        cfg = override(cfg, {"data.target_images": 4})
    result = train(cfg)
    assert result.status == "finished" and result.iteration == cfg.optim.iters
    records = _check_run(tmp_path / scheme, cfg)
    keys = set(records[-1])
    assert ("source" in keys) == (scheme not in ("target-only", "finetune"))
    assert ("minent" in keys) == (row.unlabelled == "minent")
    assert ("self_training" in keys and "pseudo_quality" in keys) == (row.unlabelled == "self-training")
    assert ("w_cls" in keys) == weighted
    assert ("d" in keys and "g" in keys) == gan
    if weighted:
        assert {"score_pixel", "score_region", "score_image", "weight_mean"} <= keys
    if row.uses_source and scheme != "finetune":
        # procedural source scenes carry realism masks: weight on realistic vs deviating pixels is logged
        assert {"weight_realistic", "weight_deviating"} <= keys
    if scheme == "oracle":
        assert records[-1]["weight_realistic"] == 1.0 and records[-1]["weight_deviating"] == 0.0
    if scheme == "finetune":
        assert [r["phase"] for r in records] == ["source", "source", "target", "target"]
        assert "source" in records[0] and "target" not in records[0]
        # the target phase restarts the poly schedule at the base learning rate
        assert records[2]["lr"] == pytest.approx(cfg.optim.lr)


def test_image_select_keeps_only_road_rich_source_images(data: Path, tmp_path: Path) -> None:
    cfg = tiny(TrainConfig(scheme="image-select"), data, tmp_path / "sel", **{"image_select.road_share": 0.2,
                                                                              "optim.iters": 1})
    train(cfg)
    chosen = json.loads((tmp_path / "sel" / "data_subset.json").read_text())["source"]["indices"]
    labels = open_split(data, "gtav", "train", fields=("label",))
    shares = [road_share(labels[i]["label"]) for i in range(len(labels))]
    assert chosen == [i for i, s in enumerate(shares) if s >= 0.2]
    assert 0 < len(chosen) < len(shares)  # the threshold really selects on this data


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_trains(name: str, data: Path, tmp_path: Path) -> None:
    preset = PRESETS[name]
    # the procedural scenes have less road than GTAV: a lower ImageSelect threshold keeps some images
    cfg = tiny(preset.config(), data, tmp_path / name, **{"optim.iters": 2, "image_select.road_share": 0.1})
    assert cfg.preset == name
    result = train(cfg)
    assert result.status == "finished"
    _check_run(tmp_path / name, cfg)
    assert cfg.scheme == preset.changes["scheme"]
    assert cfg.resolved().gan.enabled == bool(preset.changes.get("gan.enabled", False))


def test_target_images_pick_a_recorded_seeded_subset(data: Path, tmp_path: Path) -> None:
    subsets = []
    for seed, run in ((0, "a"), (0, "b"), (1, "c")):
        cfg = tiny(TrainConfig(scheme="target-only"), data, tmp_path / run,
                   **{"optim.iters": 1, "data.target_images": 3, "run.seed": seed})
        assert train(cfg).target_images == 3
        subsets.append(json.loads((tmp_path / run / "data_subset.json").read_text())["target"]["indices"])
    assert subsets[0] == subsets[1] and len(subsets[0]) == 3
    assert subsets[0] != subsets[2]
    cfg = tiny(TrainConfig(scheme="target-only"), data, tmp_path / "frac",
               **{"optim.iters": 1, "data.target_fraction": 0.5})
    assert train(cfg).target_images == 4  # half of 8


def test_quick_config_is_a_complete_small_budget(tmp_path: Path) -> None:
    cfg = quick_config("w19", data="DATA", out=str(tmp_path), seed=3).validate()
    assert cfg.scheme == "w19" and cfg.run.seed == 3 and cfg.data.target_images == 16
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_amp_uses_bf16_where_supported_else_fp16_and_never_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from hrseg.training.build import amp_dtype as _amp_dtype

    cfg = override(TrainConfig(), {"run.amp": True})
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert _amp_dtype(cfg, cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert _amp_dtype(cfg, cuda) == torch.float16  # the trainer enables its GradScaler for this one
    assert _amp_dtype(cfg, torch.device("cpu")) is None
    assert _amp_dtype(override(cfg, {"run.amp": False}), cuda) is None


def test_amp_on_cpu_trains_in_float32_and_says_so(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cfg = tiny(TrainConfig(scheme="target-only"), data, tmp_path / "amp", **{"run.amp": True, "optim.iters": 1})
    assert train(cfg).status == "finished"
    assert "--amp has no effect on the CPU" in capsys.readouterr().err
    state = torch.load(tmp_path / "amp" / "checkpoints" / "final.pt", weights_only=True)
    assert all(t.dtype == torch.float32 for t in state["models"]["segmenter"].values() if t.is_floating_point())
    assert state["scaler"] == {}  # no grad scaler state off CUDA
