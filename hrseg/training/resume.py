"""Which settings may change when a run continues, extending a finished run, and --auto-resume.

A continued run must train exactly what an uninterrupted one would, so only
settings of how it executes (:data:`EXECUTION_KEYS`) may change on resume;
everything it learns from is fixed by the run's ``config.json``. Extending a
run (``optim.iters`` larger) re-plans the learning-rate schedule, so it must
say how (:data:`EXTEND_MODES`):

- ``stretch``: the poly schedule is re-planned over the new total, as if the
  run had been planned that long from the start: the learning rate at the
  resume iteration jumps from ~0 back to ``lr * (1 - done / new_iters) ** power``
  and decays to 0 at the new end. The iterations already trained keep theirs.
- ``restart``: a new poly cycle over the added iterations (a warm restart):
  ``lr`` again at the resume iteration, 0 at the new end
  (``optim.restarts`` records where each cycle starts).

Either way a phased scheme (finetune) keeps its phase boundary where it was.
The change is recorded in the run's config history (``RUN/config_history.json``).
"""

from __future__ import annotations

from typing import Any

from hrseg.errors import HrsegError
from hrseg.training.config import TrainConfig, override
from hrseg.training.rundir import LAST, RunDir
from hrseg.training.schemes import SCHEMES

#: how a run executes, never what it learns: these may change when it continues
EXECUTION_KEYS = ("run.device", "run.progress", "run.tensorboard", "run.tensorboard_every", "run.val_every",
                  "run.val_images", "run.val_split", "run.checkpoint_every", "run.save_every", "run.log_every",
                  "run.loggers")
EXTEND_MODES = ("stretch", "restart")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}``."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def differences(a: TrainConfig, b: TrainConfig) -> dict[str, tuple[Any, Any]]:
    """Every key whose value differs between two (resolved) configs: key -> (a's, b's)."""
    fa, fb = flatten(a.resolved().to_dict()), flatten(b.resolved().to_dict())
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def learning_differences(saved: TrainConfig, new: TrainConfig) -> list[str]:
    """The keys that differ in what is learned (anything but :data:`EXECUTION_KEYS` and the run folder)."""
    return [k for k in differences(saved, new) if k not in EXECUTION_KEYS and k != "run.out"]


class SettingFixed(HrsegError):
    """A setting that may not change on resume was given; ``keys`` names them (the CLI adds the flags typed)."""

    def __init__(self, message: str, keys: list[str]) -> None:
        super().__init__(message)
        self.keys = keys


def continue_config(run: RunDir, changes: dict[str, Any] | None = None, extend: str | None = None) -> TrainConfig:
    """The config a continued run trains with: its own, with ``changes`` (config keys) that are allowed.

    ``optim.iters`` may grow only with ``extend`` (``stretch`` or ``restart``),
    which also re-plans the schedule as described above; any other key outside
    :data:`EXECUTION_KEYS` is refused, naming it.
    """
    changes = dict(changes or {})
    new_iters = changes.pop("optim.iters", None)
    refused = sorted(k for k in changes if k not in EXECUTION_KEYS)
    if refused:
        raise SettingFixed(f"{run}: a continued run keeps what it learns from; {', '.join(refused)} cannot change "
                           f"on resume (may change: {', '.join(EXECUTION_KEYS)}; optim.iters with an extend mode)",
                           refused)
    if new_iters is not None and extend is None:
        raise SettingFixed(f"{run}: optim.iters of a continued run re-plans its learning-rate schedule; say how "
                           f"with an extend mode ({' or '.join(EXTEND_MODES)}, see --extend)", ["optim.iters"])
    saved = run.config()
    cfg = override(saved, changes)
    if extend is None:
        return cfg
    if extend not in EXTEND_MODES:
        raise HrsegError(f"extend: must be one of {', '.join(EXTEND_MODES)}, got {extend!r}")
    if new_iters is None or new_iters <= saved.optim.iters:
        raise HrsegError(f"{run}: extending needs optim.iters above the run's {saved.optim.iters} (got {new_iters})")
    return extended(cfg, int(new_iters), extend)


def extended(cfg: TrainConfig, iters: int, mode: str) -> TrainConfig:
    """``cfg`` planned to ``iters`` iterations from its old end (see the module docstring for the modes)."""
    changes: dict[str, Any] = {"optim.iters": iters}
    if len(SCHEMES[cfg.scheme].phases) > 1 and cfg.finetune.source_iters == 0:
        changes["finetune.source_iters"] = cfg.finetune_source_iters()  # the phase boundary stays where it was
    if mode == "restart":
        changes["optim.restarts"] = (*cfg.optim.restarts, cfg.optim.iters)
    return override(cfg, changes).resolved().validate()


def auto_resume_mode(run: RunDir, cfg: TrainConfig) -> str:
    """What ``--auto-resume`` does with ``cfg`` in ``run``: ``fresh``, ``resume``, ``restart`` or ``finished``.

    ``fresh``: no run there yet. ``resume``: the same config (up to execution
    settings) with a ``last.pt`` to continue exactly. ``restart``: the same
    config killed before its first checkpoint (its own files are replaced).
    ``finished``: nothing left to train. A run with another config is refused.
    """
    if not run.is_run():
        return "fresh"  # an empty or new folder; foreign files are refused by the claim as for any fresh run
    saved = run.config()
    changed = learning_differences(saved, cfg)
    if changed:
        raise HrsegError(f"{run}: --auto-resume: the folder holds a run with another config (differs in "
                         f"{', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}); use another --out, or "
                         f"continue that run with --resume {run}")
    if run.is_finished():
        return "finished"
    return "resume" if run.checkpoint_path(LAST).is_file() else "restart"


def history_entry(event: str, iteration: int, saved: TrainConfig | None, cfg: TrainConfig) -> dict[str, Any]:
    """One line of ``config_history.json``: what happened at which iteration, and which keys changed."""
    entry: dict[str, Any] = {"event": event, "iteration": iteration}
    if saved is not None:
        entry["changes"] = {k: list(v) for k, v in differences(saved, cfg).items()}
    return entry
