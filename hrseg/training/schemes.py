"""What each scheme changes in the one training loop: domains, weighting, GAN.

A scheme never owns a loop of its own; it only answers, per iteration, which
batches are drawn and which loss terms and networks take part.
"""

from __future__ import annotations

from dataclasses import dataclass

from hrseg.errors import HrsegError
from hrseg.training.config import TrainConfig


@dataclass(frozen=True)
class StepPlan:
    """The terms of one iteration."""

    source: bool  # draw a source batch and add the (possibly weighted) source loss
    target: bool  # draw a target batch and add L_t
    weighting: str | None  # "w1" | "w19": W weights the source loss and is trained
    oracle: bool  # the weight is the realism mask (variant study only)
    gan: bool  # G and D take part
    phase: str  # "joint" | "source" | "target": logged, and finetune switches on it


def uses_source(cfg: TrainConfig) -> bool:
    return cfg.scheme != "target-only"


def uses_weighting(cfg: TrainConfig) -> str | None:
    return cfg.scheme if cfg.scheme in ("w1", "w19") else None


def needs_realism(cfg: TrainConfig) -> bool:
    return cfg.scheme == "oracle"


def check_scheme(cfg: TrainConfig) -> None:
    """Refuse combinations that would silently do nothing."""
    if cfg.gan.enabled and cfg.scheme in ("target-only", "finetune"):
        raise HrsegError(
            f"--gan: scheme {cfg.scheme!r} never sees both domains in one step, so the GAN would not train; "
            "use --no-gan or a joint scheme"
        )


def plan(cfg: TrainConfig, iteration: int) -> StepPlan:
    """The step plan for 0-based ``iteration``."""
    scheme = cfg.scheme
    if scheme == "target-only":
        return StepPlan(False, True, None, False, False, "target")
    if scheme == "finetune":
        if iteration < cfg.finetune_source_iters():
            return StepPlan(True, False, None, False, False, "source")
        return StepPlan(False, True, None, False, False, "target")
    return StepPlan(True, True, uses_weighting(cfg), scheme == "oracle", cfg.gan.enabled, "joint")


def phase_bounds(cfg: TrainConfig, iteration: int) -> tuple[int, int]:
    """[start, end) of the schedule phase holding ``iteration``; finetune restarts its LR for the target phase."""
    if cfg.scheme == "finetune":
        switch = cfg.finetune_source_iters()
        return (0, switch) if iteration < switch else (switch, cfg.optim.iters)
    return 0, cfg.optim.iters
