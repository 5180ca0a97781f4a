"""Selection options in a real training run: W's held-out target stream, soft thresholding as evaluation sees it,
the schedule across resume, and the config checks of the new options."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from hrseg.errors import HrsegError
from hrseg.training import losses
from hrseg.training.config import TrainConfig, override
from hrseg.training.presets import build_config
from hrseg.training.rundir import RunDir
from hrseg.training.schemes import plan
from hrseg.training.trainer import Trainer, train
from tests.data_fixtures import cached_synthetic_data
from tests.weight_fixtures import trained_and_evaluated_weights

TINY = {
    "model.width": 0.0625, "model.pretrained": "none", "weighting.width": 0.125, "data.batch_size": 2,
    "data.crop": (64, 32), "optim.lr": 0.01, "run.device": "cpu", "run.progress": False, "gan.enabled": False,
    "data.target_images": 4,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def cfg_for(data: Path, out: Path, **extra: object) -> TrainConfig:
    return override(TrainConfig(scheme="w19"), {**TINY, "data.data": str(data), "run.out": str(out),
                                                "optim.iters": 1, **extra})


def test_heldout_images_are_disjoint_and_are_what_w_learns_target_from(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer = Trainer(cfg_for(data, tmp_path / "run", **{"weighting.heldout_images": 3, "weighting.input": "pred"}))
    try:
        held, own = trainer.data.heldout_indices, trainer.data.target_indices
        assert len(held) == 3 and len(own) == 4 and not set(held) & set(own)
        seen: dict[str, torch.Tensor] = {}
        real = losses.weighting_loss

        def recording(weighting, s_inp, s_lab, t_inp, t_lab, source_logits=None):  # type: ignore[no-untyped-def]
            seen["t_inp"], seen["t_lab"] = t_inp.detach().clone(), t_lab.clone()
            return real(weighting, s_inp, s_lab, t_inp, t_lab, source_logits=source_logits)

        batches: list[dict[str, torch.Tensor]] = []
        draw = trainer.data.batch
        monkeypatch.setattr(trainer.data, "batch", lambda d: batches.append(draw(d)) or batches[-1])
        monkeypatch.setattr(losses, "weighting_loss", recording)
        for net in trainer.nets.values():
            net.eval()  # no dropout, so S's held-out prediction can be recomputed exactly
        seg = copy.deepcopy(trainer.nets["segmenter"])
        trainer.step(plan(trainer.cfg, 0))
    finally:
        trainer.close()
    tgt = next(b for b in batches if "heldout_image" in b)
    assert torch.equal(seen["t_lab"], tgt["heldout_label"]) and not torch.equal(seen["t_lab"], tgt["label"])
    with torch.no_grad():
        expected = torch.softmax(seg(tgt["heldout_image"]).logits.float(), 1)
    torch.testing.assert_close(seen["t_inp"], expected)


def test_heldout_stream_resumes_exactly(data: Path, tmp_path: Path) -> None:
    extra = {"weighting.heldout_images": 3, "optim.iters": 4, "run.checkpoint_every": 2, "weighting.ramp": 3}
    full = train(cfg_for(data, tmp_path / "full", **extra))
    part = train(cfg_for(data, tmp_path / "part", **extra), stop_after=2)
    assert part.status == "interrupted"
    train(RunDir(tmp_path / "part").config(), resume=True)
    a = torch.load(tmp_path / "full" / "checkpoints" / "final.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "checkpoints" / "final.pt", weights_only=True)
    assert a["data"]["positions"] == b["data"]["positions"] and b["data"]["positions"]["heldout"] == 4
    for net in ("segmenter", "weighting"):
        for k, v in a["models"][net].items():
            assert torch.equal(v, b["models"][net][k]), f"{net}.{k}"
    assert int(b["models"]["weighting"]["num_updates"]) == 4
    assert full.status == "finished"


def test_soft_threshold_eval_reports_the_weights_training_used(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = cfg_for(data, tmp_path / "run", **{"weighting.combine": "softthreshold", "weighting.steepness": 4.0})
    evaluated, trained, valid = trained_and_evaluated_weights(cfg, monkeypatch)
    torch.testing.assert_close(evaluated[valid], trained[valid], rtol=1e-5, atol=1e-6)
    assert float(trained[valid].mean()) == pytest.approx(1.0, rel=1e-4)
    assert float(trained[valid].max()) > 2 * float(trained[valid].min())


@pytest.mark.parametrize("changes,match", [
    ({"weighting.steepness": 0.0}, "weighting.steepness"),
    ({"weighting.smoothing": 0.5}, "weighting.smoothing"),
    ({"weighting.warmup": -1}, "weighting.warmup"),
    ({"weighting.ramp": -2}, "weighting.ramp"),
    ({"weighting.heldout_images": -1}, "weighting.heldout_images"),
    ({"weighting.network": "w20"}, "unknown weighting network"),
])
def test_bad_selection_settings_are_refused(changes: dict, match: str) -> None:
    with pytest.raises(HrsegError, match=match):
        build_config(scheme="w19", sets=[f"{k}={v}" for k, v in changes.items()])


def test_too_many_heldout_images_is_one_clear_error(data: Path, tmp_path: Path) -> None:
    with pytest.raises(HrsegError, match=r"heldout_images: asked for 5 held-out images but .* has only 4"):
        Trainer(cfg_for(data, tmp_path / "run", **{"weighting.heldout_images": 5}))
    assert not (tmp_path / "run").exists()


def test_literal_w19_trains_and_is_recorded(data: Path, tmp_path: Path) -> None:
    result = train(cfg_for(data, tmp_path / "run", **{"weighting.network": "w19-literal"}))
    assert result.status == "finished"
    assert RunDir(tmp_path / "run").config().weighting.network == "w19-literal"


def test_prediction_and_image_input_trains_and_evaluates(data: Path, tmp_path: Path) -> None:
    from hrseg.evaluation.evaluate import EvalOptions, evaluate_run
    from hrseg.models import weighting_input

    logits, image = torch.randn(2, 19, 8, 16), torch.randn(2, 3, 16, 32)
    both = weighting_input(logits, image, "pred+image")
    assert both.shape == (2, 22, 8, 16)
    torch.testing.assert_close(both[:, :19], logits.softmax(1))
    torch.testing.assert_close(both[:, 19:], torch.nn.functional.interpolate(image, size=(8, 16), mode="bilinear"))
    result = train(cfg_for(data, tmp_path / "run", **{"weighting.input": "pred+image", "optim.iters": 2}))
    assert result.status == "finished"
    report = evaluate_run(tmp_path / "run", EvalOptions(split="source", device="cpu", show_progress=False))
    assert 0.0 <= report.combined.auc <= 1.0


def test_measured_defaults_and_the_paper_presets_keep_w_on_predictions() -> None:
    from hrseg.training.presets import PRESETS, quick_config

    w = quick_config("w19", "D", "o").resolved().weighting
    assert (w.network, w.input, w.combine, w.normalize, w.steepness, w.levels, w.balance) == (
        "w19", "image", "softthreshold", "batch", 2.0, ("pixel", "region", "image", "agreement"), "class")
    w1 = quick_config("w1", "D", "o").resolved().weighting
    assert (w1.levels, w1.balance) == (("pixel", "region", "image"), "none")
    on_predictions = override(quick_config("w19", "D", "o"), {"weighting.input": "pred"}).resolved().weighting
    assert on_predictions.levels == ("pixel", "region", "image")  # the agreement level needs the image
    for name, paper in (("w1", 67.6), ("w19", 68.1), ("pspnet-w1", 77.6), ("gan-w1-image", 67.1)):
        preset = PRESETS[name]
        resolved = preset.config().resolved().validate().weighting
        assert resolved.input == ("image" if name == "gan-w1-image" else "pred")
        assert (resolved.levels, resolved.balance) == (("pixel", "region", "image"), "none")  # the paper's W
        assert preset.paper_miou == paper  # each paper row still finds its Table-1 number
