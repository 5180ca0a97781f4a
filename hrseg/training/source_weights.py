"""How the source loss is weighted, as a registry of rules: ``none``, ``w``, ``oracle``, ``oracle-normalised``.

A scheme names its rule (``Scheme.source_weight``); the objective looks it up
and calls it. A rule gets S's logits on the source batch and the batch, and
returns the per-pixel weight (None: every weight 1) with what is worth logging.
Adding a rule is one function here, registered with :func:`source_weight`;
``hrseg.training.objective`` and the loop need no change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from torch import Tensor

from hrseg.data.labels import IGNORE_INDEX
from hrseg.models import weighting_input
from hrseg.models.weighting import masked_mean
from hrseg.registry import Registry
from hrseg.training import distributed as ddp

if TYPE_CHECKING:
    from hrseg.training.objective import Objective

Batch = dict[str, Tensor]


@dataclass
class Weighted:
    """A rule's answer for one source batch."""

    weight: Tensor | None  # (B, H, W) loss weight; None: every valid pixel counts 1
    w_input: Tensor | None = None  # what W saw (rules that run W: its classifier loss reuses it)
    w_logits: dict[str, Tensor] | None = None  # W's logits per level, with grad
    stats: dict[str, Tensor] = field(default_factory=dict)  # logged only


@dataclass(frozen=True)
class SourceWeight:
    """One rule and what it needs from the step."""

    name: str
    fn: Callable[["Objective", Tensor, Batch], Weighted]
    uses_w: bool = False  # W computes the weight and trains in the same step (needs both domains)
    needs_realism: bool = False  # reads the source split's realism mask
    doc: str = ""


SOURCE_WEIGHTS: Registry[SourceWeight] = Registry("source weight", "source weight rule")


def source_weight(name: str, *, uses_w: bool = False, needs_realism: bool = False
                  ) -> Callable[[Callable[["Objective", Tensor, Batch], Weighted]],
                                Callable[["Objective", Tensor, Batch], Weighted]]:
    """Register the decorated function as the rule ``name``."""

    def add(fn: Callable[["Objective", Tensor, Batch], Weighted]) -> Callable[["Objective", Tensor, Batch], Weighted]:
        SOURCE_WEIGHTS.add(name, SourceWeight(name, fn, uses_w, needs_realism, (fn.__doc__ or "").strip()))
        return fn

    return add


@source_weight("none")
def no_weight(obj: "Objective", logits: Tensor, src: Batch) -> Weighted:
    """Every source pixel counts 1 (direct joint training)."""
    return Weighted(None)


@source_weight("w", uses_w=True)
def w_weight(obj: "Objective", logits: Tensor, src: Batch) -> Weighted:
    """W's combined weight from S's source predictions (the paper's method)."""
    w_in = weighting_input(logits, src["image"], obj.cfg.weighting.input)
    wo = obj.nets["weighting"](w_in, src["label"])  # with grad: its logits train W in the same step
    ddp.average_buffers(obj.nets["weighting"], obj.dist)
    valid = src["label"] != IGNORE_INDEX
    stats = {f"score_{level}": masked_mean(score.detach().float(), valid) for level, score in wo.scores.items()}
    return Weighted(wo.weight, w_in, wo.logits, stats)


@source_weight("oracle", needs_realism=True)
def oracle_weight(obj: "Objective", logits: Tensor, src: Batch) -> Weighted:
    """The realism mask: 1 on realistic pixels, 0 on deviating ones (perfect selection, the upper bound)."""
    return Weighted((src["realism"] != 0).float())


@source_weight("oracle-normalised", needs_realism=True)
def oracle_normalised_weight(obj: "Objective", logits: Tensor, src: Batch) -> Weighted:
    """The realism mask rescaled to mean 1 over valid pixels: what a perfect selector under normalize=batch gives."""
    weight = (src["realism"] != 0).float()
    valid = src["label"] != IGNORE_INDEX
    return Weighted(weight / weight[valid].float().mean().clamp_min(1e-6))
