"""`hrseg models`: the table and the JSON carry the parameter counts the issue names."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from hrseg.cli.main import app

runner = CliRunner()


def by_name(result: dict) -> dict[str, dict]:
    return {row["name"]: row for row in result["models"]}


def test_models_json_reports_paper_parameter_counts(tmp_path: Path) -> None:
    out = tmp_path / "models.json"
    res = runner.invoke(app, ["models", "--json", "--out", str(out)])
    assert res.exit_code == 0, res.output
    result = json.loads(res.stdout)
    assert json.loads(out.read_text()) == result
    assert result["input_size"] == [1024, 512] and result["width"] == 1.0
    rows = by_name(result)
    assert rows["VGG16"]["params"] == 138_357_544
    assert rows["ResNet50"]["params"] == 25_557_032
    for level in ("pixel", "region", "image"):
        assert rows[f"W^1 {level}"]["params"] == 2_781_121
        assert rows[f"W^19 {level}"]["params"] == 530_067
    assert rows["W^1 (all levels)"]["params"] == 3 * 2_781_121
    assert rows["D"]["params"] == 25_570_967
    assert rows["FCN-8s"]["output"] == {"logits": [1, 19, 512, 1024], "features": [1, 512, 16, 32]}
    assert rows["PSPNet"]["output"] == {"logits": [1, 19, 512, 1024], "features": [1, 512, 64, 128]}
    assert rows["PSPNet+aux"]["output"]["aux"] == [1, 19, 512, 1024]
    assert rows["W^1 region"]["output"]["logits"] == [1, 1, 16, 32]
    assert rows["W^19 pixel"]["output"]["logits"] == [1, 19, 128, 256]
    assert rows["W^19 image"]["output"]["score"] == [1, 512, 1024]
    assert rows["G (stride 32)"]["output"]["image"] == [1, 3, 512, 1024]
    assert rows["G (stride 8)"]["output"]["image"] == [1, 3, 512, 1024]
    assert rows["D"]["output"] == {"domain": [1, 4, 8, 16], "class": [1, 19, 8, 16]}


def test_models_odd_size_small_width_and_image_input() -> None:
    res = runner.invoke(app, ["models", "--input-size", "97x65", "--width", "0.25", "--image-input", "--json"])
    assert res.exit_code == 0, res.output
    rows = by_name(json.loads(res.stdout))
    assert rows["FCN-8s"]["output"]["logits"] == [1, 19, 65, 97]
    assert rows["G (stride 32)"]["output"]["image"] == [1, 3, 65, 97]
    assert rows["G (stride 8)"]["output"]["image"] == [1, 3, 65, 97]
    assert rows["W^1 pixel"]["input"] == {"image": [1, 3, 65, 97]}
    assert rows["W^1 pixel"]["params"] == 175_089  # first conv 3 -> 16 at width 0.25


def test_models_table_without_json() -> None:
    res = runner.invoke(app, ["models", "--width", "0.5"])
    assert res.exit_code == 0
    assert res.stdout == ""
    assert "W^19 region" in res.stderr and "hrseg networks at 1024x512" in res.stderr


def test_models_bad_options_exit_2_with_one_line() -> None:
    for args, message in ((["--input-size", "1024by512"], "--input-size '1024by512': expected WIDTHxHEIGHT"),
                          (["--input-size", "40x30"], "too small"),
                          (["--width", "0"], "--width: must be a positive number")):
        res = runner.invoke(app, ["models", *args])
        assert res.exit_code == 2, args
        assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
