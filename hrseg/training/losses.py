"""The loss terms of the training objective (docs/method.md) as pure functions of tensors.

Each function returns a scalar that stays finite (zero) when a batch has no
valid pixel, so a fully ignored crop cannot poison a run with NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from hrseg.data.labels import IGNORE_INDEX

# Discriminator domain classes (LSD-seg): one label per location.
SOURCE_REAL, SOURCE_FAKE, TARGET_REAL, TARGET_FAKE = 0, 1, 2, 3


def pixel_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel cross-entropy (B,H,W), 0 where the label is ignored; computed in float32."""
    return F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")


def target_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_t: mean CE over the valid target pixels."""
    ce = pixel_ce(logits, labels)
    n_valid = (labels != IGNORE_INDEX).sum().clamp_min(1)
    return ce.sum() / n_valid


def weighted_source_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """L_s = sum(w * CE) / n_valid; w is detached so the source loss never trains W.

    ``weight=None`` is direct joint training (every weight 1). Dividing by the number
    of valid pixels, not by sum(w), keeps the weight's scale meaningful: weights that
    collapse toward 0 really do switch the source term off (docs/method.md).
    """
    ce = pixel_ce(logits, labels)
    n_valid = (labels != IGNORE_INDEX).sum().clamp_min(1)
    if weight is None:
        return ce.sum() / n_valid
    return (weight.detach().float() * ce).sum() / n_valid


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """MinEnt (ADVENT): the softmax's entropy normalised by log(C), averaged over every pixel (no label needed)."""
    logp = torch.log_softmax(logits.float(), dim=1)
    return -(logp.exp() * logp).sum(1).mean() / math.log(logits.shape[1])


def weighting_loss(
    weighting: torch.nn.Module, source_inp: torch.Tensor, source_labels: torch.Tensor,
    target_inp: torch.Tensor, target_labels: torch.Tensor, source_logits: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """W as a domain classifier: target predictions -> 1, source predictions -> 0 (BCE at every level).

    Its sigmoid on a source prediction then reads "how target-like", which is the weight.
    ``source_logits`` reuses the logits of the forward pass that produced the weights.
    """
    return weighting.classifier_loss(source_inp, source_labels, domain=0.0, logits=source_logits) + (
        weighting.classifier_loss(target_inp, target_labels, domain=1.0)
    )


def domain_ce(domain_logits: torch.Tensor, domain: int) -> torch.Tensor:
    """CE of D's 4-way domain head against one domain class at every location."""
    target = torch.full(
        (domain_logits.shape[0], *domain_logits.shape[2:]), domain, dtype=torch.long, device=domain_logits.device
    )
    return F.cross_entropy(domain_logits.float(), target)


def class_ce_downsampled(class_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE of D's class head against the labels brought to D's map size (nearest, ignore kept)."""
    small = F.interpolate(labels[:, None].float(), size=class_logits.shape[2:], mode="nearest")[:, 0].long()
    return target_loss(class_logits, small)


def reconstruction_l1(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return (fake.float() - real.float()).abs().mean()
