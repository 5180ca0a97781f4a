"""The CLI only translates: one table maps config keys to `hrseg train` flags, both ways, and errors use it."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from hrseg.cli.common import CONFIG_FLAGS, in_flags
from hrseg.cli.main import app
from hrseg.errors import HrsegError
from hrseg.training.config import TrainConfig, override
from tests.cli_fixtures import invoke, text

#: `hrseg train` options that are not one config field each (what to train from, and how to run the command)
NOT_CONFIG = {"--scheme", "--preset", "--config", "--set", "--list-presets", "--resume", "--from", "--overwrite",
              "--json", "--help", "--extend", "--auto-resume", "--print-config"}


def _train_options() -> set[str]:
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    return {opt for p in command.params if p.param_type_name == "option"
            for opt in (*p.opts, *p.secondary_opts) if opt.startswith("--")}


def _value(cfg: TrainConfig, key: str) -> object:
    section, field = key.split(".")
    return getattr(getattr(cfg, section), field)


def test_every_flag_maps_to_a_real_config_field_and_back() -> None:
    cfg = TrainConfig(scheme="w19").resolved()
    for key, flag in CONFIG_FLAGS.items():
        assert override(cfg, {key: _value(cfg, key)}) == cfg, key  # a real field: setting it round-trips
    assert len(set(CONFIG_FLAGS.values())) == len(CONFIG_FLAGS)  # one key per flag
    options = _train_options()
    assert set(CONFIG_FLAGS.values()) <= options, set(CONFIG_FLAGS.values()) - options
    unmapped = {o for o in options if o not in CONFIG_FLAGS.values() and not o.startswith("--no-")} - NOT_CONFIG
    assert unmapped == set(), f"hrseg train options that no config key names: {unmapped}"


@pytest.mark.parametrize("changes, library, cli", [
    ({"optim.iters": 0}, "optim.iters: must be >= 1, got 0", "--iters: must be >= 1, got 0"),
    ({"weighting.clamp": -1.0}, "weighting.clamp: must be a finite number > 0", "--weight-clamp: must be"),
    ({"data.target_images": 3, "data.target_fraction": 0.5},
     "data.target_images and data.target_fraction are exclusive", "--target-images and --target-fraction are"),
    ({"run.checkpoint_every": 0}, "run.checkpoint_every and run.log_every must be >= 1",
     "--checkpoint-every and run.log_every must be >= 1"),
])
def test_library_errors_name_config_keys_and_the_cli_shows_flags(changes: dict, library: str, cli: str) -> None:
    with pytest.raises(HrsegError) as exc:
        override(TrainConfig(scheme="w19"), changes).validate()
    assert str(exc.value).startswith(library)
    assert in_flags(str(exc.value)).startswith(cli)
    assert in_flags(str(exc.value), keys=[]) == str(exc.value)  # set with --set or a file: the key stays
    assert in_flags("/data/run.out/file: x") == "/data/run.out/file: x"  # paths are left alone


def test_a_bad_value_is_reported_as_the_user_gave_it(tmp_path: Path) -> None:
    result = invoke("train", "--scheme", "joint", "--data", tmp_path, "--out", tmp_path / "run", "--iters", "0")
    assert result.exit_code == 2 and "error: --iters: must be >= 1, got 0" in text(result)
    result = invoke("train", "--scheme", "joint", "--data", tmp_path, "--out", tmp_path / "run", "--set",
                    "optim.iters=0")
    assert result.exit_code == 2 and "error: optim.iters: must be >= 1, got 0" in text(result)


def test_every_command_takes_the_run_positionally_and_the_old_option_still_works(
        tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    import json

    from tests.cli_fixtures import tiny_run
    from tests.data_fixtures import cached_synthetic_data

    run = tiny_run(cached_synthetic_data(tmp_path_factory), tmp_path / "run", scheme="w19")
    new = invoke("eval", run, "--device", "cpu", "--no-progress", "--max-images", "2", "--json", tmp_path / "a.json")
    old = invoke("eval", "--run", run, "--device", "cpu", "--no-progress", "--max-images", "2",
                 "--json", tmp_path / "b.json")
    assert new.exit_code == 0 and old.exit_code == 0, text(new) + text(old)
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["miou"] == b["miou"] and a["num_images"] == 2
    twice = invoke("eval", run, "--run", tmp_path / "other", "--device", "cpu")
    assert twice.exit_code == 2 and "the run is given twice" in text(twice)
    drawn = invoke("visualize", "weights", run, "--out", tmp_path / "w", "--num", "1", "--device", "cpu",
                   "--no-progress")
    assert drawn.exit_code == 0, text(drawn)
    assert (tmp_path / "w" / "index.html").is_file()
    missing = invoke("visualize", "weights", "--out", tmp_path / "w2")
    assert missing.exit_code == 2 and "give the run folder: hrseg visualize weights RUN" in text(missing)
    assert "--run" not in invoke("eval", "--help").output  # hidden: the positional RUN is the documented way


def test_the_sliding_window_default_is_the_library_s(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    """--slide without --window slides the training crop: decided by the library, the same for eval and export."""
    from hrseg.evaluation.evaluate import EvalOptions, evaluate_and_save
    from hrseg.export import load_model
    from hrseg.inference.tta import InferenceOptions
    from tests.cli_fixtures import tiny_run
    from tests.data_fixtures import cached_synthetic_data

    run = tiny_run(cached_synthetic_data(tmp_path_factory), tmp_path / "run")
    opts = EvalOptions(device="cpu", show_progress=False, max_images=1, tta=InferenceOptions(slide=True))
    _, path = evaluate_and_save(run, opts, tmp_path / "e.json")
    import json

    assert json.loads(path.read_text())["inference"]["window"] == [32, 16]  # TINY's crop
    assert load_model(run).options(slide=True).window == (32, 16)
    assert InferenceOptions(slide=True, window=(8, 8)).with_default_window((32, 16)).window == (8, 8)
    assert InferenceOptions().with_default_window((32, 16)).window is None


def test_width_errors_name_the_network_whose_width_it_is() -> None:
    from hrseg.models import Discriminator, Generator, HierarchicalWeighting, build_segmenter

    for make, option in ((lambda: build_segmenter("fcn8s-vgg16", width=0.0), "--width"),
                         (lambda: Generator(8, 8, width=0.0), "gan.width"),
                         (lambda: Discriminator(19, width=0.0), "gan.width"),
                         (lambda: HierarchicalWeighting("w1", width=0.0), "weighting.width")):
        with pytest.raises(HrsegError, match=f"^{option}: must be"):
            make()
