"""Named configurations: the paper's Table 1 rows (presets), the quick CPU budget, and ``build_config``.

``build_config`` is what a training command means: a preset or a config file
(or the defaults), then ``--set`` overrides, then explicit flags; the result is
resolved (scheme defaults such as the GAN filled in) and validated, so
``hrseg train`` and ``train(build_config(...))`` train the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hrseg.errors import HrsegError
from hrseg.models.weighting import LEVELS
from hrseg.training.config import TrainConfig, load_config_file, override, parse_set
from hrseg.training.schemes import paper_miou


def build_config(
    *, preset: str | None = None, config_file: str | Path | None = None, scheme: str | None = None,
    sets: list[str] | tuple[str, ...] = (), flags: dict[str, Any] | None = None,
) -> TrainConfig:
    """The config a training command means: preset or file (or defaults), then ``--set``, then explicit flags.

    Flags whose value is None were not given. The result is resolved (scheme
    defaults such as the GAN filled in) and validated, so ``hrseg train`` and
    ``train(build_config(...))`` train the same thing.
    """
    if preset is not None and config_file is not None:
        raise HrsegError("--preset and --config both give a whole configuration; use one")
    if preset is not None:
        if preset not in PRESETS:
            raise HrsegError(f"--preset: unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
        cfg = PRESETS[preset].config()
    elif config_file is not None:
        cfg = load_config_file(config_file)
    elif scheme is None:
        raise HrsegError("--scheme, --preset or --config is required (see hrseg train --help)")
    else:
        cfg = TrainConfig()
    cfg = override(cfg, parse_set(sets))
    changes = {k: v for k, v in (flags or {}).items() if v is not None}
    if scheme is not None:
        changes["scheme"] = scheme
    return override(cfg, changes).resolved().validate()


@dataclass(frozen=True)
class Preset:
    """A named row of Table 1: a description and the config changes it makes."""

    name: str
    description: str
    changes: dict[str, Any]

    def config(self) -> TrainConfig:
        return override(TrainConfig(preset=self.name), self.changes)

    @property
    def paper_miou(self) -> float | None:
        """From the scheme table (one home for the paper's numbers)."""
        return paper_miou(self.config().resolved())


# Paper-scale budget [reconstructed: the paper does not state iterations or learning rates].
_FCN = {"model.arch": "fcn8s-vgg16", "model.pretrained": "imagenet", "optim.lr": 1e-3,
        "optim.iters": 40000, "data.batch_size": 1, "data.crop": (1024, 512), "run.amp": True,
        "run.val_every": 2000}
_PSP = {"model.arch": "pspnet-r50", "model.pretrained": "imagenet", "model.aux": True, "optim.lr": 1e-2,
        "optim.iters": 40000, "data.batch_size": 2, "data.crop": (768, 384), "run.amp": True,
        "run.val_every": 2000}
# DeepLab-v2 as the domain-adaptation repositories train it (AdaptSegNet, ADVENT): one image per domain,
# 1024x512 target crops, SGD at 2.5e-4 with poly decay, batch norm frozen at ImageNet values, 120k iterations
# [reconstructed from those repositories; they also give the ASPP classifier 10x the learning rate, hrseg does not].
_DEEPLAB = {"model.arch": "deeplabv2-r101", "model.pretrained": "imagenet", "model.bn": "frozen",
            "optim.lr": 2.5e-4, "optim.iters": 120000, "data.batch_size": 1, "data.crop": (1024, 512),
            "run.amp": True, "run.val_every": 2000}

# Unlabelled target images on DeepLab-v2, GTA -> Cityscapes without target labels [reconstructed from the
# published configs]. ADVENT (valeoai/ADVENT, advent/domain_adaptation/config.py): lr 2.5e-4, one image per
# domain, target 1024x512, lambda_ent 1e-3, stopped at 120k of 250k iterations. DACS (vikolss/DACS,
# configs/configUDA.json; DAFormer's uda/dacs.py): batch 2, 512x512 random crops without rescaling or
# flipping, lr 2.5e-4, 250k iterations, EMA 0.99, threshold 0.968, ClassMix, jitter 0.2 and blur.
_UDA = {"data.target_images": 0, "data.unlabelled_target": "all"}
_ADVENT = {**_DEEPLAB, **_UDA, "unlabelled.minent_weight": 1e-3}
_DACS = {**_DEEPLAB, **_UDA, "optim.iters": 250000, "data.batch_size": 2, "data.crop": (512, 512),
         "data.scale": (1.0, 1.0), "data.flip": False, "unlabelled.teacher_momentum": 0.99,
         "unlabelled.confidence": 0.968, "unlabelled.keep_unconfident": True, "unlabelled.mix": "classmix"}

# The paper's own rows keep the paper's weighting: three levels, W's loss unbalanced (hrseg's W^19 default
# adds the agreement level and a class-balanced loss; docs/weighting-variants.md).
_PAPER_W = {"weighting.levels": LEVELS, "weighting.balance": "none"}

#: The paper-scale budget of each segmenter's presets (what a new preset or the GPU check starts from).
PRESET_BUDGETS: dict[str, dict[str, Any]] = {"fcn8s-vgg16": _FCN, "pspnet-r50": _PSP, "deeplabv2-r101": _DEEPLAB}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("baseline1-target-only", "Baseline1: FCN-VGG16, target only", {**_FCN, "scheme": "target-only"}),
        Preset("gan", "+ GAN: joint source + target with G and D",
               {**_FCN, "scheme": "joint", "gan.enabled": True}),
        Preset("gan-imageselect", "+ GAN + ImageSelect: road-rich source images",
               {**_FCN, "scheme": "image-select", "gan.enabled": True}),
        Preset("gan-w1-image", "+ GAN + W^1 (Image): weighting on RGB input",
               {**_FCN, "scheme": "w1", "gan.enabled": True, "weighting.input": "image", **_PAPER_W}),
        Preset("w1", "Ours with W^1 (FCN-VGG16, GAN)",
               {**_FCN, "scheme": "w1", "gan.enabled": True, "weighting.input": "pred", **_PAPER_W}),
        Preset("w19", "Ours with W^19 (FCN-VGG16, GAN)",
               {**_FCN, "scheme": "w19", "gan.enabled": True, "weighting.input": "pred", **_PAPER_W}),
        Preset("baseline2-target-only", "Baseline2: PSPNet-R50, target only",
               {**_PSP, "scheme": "target-only"}),
        Preset("pspnet-w1", "Ours with W^1 (PSPNet-R50, GAN)",
               {**_PSP, "scheme": "w1", "gan.enabled": True, "weighting.input": "pred", **_PAPER_W}),
        Preset("joint", "Baseline: direct joint training (FCN-VGG16, no GAN)", {**_FCN, "scheme": "joint"}),
        Preset("finetune", "Baseline: source pre-training, then target fine-tuning",
               {**_FCN, "scheme": "finetune"}),
        Preset("deeplabv2-target-only", "DeepLab-v2-R101 (the DA literature's network), target only",
               {**_DEEPLAB, "scheme": "target-only"}),
        Preset("deeplabv2-joint", "DeepLab-v2-R101: direct joint training (no GAN)",
               {**_DEEPLAB, "scheme": "joint"}),
        Preset("deeplabv2-w19", "Ours with W^19 on DeepLab-v2-R101 (GAN)",
               {**_DEEPLAB, "scheme": "w19", "gan.enabled": True}),
        Preset("deeplabv2-source-only", "DeepLab-v2-R101 on source only (the UDA lower bound)",
               {**_DEEPLAB, **_UDA, "scheme": "source-only"}),
        Preset("deeplabv2-advent-minent", "DeepLab-v2-R101, MinEnt on unlabelled Cityscapes (ADVENT's settings)",
               {**_ADVENT, "scheme": "minent"}),
        Preset("deeplabv2-dacs", "DeepLab-v2-R101, mean-teacher self-training with ClassMix (DACS's settings)",
               {**_DACS, "scheme": "self-training"}),
        Preset("deeplabv2-w19-dacs", "DeepLab-v2-R101, W^19 on the source + DACS self-training (no target labels)",
               {**_DACS, "scheme": "w19+self-training"}),
    )
}

#: Small budget for the procedural-scene quick-start and the variant study (see docs/weighting-variants.md).
QUICK_BUDGET: dict[str, Any] = {
    "model.arch": "fcn8s-vgg16", "model.width": 0.125, "model.pretrained": "none",
    "optim.iters": 500, "optim.lr": 0.01, "data.batch_size": 4, "data.crop": (128, 64),
    "data.target_images": 16, "weighting.width": 0.125, "gan.width": 0.125, "gan.enabled": False,
    "run.checkpoint_every": 1000, "run.threads": 1, "run.val_every": 0,
}


def quick_config(scheme: str, data: str, out: str, seed: int = 0, **changes: Any) -> TrainConfig:
    """The recommended small-budget config for ``scheme`` on procedural scenes (CPU friendly)."""
    base = override(TrainConfig(scheme=scheme), QUICK_BUDGET)
    return override(base, {"data.data": data, "run.out": out, "run.seed": seed, **changes})

