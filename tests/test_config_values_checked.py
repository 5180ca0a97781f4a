"""Config values that type-check but used to crash or mislead are one line, exit 2 (issue 18, case 14)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_fixtures import invoke, text
from tests.data_fixtures import cached_synthetic_data

SMALL = ["--width", "0.0625", "--pretrained", "none", "--crop", "32x16", "--batch-size", "2", "--device", "cpu",
         "--no-progress", "--iters", "1"]
DEEP = "[" * 30000 + "]" * 30000


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "gan.betas=NaN,NaN"], "gan.betas: must be a finite number, got [nan, nan]"),
        (["--set", "gan.betas=2,2"], "gan.betas: two numbers in [0, 1) (Adam's), got [2.0, 2.0]"),
        (["--set", "gan.adv_weight=NaN"], "gan.adv_weight: must be a finite number, got nan"),
        (["--set", "gan.adv_weight=-5"], "gan.adv_weight: must be >= 0, got -5.0"),
        (["--seed", str(2**64 + 1)], f"--seed: must be in [0, 2^63), got {2**64 + 1}"),
        (["--set", f"data.crop={DEEP}"], "--set: nested more than 32 levels deep"),
    ],
)
def test_bad_values_are_one_line(extra: list[str], message: str, tmp_path_factory: pytest.TempPathFactory,
                                 tmp_path: Path) -> None:
    data = cached_synthetic_data(tmp_path_factory, prepared_size=(32, 16))
    result = invoke("train", "--scheme", "w19", "--gan", "--data", data, "--out", tmp_path / "r", *SMALL, *extra)
    assert result.exit_code == 2, text(result)
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert message in text(result), text(result)
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_deep_nesting_in_a_config_file_is_one_line(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"deep{suffix}"
    path.write_text(f"a = {DEEP}\n" if suffix == ".toml" else f'{{"a": {DEEP}}}')
    result = invoke("train", "--config", path, "--out", tmp_path / "r")
    assert result.exit_code == 2 and f"{path}: nested more than 32 levels deep" in text(result), text(result)


def test_a_crop_larger_than_the_data_and_a_tiny_window_are_refused(  # minor cases
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    data = cached_synthetic_data(tmp_path_factory, prepared_size=(32, 16))
    args = [a if a != "32x16" else "4096x4096" for a in SMALL]
    result = invoke("train", "--scheme", "target-only", "--data", data, "--out", tmp_path / "r", *args)
    assert result.exit_code == 2, text(result)
    assert "crop 4096x4096: more than 4 times the prepared" in text(result) and "Traceback" not in result.output
    from hrseg.errors import HrsegError
    from hrseg.inference.tta import InferenceOptions

    with pytest.raises(HrsegError, match=r"--window 1x1: both sides must be >= 8 pixels"):
        InferenceOptions(slide=True, window=(1, 1)).validate()
