"""Checkpoints that load with ``torch.load(weights_only=True)`` and resume bit-exactly.

Everything non-tensor is stored as plain Python types (RNG states included), so
loading never unpickles arbitrary objects. Writes go through a temporary name
and a rename: an interrupted save leaves the previous checkpoint intact.

Integrity: ``torch.save`` writes a zip archive whose every record (the pickle
and each tensor's bytes) carries a CRC-32, written with the record, so the
checksum is always as atomic as the file. ``torch.load`` does not check them;
:func:`load_checkpoint` does, before unpickling, so a damaged file is named as
damaged instead of resuming or evaluating silently wrong weights.
"""

from __future__ import annotations

import errno
import os
import random
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hrseg.atomic import atomic_path
from hrseg.errors import HrsegError

if TYPE_CHECKING:
    from hrseg.training.config import TrainConfig

FORMAT = "hrseg-checkpoint/1"


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every random source the training loop touches, as weights_only-safe values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _tuples_to_lists(random.getstate()),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    state["generators"] = {k: g.get_state() for k, g in (generators or {}).items()}
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator] | None = None) -> None:
    random.setstate(_lists_to_tuples(state["python"]))
    npst = state["numpy"]
    np.random.set_state(
        (npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, gen in (generators or {}).items():
        if name not in state.get("generators", {}):
            raise HrsegError(f"checkpoint has no state for the {name!r} random generator")
        gen.set_state(state["generators"][name])


def _tuples_to_lists(obj: Any) -> Any:
    if isinstance(obj, (tuple, list)):
        return [_tuples_to_lists(v) for v in obj]
    return obj


def _lists_to_tuples(obj: Any) -> Any:
    if isinstance(obj, list):
        return tuple(_lists_to_tuples(v) for v in obj)
    return obj


def save_checkpoint(path: Path, payload: dict[str, Any], previous: Path | None = None) -> None:
    """Atomically write ``payload`` (plus the format tag) to ``path``; a full disk is one line, nothing half-written.

    ``previous``: once the new file is complete, the old ``path`` is renamed to it, so the two are always two
    files (never two names of one): a kill before the renames leaves both old ones, between them the old
    ``path`` as ``previous`` (which resuming names).
    """
    payload = {"format": FORMAT, **payload}
    try:
        with atomic_path(path, suffix=".pt") as tmp:
            torch.save(payload, tmp)
            if previous is not None and path.is_file():
                os.replace(path, previous)
    except (OSError, RuntimeError) as exc:
        if _out_of_space(exc):
            raise HrsegError(f"{path}: out of disk space writing the checkpoint (the previous one is kept)") from None
        raise


def _out_of_space(exc: BaseException) -> bool:
    """ENOSPC as an OSError, or as the RuntimeError torch's zip writer turns it into."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(exc).lower()
    return "no space left" in text or "unexpected pos" in text or "file write failed" in text


def verify_checkpoint(path: Path) -> None:
    """Check every record's CRC-32; a damaged or truncated file is an HrsegError naming it."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise HrsegError(f"{path}: not a readable hrseg checkpoint (damaged or truncated: {exc})") from None
    except OSError as exc:
        raise HrsegError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    if bad is not None:
        record = bad.split("/", 1)[-1]  # records sit under the archive's own (temporary) name
        raise HrsegError(f"{path}: checkpoint is damaged (checksum mismatch in record {record})")


def load_refusal(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, without torch's advice to load it unsafely."""
    text = str(exc)
    if "Weights only load failed" in text or type(exc).__name__ == "UnpicklingError":
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"it holds Python objects{what}, not only tensors and plain data; hrseg never unpickles those, "
                "since that could run any code")
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely; a missing, damaged, foreign or corrupt file is a user error naming the file."""
    if not path.is_file():
        raise HrsegError(f"{path}: checkpoint not found")
    verify_checkpoint(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise HrsegError(f"{path}: not a readable hrseg checkpoint ({load_refusal(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise HrsegError(f"{path}: not an hrseg checkpoint (expected format {FORMAT!r})")
    return payload


# -- compatibility: does a checkpoint fit the network it is loaded into ---------------------------

def recorded_size(payload: dict[str, Any]) -> tuple[int, int] | None:
    """The working size a checkpoint recorded, when it is a valid (W, H); None for checkpoints from before."""
    size = payload.get("working_size")
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(type(v) is int and 0 < v <= 1 << 16 for v in size):
        return int(size[0]), int(size[1])
    return None


#: which of a checkpoint's copies of S inference uses (``--model``): S itself, or self-training's mean teacher
INFERENCE_MODELS: dict[str, str] = {"student": "segmenter", "teacher": "teacher"}


def segmenter_key(payload: dict[str, Any], model: str, path: Path) -> str:
    """The key in ``payload["models"]`` of the network ``--model`` names; a run without a teacher is refused."""
    if model not in INFERENCE_MODELS:
        raise HrsegError(f"--model: must be one of {', '.join(INFERENCE_MODELS)}, got {model!r}")
    key = INFERENCE_MODELS[model]
    if key not in payload.get("models", {}):
        raise HrsegError(f"{path}: holds no {model} network (only self-training schemes keep a mean teacher)")
    return key


def check_checkpoint_fits(payload: dict[str, Any], cfg: "TrainConfig", path: Path) -> None:
    """Refuse a checkpoint written for another architecture or class count than ``cfg``."""
    if payload.get("arch") != cfg.model.arch:
        raise HrsegError(f"{path}: checkpoint is for {payload.get('arch')!r}, the run uses {cfg.model.arch!r}")
    if int(payload.get("num_classes", -1)) != cfg.model.num_classes:
        raise HrsegError(
            f"{path}: checkpoint has {payload.get('num_classes')} classes, the run has {cfg.model.num_classes}"
        )


def load_state(net: torch.nn.Module, state: dict[str, Any] | None, path: Path, what: str) -> None:
    """Load a network's weights from a checkpoint; a mismatch (width, design) is one line naming the file."""
    if state is None:
        raise HrsegError(f"{path}: checkpoint has no {what} weights")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HrsegError(f"{path}: {what} weights do not fit the run's config ({first})") from None
