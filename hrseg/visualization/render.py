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
from hrseg.console import progress, rate
from hrseg.data.augment import normalize
from hrseg.data.dataset import ShardDataset, open_split
from hrseg.data.labels import IGNORE_INDEX
from hrseg.data.png import write_png
from hrseg.errors import HrsegError
from hrseg.evaluation.evaluate import resolve_split
from hrseg.evaluation.predictions import relative_stem
from hrseg.evaluation.weighting import weight_maps
from hrseg.models import logits_of
from hrseg.device import resolve_device
from hrseg.training.rundir import LoadedRun, RunDir
from hrseg.visualization.html import GalleryItem, write_index
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

    def validate(self) -> "VisualizeOptions":
        if self.num < 1:
            raise HrsegError(f"--num: must be >= 1, got {self.num}")
        if self.batch_size is not None and self.batch_size < 1:
            raise HrsegError(f"--batch-size: must be >= 1, got {self.batch_size}")
        return self


@dataclass
class Gallery:
    """What a visualisation wrote."""

    index: Path
    panels: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"index": str(self.index), "panels": [str(p) for p in self.panels]}


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


def visualize_weights(run_dir: str | Path, options: VisualizeOptions) -> Gallery:
    """One panel per source image: image, label, prediction, level scores, combined weight (+ W^19 classes)."""
    opts = options.validate()
    run = Path(run_dir)
    loaded, ds, device = _open(run, opts, ("image", "label", "realism", "name"))
    if loaded.weighting is None:
        raise HrsegError(f"{run}: scheme {loaded.config.scheme!r} has no weighting network to visualise; "
                         "use a w1 or w19 run (or hrseg visualize predictions)")
    out = ensure_dir(opts.out)
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
                panel = weight_panel(
                    _image_rgb(batch["image"][b]), label, maps.prediction[b].cpu().numpy().astype(np.uint8),
                    {k: v[b].cpu().numpy() for k, v in maps.levels.items()}, maps.weight[b].cpu().numpy(),
                    realism=realism, title=f"{name}  ({loaded.config.scheme}, iteration {loaded.iteration})",
                )
                if per_class:
                    mine = [c for c in present if (label == c).any()]
                    classes = {c: maps.class_scores[c][b].cpu().numpy() for c in mine}
                    if classes:
                        panel = _stack(panel, class_weight_panel(
                            classes, label, title="W^19 per-class score (geometric mean of the level sigmoids), "
                                                  "outline = pixels of that class"))
                path = out / f"{relative_stem(name).as_posix().replace('/', '_')}.png"
                write_png(path, panel)
                panels.append(path)
                items.append(GalleryItem(caption=name, images=(path.name,)))
                bar.update(task, advance=1, rate=rate(bar, task))
    summary = _summary(run, loaded, ds)
    index = write_index(out / "index.html", f"weights: {run.name}", items, summary)
    return Gallery(index=index, panels=panels)


def visualize_predictions(run_dir: str | Path, options: VisualizeOptions) -> Gallery:
    """One panel per target image: image, ground truth, prediction and the errors."""
    opts = options.validate()
    run = Path(run_dir)
    loaded, ds, device = _open(run, opts, ("image", "label", "name"))
    out = ensure_dir(opts.out)
    panels: list[Path] = []
    items: list[GalleryItem] = []
    with progress(disable=not opts.show_progress) as bar, torch.no_grad():
        task = bar.add_task("prediction panels", total=len(ds), rate="")
        for batch in DataLoader(ds, batch_size=opts.batch_size or 2, shuffle=False):
            logits = logits_of(loaded.segmenter(normalize(batch["image"].to(device))))
            preds = logits.argmax(1).to(torch.uint8).cpu().numpy()
            for b, name in enumerate(batch["name"]):
                panel = prediction_panel(_image_rgb(batch["image"][b]), batch["label"][b].numpy(), preds[b],
                                         title=f"{name}  ({loaded.config.scheme}, iteration {loaded.iteration})")
                path = out / f"{relative_stem(name).as_posix().replace('/', '_')}.png"
                write_png(path, panel)
                panels.append(path)
                items.append(GalleryItem(caption=name, images=(path.name,)))
                bar.update(task, advance=1, rate=rate(bar, task))
    index = write_index(out / "index.html", f"predictions: {run.name}", items, _summary(run, loaded, ds))
    return Gallery(index=index, panels=panels)


def _summary(run: Path, loaded: LoadedRun, ds: ShardDataset) -> dict[str, str]:
    cfg = loaded.config
    return {
        "run": str(run),
        "scheme": cfg.scheme,
        "backbone": f"{cfg.model.arch} (width {cfg.model.width})",
        "checkpoint": f"{loaded.checkpoint} (iteration {loaded.iteration})",
        "split": f"{ds.manifest.dataset}/{ds.manifest.split}, {len(ds)} images shown",
    }
