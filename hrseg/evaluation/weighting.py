"""Weighting quality: do the weighting networks give realistic source pixels more weight?

Only the procedural scenes carry a realism mask (1 realistic, 0 deviating,
255 unknown). Two numbers per weight map tell the story (docs/method.md, "Measuring the weighting"):
the mean weight on each group (is the weight collapsing, is it soft?) and the
ROC AUC of the map at separating the groups (does it rank the right areas
first?). A weighting with AUC near 0.5 selects the wrong areas; one with high
AUC but close means selects the right ones too softly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from hrseg.console import progress, rate
from hrseg.data.augment import normalize
from hrseg.data.dataset import ShardDataset
from hrseg.data.labels import CLASS_NAMES, IGNORE_INDEX
from hrseg.evaluation.metrics import AucAccumulator
from hrseg.evaluation.results import ClassQuality, LevelQuality, WeightingReport
from hrseg.models import logits_of, weighting_input
from hrseg.models.common import eval_mode

COMBINED = "combined"
AUC_PIXELS_PER_IMAGE = 50_000  # caps memory on full-size splits; the quick-start scenes stay exact
MIN_CLASS_PIXELS = 100  # fewer known pixels of a class: no per-class row (its AUC would be noise)


@dataclass
class _Group:
    """Running AUC and per-group means of one weight map over a split."""

    auc: AucAccumulator
    sum_realistic: float = 0.0
    sum_deviating: float = 0.0
    n_realistic: int = 0
    n_deviating: int = 0

    def update(self, values: torch.Tensor, realistic: torch.Tensor, deviating: torch.Tensor) -> None:
        v = values.detach().float().cpu()
        r, d = realistic.cpu(), deviating.cpu()
        self.sum_realistic += float(v[r].double().sum())
        self.sum_deviating += float(v[d].double().sum())
        self.n_realistic += int(r.sum())
        self.n_deviating += int(d.sum())
        self.auc.update(v, r, valid=r | d)

    def result(self) -> LevelQuality:
        mean_r = self.sum_realistic / self.n_realistic if self.n_realistic else math.nan
        mean_d = self.sum_deviating / self.n_deviating if self.n_deviating else math.nan
        return LevelQuality(auc=self.auc.compute(), mean_realistic=mean_r, mean_deviating=mean_d)


@dataclass
class WeightingMaps:
    """One batch's weight maps at label resolution, plus the prediction they came from."""

    prediction: torch.Tensor  # (B, H, W) trainIds
    levels: dict[str, torch.Tensor]  # sigmoid score per level, (B, H, W)
    weight: torch.Tensor  # combined, normalised, (B, H, W)
    class_scores: dict[int, torch.Tensor] = field(default_factory=dict)  # W^19 only, (B, H, W) per class


@torch.no_grad()
def weight_maps(segmenter: torch.nn.Module, weighting: torch.nn.Module, images: torch.Tensor,
                labels: torch.Tensor, weight_input: str = "pred",
                per_class: tuple[int, ...] = ()) -> WeightingMaps:
    """Run S and W on a uint8 source batch the way training does, without updating running statistics.

    The weight is HierarchicalWeighting's own output, so it is exactly what the
    source loss was weighted with (combination, normalisation, clamp, sharpening).

    ``per_class`` asks W^19 for the score every pixel would get if it were of
    that class (``HierarchicalWeighting.class_score``).
    """
    x = normalize(images)
    logits = logits_of(segmenter(x))
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = torch.nn.functional.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear",
                                                 align_corners=False)
    inp = weighting_input(logits, x, weight_input)
    wo = weighting(inp, labels, update_running=False)
    class_scores: dict[int, torch.Tensor] = {}
    if per_class and getattr(weighting, "out_channels", 1) > 1:
        size = (int(labels.shape[-2]), int(labels.shape[-1]))
        class_scores = {cls: weighting.class_score(inp, cls, size) for cls in per_class}
    return WeightingMaps(prediction=logits.argmax(1), levels=wo.scores, weight=wo.weight, class_scores=class_scores)


def weighting_quality(segmenter: torch.nn.Module, weighting: torch.nn.Module, ds: ShardDataset, *,
                      weight_input: str = "pred", scheme: str = "", device: torch.device | str = "cpu",
                      batch_size: int = 2, show_progress: bool = True, seed: int = 0) -> WeightingReport:
    """Mean weight on realistic vs deviating pixels and ROC AUC, for the combined weight and each level.

    Pixels with the ignore label or an unknown realism value are left out.
    ``batch_size`` matters when W normalises by the batch mean; evaluate_run
    passes the run's training batch size so the weights are the ones training used.
    """
    with eval_mode(segmenter, weighting):  # no batch-norm or running-mean updates while measuring
        return _measure(segmenter, weighting, ds, weight_input, scheme, torch.device(device), batch_size,
                        show_progress, seed)


def _measure(segmenter: torch.nn.Module, weighting: torch.nn.Module, ds: ShardDataset, weight_input: str,
             scheme: str, device: torch.device, batch_size: int, show_progress: bool, seed: int) -> WeightingReport:
    groups: dict[str, _Group] = {}
    per_class: dict[tuple[str, int], _Group] = {}  # (map, class) -> within-class ranking
    loader = DataLoader(ds.with_fields(("image", "label", "realism")), batch_size=batch_size, shuffle=False)
    with progress(disable=not show_progress) as bar:
        task = bar.add_task(f"weights {ds.manifest.dataset}/{ds.manifest.split}", total=len(ds), rate="")
        for batch in loader:
            labels = batch["label"].to(device)
            maps = weight_maps(segmenter, weighting, batch["image"].to(device), labels, weight_input)
            realism = batch["realism"].to(device)
            known = labels != IGNORE_INDEX
            realistic = known & (realism == 1)
            deviating = known & (realism == 0)
            present = torch.unique(labels[realistic | deviating]).tolist()
            for name, values in [(COMBINED, maps.weight), *maps.levels.items()]:
                if name not in groups:
                    groups[name] = _Group(AucAccumulator(max_per_image=AUC_PIXELS_PER_IMAGE, seed=seed))
                for b in range(values.shape[0]):
                    groups[name].update(values[b], realistic[b], deviating[b])
                for c in present:
                    key = (name, int(c))
                    if key not in per_class:
                        per_class[key] = _Group(AucAccumulator(max_per_image=AUC_PIXELS_PER_IMAGE, seed=seed))
                    of_class = labels == c
                    for b in range(values.shape[0]):
                        per_class[key].update(values[b], realistic[b] & of_class[b], deviating[b] & of_class[b])
            bar.update(task, advance=labels.shape[0], rate=rate(bar, task))
    combined = groups[COMBINED]
    return WeightingReport(
        dataset=ds.manifest.dataset, split=ds.manifest.split, scheme=scheme, num_images=len(ds),
        realistic_pixels=combined.n_realistic, deviating_pixels=combined.n_deviating,
        combined=combined.result(),
        levels={name: g.result() for name, g in groups.items() if name != COMBINED},
        per_class=_class_rows(per_class, combined.n_realistic + combined.n_deviating),
    )


def _class_rows(per_class: dict[tuple[str, int], _Group], total: int) -> dict[str, ClassQuality]:
    """One row per class with at least ``MIN_CLASS_PIXELS`` known pixels, in class order."""
    rows: dict[str, ClassQuality] = {}
    for (name, c), g in sorted(per_class.items(), key=lambda kv: kv[0][1]):
        if name != COMBINED:
            continue
        n = g.n_realistic + g.n_deviating
        if n < MIN_CLASS_PIXELS:
            continue
        r = g.result()
        levels = {lvl: per_class[(lvl, c)].auc.compute() for (lvl, cc) in per_class if cc == c and lvl != COMBINED}
        rows[CLASS_NAMES[c]] = ClassQuality(share=n / max(total, 1), realistic_share=g.n_realistic / n, auc=r.auc,
                                            mean_realistic=r.mean_realistic, mean_deviating=r.mean_deviating,
                                            level_auc=levels)
    return rows
