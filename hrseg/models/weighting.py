"""Weighting networks W^1 / W^19 and their hierarchical combination (docs/method.md: "Networks", "Combining ...").

Each level (pixel, region, image) has its own trunk, as in the paper's figure
(three networks W_p, W_r, W_i). A trunk is a domain classifier on its input
(the image, S's prediction or both; see ``weighting_input``): trained to say 1
on target and 0 on source, its sigmoid on a source area is "how real does this
area look", which becomes the source pixel's loss weight.

How the levels reach the label resolution (B, H, W):
- pixel: trunk logits resized bilinearly (``align_corners=False``);
- region: trunk logits resized by nearest neighbour, so every pixel of a cell
  shares the cell's score;
- image: trunk logits averaged over the map (one logit per image and channel).
For W^19 each pixel then reads the channel of its ground-truth class, at every
level (ignore pixels read channel 0; the caller masks them).

Everything between the trunks and the loss weight happens here, in one
place that training, evaluation and visualisation share: level maps ->
combination (``COMBINATIONS``) -> schedule (warm-up / ramp) -> normalisation
(``NORMALIZATIONS``) -> clamp -> optional sharpening (re-normalised,
re-clamped). Combination and normalisation work on log-weights so the density
ratio exp(sum of logits) neither overflows nor underflows before normalising.
A combination sees the stacked level logits and a ``CombineContext`` (the
groups each pixel is judged in: its class for W^19; the valid mask; the soft
threshold's steepness), so relative rules such as ``softthreshold`` (the paper's
Figure 3, the measured default) need nothing else. Adding a weighting network, a
combination or a normalisation rule is one function plus its registration below.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hrseg.data.labels import IGNORE_INDEX
from hrseg.errors import HrsegError
from hrseg.models.common import check_width, scaled
from hrseg.registry import Registry

LEVELS: tuple[str, ...] = ("pixel", "region", "image")
#: levels beyond the paper's hierarchy, off unless named in ``weighting.levels``
AGREEMENT = "agreement"
OPTIONAL_LEVELS: tuple[str, ...] = (AGREEMENT,)
#: W's loss per class: "none" (each pixel alike), "class" (each class present alike), "sqrt" (shares ∝ √pixels)
BALANCES: tuple[str, ...] = ("none", "class", "sqrt")
_BALANCE_POWER = {"class": 1.0, "sqrt": 0.5}
IMAGE_NORMS: tuple[str, ...] = ("instance", "none")
# exp(60) ~ 1e26: far above any useful weight, far below float32 overflow.
MAX_LOG_WEIGHT = 60.0


def w1_trunk(in_channels: int = 19, width: float = 1.0) -> nn.Sequential:
    """W^1 (one output channel): four Conv(k4 s2 p1)+LeakyReLU(0.2), then Conv to 1; stride 32."""
    chans = [in_channels] + [scaled(c, width) for c in (64, 128, 256, 512)]
    layers: list[nn.Module] = []
    for cin, cout in zip(chans[:-1], chans[1:]):
        layers += [nn.Conv2d(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
    layers.append(nn.Conv2d(chans[-1], 1, 4, 2, 1))
    return nn.Sequential(*layers)


def w19_trunk(in_channels: int = 19, num_classes: int = 19, width: float = 1.0,
              activation: bool = True) -> nn.Sequential:
    """W^19 (one channel per class): two Conv(k3 s2)+LeakyReLU, 3x(Conv+InstanceNorm), 1x1 ConvTranspose; stride 4.

    ``activation`` adds LeakyReLU(0.2) after each InstanceNorm (the default
    "w19"). Without it ("w19-literal", the table as printed) the trunk ends in
    a non-affine InstanceNorm and a linear 1x1 layer, so every output channel's
    spatial mean is that layer's bias whatever the input: the image level is a
    constant. The 1x1 ConvTranspose is kept (not a Conv) so the parameter names
    read like the table; the activation adds no parameters.
    """
    c1, c2 = scaled(64, width), scaled(128, width)
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, c1, 3, 2, 1),
        nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(c1, c2, 3, 2, 1),
        nn.LeakyReLU(0.2, inplace=True),
    ]
    for _ in range(3):
        layers += [nn.Conv2d(c2, c2, 3, 1, 1), nn.InstanceNorm2d(c2, affine=False)]
        if activation:
            layers.append(nn.LeakyReLU(0.2, inplace=True))
    layers.append(nn.ConvTranspose2d(c2, num_classes, 1, 1, 0))
    return nn.Sequential(*layers)


def without_instance_norm(trunk: nn.Sequential) -> nn.Sequential:
    """``trunk`` with every InstanceNorm replaced by identity (same parameter names: the norms have none).

    InstanceNorm sets each channel of each image to mean 0 and variance 1, so a
    level that averages its map over the image (the image level) can hardly
    see what sets one image apart from another; without it the mean keeps them.
    """
    return nn.Sequential(*(nn.Identity() if isinstance(m, nn.InstanceNorm2d) else m for m in trunk))


@dataclass(frozen=True)
class WeightingNetwork:
    """A trunk design: ``build(in_channels, num_classes, width)``; ``per_class``: one output channel per class.

    ``levels`` and ``balance`` are what ``weighting.levels`` / ``weighting.balance``
    mean when not given: a design's defaults travel with the design, as a
    model's pretrained weights do.
    """

    name: str
    build: Callable[[int, int, float], nn.Module]
    per_class: bool
    levels: tuple[str, ...] = LEVELS
    balance: str = "none"


WEIGHTING_NETWORKS: Registry[WeightingNetwork] = Registry("weighting network", "--weight-network")
WEIGHTING_NETWORKS.add("w1", WeightingNetwork("w1", lambda cin, ncls, width: w1_trunk(cin, width), per_class=False))
# round two of the selection study (docs/weighting-variants.md): the agreement level and the class-balanced
# loss together captured 88 % of the oracle's gain on seeds 0-4 and held on fresh seeds 5-9
WEIGHTING_NETWORKS.add("w19", WeightingNetwork("w19", w19_trunk, per_class=True, levels=(*LEVELS, AGREEMENT),
                                               balance="class"))
WEIGHTING_NETWORKS.add("w19-literal", WeightingNetwork(
    "w19-literal", lambda cin, ncls, width: w19_trunk(cin, ncls, width, activation=False), per_class=True))


def agreement_trunk(num_classes: int = 19, width: float = 1.0) -> nn.Sequential:
    """The agreement level's classifier: W^19's trunk on the RGB image, one logit per class (softmax), stride 4.

    It learns the target's look of every class from the labelled target
    batch only (cross-entropy on the real labels); at a source pixel its
    probability of the synthetic label says whether the pixel looks like
    that class does in the target.
    """
    return w19_trunk(3, num_classes, width)


@dataclass(frozen=True)
class CombineContext:
    """What a combination may look at besides the logits: the batch it weights.

    ``groups`` (B, H, W) assigns each pixel to the score distribution it is
    judged against (its ground-truth class for W^19, one group for W^1);
    ``valid`` marks the labelled pixels; ``steepness`` is the soft threshold's.
    """

    groups: Tensor
    num_groups: int
    valid: Tensor
    steepness: float = 2.0


# name -> (stacked per-pixel level logits (L, B, H, W), context) -> log-weight (B, H, W)
COMBINATIONS: Registry[Callable[[Tensor, CombineContext], Tensor]] = Registry("weight combination",
                                                                             "--weight-combine")


@COMBINATIONS.register("product")
def _product(z: Tensor, ctx: CombineContext) -> Tensor:
    return F.logsigmoid(z).sum(0)


@COMBINATIONS.register("mean")
def _mean(z: Tensor, ctx: CombineContext) -> Tensor:
    return torch.logsumexp(F.logsigmoid(z), 0) - math.log(z.shape[0])


@COMBINATIONS.register("ratio")
def _ratio(z: Tensor, ctx: CombineContext) -> Tensor:
    # log prod s/(1-s) = sum of logits: the density-ratio estimate p_target/p_source
    return z.sum(0)


@COMBINATIONS.register("softthreshold")
def _soft_threshold(z: Tensor, ctx: CombineContext) -> Tensor:
    """The paper's Figure 3: each level's map thresholded softly, relative to the batch, then multiplied.

    A fixed threshold on the sigmoid collapses as the classifiers separate the
    domains, so each level's logits are standardised over the batch's valid
    pixels of the same group (class, for W^19) and the threshold sits at that
    group's mean: sigmoid(steepness * z-score) is near 0 below it and near 1
    above it. Shifting or scaling a group's logits changes nothing.
    """
    return F.logsigmoid(ctx.steepness * standardise(z, ctx.groups, ctx.valid, ctx.num_groups)).sum(0)


@COMBINATIONS.register("softthreshold-sum")
def _soft_threshold_sum(z: Tensor, ctx: CombineContext) -> Tensor:
    """One soft threshold on the summed level logits (the log density ratio), relative to the batch per group.

    Unlike ``softthreshold`` a pixel need not clear every level's threshold:
    a level that cannot rank a class (thin objects, a weak image level) only
    adds its evidence, and every class keeps about half its pixels.
    """
    summed = z.sum(0, keepdim=True)
    return F.logsigmoid(ctx.steepness * standardise(summed, ctx.groups, ctx.valid, ctx.num_groups))[0]


# below this spread a group's logits count as constant (a z-score would only amplify rounding)
_MIN_STD = 1e-4


def standardise(z: Tensor, groups: Tensor, valid: Tensor, num_groups: int) -> Tensor:
    """Z-scores of (L, B, H, W) logits per level and group, over valid pixels; 0 where a group is constant."""
    levels = z.shape[0]
    g = torch.where(valid, groups.long(), torch.zeros_like(groups, dtype=torch.long)).flatten()
    g = g.clamp(0, num_groups - 1)
    m = valid.flatten().to(z.dtype)
    zf = z.flatten(1)
    count = torch.zeros(num_groups, dtype=z.dtype, device=z.device).index_add_(0, g, m).clamp_min(1.0)
    mean = torch.zeros(levels, num_groups, dtype=z.dtype, device=z.device).index_add_(1, g, zf * m) / count
    dev = zf - mean[:, g]
    var = torch.zeros(levels, num_groups, dtype=z.dtype, device=z.device).index_add_(1, g, dev * dev * m) / count
    std = var.sqrt()[:, g]
    u = torch.where(std > _MIN_STD, dev / std.clamp_min(_MIN_STD), torch.zeros_like(dev))
    return u.view_as(z)


# name -> (module, log-weight (B, H, W), valid mask, update running statistics?) -> normalised log-weight
Normalisation = Callable[["HierarchicalWeighting", Tensor, Tensor, bool], Tensor]
NORMALIZATIONS: Registry[Normalisation] = Registry("weight normalisation", "--weight-normalize")


def _batch_log_mean(log_w: Tensor, valid: Tensor) -> Tensor | None:
    """log of the batch's mean weight over valid pixels; None when no pixel is valid."""
    count = int(valid.sum())
    if count == 0:
        return None
    return (torch.logsumexp(log_w.detach()[valid], 0) - math.log(count)).float()


@NORMALIZATIONS.register("none")
def _no_normalisation(w: "HierarchicalWeighting", log_w: Tensor, valid: Tensor, update: bool) -> Tensor:
    """Raw weights: the classifiers may drive every source weight toward 0."""
    return log_w


@NORMALIZATIONS.register("batch")
def _batch_normalisation(w: "HierarchicalWeighting", log_w: Tensor, valid: Tensor, update: bool) -> Tensor:
    """Divided by the batch's mean weight over valid pixels."""
    mean = _batch_log_mean(log_w, valid)
    return log_w if mean is None else log_w - mean


@NORMALIZATIONS.register("running")
def _running_normalisation(w: "HierarchicalWeighting", log_w: Tensor, valid: Tensor, update: bool) -> Tensor:
    """Divided by a running mean of batch means (a buffer, kept in checkpoints).

    The running mean starts from the first training step's batch mean (from 1
    if that batch had no valid pixel).
    """
    mean = _batch_log_mean(log_w, valid)
    if update and mean is not None:
        with torch.no_grad():
            if int(w.num_updates) == 0:
                w.running_log_mean.copy_(mean)
            else:
                old = w.running_log_mean + math.log(1 - w.momentum) if w.momentum < 1 else None
                new = mean + math.log(w.momentum)
                w.running_log_mean.copy_(new if old is None else torch.logaddexp(old, new))
    return log_w - w.running_log_mean


@dataclass(frozen=True)
class WeightInput:
    """What W sees: ``make(S's logits, normalised image)`` with ``channels(num_classes)`` channels."""

    name: str
    title: str  # how a report names it
    channels: Callable[[int], int]
    make: Callable[[Tensor, Tensor], Tensor]


INPUTS: Registry[WeightInput] = Registry("weighting input", "--weight-input")


def _pred_and_image(logits: Tensor, normalized_image: Tensor) -> Tensor:
    image = normalized_image.float()
    if image.shape[-2:] != logits.shape[-2:]:
        image = F.interpolate(image, size=logits.shape[-2:], mode="bilinear", align_corners=False)
    return torch.cat([torch.softmax(logits.detach().float(), dim=1), image], dim=1)


for _input in (
    WeightInput("pred", "prediction", lambda n: n, lambda logits, image: torch.softmax(logits.detach().float(), dim=1)),
    WeightInput("image", "image", lambda n: 3, lambda logits, image: image.float()),
    WeightInput("pred+image", "prediction + image", lambda n: n + 3, _pred_and_image),
):
    INPUTS.add(_input.name, _input)


#: inputs whose last three channels are the normalised RGB image (what the agreement level reads)
IMAGE_INPUTS: tuple[str, ...] = ("image", "pred+image")


def input_channels(kind: str, num_classes: int) -> int:
    """Channels of W's input for ``weighting_input(..., kind)``."""
    return INPUTS[kind].channels(num_classes)


def weighting_input(logits: Tensor, normalized_image: Tensor, kind: str) -> Tensor:
    """What W sees: the softmax of S's (detached) logits ("pred"), the normalised RGB image ("image"), or both.

    Training, evaluation and visualisation all call this, so the weights they
    compute come from the same input. "pred+image" stacks the softmax and the
    image (resized to the prediction's size when they differ).
    """
    return INPUTS[kind].make(logits, normalized_image)


@dataclass
class WeightingConfig:
    """The hierarchical weighting networks W (schemes w1 / w19): the one set of defaults and checks.

    ``HierarchicalWeighting`` is built from it; training reads ``heldout_images``,
    ``lr`` and ``betas``. Errors name the config key (``weighting.clamp``); the
    CLI says which flag sets it.
    """

    network: str | None = None  # "w1" | "w19" | "w19-literal"; None: the scheme's (its table row)
    # defaults = the variant that captured most of the oracle's gain in docs/weighting-variants.md;
    # the paper's own rows (presets) keep W on predictions
    input: str = "image"  # "image" (RGB) | "pred" (softmax of S, the paper's) | "pred+image"
    levels: tuple[str, ...] | None = None  # None: the network's (W^19 adds "agreement" where input reads the image)
    combine: str = "softthreshold"
    normalize: str = "batch"
    clamp: float | None = None
    sharpen: float = 1.0  # exponent on the combined weight, re-normalised (>1 moves toward hard selection)
    steepness: float = 2.0  # combine "softthreshold": slope on each level's batch z-score
    smoothing: float = 0.0  # label smoothing of the classifiers' targets (1 - s for target, s for source)
    warmup: int = 0  # iterations with every weight 1 while W already learns
    ramp: int = 0  # iterations after warm-up over which the weight goes from uniform to W's (soft to hard)
    heldout_images: int = 0  # W learns "target" from this many labelled target images S never trains on (0: S's own)
    balance: str | None = None  # "class": each class present has the same share of W's loss ("sqrt": ∝ √pixels)
    agreement_lr: float = 1e-3  # Adam learning rate of the agreement level's classifier (levels incl. "agreement")
    image_norm: str = "instance"  # "none": the image level's trunk without InstanceNorm (which erases image statistics)
    width: float = 1.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)

    def filled(self) -> "WeightingConfig":
        """A copy with ``levels`` and ``balance`` the network's where not given (unchanged without a network).

        The agreement level reads the image, so on predictions alone the
        network's default levels leave it out; named explicitly it is refused.
        """
        if self.network is None:
            return self
        WEIGHTING_NETWORKS.check(self.network)
        design = WEIGHTING_NETWORKS[self.network]
        levels = self.levels
        if levels is None:
            levels = tuple(lvl for lvl in design.levels if lvl != AGREEMENT or self.input in IMAGE_INPUTS)
        return dataclasses.replace(self, levels=tuple(levels),
                                   balance=design.balance if self.balance is None else self.balance)

    def check(self) -> "WeightingConfig":
        """Refuse unknown names and out-of-range values (one line naming the key); returns ``self``."""
        if self.network is not None:
            WEIGHTING_NETWORKS.check(self.network)
        INPUTS.check(self.input)
        COMBINATIONS.check(self.combine)
        NORMALIZATIONS.check(self.normalize)
        if self.levels is not None:  # None: filled from the network (``filled``)
            self._check_levels(self.levels)
        if self.balance is not None and self.balance not in BALANCES:
            raise HrsegError(f"weighting.balance: unknown {self.balance!r} (choose from {', '.join(BALANCES)})")
        if self.image_norm not in IMAGE_NORMS:
            raise HrsegError(f"weighting.image_norm: unknown {self.image_norm!r} (choose from {', '.join(IMAGE_NORMS)})")
        for key in ("width", "lr", "agreement_lr", "sharpen", "steepness") + (
                ("clamp",) if self.clamp is not None else ()):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                raise HrsegError(f"weighting.{key}: must be a finite number > 0, got {value}")
        if not 0 <= self.smoothing < 0.5:
            raise HrsegError(f"weighting.smoothing: must be in [0, 0.5), got {self.smoothing}")
        for key in ("warmup", "ramp", "heldout_images"):
            if getattr(self, key) < 0:
                raise HrsegError(f"weighting.{key}: must be >= 0, got {getattr(self, key)}")
        return self

    def _check_levels(self, levels: tuple[str, ...]) -> None:
        if not levels:
            raise HrsegError(f"weighting.levels: at least one of {', '.join(LEVELS)} is needed")
        known = LEVELS + OPTIONAL_LEVELS
        unknown = [level for level in levels if level not in known]
        if unknown:
            raise HrsegError(f"weighting.levels: unknown level {unknown[0]!r} (choose from {', '.join(known)})")
        if len(set(levels)) != len(levels):
            raise HrsegError(f"weighting.levels: repeated level in {list(levels)}")
        if AGREEMENT in levels and self.input not in IMAGE_INPUTS:
            raise HrsegError(f"weighting.levels: the {AGREEMENT} level reads the image; weighting.input must be one "
                             f"of {', '.join(IMAGE_INPUTS)}, got {self.input!r}")


@dataclass
class WeightOutput:
    """Per-level raw logits (native resolution), per-level sigmoid scores and the combined weight.

    ``logits[level]`` is (B, C, h, w) with C = 1 (W^1) or num_classes (W^19); the
    image level is (B, C, 1, 1). ``scores[level]`` and ``weight`` are (B, H, W) at the
    label resolution.
    """

    logits: dict[str, Tensor]
    scores: dict[str, Tensor]
    weight: Tensor


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` where ``mask`` holds; 0 (not NaN) where it never does."""
    m = mask.float()
    return (x * m).sum() / m.sum().clamp_min(1.0)


class HierarchicalWeighting(nn.Module):
    """Three weighting networks (one per level) and the rule that turns their outputs into a weight map.

    ``normalize="running"`` divides by an exponential moving average of the batch
    mean weight; the EMA is a buffer (``running_log_mean``, the log of the mean)
    so checkpoints keep it. It is updated by :meth:`forward` in
    training mode only, which therefore should only see source batches.

    ``num_updates`` counts those training calls (one per iteration), so the
    schedule resumes exactly and evaluation sees the schedule's final state:
    for the first ``warmup`` steps every weight is 1 while the classifiers
    learn, then over ``ramp`` steps the weight goes from uniform to W's
    (w ** a, a rising linearly from 0 to 1, before normalisation).
    ``smoothing`` moves the classifiers' BCE targets from 1 / 0 to
    1 - smoothing / smoothing.
    """

    def __init__(self, config: WeightingConfig | str | None = None, in_channels: int | None = None,
                 num_classes: int = 19, *, momentum: float = 0.1, **changes: Any) -> None:
        """``config`` (or a network name, or None: ``WeightingConfig()``) with ``changes`` to its fields.

        ``in_channels`` defaults to what ``config.input`` gives; ``momentum`` is the
        running normalisation's.
        """
        super().__init__()
        if isinstance(config, str):
            changes = {"network": config, **changes}
            config = None
        try:
            cfg = dataclasses.replace(config or WeightingConfig(), **changes)
        except TypeError as exc:
            raise HrsegError(f"weighting: {exc}") from None
        cfg = cfg.filled().check()  # without a network nothing is filled, and the error below says so
        if cfg.network is None:
            raise HrsegError("weighting.network: a weighting network is needed (w1, w19, ...)")
        if not 0 < momentum <= 1:
            raise HrsegError(f"weighting momentum: must be in (0, 1], got {momentum!r}")
        design = WEIGHTING_NETWORKS[cfg.network]
        self.config = cfg
        self.network = cfg.network
        self.combine = cfg.combine
        self.normalize = cfg.normalize
        self.levels = cfg.levels
        self.steepness = float(cfg.steepness)
        self.smoothing = float(cfg.smoothing)
        self.warmup, self.ramp = int(cfg.warmup), int(cfg.ramp)
        self.clamp = cfg.clamp
        self.momentum = momentum
        self.sharpen = float(cfg.sharpen)
        self.in_channels = input_channels(cfg.input, num_classes) if in_channels is None else in_channels
        self.num_classes = num_classes
        self.width = check_width(cfg.width, "weighting.width")
        self.out_channels = num_classes if design.per_class else 1
        self.balance = cfg.balance
        self.trunks = nn.ModuleDict({
            level: agreement_trunk(num_classes, cfg.width) if level == AGREEMENT
            else design.build(self.in_channels, num_classes, cfg.width) for level in self.levels})
        if cfg.image_norm == "none" and "image" in self.trunks:
            self.trunks["image"] = without_instance_norm(self.trunks["image"])
        self.register_buffer("running_log_mean", torch.zeros(()))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    # -- per-level maps -------------------------------------------------------------
    def level_logits(self, inp: Tensor) -> dict[str, Tensor]:
        """Raw trunk outputs at their native resolution; the image level is averaged to (B, C, 1, 1)."""
        out: dict[str, Tensor] = {}
        for level in self.levels:
            if level == AGREEMENT:
                out[level] = self.trunks[level](inp[:, -3:])  # the image is the input's last 3 channels
                continue
            z = self.trunks[level](inp)
            out[level] = z.mean(dim=(2, 3), keepdim=True) if level == "image" else z
        return out

    def _at_label_resolution(self, level: str, z: Tensor, size: tuple[int, int]) -> Tensor:
        if level in ("pixel", AGREEMENT):
            return F.interpolate(z, size=size, mode="bilinear", align_corners=False)
        if level == "region":
            return F.interpolate(z, size=size, mode="nearest")
        return z.expand(-1, -1, *size)

    def _read_class(self, z: Tensor, labels: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, H, W): channel 0 for W^1, the ground-truth class's channel for W^19."""
        if self.out_channels == 1:
            return z[:, 0]
        index = labels.long()
        index = torch.where((index >= 0) & (index < self.out_channels), index, torch.zeros_like(index))
        return z.gather(1, index.unsqueeze(1)).squeeze(1)

    def pixel_logits(self, logits: dict[str, Tensor], labels: Tensor) -> dict[str, Tensor]:
        """Each level's logit for each labelled pixel: (B, H, W) per level."""
        size = (int(labels.shape[-2]), int(labels.shape[-1]))
        out: dict[str, Tensor] = {}
        for lvl, z in logits.items():
            z = self._at_label_resolution(lvl, z, size)
            out[lvl] = agreement_logit(z, labels) if lvl == AGREEMENT else self._read_class(z, labels)
        return out

    # -- combination and normalisation ---------------------------------------------------
    def strength(self, step: int | None = None) -> float:
        """The schedule's exponent on W's weight at a training step (default: the current one): 0 .. 1."""
        if self.warmup == 0 and self.ramp == 0:
            return 1.0
        t = int(self.num_updates) if step is None else step
        if t < self.warmup:
            return 0.0
        if self.ramp == 0:
            return 1.0
        return min(1.0, (t - self.warmup) / self.ramp)

    def context(self, labels: Tensor) -> CombineContext:
        """The batch a combination judges scores against: W^19 per ground-truth class, W^1 as one group."""
        valid = labels != IGNORE_INDEX
        if self.out_channels > 1:
            groups = torch.where(valid, labels.long(), torch.zeros_like(labels, dtype=torch.long))
            return CombineContext(groups, self.out_channels, valid, self.steepness)
        return CombineContext(torch.zeros_like(labels, dtype=torch.long), 1, valid, self.steepness)

    def combine_weight(self, level_pixel_logits: dict[str, Tensor], labels: Tensor, update_running: bool) -> Tensor:
        """The loss weight of every pixel: combine, schedule, normalise, clamp, then sharpen (no autograd history)."""
        z = torch.stack([level_pixel_logits[level].detach().float() for level in self.levels])
        ctx = self.context(labels)
        log_w = COMBINATIONS[self.combine](z, ctx)
        a = self.strength()
        if a < 1.0:
            log_w = log_w * a
        log_w = NORMALIZATIONS[self.normalize](self, log_w, ctx.valid, update_running)
        if update_running:
            self.num_updates += 1
        cap = MAX_LOG_WEIGHT if self.clamp is None else min(MAX_LOG_WEIGHT, math.log(self.clamp))
        return self._sharpen(log_w.clamp(max=cap).exp(), ctx.valid)

    def _sharpen(self, weight: Tensor, valid: Tensor) -> Tensor:
        """w**power, back to batch mean 1 when W normalises: a soft step toward hard selection."""
        if self.sharpen == 1.0:
            return weight
        out = weight.pow(self.sharpen)
        if self.normalize != "none":
            out = out / masked_mean(out, valid).clamp_min(1e-12)
        return out if self.clamp is None else out.clamp(max=self.clamp)

    # -- public entry points -------------------------------------------------------------
    def forward(self, inp: Tensor, labels: Tensor, update_running: bool | None = None) -> WeightOutput:
        """Weight a source batch: ``inp`` (B, in_channels, h, w) prediction or image, ``labels`` (B, H, W)."""
        if labels.dim() != 3 or labels.shape[0] != inp.shape[0]:
            raise ValueError(f"labels must be (B, H, W) with B={inp.shape[0]}, got {tuple(labels.shape)}")
        logits = self.level_logits(inp)
        per_pixel = self.pixel_logits(logits, labels)
        scores = {level: torch.sigmoid(z) for level, z in per_pixel.items()}
        update = self.training if update_running is None else update_running
        weight = self.combine_weight(per_pixel, labels, update)
        return WeightOutput(logits=logits, scores=scores, weight=weight)

    @torch.no_grad()
    def class_score(self, inp: Tensor, cls: int, size: tuple[int, int]) -> Tensor:
        """(B, H, W) score every pixel would get were it of class ``cls``: the geometric mean of the level
        sigmoids of that class's channel (W^19), on the same 0..1 scale as each level's score."""
        raw = self.level_logits(inp)
        fill = torch.full((inp.shape[0], *size), cls, dtype=torch.long, device=inp.device)
        logs = torch.stack([F.logsigmoid(z.float()) for z in self.pixel_logits(raw, fill).values()])
        return logs.mean(0).exp()

    def classifier_loss(
        self, inp: Tensor, labels: Tensor, domain: float, logits: dict[str, Tensor] | None = None
    ) -> Tensor:
        """Sum over levels of the mean BCE-with-logits against ``domain`` (1 target, 0 source; smoothed).

        W^1: pixel level over valid pixels, region level over valid cells (a cell is
        valid if any of its pixels is, cells being what nearest up-sampling maps
        pixels to), image level over images with a valid pixel. W^19: every level
        over valid pixels, each reading its ground-truth class's channel (region and
        image logits are spread to the pixels first), because a cell or image has no
        single class. Pass ``logits`` from a :meth:`forward` with gradient to reuse it.

        ``balance="class"``: wherever a pixel's class is known (every W^19 level,
        W^1's pixel level) the mean is taken per class and then over the classes
        present, so each class gets the same share of the loss however few
        pixels it has. The agreement level is no domain classifier: it learns
        the real labels by cross-entropy on the target batch (``domain`` 1) and
        nothing from a source batch, whose synthetic labels it is meant to judge.
        """
        if logits is None:
            logits = self.level_logits(inp)
        valid = labels != IGNORE_INDEX
        size = (int(labels.shape[-2]), int(labels.shape[-1]))
        total = inp.new_zeros((), dtype=torch.float32)
        for level, z in logits.items():
            z = z.float()
            if level == AGREEMENT:
                if domain < 0.5 or not bool(valid.any()):
                    total = total + z.sum() * 0.0  # keep the graph connected for DDP
                    continue
                ce = F.cross_entropy(self._at_label_resolution(level, z, size), labels.long(),
                                     ignore_index=IGNORE_INDEX, reduction="none")
                total = total + self._mean_over(ce, labels, valid)
                continue
            if self.out_channels > 1 or level == "pixel":
                pred = self._read_class(self._at_label_resolution(level, z, size), labels)
                mask = valid
            elif level == "region":
                pred = z[:, 0]
                mask = _region_valid(valid, pred.shape[-2:])
            else:
                pred = z[:, 0, 0, 0]
                mask = valid.flatten(1).any(1)
            picked = pred[mask]
            if picked.numel() == 0:
                total = total + pred.sum() * 0.0  # keep the graph connected for DDP
                continue
            target = torch.full_like(picked, self.smoothing + float(domain) * (1.0 - 2.0 * self.smoothing))
            if self.balance != "none" and mask is valid:
                bce = F.binary_cross_entropy_with_logits(pred, torch.full_like(pred, float(target[0])),
                                                         reduction="none")
                total = total + self._mean_over(bce, labels, valid)
            else:
                total = total + F.binary_cross_entropy_with_logits(picked, target)
        return total

    def _mean_over(self, per_pixel: Tensor, labels: Tensor, valid: Tensor) -> Tensor:
        """Mean of a per-pixel loss over valid pixels, each present class weighted as ``balance`` says."""
        if self.balance == "none":
            return per_pixel[valid].mean()
        return class_balanced_mean(per_pixel, labels, valid, self.num_classes, _BALANCE_POWER[self.balance])


def class_balanced_mean(per_pixel: Tensor, labels: Tensor, valid: Tensor, num_classes: int,
                        power: float = 1.0) -> Tensor:
    """Sum over pixels of value * n_c^-power / sum_k n_k^(1-power): class c's share of the loss is ∝ n_c^(1-power).

    ``power`` 1: each of the K classes present weighs 1 / K, spread over its n_c
    pixels; 0.5: shares ∝ √n_c, between that and the plain mean (0).
    """
    cls = torch.where(valid, labels.long(), torch.zeros_like(labels, dtype=torch.long)).clamp(0, num_classes - 1)
    counts = torch.bincount(cls[valid], minlength=num_classes).to(per_pixel.dtype)
    if power == 1.0:  # the measured default, computed as it was measured (bit for bit)
        present = int((counts > 0).sum())
        weight = 1.0 / (counts[cls].clamp_min(1.0) * max(present, 1))
    else:
        weight = counts[cls].clamp_min(1.0).pow(-power) / counts[counts > 0].pow(1.0 - power).sum().clamp_min(1e-12)
    share = torch.where(valid, weight, torch.zeros_like(per_pixel))
    return (per_pixel * share).sum()


def agreement_logit(class_logits: Tensor, labels: Tensor) -> Tensor:
    """(B, C, H, W) class logits -> (B, H, W) logit of the softmax probability of each pixel's label.

    As a logit (log p - log(1 - p)) it combines with the other levels' logits;
    its sigmoid, the level's score, is that probability. Ignored pixels read class 0.
    """
    index = labels.long()
    index = torch.where((index >= 0) & (index < class_logits.shape[1]), index, torch.zeros_like(index))
    log_p = torch.log_softmax(class_logits.float(), dim=1).gather(1, index.unsqueeze(1)).squeeze(1)
    log_p = log_p.clamp(max=-1e-6)
    return log_p - torch.log(-torch.expm1(log_p))


def _region_valid(valid: Tensor, cells: tuple[int, int] | torch.Size) -> Tensor:
    """(B, h, w) mask of cells holding at least one valid pixel, under nearest-neighbour assignment."""
    b = valid.shape[0]
    h, w = int(cells[0]), int(cells[1])
    ids = torch.arange(h * w, device=valid.device, dtype=torch.float32).view(1, 1, h, w)
    pixel_cell = F.interpolate(ids, size=valid.shape[-2:], mode="nearest").long().view(1, -1).expand(b, -1)
    out = torch.zeros(b, h * w, device=valid.device)
    out.scatter_reduce_(1, pixel_cell, valid.reshape(b, -1).float(), reduce="amax")
    return out.view(b, h, w) > 0
