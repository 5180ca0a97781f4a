"""`hrseg train` on the command line: presets, overrides, GAN defaults, errors, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hrseg.cli.main import app
from hrseg.errors import HrsegError
from hrseg.training.config import TrainConfig
from hrseg.training.presets import PRESETS, build_config
from hrseg.training.trainer import train
from tests.data_fixtures import cached_synthetic_data

runner = CliRunner()
SMALL = ["--width", "0.0625", "--weight-width", "0.125", "--gan-width", "0.0625", "--pretrained", "none",
         "--crop", "64x32", "--batch-size", "2", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def _text(result) -> str:  # type: ignore[no-untyped-def]
    out = result.output
    try:
        out += result.stderr
    except (ValueError, AttributeError):
        pass
    return out


def test_list_presets_shows_every_row_and_json() -> None:
    result = runner.invoke(app, ["train", "--list-presets", "--json"])
    assert result.exit_code == 0, _text(result)
    start = result.stdout.index("{")
    listed = json.loads(result.stdout[start:])
    assert set(listed) == set(PRESETS)
    assert listed["w19"]["paper_miou"] == 68.1
    assert listed["w19"]["config"]["gan"]["enabled"] is True
    for name in PRESETS:
        assert name in _text(result)


def test_preset_with_overrides_trains_and_writes_json(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--preset", "w19", "--data", str(data), "--out", str(run), "--iters", "2", "--no-amp",
            "--weight-combine", "mean", "--weight-clamp", "0", "--target-images", "4", "--json", *SMALL]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, _text(result)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["preset"] == "w19" and cfg["scheme"] == "w19" and cfg["gan"]["enabled"] is True
    assert cfg["model"]["width"] == 0.0625 and cfg["data"]["crop"] == [64, 32] and cfg["optim"]["iters"] == 2
    assert cfg["weighting"]["combine"] == "mean" and cfg["weighting"]["clamp"] is None
    assert cfg["data"]["target_images"] == 4 and cfg["run"]["amp"] is False
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["status"] == "finished" and summary["iteration"] == 2 and summary["target_images"] == 4
    assert json.loads((run / "summary.json").read_text())["iteration"] == 2


def test_ours_uses_the_gan_by_default_and_baselines_do_not() -> None:
    assert build_config(scheme="w1").gan.enabled
    assert build_config(scheme="w19").gan.enabled
    assert not build_config(scheme="w1", flags={"gan.enabled": False}).gan.enabled
    assert not build_config(scheme="joint").gan.enabled
    assert build_config(scheme="joint", flags={"gan.enabled": True}).gan.enabled
    # a preset keeps its own GAN setting unless the flag is given
    assert build_config(preset="gan").gan.enabled
    assert not build_config(preset="gan", flags={"gan.enabled": False}).gan.enabled
    assert build_config(preset="joint", scheme="w1", flags={"optim.lr": 0.5}).optim.lr == 0.5
    # the Python API resolves the same default as the command line
    assert TrainConfig(scheme="w19").resolved().gan.enabled and not TrainConfig(scheme="joint").resolved().gan.enabled


def test_config_round_trips_through_json() -> None:
    for preset in PRESETS.values():
        cfg = preset.config()
        assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(HrsegError, match="unknown key"):
        TrainConfig.from_dict({"optim": {"learning_rate": 1.0}})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scheme", "nope"], "Invalid value for '--scheme'"),
        (["--scheme", "joint", "--crop", "64"], "--crop '64': expected WIDTHxHEIGHT"),
        (["--scheme", "joint", "--target-images", "3", "--target-fraction", "0.5"], "exclusive"),
        (["--scheme", "target-only", "--gan"], "--gan: scheme 'target-only' never sees both domains"),
        (["--preset", "nope"], "Invalid value for '--preset'"),
        (["--scheme", "w1", "--weight-normalize", "max"], "Invalid value for '--weight-normalize'"),
        (["--scheme", "w1", "--set", "weighting.normalize=max"], "--weight-normalize: unknown weight normalisation"),
        (["--scheme", "joint", "--set", "optim.lr=fast"], 'optim.lr: expected a number, got "fast"'),
        (["--scheme", "joint", "--set", "data.batch_size=2.5"], "data.batch_size: expected an integer, got 2.5"),
        (["--scheme", "joint", "--set", "optim.nope=1"], "unknown field 'optim.nope'"),
        (["--scheme", "joint", "--lr", "-0.01"], "--lr: must be a finite number > 0, got -0.01"),
        (["--scheme", "joint", "--lr", "nan"], "--lr: must be a finite number > 0, got nan"),
        (["--scheme", "joint", "--workers", "-1"], "--workers: must be >= 0, got -1"),
        (["--scheme", "joint", "--target-images", "99"], "asked for 99 images"),
        ([], "--scheme, --preset or --config is required"),
    ],
)
def test_bad_options_exit_2_with_one_line(extra: list[str], message: str, data: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "r"), "--iters", "1",
                                 *SMALL, *extra])
    assert result.exit_code == 2, _text(result)
    text = " ".join(_text(result).split())
    assert message in text
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_resume_on_the_command_line(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--scheme", "joint", "--data", str(data), "--out", str(run), "--iters", "3", *SMALL]
    cfg = build_config(scheme="joint", flags={"data.data": str(data), "run.out": str(run), "optim.iters": 3,
                                              "model.width": 0.0625, "data.crop": (64, 32), "data.batch_size": 2,
                                              "run.device": "cpu", "run.progress": False})
    assert train(cfg, stop_after=1).status == "interrupted"
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already holds a run" in _text(again)
    refused = runner.invoke(app, ["train", "--resume", str(run), "--lr", "0.1"])
    assert refused.exit_code == 2 and "--lr cannot change on resume" in " ".join(_text(refused).split())
    whole = runner.invoke(app, ["train", "--resume", str(run), "--scheme", "w19"])
    assert whole.exit_code == 2 and "--resume continues a run with its own config; --scheme" in _text(whole)
    result = runner.invoke(app, ["train", "--resume", str(run), "--device", "cpu", "--no-progress", "--json"])
    assert result.exit_code == 0, _text(result)
    summary = json.loads(result.stdout[result.stdout.index("{"):])
    assert summary["status"] == "finished" and summary["iteration"] == 3
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["iter"] for x in lines] == [1, 2, 3]


def test_weighting_settings_for_a_scheme_without_w_are_not_silently_ignored(tmp_path: Path) -> None:
    """A weighting flag or --set key given to a scheme without W says, in one line, that it does nothing."""
    from hrseg.training.schemes import unused_settings

    assert unused_settings(build_config(scheme="w19"), ["weighting.lr"]) is None
    assert unused_settings(build_config(scheme="joint"), ["optim.lr"]) is None
    message = unused_settings(build_config(scheme="joint"), ["weighting.width", "weighting.network", "optim.lr"])
    assert message == ("weighting.network, weighting.width: scheme 'joint' has no weighting network, "
                       "so these settings do nothing")
    args = ["train", "--scheme", "target-only", "--weight-width", "0.5", "--set", "weighting.lr=0.001",
            "--print-config"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert ("warning: weighting.lr, --weight-width: scheme 'target-only' has no weighting network, "
            "so these settings do nothing") in said
    quiet = runner.invoke(app, ["train", "--scheme", "w19", "--weight-width", "0.5", "--print-config"])
    assert quiet.exit_code == 0 and "no weighting network" not in quiet.output
