"""Evaluate a trained run on a prepared split (docs/method.md, "Evaluation").

Images are fed at the prepared (training) resolution; the logits are then
upsampled bilinearly (``align_corners=False``) to each image's full label
resolution and only then reduced by argmax, so the score is the one the
official Cityscapes script gives for the same predictions. Test-time options
(sliding window, scales, flip) are the ones ``hrseg predict`` uses
(:mod:`hrseg.inference.tta`); off, they change nothing. A split without
labels (the Cityscapes test set) is not scored: its predictions become a
submission for the evaluation server.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from hrseg.data.augment import normalize
from hrseg.data.dataset import ShardDataset, open_split
from hrseg.data.labels import EVAL_CLASSES, colorize
from hrseg.data.png import write_png
from hrseg.data.shards import ShardReader
from hrseg.atomic import ensure_dir, write_json
from hrseg.console import progress, rate
from hrseg.device import resolve_amp, resolve_device
from hrseg.errors import HrsegError
from hrseg.evaluation.metrics import ConfusionMatrix
from hrseg.evaluation.predictions import PredictionWriter, iter_predictions, prediction_path, read_prediction
from hrseg.evaluation.results import EvalReport, WeightingReport
from hrseg.evaluation.weighting import weighting_quality
from hrseg.inference.submission import SubmissionWriter
from hrseg.models.common import eval_mode
from hrseg.inference.tta import InferenceOptions, predict_train_ids
from hrseg.training.rundir import RunDir

SOURCE = "source"


@dataclass
class EvalOptions:
    """What ``hrseg eval`` evaluates and where it writes."""

    split: str = "val"  # a target split ("val"), "source", or an explicit "dataset/split"
    classes: int = 19
    checkpoint: str | None = None  # None: the run's final (or last) checkpoint
    data: str | None = None  # None: the data directory recorded in the run's config
    save_predictions: str | None = None
    colour: bool = False
    device: str = "auto"
    batch_size: int | None = None  # None: 2 for segmentation; the run's training batch for weighting
    max_images: int | None = None
    threads: int = 0  # torch CPU threads; 0 keeps torch's default (1 is fastest for small models on a busy box)
    show_progress: bool = True
    tta: InferenceOptions = field(default_factory=InferenceOptions)  # test-time options; default: one plain view
    amp: bool = False  # autocast on CUDA (bf16 / fp16); off by default so scores are full precision
    model: str = "student"  # "teacher": a self-training run's mean teacher (its report gets its own file)

    def validate(self) -> "EvalOptions":
        self.tta.validate()
        if self.tta.size is not None:
            raise HrsegError("--size: evaluation feeds the prepared images at their own size; "
                             "prepare the split at another --size instead")
        if self.classes not in EVAL_CLASSES:
            raise HrsegError(f"--classes: must be one of {sorted(EVAL_CLASSES)}, got {self.classes}")
        if self.batch_size is not None and self.batch_size < 1:
            raise HrsegError(f"--batch-size: must be >= 1, got {self.batch_size}")
        if self.max_images is not None and self.max_images < 1:
            raise HrsegError(f"--max-images: must be >= 1, got {self.max_images}")
        if self.threads < 0:
            raise HrsegError(f"--threads: must be >= 0, got {self.threads}")
        return self


def resolve_split(split: str, source: str, source_split: str, target: str) -> tuple[str, str]:
    """``val`` -> (target, val); ``source`` -> (source dataset, its training split); ``a/b`` -> (a, b)."""
    if "/" in split:
        dataset, _, name = split.partition("/")
        if not dataset or not name:
            raise HrsegError(f"--split: expected 'dataset/split', got {split!r}")
        return dataset, name
    if split == SOURCE:
        return source, source_split
    return target, split


def _per_item_sizes(ds: ShardDataset, clip_to_canvas: bool) -> list[tuple[int, int]]:
    canvas: dict[int, tuple[int, int]] = {}
    per_shard: dict[int, np.ndarray] = {}
    for shard, info in enumerate(ds.manifest.shards):
        with ShardReader(ds.split_dir / info.file) as reader:
            per_shard[shard] = np.asarray(reader.read_all("orig_sizes"))  # checked row by row
            full = reader.dataset("full_labels") if reader.has("full_labels") else reader.dataset("labels")
            canvas[shard] = (int(full.shape[1]), int(full.shape[2]))
    sizes = []
    for index in ds.indices:
        shard, row = ds.locate(int(index))
        oh, ow = (int(v) for v in per_shard[shard][row])
        ch, cw = canvas[shard] if clip_to_canvas else (oh, ow)
        sizes.append((min(oh, ch), min(ow, cw)))
    return sizes


def full_label_sizes(ds: ShardDataset) -> list[tuple[int, int]]:
    """(H, W) of each item's unpadded full-resolution label, in dataset order.

    Full labels are stored padded to one canvas; the original size is what
    the logits must be upsampled to (and what a prediction PNG must measure).
    """
    return _per_item_sizes(ds, clip_to_canvas=True)


def original_sizes(ds: ShardDataset) -> list[tuple[int, int]]:
    """(H, W) of each item's original image: what a split without labels (test) is predicted at."""
    return _per_item_sizes(ds, clip_to_canvas=False)


@torch.no_grad()
def predict_full_resolution(segmenter: Callable[[torch.Tensor], Any], images: torch.Tensor,
                            sizes: list[tuple[int, int]], tta: InferenceOptions | None = None, *,
                            amp_dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """uint8 images (B,3,H,W) -> per-image trainId maps (h_i, w_i) at full label resolution."""
    return predict_train_ids(segmenter, normalize(images), tta, sizes, amp_dtype=amp_dtype)


def _limit(ds: ShardDataset, max_images: int | None) -> ShardDataset:
    if max_images is None or max_images >= len(ds):
        return ds
    return ds.subset(range(max_images))


def evaluate_segmenter(segmenter: Callable[[torch.Tensor], Any], ds: ShardDataset, *, classes: int = 19,
                       device: torch.device | str = "cpu", batch_size: int = 2,
                       writer: PredictionWriter | None = None, show_progress: bool = True,
                       tta: InferenceOptions | None = None, amp_dtype: torch.dtype | None = None) -> EvalReport:
    """Score ``segmenter`` on a split with full labels; one confusion matrix for the whole split."""
    device = torch.device(device)
    with eval_mode(segmenter):
        return _score(segmenter, ds, classes, device, batch_size, writer, show_progress, tta, amp_dtype)


def _score(segmenter: Callable[[torch.Tensor], Any], ds: ShardDataset, classes: int, device: torch.device,
           batch_size: int, writer: PredictionWriter | None, show_progress: bool,
           tta: InferenceOptions | None, amp_dtype: torch.dtype | None) -> EvalReport:
    cm = confusion_of(segmenter, ds, device, batch_size, writer, show_progress, tta, amp_dtype)
    return EvalReport.from_confusion(
        cm, dataset=ds.manifest.dataset, split=ds.manifest.split, classes=classes, num_images=len(ds),
        predictions=str(writer.label_ids_dir) if writer is not None else None,
    )


def confusion_of(segmenter: Callable[[torch.Tensor], Any], ds: ShardDataset, device: torch.device,
                 batch_size: int = 2, writer: PredictionWriter | None = None, show_progress: bool = False,
                 tta: InferenceOptions | None = None, amp_dtype: torch.dtype | None = None,
                 sizes: list[tuple[int, int]] | None = None) -> ConfusionMatrix:
    """The confusion matrix of ``segmenter`` (in eval mode) over ``ds``: what every score is computed from.

    Validation while training sums these over the ranks' shards of the split.
    """
    sizes = full_label_sizes(ds) if sizes is None else sizes
    cm = ConfusionMatrix()
    loader = DataLoader(ds.with_fields(("image", "full_label", "name")), batch_size=batch_size, shuffle=False)
    done = 0
    with progress(disable=not show_progress) as bar:
        task = bar.add_task(f"eval {ds.manifest.dataset}/{ds.manifest.split}", total=len(ds), rate="")
        for batch in loader:
            n = batch["image"].shape[0]
            batch_sizes = sizes[done : done + n]
            preds = predict_full_resolution(segmenter, batch["image"].to(device), batch_sizes, tta,
                                            amp_dtype=amp_dtype)
            for pred, full, name, (h, w) in zip(preds, batch["full_label"], batch["name"], batch_sizes):
                cm.update(pred, full[:h, :w].to(pred.device))  # counted where the prediction is (GPU or CPU)
                if writer is not None:
                    writer.write(name, pred.cpu().numpy())
            done += n
            bar.update(task, advance=n, rate=rate(bar, task))
    return cm


@dataclass
class SubmissionReport:
    """Predictions for a split without labels (the Cityscapes test set): what was written for the server."""

    dataset: str
    split: str
    num_images: int
    predictions: str  # the labelIds tree
    zip: str | None
    colour: str | None = None
    run: str | None = None
    checkpoint: str | None = None
    iteration: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "submission", "run": self.run, "checkpoint": self.checkpoint, "iteration": self.iteration,
                "dataset": self.dataset,
                "split": self.split, "num_images": self.num_images, "predictions": self.predictions,
                "zip": self.zip, "colour": self.colour}


def predict_submission(segmenter: Callable[[torch.Tensor], Any], ds: ShardDataset, out_dir: str | Path, *,
                       device: torch.device | str = "cpu", batch_size: int = 2, colour: bool = False,
                       show_progress: bool = True, tta: InferenceOptions | None = None,
                       amp_dtype: torch.dtype | None = None) -> SubmissionReport:
    """labelId PNGs at each image's original size (2048x1024 for Cityscapes) named for the server, and a zip.

    No label is read: the test split's annotations are placeholders. Every
    image of ``ds`` gets exactly one prediction, or nothing is zipped.
    """
    device = torch.device(device)
    writer = SubmissionWriter(out_dir)
    sizes = original_sizes(ds)
    loader = DataLoader(ds.with_fields(("image", "name")), batch_size=batch_size, shuffle=False)
    done = 0
    with eval_mode(segmenter):
        with progress(disable=not show_progress) as bar:
            task = bar.add_task(f"predict {ds.manifest.dataset}/{ds.manifest.split}", total=len(ds), rate="")
            for batch in loader:
                n = batch["image"].shape[0]
                preds = predict_full_resolution(segmenter, batch["image"].to(device), sizes[done : done + n], tta,
                                                amp_dtype=amp_dtype)
                for pred, name in zip(preds, batch["name"]):
                    ids = pred.cpu().numpy()
                    writer.add(name, ids)
                    if colour:
                        write_png(Path(out_dir) / prediction_path(name, "colour"), colorize(ids))
                done += n
                bar.update(task, advance=n, rate=rate(bar, task))
    result = writer.finish(expected=len(ds))
    return SubmissionReport(dataset=ds.manifest.dataset, split=ds.manifest.split, num_images=result.count,
                            predictions=str(result.folder), zip=None if result.zip is None else str(result.zip),
                            colour=str(Path(out_dir) / "colour") if colour else None)


def score_folder(predictions: str | Path, data: str | Path, dataset: str = "cityscapes", split: str = "val",
                 *, classes: int = 19, ids: str = "label", show_progress: bool = True) -> EvalReport:
    """Score a folder of prediction PNGs (any tool's) against a prepared split's full labels.

    The PNGs are found by the official script's rule, so a folder that
    cityscapesScripts accepts is accepted here; every one must be at full
    label resolution, or the file is named in the error.
    """
    folder = Path(predictions)
    ds = open_split(data, dataset, split, fields=("full_label", "name"))
    sizes = full_label_sizes(ds)
    cm = ConfusionMatrix()
    name_ds = ds.with_fields(("name",))
    names = [name_ds[i]["name"] for i in range(len(ds))]
    with progress(disable=not show_progress) as bar:
        task = bar.add_task(f"score {folder.name}", total=len(ds), rate="")
        for i, (name, path) in enumerate(iter_predictions(folder, names)):
            h, w = sizes[i]
            pred = read_prediction(path, (h, w), ids=ids)
            cm.update(pred, ds[i]["full_label"][:h, :w].numpy())
            bar.update(task, advance=1, rate=rate(bar, task))
    return EvalReport.from_confusion(cm, dataset=dataset, split=split, classes=classes, num_images=len(ds),
                                     predictions=str(folder), source="folder")


def official_check(predictions: str | Path, data: str | Path, split: str, max_images: int | None) -> str:
    """The cityscapesScripts command that re-scores saved predictions, ready to paste, or why there is none.

    The official script scores every ``gtFine/val`` image of ``CITYSCAPES_DATASET``
    (the raw Cityscapes folder, not the prepared one): taken from the environment
    when set there, else the raw folder ``hrseg prepare synthetic`` writes beside
    its prepared data. Its JSON goes to ``CITYSCAPES_EXPORT_DIR`` (the predictions'
    folder), never into the dataset.
    """
    if split != "val" or max_images is not None:
        return ("official check: cityscapesScripts scores every image of gtFine/val; "
                + ("this evaluation scored the first " + str(max_images) if max_images is not None
                   else f"this evaluation scored {split!r}"))
    folder = Path(predictions).absolute()
    candidates = [os.environ.get("CITYSCAPES_DATASET", ""), str(Path(data).absolute() / "raw" / "cityscapes")]
    root = next((c for c in candidates if c and (Path(c) / "gtFine" / "val").is_dir()), None)
    env = {"CITYSCAPES_DATASET": root or "/path/to/cityscapes", "CITYSCAPES_RESULTS": str(folder),
           "CITYSCAPES_EXPORT_DIR": str(folder.parent)}
    script = "csEvalPixelLevelSemanticLabeling"
    if root and not next((Path(root) / "gtFine" / "val").glob("*/*_gtFine_instanceIds.png"), None):
        # no instance maps (procedural scenes): the script's instance-level score would stop it at the first image
        script = ("python3 -c 'import cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling as e; "
                  "e.args.evalInstLevelScore = False; e.main()'")
    command = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + script
    note = "" if root else " (set CITYSCAPES_DATASET to your Cityscapes folder, the one holding gtFine/)"
    return f"official check: {command}{note}"


Report = EvalReport | WeightingReport | SubmissionReport


def evaluate_run(run_dir: str | Path, options: EvalOptions | None = None) -> Report:
    """Evaluate a run directory: segmentation on a target split, weighting quality on ``source``,
    or, for a split without labels (Cityscapes test), a submission written to ``save_predictions``."""
    opts = _run_window(run_dir, options or EvalOptions()).validate()
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    run = RunDir(run_dir)
    device = resolve_device(opts.device)
    amp_dtype = resolve_amp(device, opts.amp)
    loaded = run.load_for_inference(opts.checkpoint, device=str(device), model=opts.model)
    cfg = loaded.config
    data = opts.data or cfg.data.data
    dataset, split = resolve_split(opts.split, cfg.data.source, cfg.data.source_split, cfg.data.target)
    batch_size = opts.batch_size or 2
    if opts.save_predictions and opts.split != SOURCE:
        ensure_dir(opts.save_predictions, "--save-predictions")  # before any image is read
    report: Report
    if opts.split == SOURCE:
        if opts.save_predictions:
            raise HrsegError("--save-predictions: only for a target split (e.g. --split val), not --split source")
        if opts.tta != InferenceOptions():
            raise HrsegError("--slide, --scale and --flip: only for a target split; --split source measures "
                             "the weights training used")
        if loaded.weighting is None:
            raise HrsegError(
                f"{run}: scheme {cfg.scheme!r} has no weighting network; --split source needs a w1 or w19 run"
            )
        ds = _limit(open_split(data, dataset, split, fields=("image", "label", "realism")), opts.max_images)
        report = weighting_quality(
            loaded.segmenter, loaded.weighting, ds, weight_input=cfg.weighting.input, scheme=cfg.scheme,
            device=device, batch_size=opts.batch_size or cfg.data.batch_size, show_progress=opts.show_progress,
        )
    elif not open_split(data, dataset, split, fields=("name",)).manifest.has_full_labels:
        if not opts.save_predictions:
            raise HrsegError(f"--split {opts.split}: {dataset}/{split} has no full-resolution labels to score "
                             "(a test split); give --save-predictions DIR to write a submission for the server")
        ds = _limit(open_split(data, dataset, split, fields=("image", "name")), opts.max_images)
        report = predict_submission(loaded.segmenter, ds, opts.save_predictions, device=device,
                                    batch_size=batch_size, colour=opts.colour, show_progress=opts.show_progress,
                                    tta=opts.tta, amp_dtype=amp_dtype)
    else:
        ds = _limit(open_split(data, dataset, split, fields=("image", "full_label", "name")), opts.max_images)
        writer = PredictionWriter(Path(opts.save_predictions), colour=opts.colour) if opts.save_predictions else None
        report = evaluate_segmenter(loaded.segmenter, ds, classes=opts.classes, device=device,
                                    batch_size=batch_size, writer=writer, show_progress=opts.show_progress,
                                    tta=opts.tta, amp_dtype=amp_dtype)
    report.run = str(run)
    report.checkpoint = str(loaded.checkpoint)
    report.iteration = loaded.iteration  # what was scored, so a report can tell an evaluation of a running run
    return report


def report_dict(report: Report, options: EvalOptions) -> dict[str, Any]:
    """The JSON of a report; segmentation and submissions also record the test-time options used."""
    out = report.to_dict()
    if options.model != "student":
        out["model"] = options.model
    if not isinstance(report, WeightingReport):
        out["inference"] = options.tta.to_dict()
    return out


def default_json_path(run_dir: str | Path, options: EvalOptions) -> Path:
    """Where an evaluation of a run is kept: ``RUN/eval/<split>.json``, or a partial name with --max-images.

    A partial evaluation never takes the full one's name, so reports never average it with full ones.
    """
    path = RunDir(run_dir).eval_path(options.split, options.max_images)
    return path if options.model == "student" else path.with_name(f"{path.stem}-{options.model}.json")


def _run_window(run_dir: str | Path, opts: EvalOptions) -> EvalOptions:
    """``--slide`` without a window slides the run's training crop."""
    if not (opts.tta.slide and opts.tta.window is None):
        return opts
    return replace(opts, tta=opts.tta.with_default_window(RunDir(run_dir).config().data.crop))


def evaluate_and_save(run_dir: str | Path, options: EvalOptions | None = None,
                      json_path: str | Path | None = None) -> tuple[Report, Path]:
    """``evaluate_run``, then the report written (atomically) where reports look for it, or to ``json_path``."""
    opts = _run_window(run_dir, options or EvalOptions())
    report = evaluate_run(run_dir, opts)
    path = Path(json_path) if json_path is not None else default_json_path(run_dir, opts)
    write_json(path, report_dict(report, opts))
    return report, path
