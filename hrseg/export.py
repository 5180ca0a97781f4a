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

:func:`load_model` takes a run folder (a checkpoint in it by name), a
checkpoint file, or an exported file, and returns the segmenter with its
working size, the one entry point ``hrseg predict`` and the Python API share.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrseg import __version__
from hrseg.atomic import atomic_path
from hrseg.data.augment import IMAGENET_MEAN, IMAGENET_STD
from hrseg.data.dataset import split_dir
from hrseg.data.labels import CLASS_NAMES
from hrseg.data.shards import Manifest
from hrseg.errors import HrsegError
from hrseg.inference.tta import InferenceOptions
from hrseg.models import SEGMENTERS, build_segmenter
from hrseg.ownership import check_replace, torch_owned
from hrseg.training.checkpoint import FORMAT as CHECKPOINT_FORMAT
from hrseg.training.checkpoint import load_checkpoint, load_refusal, verify_checkpoint
from hrseg.training.config import TrainConfig
from hrseg.training.checkpoint import check_checkpoint_fits, load_state, recorded_size, segmenter_key
from hrseg.training.rundir import RunDir

FORMAT = "hrseg-model/1"
Size = tuple[int, int]


@dataclass
class LoadedModel:
    """A segmenter ready to predict (eval mode) and what it needs to be used right."""

    segmenter: nn.Module
    arch: str
    width: float
    num_classes: int
    size: Size | None  # (W, H) the model was evaluated at; None: unknown (give a size, or feed images as they are)
    crop: Size | None  # (W, H) of the training crops: the natural sliding window
    class_names: tuple[str, ...]
    config: dict[str, Any]  # the run's config, as saved
    source: Path  # the run folder, checkpoint or exported file it came from
    checkpoint: Path
    iteration: int
    kind: str  # "run", "checkpoint" or "export"

    def options(self, **changes: Any) -> InferenceOptions:
        """Test-time options with this model's working size (``size=None`` in ``changes``: native size)."""
        return replace(InferenceOptions(size=self.size), **changes).with_default_window(self.crop).validate()

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.source), "kind": self.kind, "checkpoint": str(self.checkpoint),
                "iteration": self.iteration, "arch": self.arch, "width": self.width,
                "num_classes": self.num_classes, "size": None if self.size is None else list(self.size)}


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


def working_size(cfg: TrainConfig) -> Size | None:
    """The prepared size of the run's target images: what evaluation fed the model (val first, then train).

    None when the prepared data is no longer where the run's config says.
    """
    for split in ("val", cfg.data.target_split):
        folder = split_dir(cfg.data.data, cfg.data.target, split)
        if (folder / "manifest.json").is_file():
            width, height = Manifest.load(folder).size
            return int(width), int(height)
    return None


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
    run = RunDir(run_dir)
    loaded = run.load_for_inference(checkpoint, device="cpu")
    cfg = loaded.config
    work = size or loaded.working_size or working_size(cfg)  # the checkpoint's own; the data only for old ones
    if work is None:
        raise HrsegError(f"{run}: the run's prepared data ({cfg.data.data}) is gone, so the size the model works "
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


def load_model(model: str | os.PathLike[str], *, checkpoint: str | os.PathLike[str] | None = None,
               device: str | torch.device = "cpu", network: str = "student") -> LoadedModel:
    """A run folder, a checkpoint file or an exported model -> :class:`LoadedModel` on ``device``.

    ``network="teacher"`` takes a self-training run's mean teacher (run folders and checkpoints only).
    """
    path = Path(model)
    if path.is_dir():
        return _from_run(path, checkpoint, device, network)
    if checkpoint is not None:
        raise HrsegError(f"--checkpoint: only with a run folder; {path} is a file")
    if not path.is_file():
        raise HrsegError(f"{path}: no such run folder or model file")
    try:
        verify_checkpoint(path)  # every record's CRC: a damaged copy is named, never loaded
    except HrsegError as exc:
        raise HrsegError(f"{path}: not a readable hrseg model ({str(exc).split(': ', 1)[-1]})") from None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise HrsegError(f"{path}: not a readable hrseg model ({load_refusal(exc)})") from None
    fmt = payload.get("format") if isinstance(payload, dict) else None
    if fmt == CHECKPOINT_FORMAT:
        return _from_checkpoint(path, device, network)
    if network != "student":
        raise HrsegError(f"--model {network}: {path} is an exported model, which holds one network only")
    if fmt != FORMAT:
        raise HrsegError(f"{path}: not an hrseg model (expected an exported model {FORMAT!r}, a checkpoint "
                         "or a run folder)")
    return _from_export(path, payload, device)


def _from_run(path: Path, checkpoint: str | os.PathLike[str] | None, device: str | torch.device,
              network: str = "student") -> LoadedModel:
    loaded = RunDir(path).load_for_inference(checkpoint, device=device, model=network)
    cfg = loaded.config
    return LoadedModel(loaded.segmenter, cfg.model.arch, cfg.model.width, cfg.model.num_classes,
                       loaded.working_size or working_size(cfg), tuple(cfg.data.crop),
                       CLASS_NAMES[: cfg.model.num_classes],
                       cfg.to_dict(), path, loaded.checkpoint, loaded.iteration,
                       "run" if network == "student" else f"run ({network})")


def _from_checkpoint(path: Path, device: str | torch.device, network: str = "student") -> LoadedModel:
    """A checkpoint file on its own (e.g. copied out of its run): its saved config rebuilds the segmenter."""
    payload = load_checkpoint(path)
    if not isinstance(payload.get("config"), dict):
        raise HrsegError(f"{path}: checkpoint has no config to rebuild its network from")
    cfg = TrainConfig.from_dict(payload["config"])
    check_checkpoint_fits(payload, cfg, path)
    seg = build_segmenter(cfg.model.arch, num_classes=cfg.model.num_classes, width=cfg.model.width,
                          pretrained="none", aux=cfg.model.aux)
    key = segmenter_key(payload, network, path)
    load_state(seg, payload["models"].get(key), path, key)
    seg.to(device).eval()
    return LoadedModel(seg, cfg.model.arch, cfg.model.width, cfg.model.num_classes,
                       recorded_size(payload) or working_size(cfg), tuple(cfg.data.crop), CLASS_NAMES[: cfg.model.num_classes], cfg.to_dict(), path, path,
                       int(payload["iteration"]), "checkpoint" if network == "student" else f"checkpoint ({network})")


MAX_SIDE = 1 << 16


def _field(payload: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path) -> Any:
    value = payload.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise HrsegError(f"{path}: exported model has no valid {key!r} entry (got {_show(value)})")
    return value


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _pair(payload: dict[str, Any], key: str, path: Path, optional: bool = False) -> Size | None:
    """A (W, H) entry: two ints in [1, 65536]."""
    value = payload.get(key)
    if value is None and optional:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(type(v) is int and 1 <= v <= MAX_SIDE for v in value)):
        raise HrsegError(f"{path}: exported model's {key!r} must be [width, height] in 1..{MAX_SIDE}, "
                         f"got {_show(value)}")
    return int(value[0]), int(value[1])


def _from_export(path: Path, payload: dict[str, Any], device: str | torch.device) -> LoadedModel:
    """Every field is checked (types, ranges, the weights' shapes against the architecture on the meta
    device) before anything is allocated: a crafted file is one line, never gigabytes or a traceback."""
    arch = _field(payload, "arch", str, path)
    if arch not in SEGMENTERS:
        raise HrsegError(f"{path}: model is a {arch!r}, which this hrseg does not know "
                         f"(it has {', '.join(SEGMENTERS)})")
    width = float(_field(payload, "width", (int, float), path))
    if not (math.isfinite(width) and 0 < width <= 4):
        raise HrsegError(f"{path}: exported model's 'width' must be in (0, 4], got {_show(payload['width'])}")
    num_classes = int(_field(payload, "num_classes", int, path))
    if not 1 <= num_classes <= 255:
        raise HrsegError(f"{path}: exported model's 'num_classes' must be in 1..255, got {num_classes}")
    mean, std = _field(payload, "mean", list, path), _field(payload, "std", list, path)
    try:
        same = [round(float(v), 6) for v in mean] == list(IMAGENET_MEAN) and \
            [round(float(v), 6) for v in std] == list(IMAGENET_STD)
    except (TypeError, ValueError):
        same = False
    if not same:
        raise HrsegError(f"{path}: model expects input normalised with mean {_show(mean)} / std {_show(std)}; "
                         "hrseg feeds ImageNet-normalised images")
    size = _pair(payload, "size", path)
    crop = _pair(payload, "crop", path, optional=True)
    iteration = payload.get("iteration", 0)
    if type(iteration) is not int or iteration < 0:
        raise HrsegError(f"{path}: exported model's 'iteration' must be a count >= 0, got {_show(iteration)}")
    names = payload.get("class_names", list(CLASS_NAMES[:num_classes]))
    if not (isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names)):
        raise HrsegError(f"{path}: exported model's 'class_names' must be {num_classes} names, got {_show(names)}")
    state = _field(payload, "state_dict", dict, path)
    aux = payload.get("aux", False)
    if not isinstance(aux, bool):
        raise HrsegError(f"{path}: exported model's 'aux' must be true or false, got {_show(aux)}")
    with torch.device("meta"):  # shapes only: nothing is allocated for a network the weights do not fit
        shapes = {k: tuple(v.shape) for k, v in build_segmenter(arch, num_classes=num_classes, width=width,
                                                                pretrained="none", aux=aux).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}
    if got != shapes or len(got) != len(state):
        wrong = sorted(set(shapes) ^ set(got)) or [k for k in shapes if shapes[k] != got[k]]
        raise HrsegError(f"{path}: its weights do not fit a {arch} of width {width} with {num_classes} classes "
                         f"(first difference: {wrong[0] if wrong else 'a non-tensor entry'})")
    seg = build_segmenter(arch, num_classes=num_classes, width=width, pretrained="none", aux=aux)
    load_state(seg, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}, path, "segmenter")
    seg.to(device).eval()
    return LoadedModel(seg, arch, width, num_classes, size, crop, tuple(names),
                       dict(payload.get("config") or {}), path, path, iteration, "export")
