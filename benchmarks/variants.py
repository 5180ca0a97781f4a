"""The selection study (docs/weighting-variants.md) on the bundled procedural scenes.

Trains every variant with the same small model and budget (``quick_config``),
scores val mIoU and, where a weighting network exists, its weighting quality on
the source split (mean weight on realistic / deviating pixels, ROC AUC against
the realism mask, combined, per level and within each class). Results go to a
JSONL file, one line per (variant, seed), stamped with the scene generator and
a hash of the source split; re-running skips what is already there, so the
study can be stopped and resumed.

The table pairs every variant with joint, target-only and the oracle on the
same seed and reports the capture ratio (W - joint) / (oracle - joint): the
share of what perfect selection gains that the variant gets.

    hrseg prepare synthetic --out /tmp/study/data
    python benchmarks/variants.py --data /tmp/study/data --work /tmp/study/runs \
        --out benchmarks/variants-results.jsonl --seeds 0 1 2 3 4 --jobs 2 \
        --variants target-only joint oracle w19
    python benchmarks/variants.py --table benchmarks/variants-results.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import statistics
import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

import torch

from hrseg.evaluation.evaluate import EvalOptions, evaluate_run
from hrseg.training.presets import QUICK_BUDGET, quick_config
from hrseg.training.rundir import RunDir
from hrseg.training.schemes import SCHEMES
from hrseg.training.trainer import train

# Every weighting row spells its settings out in full, so a row keeps its meaning when defaults change.
# settings added in round two (docs/weighting-variants.md, "Round two"): off in every earlier row
ROUND2 = {"weighting.balance": "none", "weighting.levels": ("pixel", "region", "image"),
          "weighting.image_norm": "instance"}
_BASE = {"weighting.input": "pred", "weighting.combine": "product", "weighting.normalize": "batch",
         "weighting.clamp": None, "weighting.sharpen": 1.0, "weighting.steepness": 3.0, "weighting.smoothing": 0.0,
         "weighting.warmup": 0, "weighting.ramp": 0, "weighting.heldout_images": 0, "weighting.lr": 1e-4,
         "weighting.width": 0.125, **ROUND2}
# round one's default (0.2.0); round two's default (0.3.0) adds the agreement level and the class balance
DEFAULT19 = {**_BASE, "weighting.network": "w19", "weighting.input": "image", "weighting.combine": "softthreshold",
             "weighting.steepness": 2.0}
AGREE = {"weighting.levels": ("pixel", "region", "image", "agreement"), "weighting.agreement_lr": 1e-3}
W19 = {**_BASE, "weighting.network": "w19"}
W1 = {**_BASE, "weighting.network": "w1"}
SOFT = {"weighting.combine": "softthreshold"}
IMAGE = {"weighting.input": "image"}
LR3 = {"weighting.lr": 1e-3}

# name -> (scheme, config changes)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "target-only": ("target-only", {}),
    "joint": ("joint", {}),
    "oracle": ("oracle", {}),
    "oracle-normalised": ("oracle-normalised", {}),  # diagnostic: the mask divided by its batch mean
    "w19": ("w19", W19),
    "w1": ("w1", W1),
    "w19-literal": ("w19", {**W19, "weighting.network": "w19-literal"}),
    "w19-mean": ("w19", {**W19, "weighting.combine": "mean"}),
    "w19-ratio-c3": ("w19", {**W19, "weighting.combine": "ratio", "weighting.clamp": 3.0}),
    "w19-soft3": ("w19", {**W19, **SOFT}),
    "w19-soft1": ("w19", {**W19, **SOFT, "weighting.steepness": 1.0}),
    "w19-soft3-c3": ("w19", {**W19, **SOFT, "weighting.clamp": 3.0}),
    "w19-heldout16": ("w19", {**W19, "weighting.heldout_images": 16}),
    "w19-smooth0.1": ("w19", {**W19, "weighting.smoothing": 0.1}),
    "w19-warmup250": ("w19", {**W19, "weighting.warmup": 250}),
    "w19-ramp400": ("w19", {**W19, "weighting.ramp": 400}),
    "w19-lr1e-3": ("w19", {**W19, **LR3}),
    "w19-lr3e-3": ("w19", {**W19, "weighting.lr": 3e-3}),
    "w19-lr1e-2": ("w19", {**W19, "weighting.lr": 1e-2}),
    "w19-lr1e-5": ("w19", {**W19, "weighting.lr": 1e-5}),
    "w19-width0.5": ("w19", {**W19, "weighting.width": 0.5}),
    "w19-soft3-lr1e-3": ("w19", {**W19, **SOFT, **LR3}),
    "w19-heldout16-lr1e-3": ("w19", {**W19, **LR3, "weighting.heldout_images": 16}),
    "w19-smooth0.1-lr1e-3": ("w19", {**W19, **LR3, "weighting.smoothing": 0.1}),
    "w19-ramp400-lr1e-3": ("w19", {**W19, **LR3, "weighting.ramp": 400}),
    "w19-soft3-ramp400-lr1e-3": ("w19", {**W19, **SOFT, **LR3, "weighting.ramp": 400}),
    "w19-image": ("w19", {**W19, **IMAGE}),
    "w19-image-lr1e-3": ("w19", {**W19, **IMAGE, **LR3}),
    "w19-image-soft3-lr1e-3": ("w19", {**W19, **IMAGE, **SOFT, **LR3}),
    "w19-image-soft3": ("w19", {**W19, **IMAGE, **SOFT}),
    "w19-image-soft3-none": ("w19", {**W19, **IMAGE, **SOFT, "weighting.normalize": "none"}),
    "w19-image-soft3-pr": ("w19", {**W19, **IMAGE, **SOFT, "weighting.levels": ("pixel", "region")}),
    "w19-image-soft2": ("w19", {**W19, **IMAGE, **SOFT, "weighting.steepness": 2.0}),
    "w19-image-softsum3": ("w19", {**W19, **IMAGE, "weighting.combine": "softthreshold-sum"}),
    "w19-image-softsum2": ("w19", {**W19, **IMAGE, "weighting.combine": "softthreshold-sum",
                                   "weighting.steepness": 2.0}),
    "w19-predimage-softsum3": ("w19", {**W19, "weighting.input": "pred+image",
                                       "weighting.combine": "softthreshold-sum"}),
    "w19-image-soft5": ("w19", {**W19, **IMAGE, **SOFT, "weighting.steepness": 5.0}),
    "w19-image-lr3e-4": ("w19", {**W19, **IMAGE, "weighting.lr": 3e-4}),
    "w19-image-sharpen2": ("w19", {**W19, **IMAGE, "weighting.sharpen": 2.0}),
    "w19-image-width0.5": ("w19", {**W19, **IMAGE, "weighting.width": 0.5}),
    "w19-image-heldout16": ("w19", {**W19, **IMAGE, "weighting.heldout_images": 16}),
    "w19-image-smooth0.1": ("w19", {**W19, **IMAGE, "weighting.smoothing": 0.1}),
    "w19-image-lr3e-5": ("w19", {**W19, **IMAGE, "weighting.lr": 3e-5}),
    "w19-predimage": ("w19", {**W19, "weighting.input": "pred+image"}),
    "w19-predimage-soft3": ("w19", {**W19, "weighting.input": "pred+image", **SOFT}),
    "w19-image-soft3+gan": ("w19", {**W19, **IMAGE, **SOFT, "gan.enabled": True}),
    "w19-image-soft2+gan": ("w19", {**W19, **IMAGE, **SOFT, "weighting.steepness": 2.0, "gan.enabled": True}),
    "w19-image-soft2-width0.5": ("w19", {**W19, **IMAGE, **SOFT, "weighting.steepness": 2.0, "weighting.width": 0.5}),
    "w19-image+gan": ("w19", {**W19, **IMAGE, "gan.enabled": True}),
    "w19-lr1e-3+gan": ("w19", {**W19, **LR3, "gan.enabled": True}),
    "w19+gan": ("w19", {**W19, "gan.enabled": True}),
    "joint+gan": ("joint", {"gan.enabled": True}),
    # round two: attacks on the ranking, each against the round-one default (w19-image-soft2)
    "w19-image-soft2-balanced": ("w19", {**DEFAULT19, "weighting.balance": "class"}),
    "w19-image-soft2+agree": ("w19", {**DEFAULT19, **AGREE}),
    "w19-image-soft2+agree-balanced": ("w19", {**DEFAULT19, **AGREE, "weighting.balance": "class"}),
    # round two, where the paper's setting differs (issue 21 item 3): the GAN on, W on predictions, 100 labels
    "w19-image-soft2+agree-balanced+gan": ("w19", {**DEFAULT19, **AGREE, "weighting.balance": "class",
                                                   "gan.enabled": True}),
    # on predictions the 0.3.0 default leaves the agreement level out (it reads the image): three levels, balanced
    "w19-pred-soft2-balanced": ("w19", {**DEFAULT19, "weighting.balance": "class", "weighting.input": "pred"}),
    # round three: the image level without InstanceNorm, on the 0.3.0 default
    "w19-image-soft2+agree-balanced-imgnone": ("w19", {**DEFAULT19, **AGREE, "weighting.balance": "class",
                                                       "weighting.image_norm": "none"}),
    "w19-image-soft2+agree-sqrt": ("w19", {**DEFAULT19, **AGREE, "weighting.balance": "sqrt"}),
    "target-only-100": ("target-only", {"data.target_images": 100}),
    "joint-100": ("joint", {"data.target_images": 100}),
    "oracle-100": ("oracle", {"data.target_images": 100}),
    "w19-image-soft2-100": ("w19", {**DEFAULT19, "data.target_images": 100}),
    "w19-image-soft2+agree-balanced-100": ("w19", {**DEFAULT19, **AGREE, "weighting.balance": "class",
                                                   "data.target_images": 100}),
    "w19-image-agree-only": ("w19", {**DEFAULT19, **AGREE, "weighting.levels": ("agreement",)}),
    "w1-lr1e-3": ("w1", {**W1, **LR3}),
    "w1-soft3-lr1e-3": ("w1", {**W1, **SOFT, **LR3}),
    "w1-image-lr1e-3": ("w1", {**W1, **IMAGE, **LR3}),
    "w1-image": ("w1", {**W1, **IMAGE}),
    "w1-image-soft3": ("w1", {**W1, **IMAGE, **SOFT}),
    "w1-image-soft2": ("w1", {**W1, **IMAGE, **SOFT, "weighting.steepness": 2.0}),
}


def scenes_of(data: Path) -> dict[str, Any]:
    """Which scenes a row was measured on: the generator stamp and hashes of the source shards.

    ``source_sha`` hashes the shard files, which also record where and when
    their inputs were prepared (paths, modification times), so two
    preparations of the same scenes differ; ``content_sha`` hashes only the
    stored per-row checksums of the images, labels and realism masks, equal
    for equal scenes wherever they were prepared.
    """
    import h5py

    stamp_path = data / "raw" / "synthetic.json"
    stamp = json.loads(stamp_path.read_text()) if stamp_path.is_file() else {}
    split = data / "gtav" / "train"
    manifest = json.loads((split / "manifest.json").read_text())
    digest = hashlib.sha256(json.dumps([s["sha256"] for s in manifest["shards"]]).encode()).hexdigest()[:12]
    content = hashlib.sha256()
    for shard in manifest["shards"]:
        with h5py.File(split / shard["file"], "r") as f:
            content.update(f["checksums"][()].tobytes())
    return {"generator": stamp.get("generator", "unstamped"), "source_sha": digest,
            "content_sha": content.hexdigest()[:12]}


def same_scenes(row: dict[str, Any], scenes: dict[str, Any]) -> bool:
    """A results row measured on ``scenes``: equal content where both rows know it, else equal shard files."""
    stamped = row.get("scenes", {})
    if "content_sha" in stamped:
        return stamped["content_sha"] == scenes["content_sha"]
    return stamped.get("source_sha") == scenes["source_sha"]


def within_class(q: dict[str, Any]) -> tuple[dict[int, dict[str, Any]], float]:
    """Per source class from ``hrseg eval --split source``'s report: shares, weights, AUC within the class.

    Within a class a per-class prior cannot rank anything, so this AUC is the
    ranking W^19 adds beyond "trucks look real"; the second value is its mean
    over classes weighted by pixel count. Keyed by class id, as earlier rows are.
    """
    from hrseg.data.labels import CLASS_NAMES

    out = {CLASS_NAMES.index(name): {"share": v["share"], "realistic_share": v["realistic_share"],
                                     "w_realistic": _nan(v["mean_weight_realistic"]),
                                     "w_deviating": _nan(v["mean_weight_deviating"]), "auc": _nan(v["auc"]),
                                     "levels": {k: _nan(a) for k, a in v["levels"].items()}}
           for name, v in q["per_class"].items()}
    return out, _nan(q["within_class_auc"])


def _nan(x: float | None) -> float:
    return math.nan if x is None else float(x)


def run_one(name: str, seed: int, data: str, work: str, iters: int | None) -> dict[str, Any]:
    """Train one (variant, seed), score val mIoU and the weights; the run's checkpoints are dropped after."""
    torch.set_num_threads(1)  # runs share few cores: one thread each is fastest (OpenMP oversubscription crawls)
    scheme, changes = VARIANTS[name]
    run = Path(work) / f"{name}-s{seed}"
    shutil.rmtree(run, ignore_errors=True)
    budget = {} if iters is None else {"optim.iters": iters}
    cfg = quick_config(scheme, data, str(run), seed=seed,
                       **{"gan.enabled": False, **budget, **changes, "run.progress": False, "run.device": "cpu",
                          "run.threads": 1})
    t0 = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - t0
    records = list(RunDir(run).metrics())
    tail = records[-max(1, len(records) // 4):]  # last quarter: the weights the model finished with

    def tail_mean(key: str) -> float | None:
        vals = [r[key] for r in tail if key in r and not math.isnan(r[key])]
        return statistics.fmean(vals) if vals else None

    t1 = time.perf_counter()
    val = evaluate_run(run, EvalOptions(split="val", device="cpu", show_progress=False, batch_size=8, threads=1))
    row: dict[str, Any] = {
        "variant": name, "scheme": scheme, "seed": seed, "changes": changes, "budget": budget,
        "scenes": scenes_of(Path(data)), "train_seconds": round(train_s, 1),
        "iters_per_s": round(result.iters_per_s, 2), "val_miou": val.miou, "val_iou": val.iou,
        "train_weight_realistic": tail_mean("weight_realistic"),
        "train_weight_deviating": tail_mean("weight_deviating"),
        "train_weight_mean": tail_mean("weight_mean"),
        "train_target_loss": tail_mean("target"), "train_source_loss": tail_mean("source"),
    }
    if SCHEMES[scheme].weighting is not None:
        quality = evaluate_run(run, EvalOptions(split="source", device="cpu", show_progress=False, threads=1,
                                                batch_size=cfg.data.batch_size, max_images=100))
        q = quality.to_dict()
        row["source_auc"] = q["auc"]
        row["source_weight_realistic"] = q["mean_weight_realistic"]
        row["source_weight_deviating"] = q["mean_weight_deviating"]
        row["source_levels"] = q["levels"]
        row["within_class_auc_levels"] = q["within_class_auc_levels"]
        per_class, row["within_class_auc"] = within_class(q)
        row["per_class"] = {str(c): v for c, v in per_class.items()}
    row["eval_seconds"] = round(time.perf_counter() - t1, 1)
    shutil.rmtree(run / "checkpoints", ignore_errors=True)  # keep config + metrics, drop the weights
    return row


def load_rows(path: Path, generator: str | None = None, source: int = 0) -> list[dict[str, Any]]:
    """Rows of one results file; ``source`` tags them so pairs are only formed within one file."""
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{**r, "_source": source} for r in rows
            if generator is None or r.get("scenes", {}).get("generator") == generator]


class ByVariant(dict):
    """variant -> seed -> row, plus each row's partners from the same results file.

    Results files from different machines differ run by run (CPU rounding
    grows over training), so a paired difference only pairs rows of one
    file. The first file's row is the one shown; a later file only adds the
    (variant, seed) pairs the earlier ones lack. Within one file a later row
    replaces an earlier one, for display and pairing alike.
    """

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        super().__init__()
        self._same_file: dict[tuple[int, str, int], dict[str, Any]] = {}
        for r in rows:
            seeds = self.setdefault(r["variant"], {})
            shown = seeds.get(r["seed"])
            if shown is None or _source(shown) == _source(r):
                seeds[r["seed"]] = r
            self._same_file[(_source(r), r["variant"], r["seed"])] = r

    def partner(self, row: dict[str, Any], variant: str) -> dict[str, Any] | None:
        return self._same_file.get((_source(row), variant, row["seed"]))


def _source(row: dict[str, Any]) -> int:
    return row.get("_source", 0)


def _mark(row: dict[str, Any]) -> str:
    """Rows from a later results file are marked * in the tables."""
    return "*" if _source(row) else ""


def _fmt(v: float | None, nd: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "—"
    if len(xs) == 1:
        return f"{xs[0]:+.1f} (1)"
    return f"{statistics.fmean(xs):+.1f} ± {statistics.stdev(xs):.1f} ({len(xs)})"


def paired(by: ByVariant, a: str, b: str) -> dict[int, float]:
    """mIoU(a) - mIoU(b) in points, per seed both ran (in the same results file)."""
    out = {}
    for s, r in by.get(a, {}).items():
        other = by.partner(r, b)
        if other is not None:
            out[s] = 100 * (r["val_miou"] - other["val_miou"])
    return out


def capture(by: ByVariant, name: str) -> float | None:
    """(W - joint) / (oracle - joint), means over the seeds where all three ran (in one file each)."""
    trios = [(r, by.partner(r, "joint"), by.partner(r, "oracle")) for r in by.get(name, {}).values()]
    trios = [(w, j, o) for w, j, o in trios if j is not None and o is not None]
    if not trios:
        return None
    gain = statistics.fmean(100 * (o["val_miou"] - j["val_miou"]) for _, j, o in trios)
    got = statistics.fmean(100 * (w["val_miou"] - j["val_miou"]) for w, j, _ in trios)
    return got / gain if gain else None


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: mIoU, paired Δ vs joint and target-only, capture ratio, AUCs and weights, per variant."""
    by = ByVariant(rows)
    lines = ["| variant | seeds | val mIoU | Δ vs joint (mean ± sd, n) | Δ vs target-only | capture ratio "
             "| AUC combined (pixel / region / image) | AUC within class | weight realistic / deviating "
             "| train s/run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in [*VARIANTS, *sorted(set(by) - set(VARIANTS))]:
        if name not in by:
            continue
        rs = [by[name][k] for k in sorted(by[name])]
        m = statistics.fmean(100 * r["val_miou"] for r in rs)
        d_joint = list(paired(by, name, "joint").values()) if name != "joint" else []
        d_target = list(paired(by, name, "target-only").values()) if name != "target-only" else []
        cap = capture(by, name)
        aucs = [r["source_auc"] for r in rs if r.get("source_auc") is not None]
        if aucs:
            lv = {k: statistics.fmean(r["source_levels"][k]["auc"] for r in rs if k in r.get("source_levels", {}))
                  for k in ("pixel", "region", "image") if any(k in r.get("source_levels", {}) for r in rs)}
            auc = f"{statistics.fmean(aucs):.2f} ({' / '.join(_fmt(lv.get(k)) for k in ('pixel', 'region', 'image'))})"
            within = _fmt(statistics.fmean(r["within_class_auc"] for r in rs if r.get("within_class_auc") is not None))
            wr = statistics.fmean(r["source_weight_realistic"] for r in rs)
            wd = statistics.fmean(r["source_weight_deviating"] for r in rs)
            weights = f"{wr:.2f} / {wd:.2f}"
        else:
            auc = "1.00 (by construction)" if name == "oracle" else "—"
            within = "—"
            weights = "1 / 0" if name == "oracle" else ("1 / 1" if SCHEMES[rs[0]["scheme"]].uses_source else "—")
        secs = statistics.fmean(r["train_seconds"] for r in rs)
        seeds = ",".join(f"{r['seed']}{_mark(r)}" for r in rs)
        lines.append(f"| {name} | {seeds} | {m:.1f} | {_mean_sd(d_joint)} | {_mean_sd(d_target)} | "
                     f"{'—' if cap is None else f'{100 * cap:.0f} %'} | {auc} | {within} | {weights} | {secs:.0f} |")
    return "\n".join(lines)


def per_seed(rows: list[dict[str, Any]], variants: list[str]) -> str:
    """Val mIoU per seed for the named variants (the raw numbers behind the paired columns)."""
    by = ByVariant(rows)
    seeds = sorted({s for v in variants for s in by.get(v, {})})
    lines = ["| variant | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    for v in variants:
        if v in by:
            cells = [f"{100 * by[v][s]['val_miou']:.1f}{_mark(by[v][s])}" if s in by[v] else "—" for s in seeds]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_table(rows: list[dict[str, Any]], variants: list[str]) -> str:
    """Per-class IoU change against joint (mean over shared seeds), for classes any run segments at all."""
    by = ByVariant(rows)
    joint = by.get("joint", {})
    classes = [c for c in next(iter(joint.values()))["val_iou"]
               if any((r["val_iou"].get(c) or 0) > 0.01 for v in by.values() for r in v.values())]
    head = "| class | joint IoU | " + " | ".join(f"Δ {v}" for v in variants) + " |"
    lines = [head, "|---" * (len(variants) + 2) + "|"]
    for c in classes:
        base = statistics.fmean(100 * (r["val_iou"][c] or 0) for r in joint.values())
        cells = []
        for v in variants:
            pairs = [(r, by.partner(r, "joint")) for r in by.get(v, {}).values()]
            ds = [100 * ((r["val_iou"][c] or 0) - (j["val_iou"][c] or 0)) for r, j in pairs if j is not None]
            cells.append(f"{statistics.fmean(ds):+.1f}" if ds else "—")
        lines.append(f"| {c} | {base:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pick_table(rows: list[dict[str, Any]], variants: list[str]) -> str:
    """What the weights pick, per source class (mean over seeds): weight on realistic / deviating, AUC within class."""
    from hrseg.evaluation.metrics import CLASS_NAMES

    by = ByVariant(rows)
    head = "| class | share | realistic share | " + " | ".join(f"{v}: w real / dev, AUC" for v in variants) + " |"
    lines = [head, "|---" * (len(variants) + 3) + "|"]
    first = next((r for v in variants for r in by.get(v, {}).values() if r.get("per_class")), None)
    if first is None:
        return ""
    for c, info in first["per_class"].items():
        cells = []
        for v in variants:
            stats = [r["per_class"][c] for r in by.get(v, {}).values() if c in r.get("per_class", {})]
            if not stats:
                cells.append("—")
                continue
            mean = {k: statistics.fmean(s[k] for s in stats if not math.isnan(s[k])) if any(
                not math.isnan(s[k]) for s in stats) else math.nan for k in ("w_realistic", "w_deviating", "auc")}
            cells.append(f"{_fmt(mean['w_realistic'])} / {_fmt(mean['w_deviating'])}, {_fmt(mean['auc'])}")
        lines.append(f"| {CLASS_NAMES[int(c)]} | {info['share']:.3f} | {info['realistic_share']:.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def level_class_table(rows: list[dict[str, Any]], variants: list[str]) -> str:
    """Within-class AUC per source class of each variant's combined weight and of each of its levels (round-two rows)."""
    from hrseg.evaluation.metrics import CLASS_NAMES

    by = ByVariant(rows)
    cols: list[tuple[str, str]] = []
    for v in variants:
        levels = sorted({lvl for r in by.get(v, {}).values() for c in r.get("per_class", {}).values()
                         for lvl in c.get("levels", {})}, key=lambda k: (k == "agreement", k))
        cols += [(v, "combined")] + [(v, lvl) for lvl in levels]
    first = next((r for v in variants for r in by.get(v, {}).values() if r.get("per_class")), None)
    if first is None:
        return ""
    lines = ["| class | share | " + " | ".join(f"{v}: {lvl}" for v, lvl in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for c, info in first["per_class"].items():
        cells = []
        for v, lvl in cols:
            vals = [(r["per_class"][c]["auc"] if lvl == "combined" else r["per_class"][c].get("levels", {}).get(lvl))
                    for r in by.get(v, {}).values() if c in r.get("per_class", {})]
            vals = [x for x in vals if x is not None and not math.isnan(x)]
            cells.append(_fmt(statistics.fmean(vals)) if vals else "—")
        lines.append(f"| {CLASS_NAMES[int(c)]} | {info['share']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/hrseg-variants"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/variants-results.jsonl"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--variants", nargs="+", default=["target-only", "joint", "oracle", "w19"], choices=list(VARIANTS))
    ap.add_argument("--iters", type=int, default=None, help="override the quick budget's iterations")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (one thread each)")
    ap.add_argument("--table", type=Path, nargs="+", default=None,
                    help="print the markdown tables of results files (pairs within a file; later files only add "
                         "(variant, seed) rows the earlier lack, marked * in the seeds)")
    ap.add_argument("--generator", default=None, help="with --table: only rows measured on these scenes")
    ap.add_argument("--classes", nargs="*", default=["oracle", "w19"], help="with --table: per-class columns")
    ap.add_argument("--only-seeds", type=int, nargs="*", default=None, help="with --table: only these seeds")
    ap.add_argument("--same-machine", action="store_true",
                    help="with --table: the files come from one machine (their shared reference rows are equal "
                         "bit for bit), so rows pair across files; a later file's row replaces an earlier one")
    args = ap.parse_args()
    if args.table is not None:
        rows = [r for i, path in enumerate(args.table)
                for r in load_rows(path, args.generator, source=0 if args.same_machine else i)
                if args.only_seeds is None or r["seed"] in args.only_seeds]
        print(table(rows))
        print()
        print(per_seed(rows, [v for v in VARIANTS if any(r["variant"] == v for r in rows)]))
        print()
        present = {r["variant"] for r in rows}
        print(class_table(rows, [v for v in ["target-only", *args.classes] if v in present]))
        print()
        weighted = [v for v in args.classes if v in present and SCHEMES[VARIANTS[v][0]].weighting]
        print(pick_table(rows, weighted))
        print()
        print(level_class_table(rows, weighted))
        return
    if args.data is None:
        raise SystemExit("--data is required to train (or give --table)")
    order = [(name, seed) for seed in args.seeds for name in args.variants]
    run_study(run_one, order, args, lambda row: (
        f"{row['variant']} seed {row['seed']}: val mIoU {100 * row['val_miou']:.1f}  "
        f"train {row['train_seconds']}s  w real/dev {_fmt(row.get('source_weight_realistic'))}/"
        f"{_fmt(row.get('source_weight_deviating'))}  auc {_fmt(row.get('source_auc'))} "
        f"within {_fmt(row.get('within_class_auc'))}"))


def run_study(run: Callable[[str, int, str, str, int | None], dict[str, Any]], order: list[tuple[str, int]],
              args: argparse.Namespace, line: Callable[[dict[str, Any]], str]) -> None:
    """Train the (name, seed) pairs of ``order`` that ``args.out`` lacks for these scenes, in a process pool.

    Each finished row is appended to ``args.out`` at once, so a stopped study keeps what it ran
    (shared by this study and benchmarks/unlabelled.py).
    """
    scenes = scenes_of(args.data)
    done = {(r["variant"], r["seed"]) for r in load_rows(args.out) if same_scenes(r, scenes)}
    todo = [(name, seed) for name, seed in order if (name, seed) not in done]
    budget = {**QUICK_BUDGET, **({"optim.iters": args.iters} if args.iters else {})}
    print(f"scenes {scenes}; budget {json.dumps(budget)}; {len(todo)} runs", flush=True)
    from hrseg.data.workers import pool_context

    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=pool_context()) as pool:
        futures: dict[Future[dict[str, Any]], tuple[str, int]] = {
            pool.submit(run, name, seed, str(args.data), str(args.work), args.iters): (name, seed)
            for name, seed in todo}
        for fut in as_completed(futures):
            row = fut.result()
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(line(row), flush=True)


if __name__ == "__main__":
    main()
