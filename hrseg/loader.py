"""The one model loader: a run folder, a checkpoint file or an exported model -> :class:`LoadedModel`.

Evaluation, visualisation, ``hrseg predict`` and export all load through
:func:`load_model`, so the checks a model passes before it is used (every
checkpoint record's CRC, ``weights_only`` unpickling, the checkpoint fitting
the run's architecture, an export's fields and weight shapes) and the facts it
carries (working size, training crop, class names) live here once.
:class:`hrseg.training.rundir.RunDir` knows where a run's checkpoints are; this
module knows how to turn one into a network. The exported-model format is read
here and written by :mod:`hrseg.export`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hrseg.data.augment import IMAGENET_MEAN, IMAGENET_STD
from hrseg.data.dataset import split_dir
from hrseg.data.labels import CLASS_NAMES
from hrseg.data.shards import Manifest
from hrseg.errors import HrsegError
from hrseg.inference.tta import InferenceOptions
from hrseg.models import SEGMENTERS, build_segmenter
from hrseg.training.build import build_segmenter_of, build_weighting
from hrseg.training.checkpoint import FORMAT as CHECKPOINT_FORMAT
from hrseg.training.checkpoint import (check_checkpoint_fits, load_checkpoint, load_refusal, load_state,
                                       recorded_size, segmenter_key, verify_checkpoint)
from hrseg.training.config import TrainConfig
from hrseg.training.rundir import RunDir

FORMAT = "hrseg-model/1"  # an exported model (written by hrseg.export)
Size = tuple[int, int]


@dataclass
class LoadedModel:
    """A segmenter ready to predict (eval mode) and what it needs to be used right.

    ``cfg`` and ``weighting`` are there when the model came from a run folder or
    a checkpoint (evaluation and visualisation need the run's settings and W);
    an exported model carries the segmenter only.
    """

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
    cfg: TrainConfig | None = None  # the run's typed config (None for an exported model)
    weighting: nn.Module | None = None  # W in eval mode, when the checkpoint has one
    recorded_size: Size | None = None  # the size the checkpoint itself records (None: older one, or an export)

    def options(self, **changes: Any) -> InferenceOptions:
        """Test-time options with this model's working size (``size=None`` in ``changes``: native size)."""
        return replace(InferenceOptions(size=self.size), **changes).with_default_window(self.crop).validate()

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.source), "kind": self.kind, "checkpoint": str(self.checkpoint),
                "iteration": self.iteration, "arch": self.arch, "width": self.width,
                "num_classes": self.num_classes, "size": None if self.size is None else list(self.size)}


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


def load_model(model: str | os.PathLike[str] | RunDir, *, checkpoint: str | os.PathLike[str] | None = None,
               device: str | torch.device = "cpu", network: str = "student") -> LoadedModel:
    """A run folder, a checkpoint file or an exported model -> :class:`LoadedModel` on ``device``.

    A run folder loads its final checkpoint, or ``checkpoint`` (a name in
    ``checkpoints/`` or a path), against the run's ``config.json``.
    A :class:`RunDir` is always taken as a run (what evaluation and
    visualisation pass: anything else there is "not a run directory").
    ``network="teacher"`` takes a self-training run's mean teacher (run folders and checkpoints only).
    """
    if isinstance(model, RunDir) or Path(model).is_dir():
        run = model if isinstance(model, RunDir) else RunDir(model)
        cfg = run.config()
        ckpt = run.resolve_checkpoint(checkpoint)
        return _from_payload(load_checkpoint(ckpt, map_location="cpu"), cfg, ckpt, run.path, device, network, "run")
    path = Path(model)
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


def _from_checkpoint(path: Path, device: str | torch.device, network: str = "student") -> LoadedModel:
    """A checkpoint file on its own (e.g. copied out of its run): its saved config rebuilds the segmenter."""
    payload = load_checkpoint(path)
    if not isinstance(payload.get("config"), dict):
        raise HrsegError(f"{path}: checkpoint has no config to rebuild its network from")
    return _from_payload(payload, TrainConfig.from_dict(payload["config"]), path, path, device, network, "checkpoint")


def _from_payload(payload: dict[str, Any], cfg: TrainConfig, path: Path, source: Path,
                  device: str | torch.device, network: str, kind: str) -> LoadedModel:
    """The segmenter (``network``) and W of a loaded checkpoint, built from ``cfg``; a checkpoint of
    another architecture, width or class count than ``cfg`` is refused."""
    check_checkpoint_fits(payload, cfg, path)
    seg = build_segmenter_of(cfg, pretrained="none")
    key = segmenter_key(payload, network, path)
    load_state(seg, payload["models"].get(key), path, key)
    weighting = None
    if "weighting" in payload["models"]:
        weighting = build_weighting(cfg)
        load_state(weighting, payload["models"]["weighting"], path, "weighting")
        weighting.to(device).eval()
    seg.to(device).eval()
    recorded = recorded_size(payload)
    m = cfg.model
    return LoadedModel(seg, m.arch, m.width, m.num_classes, recorded or working_size(cfg), tuple(cfg.data.crop),
                       CLASS_NAMES[: m.num_classes], cfg.to_dict(), source, path, int(payload["iteration"]),
                       kind if network == "student" else f"{kind} ({network})", cfg, weighting, recorded)


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
