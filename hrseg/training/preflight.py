"""See before you spend: the resolved config with where each value came from, and what to warn about.

``hrseg train ... --print-config`` prints :func:`config_toml` and exits: a TOML
file that ``--config`` loads back to the same config, each value commented with
its source (``default``, ``preset NAME``, ``file PATH``, ``--set``, ``flag``, or
``scheme NAME`` for what the scheme table fills in). :func:`config_warnings`
are the one-line warnings a run prints at its start (and ``--print-config``
as comments): a full-width network trained from scratch, and ``--width``
leaving W, G and D at full width.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hrseg import __version__, toml
from hrseg.errors import HrsegError
from hrseg.training.config import TrainConfig, parse_set
from hrseg.training.presets import PRESETS
from hrseg.training.resume import flatten
from hrseg.training.schemes import SCHEMES


def config_sources(cfg: TrainConfig, *, preset: str | None = None, config_file: str | Path | None = None,
                   scheme: str | None = None, sets: list[str] | tuple[str, ...] = (),
                   flags: dict[str, Any] | None = None) -> dict[str, str]:
    """Config key -> where its value in ``cfg`` came from, for the arguments ``build_config`` was given.

    Later sources win, in ``build_config``'s order: defaults, a preset or a
    file, ``--set``, flags; what ``resolved()`` fills in is the scheme's.
    """
    sources = {k: "default" for k in flatten(cfg.to_dict())}
    if preset is not None:
        sources.update({k: f"preset {preset}" for k in (*PRESETS[preset].changes, "preset")})
    if config_file is not None:
        sources.update({k: f"file {config_file}" for k in flatten(_file_data(Path(config_file)))})
    sources.update({k: "--set" for k in parse_set(sets)})
    sources.update({k: "flag" for k, v in (flags or {}).items() if v is not None})
    if scheme is not None:
        sources["scheme"] = "flag"
    base = flatten(TrainConfig().to_dict())  # None where the scheme table decides
    row = SCHEMES[cfg.scheme]
    for key, value in (("gan.enabled", row.gan), ("weighting.network", row.weighting)):
        if sources.get(key) == "default" and base.get(key) is None and value is not None:
            sources[key] = f"scheme {cfg.scheme}"
    return sources


def _file_data(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = toml.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise HrsegError(f"{path}: cannot read the config file ({exc})") from None
    return data if isinstance(data, dict) else {}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string takes JSON's escapes
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def config_toml(cfg: TrainConfig, sources: dict[str, str] | None = None, warnings: list[str] | None = None) -> str:
    """``cfg`` as TOML that ``--config`` loads back to an equal config, each value commented with its source.

    TOML has no null: an unset value (``None``, every such field's default) is
    written as a comment and so loads back as unset.
    """
    sources = sources or {}
    data = cfg.to_dict()
    lines = [f"# hrseg {__version__}: resolved training config (load it with hrseg train --config FILE)",
             "# after each value: where it came from (default, preset NAME, file PATH, --set, flag, scheme NAME)"]
    lines += [f"# warning: {w}" for w in warnings or []]

    def entry(key: str, name: str, value: Any) -> str:
        source = sources.get(key, "default")
        if value is None:
            return f"# {name} = (unset)  # {source}"
        return f"{name} = {_toml_value(value)}  # {source}"

    lines.append("")
    lines += [entry(k, k, v) for k, v in data.items() if not isinstance(v, dict)]
    for section, values in data.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]"] + [entry(f"{section}.{k}", k, v) for k, v in values.items()]
    return "\n".join(lines) + "\n"


def config_warnings(cfg: TrainConfig) -> list[str]:
    """One-line warnings about a config that is probably not what was meant (printed at the start of a run)."""
    out = []
    m = cfg.model
    if m.pretrained == "none" and m.width >= 1.0:
        out.append(f"{m.arch} at full width trains from scratch (model.pretrained=none) for {cfg.optim.iters} "
                   "iterations; the paper's rows start from ImageNet weights (--pretrained imagenet, or a --preset)")
    if m.width < 1.0:
        full = [name for name, used, width in (
            ("W (--weight-width)", SCHEMES[cfg.scheme].weighting is not None, cfg.weighting.width),
            ("G and D (--gan-width)", bool(cfg.gan.enabled), cfg.gan.width)) if used and width >= 1.0]
        if full:
            out.append(f"--width {m.width:g} scales S only; {' and '.join(full)} stay at full width "
                       "(their checkpoints and time do not shrink): give their widths too")
    return out
