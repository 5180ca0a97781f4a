"""The run folder: the one place that knows its layout, who owns it, and how to load a model from it.

```
RUN/config.json         resolved TrainConfig (absolute data / run paths)
RUN/data_subset.json    which target (and filtered source) images the run used
RUN/metrics.jsonl       one JSON object per logged iteration; validations add {"kind": "val", ...} lines
RUN/checkpoints/        last.pt (resumable state), previous.pt (the last.pt before it, its own file),
                        final.pt (a hard link to the last last.pt),
                        iter_XXXXXX.pt (snapshots: network weights, with --save-every),
                        best.pt (weights with the best val mIoU so far, with --val-every)
RUN/summary.json        what train() returned
RUN/config_history.json each start, resume and extension: at which iteration, which config keys changed
RUN/eval/<split>.json   full evaluations; eval/<split>-first<N>.json partial ones
RUN/tb/                 TensorBoard events (when enabled)
RUN/.lock               held (flock) by the training process that owns the folder
```

Training, evaluation, visualisation, reports, the quick start and the CLI all
go through :class:`RunDir`; nothing else spells a path inside a run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from hrseg.atomic import atomic_path, remove_temps, write_json
from hrseg.errors import HrsegError
from hrseg.locking import LOCK_NAME, folder_lock
from hrseg.training.build import build_segmenter_of, build_weighting
from hrseg.training.checkpoint import (  # noqa: F401 - compatibility lives in checkpoint.py; kept importable here
    INFERENCE_MODELS, check_checkpoint_fits, load_checkpoint, load_state, recorded_size, segmenter_key)
from hrseg.training.config import TrainConfig

FINAL, LAST, PREVIOUS = "final.pt", "last.pt", "previous.pt"
BEST = "best.pt"  # weights of the best validation so far (with --val-every)

@dataclass
class LoadedRun:
    """A run's networks in eval mode, ready for inference."""

    config: TrainConfig
    segmenter: nn.Module
    weighting: nn.Module | None
    checkpoint: Path
    iteration: int
    working_size: tuple[int, int] | None = None  # (W, H) the checkpoint says it works at (None: older one)


class RunDir:
    """One run folder (it need not exist yet)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    # -- layout -------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def subset_path(self) -> Path:
        return self.path / "data_subset.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def history_path(self) -> Path:
        return self.path / "config_history.json"

    @property
    def summary_path(self) -> Path:
        return self.path / "summary.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tb"

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_NAME

    def checkpoint_path(self, name: str) -> Path:
        return self.checkpoint_dir / name

    def snapshot_name(self, iteration: int) -> str:
        return f"iter_{iteration:06d}.pt"

    def snapshots(self) -> list[Path]:
        """The kept snapshots, oldest first."""
        return sorted(self.checkpoint_dir.glob("iter_*.pt"))

    def eval_path(self, split: str, max_images: int | None = None) -> Path:
        """``eval/<split>.json``; an evaluation of only the first N images gets its own name, never the full one's."""
        stem = split.replace("/", "-")
        return self.eval_dir / (f"{stem}.json" if max_images is None else f"{stem}-first{max_images}.json")

    def _owned(self) -> list[Path]:
        return [self.config_path, self.subset_path, self.metrics_path, self.summary_path, self.checkpoint_dir,
                self.eval_dir, self.tensorboard_dir, self.history_path]

    # -- reading ------------------------------------------------------------------------------
    def is_run(self) -> bool:
        return self.config_path.is_file()

    def config(self) -> TrainConfig:
        """The config the run was started with, resolved, with ``run.out`` pointing here."""
        if not self.is_run():
            raise HrsegError(f"{self.path}: not a run directory (no config.json)")
        data = _read_json(self.config_path, "run config")
        cfg = TrainConfig.from_dict(data)
        cfg.run.out = str(self.path.absolute())
        return cfg.resolved()

    def summary(self) -> dict[str, Any] | None:
        if not self.summary_path.is_file():
            return None
        return _read_json(self.summary_path, "run summary")

    def is_finished(self, cfg: TrainConfig | None = None) -> bool:
        """Trained to its last iteration (and, given ``cfg``, with that same configuration)."""
        try:
            summary = self.summary()
            saved = self.config()
        except HrsegError:
            return False
        if summary is None or summary.get("status") != "finished" or summary.get("iteration") != saved.optim.iters:
            return False
        return cfg is None or _same(saved, cfg)

    def can_resume(self, cfg: TrainConfig | None = None) -> bool:
        """Interrupted with a checkpoint to continue from (and, given ``cfg``, with that same configuration)."""
        if not (self.is_run() and self.checkpoint_path(LAST).is_file()) or self.is_finished():
            return False
        try:
            return cfg is None or _same(self.config(), cfg)
        except HrsegError:
            return False

    def metrics(self) -> Iterator[dict[str, Any]]:
        """The records of metrics.jsonl."""
        if not self.metrics_path.is_file():
            raise HrsegError(f"{self.metrics_path}: no training log in this run")
        with self.metrics_path.open() as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

    def eval_results(self, split: str) -> dict[str, Any] | None:
        """The saved full evaluation of ``split``, or None if there is none."""
        path = self.eval_path(split)
        return _read_json(path, "evaluation") if path.is_file() else None

    def eval_is_current(self, split: str) -> bool:
        """A full evaluation exists and is newer than the final checkpoint."""
        path, ckpt = self.eval_path(split), self.checkpoint_path(FINAL)
        return path.is_file() and ckpt.is_file() and path.stat().st_mtime >= ckpt.stat().st_mtime

    def resolve_checkpoint(self, checkpoint: str | os.PathLike[str] | None = None) -> Path:
        """``None`` picks final.pt, else last.pt; a bare name is looked up in RUN/checkpoints/."""
        if checkpoint is None:
            for name in (FINAL, LAST):
                if self.checkpoint_path(name).is_file():
                    return self.checkpoint_path(name)
            raise HrsegError(f"{self.path}: run directory has no checkpoint (looked for checkpoints/final.pt, last.pt)")
        candidate = Path(checkpoint)
        if not candidate.is_file() and self.checkpoint_path(str(checkpoint)).is_file():
            candidate = self.checkpoint_path(str(checkpoint))
        if not candidate.is_file():
            raise HrsegError(f"{checkpoint}: checkpoint not found (also looked in {self.checkpoint_dir})")
        return candidate

    def load_resumable(self, name: str = LAST) -> tuple[Path, dict[str, Any]]:
        """The checkpoint to continue from, verified; a damaged one names an intact ``previous.pt`` if there is one."""
        path = self.checkpoint_path(name)
        if not path.is_file():
            fallback = self.checkpoint_path(PREVIOUS)
            if name != PREVIOUS and fallback.is_file():
                raise HrsegError(f"{self.path}: no checkpoints/{name} (a checkpoint write was interrupted); "
                                 f"continue from {PREVIOUS} with hrseg train --resume {self.path} --from {PREVIOUS}")
            if not self._has_checkpoint():
                raise HrsegError(f"{self.path}: nothing to resume (the run stopped before its first checkpoint); "
                                 "start it again with the same command and --overwrite")
            raise HrsegError(f"{self.path}: nothing to resume (no checkpoints/{name})")
        try:
            payload = load_checkpoint(path)
        except HrsegError as exc:
            fallback = self.checkpoint_path(PREVIOUS)
            if name == PREVIOUS or not fallback.is_file():
                raise
            try:
                iteration = int(load_checkpoint(fallback)["iteration"])
            except HrsegError:
                raise exc from None
            raise HrsegError(f"{exc}; {fallback} (iteration {iteration}) is intact: continue from it with "
                             f"hrseg train --resume {self.path} --from {PREVIOUS}") from None
        if payload.get("kind") == "snapshot":
            raise HrsegError(f"{path}: a weights-only snapshot cannot resume a run exactly; use last.pt or previous.pt")
        return path, payload

    def load_for_inference(self, checkpoint: str | os.PathLike[str] | None = None,
                           device: str | torch.device = "cpu", model: str = "student") -> LoadedRun:
        """The run's segmenter and weighting network (eval mode) from a checkpoint.

        ``model="teacher"`` loads a self-training run's mean teacher as the segmenter.
        A checkpoint of another architecture, width or class count than the run's config is refused.
        """
        cfg = self.config()
        path = self.resolve_checkpoint(checkpoint)
        payload = load_checkpoint(path, map_location="cpu")
        check_checkpoint_fits(payload, cfg, path)
        seg = build_segmenter_of(cfg, pretrained="none")
        key = segmenter_key(payload, model, path)
        load_state(seg, payload["models"].get(key), path, key)
        weighting = None
        if "weighting" in payload["models"]:
            weighting = build_weighting(cfg)
            load_state(weighting, payload["models"]["weighting"], path, "weighting")
            weighting.to(device).eval()
        seg.to(device).eval()
        return LoadedRun(cfg, seg, weighting, path, int(payload["iteration"]), recorded_size(payload))

    # -- writing ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def claim(self, *, resume: bool, overwrite: bool = False) -> Iterator[None]:
        """Own the folder for one training: lock it, and refuse to mix two runs in it.

        A fresh run refuses a folder that already holds a run (resume it or pass
        ``overwrite``) or files that are not an hrseg run (``overwrite`` writes
        beside them). The lock is an flock, so a crashed or killed trainer never
        leaves the folder locked.
        """
        if self.path.exists() and not self.path.is_dir():
            raise HrsegError(f"{self.path}: --out exists and is not a directory")
        self._created = not self.path.exists()
        with folder_lock(self.path, "another training is running in this run directory", place="run directory"):
            for folder in (self.path, self.checkpoint_dir, self.eval_dir):  # temps of killed writes: ours, gone
                remove_temps(folder)
            self._check_owner(resume, overwrite)
            yield

    def _has_checkpoint(self) -> bool:
        return self.checkpoint_dir.is_dir() and any(self.checkpoint_dir.glob("*.pt"))

    def _holds_a_run(self) -> bool:
        """A previous hrseg run (its config parses, or it has checkpoints), not just a file named config.json."""
        if self.checkpoint_dir.is_dir():
            return True
        try:
            self.config()
        except (HrsegError, ValueError, TypeError):
            return False
        return True

    def abandon(self) -> None:
        """Undo a claim that never trained: remove the folder if :meth:`claim` created it and it holds nothing."""
        if getattr(self, "_created", False) and self.path.is_dir():
            if all(p == self.lock_path for p in self.path.iterdir()):
                shutil.rmtree(self.path, ignore_errors=True)

    def _check_owner(self, resume: bool, overwrite: bool) -> None:
        if resume:
            if not self.checkpoint_dir.is_dir():
                raise HrsegError(f"{self.path}: nothing to resume (no checkpoints/)")
            return
        others = sorted(p.name for p in self.path.iterdir() if p != self.lock_path)
        if not others:
            return
        if not overwrite:
            if self._holds_a_run() and not self._has_checkpoint():
                raise HrsegError(f"{self.path}: holds a run that stopped before its first checkpoint; "
                                 "pass --overwrite to start it again")
            if self._holds_a_run():
                raise HrsegError(f"{self.path}: already holds a run; continue it with --resume {self.path}, "
                                 "or pass --overwrite to start again")
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise HrsegError(f"{self.path}: holds files that are not an hrseg run ({shown}); "
                             "use an empty or new --out, or --overwrite")
        for path in self._owned():
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def link_checkpoint(self, source: str, name: str) -> Path:
        """Give checkpoint ``source`` a second name without a second copy on disk (a hard link).

        Checkpoints are only ever replaced by a rename, never rewritten in place,
        so a later ``last.pt`` gets a new file and the linked name keeps the old
        one. Where the filesystem has no hard links the file is copied.
        """
        src, dst = self.checkpoint_path(source), self.checkpoint_path(name)
        with atomic_path(dst, suffix=".pt") as tmp:
            tmp.unlink()
            try:
                os.link(src, tmp)
            except OSError:
                shutil.copyfile(src, tmp)
        return dst

    def write_config(self, cfg: TrainConfig) -> None:
        write_json(self.config_path, cfg.to_dict())

    def history(self) -> list[dict[str, Any]]:
        """The run's config history (oldest first); empty for a run started before hrseg 0.2."""
        if not self.history_path.is_file():
            return []
        try:
            data = json.loads(self.history_path.read_text())
        except (OSError, ValueError) as exc:
            raise HrsegError(f"{self.history_path}: unreadable config history ({exc})") from None
        if not isinstance(data, list):
            raise HrsegError(f"{self.history_path}: config history is not a JSON list")
        return data

    def append_history(self, entry: dict[str, Any]) -> None:
        write_json(self.history_path, [*self.history(), entry])

    def write_subset(self, subset: dict[str, Any]) -> None:
        write_json(self.subset_path, subset)

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_json(self.summary_path, summary)

    def truncate_metrics(self, iteration: int) -> None:
        """Drop log lines past ``iteration`` (an interrupted run may have logged beyond its checkpoint)."""
        path = self.metrics_path
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if int(json.loads(line)["iter"]) <= iteration:
                    keep.append(line)
            except (ValueError, KeyError):
                continue
        with atomic_path(path) as tmp:
            tmp.write_text("".join(k + "\n" for k in keep))


def _same(a: TrainConfig, b: TrainConfig) -> bool:
    return a.resolved().to_dict() == b.resolved().to_dict()


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise HrsegError(f"{path}: cannot read {what} ({exc.strerror})") from None
    except ValueError as exc:
        raise HrsegError(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise HrsegError(f"{path}: {what} is not a JSON object")
    return data
