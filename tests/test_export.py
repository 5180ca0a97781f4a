"""`hrseg export` and hrseg.export.load_model: one self-describing file per model, loadable with weights_only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from hrseg.data.labels import CLASS_NAMES
from hrseg.errors import HrsegError
from hrseg.export import FORMAT, export_model, load_model
from hrseg.inference import segment_image
from hrseg.models import logits_of
from hrseg.training.rundir import RunDir
from tests.cli_fixtures import invoke, stdout_json, text, tiny_run
from tests.data_fixtures import cached_synthetic_data


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cached_synthetic_data(tmp_path_factory, prepared_size=(32, 16))


@pytest.fixture(scope="module")
def run(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(data, tmp_path_factory.mktemp("runs") / "w19", scheme="w19")


def _logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 3, 16, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return logits_of(model(x)).float()


def test_export_writes_weights_and_what_is_needed_to_use_them(run: Path, tmp_path: Path) -> None:
    result = invoke("export", run, "--out", tmp_path / "model.pt", "--json", "-")
    assert result.exit_code == 0, text(result)
    summary = stdout_json(result)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)  # plain tensors, strings and numbers only
    cfg = RunDir(run).config()
    assert payload["format"] == FORMAT and payload["arch"] == "fcn8s-vgg16" and payload["width"] == 0.0625
    assert payload["num_classes"] == 19 and payload["class_names"] == list(CLASS_NAMES)
    assert payload["mean"] == [0.485, 0.456, 0.406] and payload["std"] == [0.229, 0.224, 0.225]
    assert payload["size"] == [32, 16] and payload["crop"] == [32, 16] and payload["dtype"] == "float32"
    assert payload["config"] == cfg.to_dict() and payload["iteration"] == 2 and payload["scheme"] == "w19"
    loaded = RunDir(run).load_for_inference()
    state = loaded.segmenter.state_dict()
    assert payload["state_dict"].keys() == state.keys()
    assert all(torch.equal(payload["state_dict"][k], v) for k, v in state.items())
    # only S: W (and G, D, optimiser state) stay in the run
    assert summary["bytes"] == (tmp_path / "model.pt").stat().st_size
    assert summary["bytes"] < (run / "checkpoints" / "final.pt").stat().st_size / 2
    assert summary["parameters"] == sum(p.numel() for p in loaded.segmenter.parameters())


def test_exported_model_predicts_like_the_run_and_half_is_half(run: Path, tmp_path: Path) -> None:
    full = export_model(run, tmp_path / "m32.pt")
    half = export_model(run, tmp_path / "m16.pt", half=True)
    assert half.dtype == "float16" and 0.45 < half.bytes / full.bytes < 0.6
    assert all(v.dtype == torch.float16 for v in torch.load(tmp_path / "m16.pt", weights_only=True)
               ["state_dict"].values() if v.is_floating_point())
    from_run, from_file, from_half = load_model(run), load_model(tmp_path / "m32.pt"), load_model(tmp_path / "m16.pt")
    assert from_file.kind == "export" and from_file.size == from_run.size == (32, 16)
    assert from_file.crop == (32, 16) and from_file.iteration == 2
    assert torch.equal(_logits(from_file.segmenter), _logits(from_run.segmenter))
    reference = _logits(from_run.segmenter)
    assert torch.allclose(_logits(from_half.segmenter), reference, atol=1e-2 * reference.abs().max().item())
    assert next(from_half.segmenter.parameters()).dtype == torch.float32  # computes in float32
    rgb = np.random.default_rng(0).integers(0, 255, (40, 80, 3), dtype=np.uint8)
    assert np.array_equal(segment_image(from_file.segmenter, rgb, from_file.options()),
                          segment_image(from_run.segmenter, rgb, from_run.options()))


def test_a_checkpoint_file_on_its_own_loads_too(run: Path, tmp_path: Path) -> None:
    copy = tmp_path / "somewhere" / "final.pt"
    copy.parent.mkdir()
    shutil.copy(run / "checkpoints" / "final.pt", copy)
    model = load_model(copy)
    assert model.kind == "checkpoint" and model.size == (32, 16) and model.iteration == 2
    assert torch.equal(_logits(model.segmenter), _logits(load_model(run).segmenter))


def test_export_and_load_refuse_what_they_cannot_use(run: Path, tmp_path: Path) -> None:
    moved = tmp_path / "run"
    shutil.copytree(run, moved)
    cfg = json.loads((moved / "config.json").read_text())
    cfg["data"]["data"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(cfg))
    # the checkpoint records the size the run works at: the data folder is not needed (issue 18, case 4)
    assert invoke("export", moved, "--out", tmp_path / "x.pt").exit_code == 0
    assert load_model(tmp_path / "x.pt").size == (32, 16)
    folder = invoke("export", run, "--out", tmp_path)
    assert folder.exit_code == 2 and "is a folder" in text(folder)

    good = torch.load(tmp_path / "x.pt", weights_only=True)
    cases = {
        "garbage.pt": (b"not a torch file", "not a readable hrseg model .*damaged or truncated"),
        "damaged.pt": (None, r"not a readable hrseg model \(checkpoint is damaged \(checksum mismatch"),
        "foreign.pt": ({"format": "something-else/1"}, "not an hrseg model"),
        "arch.pt": ({**good, "arch": "unet-9000"}, "model is a 'unet-9000', which this hrseg does not know"),
        "mean.pt": ({**good, "mean": [0.5, 0.5, 0.5]}, "hrseg feeds ImageNet-normalised images"),
        "width.pt": ({**good, "width": 0.125}, "its weights do not fit a fcn8s-vgg16 of width 0.125"),
        "nosize.pt": ({k: v for k, v in good.items() if k != "size"}, "'size' must be \\[width, height\\]"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if content is None:  # a copy with one flipped byte inside the weights
            raw = bytearray((tmp_path / "x.pt").read_bytes())
            raw[len(raw) // 2] ^= 0xFF
            path.write_bytes(bytes(raw))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            torch.save(content, path)
        with pytest.raises(HrsegError, match=message):
            load_model(path)
    with pytest.raises(HrsegError, match="--checkpoint: only with a run folder"):
        load_model(tmp_path / "x.pt", checkpoint="last.pt")
    with pytest.raises(HrsegError, match="no such run folder or model file"):
        load_model(tmp_path / "nothing.pt")
