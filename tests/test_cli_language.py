"""One CLI language: --json PATH|- everywhere, one name per concept, flags shown as flags, old spellings kept."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hrseg.cli.main import bare_json_to_stdout
from tests.cli_fixtures import invoke, stdout_json, text

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [[], ["prepare"], ["prepare", "gtav"], ["prepare", "cityscapes"], ["prepare", "synthia"],
            ["prepare", "synthetic"], ["prepare", "verify"], ["models"], ["train"], ["eval"], ["predict"],
            ["export"], ["visualize", "weights"], ["visualize", "predictions"], ["report"], ["quickstart"]]


def _help(command: list[str]) -> str:
    result = invoke(*command, "--help")
    assert result.exit_code == 0, (command, result.output)
    return result.output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "hrseg")
def test_help_shows_flags_as_flags_and_json_as_a_path(command: list[str]) -> None:
    shown = _help(command)
    assert "<bool>" not in shown  # an on/off flag takes no value
    if len(command) >= 1 and command != ["prepare"]:
        assert re.search(r"--json\s+PATH\|-", shown), command  # every command writes JSON the same way


def test_help_names_the_new_spellings_only() -> None:
    assert "--size" in _help(["models"]) and "--input-size" not in _help(["models"])
    synthetic = _help(["prepare", "synthetic"])
    for new, old in (("--source-scenes", "--source-images"), ("--target-scenes", "--target-images"),
                     ("--val-scenes", "--val-images"), ("--scene-size", "--prepared-size")):
        assert new in synthetic and old not in synthetic
    quick = _help(["quickstart"])
    assert "--target-scenes" in quick and "--target-images" not in quick
    assert "--target-images" in _help(["train"])  # labelled target images used in training keep their name
    for command in (["eval"], ["predict"]):
        assert "--color" in _help(command) and "--colour" in _help(command)
    assert "--save-every" in _help(["train"]) and "--tensorboard" in _help(["train"])
    assert "docs/method.md" in _help([]) and "docs/method.md" in _help(["eval"])


def test_bare_json_means_stdout() -> None:
    assert bare_json_to_stdout(["models", "--json"]) == ["models", "--json", "-"]
    assert bare_json_to_stdout(["train", "--json", "--no-progress"]) == ["train", "--json", "-", "--no-progress"]
    assert bare_json_to_stdout(["eval", "--json", "out.json"]) == ["eval", "--json", "out.json"]
    assert bare_json_to_stdout(["eval", "--json", "-"]) == ["eval", "--json", "-"]


def test_json_path_or_stdout_and_old_spellings(tmp_path: Path) -> None:
    to_stdout = invoke("models", "--size", "128x64", "--width", "0.125", "--json", "-")
    assert to_stdout.exit_code == 0, text(to_stdout)
    printed = stdout_json(to_stdout)
    assert printed["input_size"] == [128, 64]
    bare = invoke("models", "--size", "128x64", "--width", "0.125", "--json")  # the old switch
    assert bare.exit_code == 0 and stdout_json(bare) == printed
    to_file = invoke("models", "--size", "128x64", "--width", "0.125", "--json", tmp_path / "m.json")
    assert to_file.exit_code == 0 and json.loads((tmp_path / "m.json").read_text()) == printed
    old = invoke("models", "--input-size", "128x64", "--width", "0.125", "--out", tmp_path / "old.json")
    assert old.exit_code == 0 and json.loads((tmp_path / "old.json").read_text()) == printed
    folder = invoke("models", "--json", tmp_path)
    assert folder.exit_code == 2 and "--json " in text(folder) and "is a folder" in text(folder)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "--input-size", "40x30"], "error: --input-size '40x30': 40x30 is too small"),
        (["models", "--size", "40x30"], "error: --size '40x30': 40x30 is too small"),
        (["models", "--size", "128x64", "--input-size", "128x64"], "--size and --input-size are the same option"),
        (["prepare", "synthetic", "--out", "{tmp}/d", "--size", "64x32"],
         "--size 64x32: here --size is the size the scenes are stored at"),
        (["prepare", "synthetic", "--out", "{tmp}/d", "--scene-size", "64x32", "--size", "128x64"],
         "--size 128x64: larger than the scenes (--scene-size 64x32)"),
        (["prepare", "synthetic", "--out", "{tmp}/d", "--scene-size", "64x32", "--prepared-size", "128x64"],
         "--prepared-size 128x64: larger than the scenes"),
        (["prepare", "synthetic", "--out", "{tmp}/d", "--source-scenes", "3", "--source-images", "3"],
         "--source-scenes and --source-images are the same option"),
        (["prepare", "synthetic", "--out", "{tmp}/d", "--scene-size", "wide"], "--scene-size 'wide'"),
        (["quickstart", "--out", "{tmp}/q", "--target-scenes", "3", "--target-images", "3"],
         "--target-scenes and --target-images are the same option"),
        (["train", "--scheme", "joint", "--save-every", "-1", "--data", "{tmp}", "--out", "{tmp}/r"],
         "--save-every: must be >= 0"),
        (["train", "--resume", "{tmp}/r", "--iters", "10"], "(got --iters)"),
        (["eval", "--run", "{tmp}/r", "--scale", "1", "--scale", "1"], "--scale: a scale is given twice"),
    ],
)
def test_errors_name_the_flag_that_was_typed(args: list[str], message: str, tmp_path: Path) -> None:
    result = invoke(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    assert result.exit_code == 2, text(result)
    assert message in text(result)
    assert not (tmp_path / "d").exists() and not (tmp_path / "q").exists()


def test_no_reference_outside_the_repository() -> None:
    """Users have the repository, not the project's private spec: docs point to docs/method.md."""
    offenders = []
    for folder in ("hrseg", "docs", "examples", "benchmarks"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in {".py", ".md", ".sh", ".txt", ".toml"} and path.is_file():
                body = path.read_text(encoding="utf-8", errors="replace")
                if "../shared" in body or re.search(r"\bMETHOD(\.md| §)", body):
                    offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
    method = (REPO / "docs" / "method.md").read_text()
    for section in ("## Networks", "## Training objective", "## Evaluation", "## What is reconstructed, and why",
                    "## Schemes and the paper's numbers"):
        assert section in method
    from hrseg.training.schemes import SCHEMES

    table = {value for scheme in SCHEMES.values() for value in scheme.paper_miou.values()}
    assert len(table) == 8
    for value in table:  # the paper's Table 1, as the scheme table holds it
        assert f"| {value:.1f} |" in method
