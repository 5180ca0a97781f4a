"""Models outside their run folder: export a run's segmenter to one file, and load any model to predict with.

An exported model (``hrseg export RUN --out model.pt``) is what someone needs
to segment images with a trained network and nothing else: the segmenter's
weights (float32, or float16 with ``--half``) and the facts that turn them back
into a working model, namely the architecture, width, class count and
auxiliary head, the input normalisation, the working resolution the model was
evaluated at, the class names, and the run's whole config for the record.
The weights of W, G and D, optimiser moments, RNG and data state stay in the
run: they are for training. The file holds tensors, strings and numbers only,
so it loads with ``torch.load(weights_only=True)``.

:func:`load_model` (defined in :mod:`hrseg.loader`, the one model loader, and
kept importable here) takes a run folder, a checkpoint file, or an exported file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from hrseg import __version__
from hrseg.atomic import atomic_path
from hrseg.data.augment import IMAGENET_MEAN, IMAGENET_STD
from hrseg.data.labels import CLASS_NAMES
from hrseg.errors import HrsegError
from hrseg.loader import FORMAT, LoadedModel, Size, load_model, working_size
from hrseg.ownership import check_replace, torch_owned
from hrseg.training.checkpoint import FORMAT as CHECKPOINT_FORMAT
from hrseg.training.rundir import RunDir

__all__ = ["FORMAT", "ExportResult", "LoadedModel", "check_export_target", "export_model", "load_model",
           "working_size"]


@dataclass(frozen=True)
class ExportResult:
    path: Path
    bytes: int
    parameters: int
    dtype: str
    size: Size
    checkpoint: Path
    iteration: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes": self.bytes, "parameters": self.parameters, "dtype": self.dtype,
                "size": list(self.size), "checkpoint": str(self.checkpoint), "iteration": self.iteration}


def check_export_target(out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Refuse an ``--out`` that holds something else than an earlier export (a checkpoint: even with overwrite)."""
    path = Path(out)
    if path.is_file() and torch_owned(CHECKPOINT_FORMAT)(path):
        raise HrsegError(f"--out {path}: is a training checkpoint; an export never replaces one, "
                         "choose another name")
    return check_replace(path, torch_owned(FORMAT), overwrite, "an exported model")


def export_model(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *,
                 checkpoint: str | os.PathLike[str] | None = None, half: bool = False,
                 size: Size | None = None, overwrite: bool = False) -> ExportResult:
    """Write a run's segmenter (its final checkpoint, or ``checkpoint``) to ``out`` as an exported model.

    ``size`` overrides the working resolution read from the run's prepared
    data; without either the export is refused (a model without its input
    size would segment user images at the wrong scale without saying so).
    """
    path = check_export_target(out, overwrite)
    loaded = load_model(RunDir(run_dir), checkpoint=checkpoint, device="cpu")
    cfg = loaded.cfg
    assert cfg is not None  # a run folder always has its config
    work = size or loaded.size  # the checkpoint's own; the data only for old ones
    if work is None:
        raise HrsegError(f"{run_dir}: the run's prepared data ({cfg.data.data}) is gone, so the size the model works "
                         "at is unknown; give --size WxH (the size the target images were prepared at)")
    state = loaded.segmenter.state_dict()
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    payload = {
        "format": FORMAT,
        "hrseg_version": __version__,
        "arch": cfg.model.arch,
        "width": float(cfg.model.width),
        "num_classes": int(cfg.model.num_classes),
        "aux": bool(cfg.model.aux),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "size": [int(work[0]), int(work[1])],
        "crop": [int(v) for v in cfg.data.crop],
        "class_names": list(CLASS_NAMES[: cfg.model.num_classes]),
        "dtype": "float16" if half else "float32",
        "iteration": loaded.iteration,
        "scheme": cfg.scheme,
        "config": cfg.to_dict(),
        "state_dict": state,
    }
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)
    params = sum(v.numel() for v in state.values() if v.is_floating_point())
    return ExportResult(path, path.stat().st_size, params, payload["dtype"], (int(work[0]), int(work[1])),
                        loaded.checkpoint, loaded.iteration)
