"""Learning from unlabelled target images: the mean teacher, its pseudo-labels, the mixed batch, MinEnt.

Self-training (DACS, WACV 2021; DAFormer, CVPR 2022) keeps a *teacher*: an
exponential moving average of S's weights, updated after every step and never
trained by gradient. Its prediction on an unlabelled target image is the
pseudo-label; a pixel counts where the teacher's top softmax exceeds the
confidence threshold, and every counted pixel of an image carries the image's
*quality* (its share of confident pixels), so a teacher unsure of an image
teaches little from it. ClassMix then pastes half of a source image's classes
onto it (``mixing.py``) and the student learns the mixed label on a
colour-jittered, blurred copy.

Where selection fits: a pasted pixel keeps the weight its source pixel has in
the source loss (W's, the oracle's mask, or 1); a target pixel carries the
quality. With no labelled target image at all, W's "target" examples are the
unlabelled images, each pixel reading W^19's channel of the teacher's class.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from hrseg.data.labels import IGNORE_INDEX
from hrseg.training.mixing import MIXES, paste, strong_augment

Batch = dict[str, Tensor]


def make_teacher(student: nn.Module) -> nn.Module:
    """A frozen copy of S in eval mode (no dropout; batch norm on its averaged statistics)."""
    teacher = copy.deepcopy(student)
    teacher.eval()
    for q in teacher.parameters():
        q.requires_grad_(False)
    return teacher


def teacher_momentum(step: int, momentum: float) -> float:
    """DACS's schedule: ``min(1 - 1/(step + 1), momentum)`` at 0-based ``step``, so early teachers follow S closely."""
    return min(1.0 - 1.0 / (step + 1), momentum)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, for every floating tensor (buffers too).

    Integer buffers (batch norm's step counters) are copied: an average of counts means nothing.
    """
    t_state, s_state = teacher.state_dict(), student.state_dict()
    if t_state.keys() != s_state.keys():
        raise RuntimeError("teacher and student differ in their tensors; the teacher must be a copy of S")
    for key, t in t_state.items():
        s = s_state[key].detach()
        if t.is_floating_point():
            t.mul_(momentum).add_(s.to(t.dtype), alpha=1.0 - momentum)
        else:
            t.copy_(s)


@dataclass
class PseudoLabels:
    """The teacher's verdict on an unlabelled batch (all (B, H, W) except ``quality``)."""

    label: Tensor  # the teacher's class; IGNORE_INDEX where not confident (unless keep_unconfident)
    argmax: Tensor  # the teacher's class everywhere (what W^19 reads in UDA)
    confident: Tensor  # bool: max softmax > threshold
    quality: Tensor  # (B,): each image's share of confident pixels

    def weight(self) -> Tensor:
        """Each target pixel's loss weight: its image's quality."""
        return self.quality.view(-1, 1, 1).expand_as(self.label)


def pseudo_labels(logits: Tensor, threshold: float, keep_unconfident: bool = False) -> PseudoLabels:
    """Pseudo-labels from teacher logits (B, C, H, W): argmax, confidence mask and per-image quality."""
    prob = torch.softmax(logits.detach().float(), dim=1)
    conf, cls = prob.max(dim=1)
    confident = conf > threshold
    quality = confident.float().flatten(1).mean(1)
    label = cls if keep_unconfident else torch.where(confident, cls, torch.full_like(cls, IGNORE_INDEX))
    return PseudoLabels(label=label, argmax=cls, confident=confident, quality=quality)


@dataclass
class MixedBatch:
    """What the student trains on in a self-training step, and where each pixel came from."""

    image: Tensor  # (B, 3, H, W) mixed, strongly augmented, normalised
    label: Tensor  # (B, H, W) source label where pasted, pseudo-label elsewhere
    pasted: Tensor  # (B, H, W) bool
    pseudo: PseudoLabels  # the teacher on the unmixed target images
    target_image: Tensor  # the unmixed target crops (W's "target" examples in UDA)

    def weight(self, source_weight: Tensor | None) -> Tensor:
        """Per-pixel loss weight: the source weight where pasted (1 without one), the quality elsewhere."""
        src = torch.ones_like(self.pseudo.weight()) if source_weight is None else source_weight.detach().float()
        return paste(self.pasted, src, self.pseudo.weight())


def mixed_batch(teacher: nn.Module, target_image: Tensor, src: Batch, cfg: Any, generator: torch.Generator,
                autocast: Callable[[], contextlib.AbstractContextManager[Any]]) -> MixedBatch:
    """The teacher's pseudo-labels on ``target_image``, ClassMix with the source batch, strong augmentation.

    ``cfg`` is the run's ``unlabelled`` section. Source and target crops must
    have the same size and batch (the run's crop and batch size).
    """
    with torch.no_grad(), autocast():
        logits = teacher(target_image).logits
    pl = pseudo_labels(logits, cfg.confidence, cfg.keep_unconfident)
    n = target_image.shape[0]
    if src["image"].shape[0] != n or src["image"].shape[-2:] != target_image.shape[-2:]:
        raise ValueError("self-training pairs each source crop with one target crop of the same size")
    mask = MIXES[cfg.mix](src["label"], generator)
    image = paste(mask, src["image"], target_image)
    label = paste(mask, src["label"], pl.label)
    image = strong_augment(image, cfg.jitter, cfg.jitter_prob, cfg.blur, generator)
    return MixedBatch(image=image, label=label, pasted=mask, pseudo=pl, target_image=target_image)

