"""Run a trained run on a few images and draw its weights or predictions into a gallery.

The images are spread evenly over the split (not just its first files) so a
gallery shows the variety of scenes; which ones is fixed by the split alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from hrseg.atomic import ensure_dir
from hrseg.visualization.gallery import check_gallery_folder
from hrseg.console import progress, rate
from hrseg.data.augment import normalize
from hrseg.data.dataset import ShardDataset, open_split
from hrseg.data.labels import IGNORE_INDEX, NUM_CLASSES
from hrseg.data.png import write_png
from hrseg.errors import HrsegError
from hrseg.evaluation.evaluate import resolve_split
from hrseg.evaluation.metrics import per_class_iou, roc_auc
from hrseg.evaluation.predictions import relative_stem
from hrseg.evaluation.weighting import weight_maps
from hrseg.models import logits_of
from hrseg.device import resolve_device
from hrseg.training.rundir import LoadedRun, RunDir
from hrseg.visualization.gallery import GalleryItem, Metric, write_gallery
from hrseg.visualization.panels import class_weight_panel, prediction_panel, weight_panel


@dataclass
class VisualizeOptions:
    """Which images of which split, and where the gallery goes."""

    out: str
    num: int = 8
    split: str = "source"  # weights: "source"; predictions: a target split such as "val"
    checkpoint: str | None = None
    data: str | None = None
    device: str = "auto"
    batch_size: int | None = None  # None: the run's training batch (batch-normalised weights depend on it)
    show_progress: bool = True
    overwrite: bool = False  # replace files in ``out`` that hrseg did not write

    def validate(self) -> "VisualizeOptions":
        if self.num < 1:
            raise HrsegError(f"--num: must be >= 1, got {self.num}")
        if self.batch_size is not None and self.batch_size < 1:
            raise HrsegError(f"--batch-size: must be >= 1, got {self.batch_size}")
        return self


@dataclass
class Gallery:
    """What a visualisation wrote: the index, the panels and each panel's numbers (also in gallery.json)."""

    index: Path
    panels: list[Path] = field(default_factory=list)
    items: list[GalleryItem] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"index": str(self.index), "panels": [str(p) for p in self.panels],
                "items": [it.to_dict() for it in self.items]}


WEIGHT_METRICS = (
    Metric("auc", "AUC realistic vs deviating", True),
    Metric("weight_realistic", "mean weight realistic"),
    Metric("weight_deviating", "mean weight deviating", False),
    Metric("weight_mean", "mean weight"),
)
PREDICTION_METRICS = (
    Metric("miou", "image mIoU", True),
    Metric("pixel_accuracy", "pixel accuracy", True),
)


def weight_numbers(weight: np.ndarray, label: np.ndarray, realism: np.ndarray | None) -> dict[str, float | None]:
    """One image's mean weight (labelled pixels), and, with a realism mask, per group and the AUC."""
    valid = label != IGNORE_INDEX
    w = np.asarray(weight, np.float64)
    out: dict[str, float | None] = {"weight_mean": float(w[valid].mean()) if valid.any() else None,
                                    "auc": None, "weight_realistic": None, "weight_deviating": None}
    if realism is not None:
        real, dev = valid & (realism == 1), valid & (realism == 0)
        out["weight_realistic"] = float(w[real].mean()) if real.any() else None
        out["weight_deviating"] = float(w[dev].mean()) if dev.any() else None
        if real.any() and dev.any():
            out["auc"] = roc_auc(w[real | dev], real[real | dev])
    return out


def prediction_numbers(gt: np.ndarray, pred: np.ndarray) -> dict[str, float | None]:
    """One image's pixel accuracy and mIoU over the classes in its ground truth or prediction (labelled pixels)."""
    valid = gt != IGNORE_INDEX
    if not valid.any():
        return {"miou": None, "pixel_accuracy": None}
    g, p = gt[valid].astype(np.int64), np.minimum(pred[valid].astype(np.int64), NUM_CLASSES)
    matrix = np.bincount(g * (NUM_CLASSES + 1) + p, minlength=NUM_CLASSES * (NUM_CLASSES + 1))
    iou = per_class_iou(matrix.reshape(NUM_CLASSES, NUM_CLASSES + 1))
    return {"miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else None,
            "pixel_accuracy": float((g == p).mean())}


def panel_names(names: list[str]) -> list[str]:
    """PNG file names for image names: the image's own name (``frankfurt_000000_000019.png``), its folders
    joined in only where two images would otherwise share a name."""
    stems = [relative_stem(n) for n in names]
    counts: dict[str, int] = {}
    for s in stems:
        counts[s.name] = counts.get(s.name, 0) + 1
    return [f"{s.name if counts[s.name] == 1 else s.as_posix().replace('/', '_')}.png" for s in stems]


def spread_indices(total: int, num: int) -> list[int]:
    """``num`` indices spread evenly over ``range(total)``, first and last included."""
    if num >= total:
        return list(range(total))
    return sorted({int(round(x)) for x in np.linspace(0, total - 1, num)})


def _image_rgb(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).cpu().numpy().astype(np.uint8)


def _stack(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    width = max(top.shape[1], bottom.shape[1])

    def pad(a: np.ndarray) -> np.ndarray:
        return np.pad(a, ((0, 0), (0, width - a.shape[1]), (0, 0)), constant_values=24)

    return np.concatenate([pad(top), pad(bottom)], axis=0)


def _open(run_dir: Path, opts: VisualizeOptions,
          fields: tuple[str, ...]) -> tuple[LoadedRun, ShardDataset, torch.device]:
    device = resolve_device(opts.device)
    loaded = RunDir(run_dir).load_for_inference(opts.checkpoint, device=str(device))
    cfg = loaded.config
    dataset, split = resolve_split(opts.split, cfg.data.source, cfg.data.source_split, cfg.data.target)
    probe = open_split(opts.data or cfg.data.data, dataset, split, fields=("label",))
    wanted = tuple(f for f in fields if f != "realism" or probe.manifest.has_realism)
    ds = probe.with_fields(wanted).subset(spread_indices(len(probe), opts.num))
    return loaded, ds, device


def _file_names(ds: ShardDataset) -> dict[str, str]:
    names = ds.with_fields(("name",))
    listed = [names[i]["name"] for i in range(len(names))]
    return dict(zip(listed, panel_names(listed)))


def visualize_weights(run_dir: str | Path, options: VisualizeOptions) -> Gallery:
    """One panel per source image: image, label, prediction, level scores, combined weight (+ W^19 classes).

    Each panel's numbers (mean weight overall and, where the data has a
    realism mask, on realistic and deviating pixels and the image's AUC) go
    into the gallery, which sorts and filters by them.
    """
    opts = options.validate()
    run = Path(run_dir)
    loaded, ds, device = _open(run, opts, ("image", "label", "realism", "name"))
    if loaded.weighting is None:
        raise HrsegError(f"{run}: scheme {loaded.config.scheme!r} has no weighting network to visualise; "
                         "use a w1 or w19 run (or hrseg visualize predictions)")
    out = ensure_dir(opts.out)
    files = _file_names(ds)
    check_gallery_folder(out, list(files.values()), opts.overwrite)
    per_class = getattr(loaded.weighting, "out_channels", 1) > 1
    panels: list[Path] = []
    items: list[GalleryItem] = []
    with progress(disable=not opts.show_progress) as bar:
        task = bar.add_task("weight panels", total=len(ds), rate="")
        for batch in DataLoader(ds, batch_size=opts.batch_size or loaded.config.data.batch_size, shuffle=False):
            labels = batch["label"].to(device)
            present = tuple(int(c) for c in torch.unique(labels) if int(c) != IGNORE_INDEX) if per_class else ()
            maps = weight_maps(loaded.segmenter, loaded.weighting, batch["image"].to(device), labels,
                               loaded.config.weighting.input, per_class=present)
            for b, name in enumerate(batch["name"]):
                label = batch["label"][b].numpy()
                realism = batch["realism"][b].numpy() if "realism" in batch else None
                weight = maps.weight[b].float().cpu().numpy()
                panel = weight_panel(
                    _image_rgb(batch["image"][b]), label, maps.prediction[b].cpu().numpy().astype(np.uint8),
                    {k: v[b].float().cpu().numpy() for k, v in maps.levels.items()}, weight,
                    realism=realism, title=f"{name}  ({loaded.config.scheme}, iteration {loaded.iteration})",
                )
                if per_class:
                    mine = [c for c in present if (label == c).any()]
                    classes = {c: maps.class_scores[c][b].float().cpu().numpy() for c in mine}
                    if classes:
                        panel = _stack(panel, class_weight_panel(
                            classes, label, title="W^19 per-class score (geometric mean of the level sigmoids), "
                                                  "outline = pixels of that class"))
                path = out / files[name]
                write_png(path, panel)
                panels.append(path)
                items.append(GalleryItem(name, path.name, weight_numbers(weight, label, realism)))
                bar.update(task, advance=1, rate=rate(bar, task))
    index = write_gallery(out, f"weights: {run.name}", items, WEIGHT_METRICS, _summary(run, loaded, ds))
    return Gallery(index=index, panels=panels, items=items)


def visualize_predictions(run_dir: str | Path, options: VisualizeOptions) -> Gallery:
    """One panel per target image: image, ground truth, prediction and the errors; the image's mIoU in the gallery."""
    opts = options.validate()
    run = Path(run_dir)
    loaded, ds, device = _open(run, opts, ("image", "label", "name"))
    out = ensure_dir(opts.out)
    files = _file_names(ds)
    check_gallery_folder(out, list(files.values()), opts.overwrite)
    panels: list[Path] = []
    items: list[GalleryItem] = []
    with progress(disable=not opts.show_progress) as bar, torch.no_grad():
        task = bar.add_task("prediction panels", total=len(ds), rate="")
        for batch in DataLoader(ds, batch_size=opts.batch_size or 2, shuffle=False):
            logits = logits_of(loaded.segmenter(normalize(batch["image"].to(device))))
            preds = logits.argmax(1).to(torch.uint8).cpu().numpy()
            for b, name in enumerate(batch["name"]):
                gt = batch["label"][b].numpy()
                panel = prediction_panel(_image_rgb(batch["image"][b]), gt, preds[b],
                                         title=f"{name}  ({loaded.config.scheme}, iteration {loaded.iteration})")
                path = out / files[name]
                write_png(path, panel)
                panels.append(path)
                items.append(GalleryItem(name, path.name, prediction_numbers(gt, preds[b])))
                bar.update(task, advance=1, rate=rate(bar, task))
    index = write_gallery(out, f"predictions: {run.name}", items, PREDICTION_METRICS, _summary(run, loaded, ds))
    return Gallery(index=index, panels=panels, items=items)


def _summary(run: Path, loaded: LoadedRun, ds: ShardDataset) -> dict[str, str]:
    cfg = loaded.config
    return {
        "run": str(run),
        "scheme": cfg.scheme,
        "backbone": f"{cfg.model.arch} (width {cfg.model.width})",
        "checkpoint": f"{loaded.checkpoint} (iteration {loaded.iteration})",
        "split": f"{ds.manifest.dataset}/{ds.manifest.split}, {len(ds)} images shown",
    }
