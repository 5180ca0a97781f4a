"""Every training scheme as one row of data: what the one loop does per iteration, and how it is reported.

A scheme never owns a loop of its own. Its row answers which batches are drawn,
how the source loss is weighted (a rule of ``source_weights.SOURCE_WEIGHTS``:
W, the realism mask, none, ...) and which W by default, how source images are
filtered, whether the GAN is on by default, what role its rows play in a
report, what the report calls it and what the paper measured.
Adding a scheme is adding a row here (plus, for a new source filter, its
function in ``sampling.SOURCE_FILTERS``; for a new weight rule, its function in
``source_weights.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

from hrseg.errors import HrsegError
from hrseg.registry import Registry
from hrseg.training.source_weights import SOURCE_WEIGHTS

if TYPE_CHECKING:
    from hrseg.training.config import TrainConfig


@dataclass(frozen=True)
class Phase:
    """A stretch of iterations with fixed domains; finetune has two."""

    name: str  # "joint" | "source" | "target": logged with every iteration
    source: bool
    target: bool


JOINT = Phase("joint", source=True, target=True)
SOURCE_ONLY = Phase("source", source=True, target=False)
TARGET_ONLY = Phase("target", source=False, target=True)


@dataclass(frozen=True)
class Scheme:
    """One row of the scheme table."""

    name: str
    title: str  # the report's configuration column
    phases: tuple[Phase, ...] = (JOINT,)
    weighting: str | None = None  # default weighting network ("w1" / "w19"); None: no W
    source_weight: str = "none"  # the rule in source_weights.SOURCE_WEIGHTS that weights the source loss
    role: str = "method"  # in a report: one of ROLES
    source_filter: str | None = None  # a name in sampling.SOURCE_FILTERS
    gan: bool = False  # G and D on by default (the paper's "Ours" rows)
    # what S learns from unlabelled target images: "minent" (ADVENT) | "self-training" (mean teacher, DACS)
    unlabelled: str | None = None
    public: bool = True  # offered by `hrseg train --scheme`
    quickstart: bool = False  # trained by the default quick start
    # Table 1 (docs/method.md) by configuration key: arch, "+gan" when G/D are on, "+image" for the RGB-input W
    paper_miou: dict[str, float] = field(default_factory=dict)

    @property
    def uses_source(self) -> bool:
        return any(p.source for p in self.phases)

    @property
    def needs_realism(self) -> bool:
        return SOURCE_WEIGHTS[self.source_weight].needs_realism

    @property
    def joint(self) -> bool:
        """Some phase sees both domains in one step (what the GAN and W need)."""
        return any(p.source and p.target for p in self.phases)


#: what a scheme's rows are to a report: "baseline" rows give every row's delta (target only),
#: the "reference" and the "upper bound" give the share of the upper bound's gain a row captures
ROLES: tuple[str, ...] = ("method", "baseline", "reference", "upper bound")

SCHEMES: Registry[Scheme] = Registry("scheme", "--scheme")


def add_scheme(row: Scheme) -> Scheme:
    """Register ``row`` after checking that its names exist and its W and weight rule agree."""
    rule = SOURCE_WEIGHTS[row.source_weight]
    if rule.uses_w != (row.weighting is not None):
        raise ValueError(f"scheme {row.name!r}: source weight {row.source_weight!r} and weighting {row.weighting!r} "
                         "disagree (a rule that runs W needs a default W, and only such a rule may have one)")
    if row.role not in ROLES:
        raise ValueError(f"scheme {row.name!r}: role {row.role!r} is not one of {ROLES}")
    return SCHEMES.add(row.name, row)


for _row in (
    Scheme("target-only", "target only", phases=(TARGET_ONLY,), quickstart=True, role="baseline",
           paper_miou={"fcn8s-vgg16": 65.3, "pspnet-r50": 76.1}),
    Scheme("joint", "direct joint", quickstart=True, role="reference", paper_miou={"fcn8s-vgg16+gan": 64.0}),
    Scheme("finetune", "source pre-train + target fine-tune", phases=(SOURCE_ONLY, TARGET_ONLY)),
    Scheme("image-select", "ImageSelect", source_filter="road-share", paper_miou={"fcn8s-vgg16+gan": 65.4}),
    Scheme("w1", "Ours with W^1", weighting="w1", source_weight="w", gan=True, quickstart=True,
           paper_miou={"fcn8s-vgg16+gan": 67.6, "fcn8s-vgg16+gan+image": 67.1, "pspnet-r50+gan": 77.6}),
    Scheme("w19", "Ours with W^19", weighting="w19", source_weight="w", gan=True, quickstart=True,
           paper_miou={"fcn8s-vgg16+gan": 68.1}),
    Scheme("oracle", "oracle (realism mask)", source_weight="oracle", role="upper bound", public=False),
    Scheme("oracle-normalised", "oracle, mean-1 mask (diagnostic)", source_weight="oracle-normalised",
           public=False),
    Scheme("source-only", "source only", phases=(SOURCE_ONLY,), role="baseline"),
    Scheme("minent", "MinEnt (entropy on unlabelled target)", unlabelled="minent"),
    Scheme("self-training", "self-training (mean teacher + ClassMix)", unlabelled="self-training"),
    Scheme("w19+self-training", "W^19 + self-training", weighting="w19", source_weight="w",
           unlabelled="self-training"),
    Scheme("oracle+self-training", "oracle + self-training", source_weight="oracle", unlabelled="self-training",
           public=False),
):
    add_scheme(_row)

PUBLIC_SCHEMES: tuple[str, ...] = tuple(s.name for s in SCHEMES.values() if s.public)
QUICKSTART_SCHEMES: tuple[str, ...] = tuple(s.name for s in SCHEMES.values() if s.quickstart)


@dataclass(frozen=True)
class StepPlan:
    """The terms of one iteration."""

    source: bool  # draw a source batch and add the (possibly weighted) source loss
    target: bool  # draw a target batch and add L_t
    source_weight: str  # the rule in SOURCE_WEIGHTS that weights the source loss ("none" without a source batch)
    gan: bool  # G and D take part
    phase: str  # logged, and the LR schedule restarts at a phase switch
    unlabelled: str | None = None  # the term on an unlabelled target batch: "minent" | "self-training" | None

    @property
    def weighting(self) -> bool:
        """W weights the source loss and is trained in this step."""
        return SOURCE_WEIGHTS[self.source_weight].uses_w


def check_scheme(cfg: "TrainConfig") -> None:
    """Refuse combinations that would silently do nothing."""
    scheme = SCHEMES[cfg.scheme]
    if cfg.gan.enabled and not scheme.joint:
        raise HrsegError(
            f"--gan: scheme {cfg.scheme!r} never sees both domains in one step, so the GAN would not train; "
            "use --no-gan or a joint scheme"
        )


def unused_settings(cfg: "TrainConfig", keys: Iterable[str]) -> str | None:
    """A one-line warning for weighting settings the user gave to a scheme without W (else None).

    They used to be ignored without a word. Not an error, unlike the GAN's:
    a sweep passes one set of flags to every scheme. ``keys`` are the config
    keys the user set (flags, ``--set``); presets and files are not asked.
    """
    unused = sorted({k for k in keys if k.startswith("weighting.")})
    if not unused or SCHEMES[cfg.scheme].weighting is not None:
        return None
    return (f"{', '.join(unused)}: scheme {cfg.scheme!r} has no weighting network, so "
            f"{'this setting does' if len(unused) == 1 else 'these settings do'} nothing")


def phase_bounds(cfg: "TrainConfig") -> list[tuple[int, int]]:
    """[start, end) of each phase; a two-phase scheme switches after ``finetune.source_iters`` (0: half)."""
    phases = SCHEMES[cfg.scheme].phases
    if len(phases) == 1:
        return [(0, cfg.optim.iters)]
    switch = cfg.finetune_source_iters()
    return [(0, switch), (switch, cfg.optim.iters)]


def phase_at(cfg: "TrainConfig", iteration: int) -> tuple[Phase, tuple[int, int]]:
    """The phase holding 0-based ``iteration`` and its [start, end)."""
    for phase, bounds in zip(SCHEMES[cfg.scheme].phases, phase_bounds(cfg)):
        if iteration < bounds[1]:
            return phase, bounds
    return SCHEMES[cfg.scheme].phases[-1], phase_bounds(cfg)[-1]


def plan(cfg: "TrainConfig", iteration: int) -> StepPlan:
    """The step plan for 0-based ``iteration``."""
    scheme = SCHEMES[cfg.scheme]
    phase, _ = phase_at(cfg, iteration)
    target = phase.target and cfg.data.target_images != 0  # 0 labelled images: W learns from pseudo-labels
    both = phase.source and target
    rule = SOURCE_WEIGHTS[scheme.source_weight]
    unlabelled = scheme.unlabelled if phase.target and iteration >= cfg.unlabelled.start else None
    self_training = unlabelled == "self-training"
    usable = phase.source and (both or self_training or not rule.uses_w)  # W's target: this step's target images
    return StepPlan(
        source=phase.source, target=target, source_weight=rule.name if usable else "none",
        gan=both and bool(cfg.gan.enabled), phase=phase.name, unlabelled=unlabelled,
    )


def paper_key(cfg: "TrainConfig") -> str:
    """The key of ``Scheme.paper_miou`` that describes ``cfg``."""
    key = cfg.model.arch + ("+gan" if cfg.gan.enabled else "")
    if SCHEMES[cfg.scheme].weighting is not None and cfg.weighting.input == "image":
        key += "+image"
    return key


def paper_miou(cfg: "TrainConfig") -> float | None:
    """The paper's val mIoU for this configuration, where Table 1 has one."""
    return SCHEMES[cfg.scheme].paper_miou.get(paper_key(cfg))
