"""ImageNet weights for the backbones: from torchvision's published URL, a local file, or none.

Loading is by key name and strict, so a renamed layer or a wrong width is an error
listing the offending keys instead of a silently half-initialised network.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from hrseg.errors import HrsegError

from hrseg.models.backbones import IMAGENET_URLS

_SHOWN = 8


def fetch_state_dict(arch: str, pretrained: str | Path, width: float) -> dict[str, Tensor] | None:
    """The state dict that ``--pretrained`` names, or None for ``"none"``.

    ``"imagenet"`` downloads (or reuses torch.hub's cache) with the hash in the file
    name checked; anything else is a path to a ``torch.save``-d state dict.
    """
    choice = str(pretrained)
    if choice == "none":
        return None
    if arch not in IMAGENET_URLS:
        raise HrsegError(f"--pretrained: no ImageNet weights known for backbone {arch!r}")
    if width != 1.0:
        raise HrsegError(
            f"--pretrained {choice}: ImageNet weights exist only for --width 1.0 (got --width {width:g}); "
            "use --pretrained none for a scaled network"
        )
    if choice == "imagenet":
        url = IMAGENET_URLS[arch]
        try:
            state = torch.hub.load_state_dict_from_url(
                url, map_location="cpu", progress=True, check_hash=True, weights_only=True
            )
        except Exception as exc:  # network, hash or cache failures all mean the same to the user
            raise HrsegError(
                f"--pretrained imagenet: could not get {url} ({type(exc).__name__}: {exc}); "
                f"download it where a network exists and pass --pretrained PATH"
            ) from None
        return _as_state_dict(state, url)
    path = Path(choice).expanduser()
    if not path.is_file():
        raise HrsegError(f"--pretrained {path}: no such file (use 'imagenet', 'none' or a weight file)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise HrsegError(f"{path}: not a loadable weight file ({type(exc).__name__}: {exc})") from None
    return _as_state_dict(state, str(path))


def _as_state_dict(obj: object, source: str) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise HrsegError(f"{source}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    return dict(obj)


def _listing(label: str, names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{len(names)} {label} ({shown}{more})"


def load_strict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load ``state`` into ``module``; any missing, unexpected or mis-shaped key is one HrsegError.

    ``num_batches_tracked`` buffers may be absent (files saved before PyTorch 0.4.1
    lack them, torchvision's resnet50-19c8e357.pth among them); they keep the
    module's own value.
    """
    own = module.state_dict()
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    unexpected = sorted(k for k in state if k not in own)
    misshaped = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    )
    problems = [
        _listing(label, names)
        for label, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped (file vs model)", misshaped))
        if names
    ]
    if problems:
        raise HrsegError(f"{source}: does not match {type(module).__name__}: " + "; ".join(problems))
    full = dict(state)
    for key, value in own.items():
        full.setdefault(key, value)
    module.load_state_dict(full, strict=True)
