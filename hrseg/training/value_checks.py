"""Config values that type-check but would crash or mislead later: non-finite numbers, ranges, nesting.

``TrainConfig.validate`` calls :func:`check_values` first, so a NaN learning
weight or an Adam beta of 2 is one line naming the config key before anything
is built, never a traceback from the optimiser or a run that stops at
iteration 1 blaming ``--lr``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

from hrseg.errors import HrsegError

#: a config value nested deeper than this (lists in lists ...) is refused before it is read
MAX_NESTING = 32
MAX_SEED = 2**63 - 1  # torch, numpy and the data samplers all take seeds in [0, 2^63)


def _fields(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            out += _fields(value, key + ".")
        else:
            out.append((key, value))
    return out


def check_values(cfg: Any) -> None:
    """Every float finite; GAN weights >= 0 and Adam betas in [0, 1); the seed in range."""
    for key, value in _fields(cfg):
        items = value if isinstance(value, (list, tuple)) else [value]
        for v in items:
            if isinstance(v, float) and not math.isfinite(v):
                raise HrsegError(f"{key}: must be a finite number, got {list(value) if items is value else value}")
    gan = cfg.gan
    betas = list(gan.betas)
    if len(betas) != 2 or not all(0 <= float(b) < 1 for b in betas):
        raise HrsegError(f"gan.betas: two numbers in [0, 1) (Adam's), got {betas}")
    for name in ("adv_weight", "cls_weight_s", "cls_weight_g", "recon_weight"):
        if getattr(gan, name) < 0:
            raise HrsegError(f"gan.{name}: must be >= 0, got {getattr(gan, name)}")
    if not 0 <= cfg.run.seed <= MAX_SEED:
        raise HrsegError(f"run.seed: must be in [0, 2^63), got {cfg.run.seed}")


def check_nesting(value: Any, where: str) -> None:
    """Refuse a value nested deeper than :data:`MAX_NESTING` (checked without recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_NESTING:
            raise HrsegError(f"{where}: nested more than {MAX_NESTING} levels deep")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)


def bounded(parse: Callable[[], Any], where: str) -> Any:
    """``parse()`` (JSON or TOML text) with nesting bounded: a 30,000-deep list is one line, not a RecursionError."""
    try:
        value = parse()
    except RecursionError:
        raise HrsegError(f"{where}: nested more than {MAX_NESTING} levels deep") from None
    check_nesting(value, where)
    return value
