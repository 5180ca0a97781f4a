"""See before you spend: --print-config (TOML with sources, loads back equal), budgets in --help and
--list-presets, warnings, parameter counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hrseg.training.preflight import config_warnings
from hrseg.training.presets import build_config, quick_config
from tests.cli_fixtures import invoke, text, tiny_run
from tests.data_fixtures import cached_synthetic_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory)


def _values(toml_text: str) -> dict[str, str]:
    """``section.key`` -> the line's source comment."""
    out, section = {}, ""
    for line in toml_text.splitlines():
        if line.startswith("["):
            section = line.strip("[]") + "."
        elif " = " in line and not line.startswith("#"):
            key = line.split(" = ")[0]
            out[section + key] = line.rsplit("  # ", 1)[1]
    return out


def test_print_config_loads_back_equal_and_says_where_each_value_came_from(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--preset", "w19", "--data", tmp_path / "data", "--out", out, "--set", "optim.lr=0.005",
            "--iters", "7", "--crop", "64x32"]
    printed = invoke("train", *args, "--print-config")
    assert printed.exit_code == 0, text(printed)
    assert not out.exists()  # nothing was written, nothing trained
    sources = _values(printed.stdout)
    assert sources["optim.lr"] == "--set" and sources["optim.iters"] == "flag" and sources["data.crop"] == "flag"
    assert sources["model.arch"] == "preset w19" and sources["preset"] == "preset w19"
    assert sources["optim.momentum"] == "default"
    file = tmp_path / "printed.toml"
    file.write_text(printed.stdout)
    expected = build_config(preset="w19", sets=["optim.lr=0.005"], flags={
        "data.data": str(tmp_path / "data"), "run.out": str(out), "optim.iters": 7, "data.crop": (64, 32)})
    assert build_config(config_file=file).to_dict() == expected.to_dict()
    # loaded back from the file, the values now come from it
    again = invoke("train", "--config", file, "--print-config")
    assert again.exit_code == 0 and _values(again.stdout)["optim.lr"] == f"file {file}"


def test_print_config_names_the_schemes_defaults_and_unset_values(tmp_path: Path) -> None:
    printed = invoke("train", "--scheme", "joint", "--data", tmp_path / "d", "--out", tmp_path / "o",
                     "--print-config")
    assert printed.exit_code == 0, text(printed)
    assert _values(printed.stdout)["gan.enabled"] == "scheme joint" and _values(printed.stdout)["scheme"] == "flag"
    assert "# target_images = (unset)  # default" in printed.stdout
    assert "# warning: fcn8s-vgg16 at full width trains from scratch" in printed.stdout
    file = tmp_path / "c.toml"
    file.write_text(printed.stdout)
    assert build_config(config_file=file).to_dict() == build_config(
        scheme="joint", flags={"data.data": str(tmp_path / "d"), "run.out": str(tmp_path / "o")}).to_dict()


def test_warnings_for_training_from_scratch_and_a_partial_width() -> None:
    assert any("trains from scratch" in w for w in config_warnings(build_config(scheme="joint")))
    assert not any("scratch" in w for w in config_warnings(build_config(preset="w19")))
    narrow = build_config(scheme="w19", flags={"model.width": 0.25})
    (warning,) = [w for w in config_warnings(narrow) if "--width" in w]
    assert "W (--weight-width) and G and D (--gan-width) stay at full width" in warning
    assert not config_warnings(quick_config("w19", "D", "o"))  # every width given, nothing to warn about


def test_budgets_in_help_and_list_presets() -> None:
    listed = invoke("train", "--list-presets", "--json", "-")
    assert listed.exit_code == 0
    assert all(f" {col} " in listed.output for col in ("iters", "lr", "crop", "batch"))  # table columns
    budget = json.loads(listed.stdout[listed.stdout.index("{"):])["deeplabv2-w19"]["budget"]
    assert budget == {"iters": "120000", "lr": "0.00025", "crop": "1024x512", "batch_size": "1"}
    helped = invoke("train", "--help")
    assert "Without --preset: 20000 iterations, --lr 0.01, --crop 512x256, --batch-size 2" in text(helped)


def test_the_run_prints_its_parameter_counts(data: Path, tmp_path: Path) -> None:
    run = tiny_run(data, tmp_path / "run", scheme="w19")
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["parameters"]) == {"segmenter", "weighting"}
    assert all(isinstance(v, int) and v > 0 for v in summary["parameters"].values())
    out = invoke("train", "--scheme", "target-only", "--data", data, "--out", tmp_path / "cli", "--width", "0.0625",
                 "--crop", "32x16", "--iters", "1", "--target-images", "2", "--device", "cpu", "--no-progress")
    assert out.exit_code == 0, text(out)
    assert "parameters: segmenter " in out.output and "warning: " not in out.output


def test_print_config_of_a_continued_run(data: Path, tmp_path: Path) -> None:
    run = tiny_run(data, tmp_path / "run")
    printed = invoke("train", "--resume", run, "--iters", "5", "--extend", "restart", "--print-config")
    assert printed.exit_code == 0, text(printed)
    sources = _values(printed.stdout)
    assert sources["optim.iters"] == "flag" and sources["optim.restarts"] == "--extend restart"
    assert sources["optim.lr"] == f"run {run}"
    assert "iters = 5  # flag" in printed.stdout and "restarts = [2]  # --extend restart" in printed.stdout
    assert json.loads((run / "config.json").read_text())["optim"]["iters"] == 2  # printed, not applied
