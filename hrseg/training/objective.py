"""Every loss term of one iteration from batches and networks (docs/method.md, "Training objective").

S sees a source and/or a target batch in one forward pass; the source CE is
weighted by the step's source-weight rule (``source_weights.py``: W's map, the
realism mask, 1, ...); W learns to tell target predictions from source ones; G
and D play LSD-seg's game. The result holds one loss per network, in the order
they back-propagate (``BACKWARD_ORDER``), plus everything worth logging; the
loop back-propagates each into its own network.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from hrseg.data.labels import IGNORE_INDEX
from hrseg.models import weighting_input
from hrseg.models.weighting import masked_mean
from hrseg.training import distributed as ddp
from hrseg.training import losses, selftrain
from hrseg.training.config import TrainConfig
from hrseg.training.schemes import StepPlan
from hrseg.training.source_weights import SOURCE_WEIGHTS

Batch = dict[str, Tensor]

#: the order the networks' losses back-propagate in; a network missing from a step's losses does not train then
BACKWARD_ORDER: tuple[str, ...] = ("segmenter", "generator", "discriminator", "weighting")

#: the terms S's loss sums (its adversarial term is added by the GAN)
SEGMENTER_TERMS: tuple[str, ...] = ("target", "target_aux", "source", "source_aux", "minent", "self_training")


@dataclass
class StepLosses:
    """Each training network's loss for this step, keyed by network in ``BACKWARD_ORDER``, and the logged values."""

    losses: dict[str, Tensor] = field(default_factory=dict)
    terms: dict[str, Tensor] = field(default_factory=dict)  # loss terms: a non-finite one stops the run
    stats: dict[str, Tensor] = field(default_factory=dict)  # weights and scores, logged only


@dataclass
class Objective:
    """Computes :class:`StepLosses`; holds only what every step needs (config, networks, precision)."""

    cfg: TrainConfig
    nets: dict[str, nn.Module]
    segmenter: Callable[[Tensor], Any]  # S as the loop runs it (DDP-wrapped and/or compiled)
    dist: ddp.DistInfo
    autocast: Callable[[], contextlib.AbstractContextManager[Any]]
    mix_generator: torch.Generator | None = None  # self-training's mixing and strong augmentation

    def __call__(self, p: StepPlan, src: Batch | None, tgt: Batch | None, unl: Batch | None = None) -> StepLosses:
        mixed = None
        if p.unlabelled == "self-training":
            assert src is not None and unl is not None and self.mix_generator is not None
            mixed = selftrain.mixed_batch(self.nets["teacher"], unl["image"], src, self.cfg.unlabelled,
                                          self.mix_generator, self.autocast)
        student_unl = None if unl is None else (mixed.image if mixed is not None else unl["image"])
        parts = [x for x in (None if src is None else src["image"], None if tgt is None else tgt["image"],
                             student_unl) if x is not None]
        n_s = src["image"].shape[0] if src is not None else 0
        n_t = tgt["image"].shape[0] if tgt is not None else 0
        with self.autocast():
            out = self.segmenter(torch.cat(parts) if len(parts) > 1 else parts[0])
        logits = out.logits
        result = StepLosses()
        terms, stats, nets = result.terms, result.stats, {}
        if tgt is not None:
            terms["target"] = losses.target_loss(logits[n_s : n_s + n_t], tgt["label"])
            if out.aux is not None:
                terms["target_aux"] = 0.4 * losses.target_loss(out.aux[n_s : n_s + n_t], tgt["label"])

        weighted = None
        if src is not None:
            weighted = SOURCE_WEIGHTS[p.source_weight].fn(self, logits[:n_s], src)
            terms["source"] = losses.weighted_source_loss(logits[:n_s], src["label"], weighted.weight)
            if out.aux is not None:
                terms["source_aux"] = 0.4 * losses.weighted_source_loss(out.aux[:n_s], src["label"], weighted.weight)
            stats.update(weighted.stats)
            stats.update(weight_stats(weighted.weight, src))

        u = self.cfg.unlabelled
        if unl is not None and p.unlabelled == "minent":
            terms["minent"] = u.minent_weight * losses.entropy_loss(logits[n_s + n_t :])
        if mixed is not None:
            mixed_weight = mixed.weight(weighted.weight if weighted is not None else None)
            terms["self_training"] = u.weight * losses.weighted_source_loss(logits[n_s + n_t :], mixed.label,
                                                                            mixed_weight)
            stats["pseudo_quality"] = mixed.pseudo.quality.mean()
            stats["pseudo_confident"] = mixed.pseudo.confident.float().mean()

        if weighted is not None and weighted.w_input is not None and src is not None and (
                tgt is not None or mixed is not None):
            if tgt is not None:
                w_in_t, w_labels_t = self._weighting_target(logits[n_s : n_s + n_t], tgt)
            elif self.cfg.weighting.input == "image":  # UDA: the unmixed target crops at the teacher's class
                assert mixed is not None
                w_in_t = weighting_input(mixed.target_image, mixed.target_image, "image")
                w_labels_t = mixed.pseudo.argmax
            else:  # UDA, W on predictions: S's (no-grad) prediction on those crops
                assert mixed is not None
                w_in_t, w_labels_t = self._weighting_target(None, {"heldout_image": mixed.target_image,
                                                                   "heldout_label": mixed.pseudo.argmax})
            nets["weighting"] = terms["w_cls"] = losses.weighting_loss(
                self.nets["weighting"], weighted.w_input, src["label"], w_in_t, w_labels_t,
                source_logits=weighted.w_logits)

        s_loss = logits.new_zeros((), dtype=torch.float32)
        for name in SEGMENTER_TERMS:
            if name in terms:
                s_loss = s_loss + terms[name]
        if p.gan:
            assert src is not None and tgt is not None
            nets["generator"], nets["discriminator"], s_adv = self._gan_terms(out.features, src, tgt, n_s, terms)
            s_loss = s_loss + s_adv
        terms["total_s"] = nets["segmenter"] = s_loss
        result.losses = {name: nets[name] for name in BACKWARD_ORDER if name in nets}
        return result

    def _weighting_target(self, target_logits: Tensor | None, tgt: Batch) -> tuple[Tensor, Tensor]:
        """W's "target" examples: S's predictions on its own target batch, or on other target images.

        Those are held-out labelled images, or (UDA) unlabelled ones labelled by
        the teacher. Their pass needs no gradient (none at all when W reads only
        the image); S stays in training mode so W sees predictions made the same
        way as the source ones it weights.
        """
        kind = self.cfg.weighting.input
        if "heldout_image" not in tgt:
            assert target_logits is not None
            return weighting_input(target_logits, tgt["image"], kind), tgt["label"]
        image = tgt["heldout_image"]
        with torch.no_grad(), self.autocast():
            held = self.segmenter(image).logits
        return weighting_input(held, image, kind), tgt["heldout_label"]

    def _gan_terms(self, features: Tensor, src: Batch, tgt: Batch, n_s: int,
                   terms: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """G, D and S's adversarial losses from one D pass over (x_s, x_t, G(f_s), G(f_t)).

        Each loss later back-propagates only into its own network (``backward(inputs=...)``),
        so D's loss on the fakes needs no separate detached pass.
        """
        gan = self.cfg.gan
        G, D = self.nets["generator"], self.nets["discriminator"]
        xs, xt, ys = src["image"], tgt["image"], src["label"]
        n_t = xt.shape[0]
        with self.autocast():
            fake = G(features, size=tuple(xs.shape[-2:]))
            dom, cls = D(torch.cat([xs, xt, fake]))
        dom_xs, dom_xt = dom[:n_s], dom[n_s : n_s + n_t]
        dom_fs, dom_ft = dom[n_s + n_t : 2 * n_s + n_t], dom[2 * n_s + n_t :]
        cls_xs, cls_fs = cls[:n_s], cls[n_s + n_t : 2 * n_s + n_t]
        fake_s, fake_t = fake[:n_s], fake[n_s:]
        cls_fake = losses.class_ce_downsampled(cls_fs, ys)
        s_adv = gan.adv_weight * (losses.domain_ce(dom_fs, losses.TARGET_REAL)
                                  + losses.domain_ce(dom_ft, losses.SOURCE_REAL)) + gan.cls_weight_s * cls_fake
        g_adv = losses.domain_ce(dom_fs, losses.SOURCE_REAL) + losses.domain_ce(dom_ft, losses.TARGET_REAL)
        recon = losses.reconstruction_l1(fake_s, xs) + losses.reconstruction_l1(fake_t, xt)
        g_loss = gan.cls_weight_g * cls_fake + gan.adv_weight * g_adv + gan.recon_weight * recon
        d_dom = (losses.domain_ce(dom_xs, losses.SOURCE_REAL) + losses.domain_ce(dom_fs, losses.SOURCE_FAKE)
                 + losses.domain_ce(dom_xt, losses.TARGET_REAL) + losses.domain_ce(dom_ft, losses.TARGET_FAKE))
        d_cls = losses.class_ce_downsampled(cls_xs, ys)
        d_loss = d_dom + d_cls
        terms.update({"s_adv": s_adv, "g": g_loss, "g_recon": recon, "d": d_loss, "d_cls": d_cls})
        return g_loss, d_loss, s_adv


def weight_stats(weight: Tensor | None, src: Batch) -> dict[str, Tensor]:
    """Mean weight over valid source pixels, and on realistic vs deviating ones where the mask exists."""
    valid = src["label"] != IGNORE_INDEX
    w = weight if weight is not None else torch.ones_like(src["label"], dtype=torch.float32)
    out = {"weight_mean": masked_mean(w, valid)}
    if "realism" in src:
        out["weight_realistic"] = masked_mean(w, valid & (src["realism"] == 1))
        out["weight_deviating"] = masked_mean(w, valid & (src["realism"] == 0))
    return out
