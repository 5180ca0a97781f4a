"""`hrseg eval` with the test-time options `hrseg predict` has: off they change nothing; on they are recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hrseg.errors import HrsegError
from hrseg.evaluation.evaluate import EvalOptions, evaluate_run
from hrseg.inference.tta import InferenceOptions
from tests.cli_fixtures import invoke, stdout_json, text, tiny_run
from tests.data_fixtures import cached_synthetic_data


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = cached_synthetic_data(tmp_path_factory, prepared_size=(32, 16))
    return tiny_run(data, tmp_path_factory.mktemp("runs") / "w19", scheme="w19")


def _eval(run: Path, *args: str) -> dict:
    result = invoke("eval", "--run", run, "--device", "cpu", "--no-progress", "--json", "-", *args)
    assert result.exit_code == 0, text(result)
    return stdout_json(result)


def test_default_options_and_a_whole_image_window_score_like_plain_inference(run: Path) -> None:
    plain = _eval(run)
    assert plain["inference"] == {**InferenceOptions().to_dict(), "scores": "logits"}
    assert json.loads((run / "eval" / "val.json").read_text())["confusion_matrix"] == plain["confusion_matrix"]
    # one window the size of the prepared images (32x16) is the plain forward pass
    window = _eval(run, "--slide", "--window", "32x16")
    assert window["confusion_matrix"] == plain["confusion_matrix"]
    assert window["inference"]["slide"] and window["inference"]["window"] == [32, 16]
    # --slide alone slides the run's training crop over the images (here the same size)
    assert _eval(run, "--slide")["inference"]["window"] == [32, 16]


def test_flip_and_scales_average_probabilities_and_say_so(run: Path) -> None:
    tta = _eval(run, "--flip", "--scale", "1", "--scale", "1.5")
    assert tta["inference"]["flip"] and tta["inference"]["scales"] == [1.0, 1.5]
    assert tta["inference"]["scores"] == "mean softmax probabilities"
    assert sum(map(sum, tta["confusion_matrix"])) == sum(map(sum, _eval(run)["confusion_matrix"]))


def test_test_time_options_are_refused_where_they_mean_nothing(run: Path) -> None:
    source = invoke("eval", "--run", run, "--split", "source", "--flip", "--device", "cpu")
    assert source.exit_code == 2 and "--slide, --scale and --flip: only for a target split" in text(source)
    with pytest.raises(HrsegError, match="--size: evaluation feeds the prepared images at their own size"):
        evaluate_run(run, EvalOptions(tta=InferenceOptions(size=(64, 32)), device="cpu", show_progress=False))
    with pytest.raises(HrsegError, match="--amp: mixed precision needs a CUDA device"):
        evaluate_run(run, EvalOptions(amp=True, device="cpu", show_progress=False))
