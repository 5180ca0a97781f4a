"""Losses as data: the source-weight registry, losses keyed by network in their backward order, scheme roles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hrseg.data.labels import IGNORE_INDEX
from hrseg.training.config import TrainConfig, override
from hrseg.training.objective import BACKWARD_ORDER
from hrseg.training.schemes import ROLES, SCHEMES, Scheme, add_scheme, plan
from hrseg.training.source_weights import SOURCE_WEIGHTS
from hrseg.training.trainer import Trainer, train
from tests.data_fixtures import cached_synthetic_data

TINY = {
    "model.width": 0.0625, "model.pretrained": "none", "weighting.width": 0.125, "data.batch_size": 2,
    "data.crop": (64, 32), "optim.lr": 0.01, "run.device": "cpu", "run.progress": False, "gan.enabled": False,
    "data.target_images": 4, "optim.iters": 1,
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def _batch() -> dict[str, torch.Tensor]:
    label = torch.tensor([[[0, 1, IGNORE_INDEX, 2]]])
    realism = torch.tensor([[[1, 0, 0, 1]]], dtype=torch.uint8)
    return {"label": label, "realism": realism, "image": torch.zeros(1, 3, 1, 4)}


def test_the_rules_are_registered_by_name_and_compute_their_weight() -> None:
    assert list(SOURCE_WEIGHTS)[:4] == ["none", "w", "oracle", "oracle-normalised"]
    src = _batch()
    assert SOURCE_WEIGHTS["none"].fn(None, torch.zeros(1), src).weight is None  # type: ignore[arg-type]
    oracle = SOURCE_WEIGHTS["oracle"].fn(None, torch.zeros(1), src).weight  # type: ignore[arg-type]
    assert oracle.tolist() == [[[1.0, 0.0, 0.0, 1.0]]]
    normalised = SOURCE_WEIGHTS["oracle-normalised"].fn(None, torch.zeros(1), src).weight  # type: ignore[arg-type]
    valid = src["label"] != IGNORE_INDEX  # realism 1, 0, 1 on the valid pixels: mean 2/3
    torch.testing.assert_close(normalised, oracle * 1.5)
    torch.testing.assert_close(normalised[valid].mean(), torch.tensor(1.0))
    assert SOURCE_WEIGHTS["w"].uses_w and SOURCE_WEIGHTS["oracle"].needs_realism
    assert not SOURCE_WEIGHTS["none"].needs_realism


def test_a_scheme_row_must_agree_with_its_rule_and_have_a_known_role() -> None:
    with pytest.raises(ValueError, match="disagree"):
        add_scheme(Scheme("bad-w", "bad", source_weight="w"))  # a rule that runs W, no default W
    with pytest.raises(ValueError, match="disagree"):
        add_scheme(Scheme("bad-oracle", "bad", weighting="w19", source_weight="oracle"))
    with pytest.raises(ValueError, match="role"):
        add_scheme(Scheme("bad-role", "bad", role="champion"))
    assert "bad-w" not in SCHEMES and "bad-role" not in SCHEMES
    roles = {name: SCHEMES[name].role for name in SCHEMES}
    assert set(roles.values()) <= set(ROLES)
    assert roles["target-only"] == "baseline" and roles["joint"] == "reference" and roles["oracle"] == "upper bound"
    assert roles["w19"] == roles["w1"] == "method"


@pytest.mark.parametrize("scheme, gan, expected", [
    ("target-only", False, ["segmenter"]),
    ("joint", False, ["segmenter"]),
    ("oracle", False, ["segmenter"]),
    ("w19", False, ["segmenter", "weighting"]),
    ("w19", True, ["segmenter", "generator", "discriminator", "weighting"]),
])
def test_the_objective_returns_one_loss_per_training_network_in_backward_order(
        data: Path, tmp_path: Path, scheme: str, gan: bool, expected: list[str]) -> None:
    cfg = override(TrainConfig(scheme=scheme), {**TINY, "gan.enabled": gan, "data.data": str(data),
                                                "run.out": str(tmp_path / "run")})
    trainer = Trainer(cfg)
    try:
        p = plan(trainer.cfg, 0)
        src = trainer.data.batch("source") if p.source else None
        tgt = trainer.data.batch("target") if p.target else None
        out = trainer.objective(p, src, tgt)
        assert list(out.losses) == expected == [n for n in BACKWARD_ORDER if n in expected]
        assert out.losses["segmenter"] is out.terms["total_s"]
        before = {n: [q.detach().clone() for q in net.parameters()] for n, net in trainer.nets.items()}
        trainer.step(p)
        for name, net in trainer.nets.items():  # exactly the networks with a loss moved
            moved = any(not torch.equal(a, b) for a, b in zip(before[name], net.parameters()))
            assert moved == (name in expected), name
    finally:
        trainer.close()


def test_the_normalised_oracle_trains_as_a_scheme_row_without_patching(data: Path, tmp_path: Path) -> None:
    cfg = override(TrainConfig(scheme="oracle-normalised"), {**TINY, "optim.iters": 2, "run.log_every": 1,
                                                             "data.data": str(data), "run.out": str(tmp_path / "n")})
    train(cfg)
    plain = override(TrainConfig(scheme="oracle"), {**TINY, "optim.iters": 2, "run.log_every": 1,
                                                    "data.data": str(data), "run.out": str(tmp_path / "o")})
    train(plain)
    norm = [json.loads(line) for line in (tmp_path / "n" / "metrics.jsonl").read_text().splitlines()]
    orac = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert [r["weight_mean"] for r in norm] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert all(r["weight_mean"] < 1.0 for r in orac)  # the plain mask: realistic pixels only
    ratio = norm[0]["weight_realistic"] / norm[0]["weight_mean"]
    assert ratio == pytest.approx(1.0 / orac[0]["weight_mean"], rel=1e-4)  # same batch, same mask, rescaled
