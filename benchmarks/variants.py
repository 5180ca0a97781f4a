"""The weighting-variant study (docs/method.md, "Measuring the weighting") on the bundled procedural scenes.

Trains every variant with the same small model and budget (``quick_config``),
scores val mIoU and, where a weighting network exists, its weighting quality on
the source split (mean weight on realistic / deviating pixels, ROC AUC against
the realism mask). Results go to a JSONL file, one line per (variant, seed);
re-running skips what is already there, so the study can be stopped and resumed.

    hrseg prepare synthetic --out /tmp/study/data
    python benchmarks/variants.py --data /tmp/study/data --work /tmp/study/runs \
        --out benchmarks/variants.jsonl --seeds 0 1
    python benchmarks/variants.py --table benchmarks/variants.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from hrseg.evaluation.evaluate import EvalOptions, evaluate_run
from hrseg.training.presets import QUICK_BUDGET, quick_config
from hrseg.training.rundir import RunDir
from hrseg.training.schemes import SCHEMES
from hrseg.training.trainer import train

# name -> (scheme, config changes)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "target-only": ("target-only", {}),
    "joint": ("joint", {}),
    "oracle": ("oracle", {}),
    "w19-ratio-batch-c3": ("w19", {"weighting.combine": "ratio", "weighting.normalize": "batch",
                                   "weighting.clamp": 3.0}),
    "w1-ratio-batch-c3": ("w1", {"weighting.combine": "ratio", "weighting.normalize": "batch",
                                 "weighting.clamp": 3.0}),
    "w19-product-none": ("w19", {"weighting.combine": "product", "weighting.normalize": "none",
                                 "weighting.clamp": None}),
    "w1-product-none": ("w1", {"weighting.combine": "product", "weighting.normalize": "none",
                               "weighting.clamp": None}),
    "w19-product-batch": ("w19", {"weighting.combine": "product", "weighting.normalize": "batch",
                                  "weighting.clamp": None}),
    "w19-mean-batch": ("w19", {"weighting.combine": "mean", "weighting.normalize": "batch",
                               "weighting.clamp": None}),
    "w19-ratio-running-c3": ("w19", {"weighting.combine": "ratio", "weighting.normalize": "running",
                                     "weighting.clamp": 3.0}),
    "w19-product-batch-c3": ("w19", {"weighting.combine": "product", "weighting.normalize": "batch",
                                     "weighting.clamp": 3.0}),
    "w1-product-batch-c3": ("w1", {"weighting.combine": "product", "weighting.normalize": "batch",
                                   "weighting.clamp": 3.0}),
    "w1-mean-batch": ("w1", {"weighting.combine": "mean", "weighting.normalize": "batch",
                             "weighting.clamp": None}),
    "w19-product-batch-sharpen2": ("w19", {"weighting.combine": "product", "weighting.normalize": "batch",
                                           "weighting.clamp": None, "weighting.sharpen": 2.0}),
    "w19-product-batch-sharpen4-c5": ("w19", {"weighting.combine": "product", "weighting.normalize": "batch",
                                              "weighting.clamp": 5.0, "weighting.sharpen": 4.0}),
    "joint+gan": ("joint", {"gan.enabled": True}),
    "w19-ratio-batch-c3+gan": ("w19", {"weighting.combine": "ratio", "weighting.normalize": "batch",
                                       "weighting.clamp": 3.0, "gan.enabled": True}),
}


def run_one(name: str, seed: int, data: Path, work: Path, budget: dict[str, Any]) -> dict[str, Any]:
    scheme, changes = VARIANTS[name]
    run = work / f"{name}-s{seed}"
    shutil.rmtree(run, ignore_errors=True)
    cfg = quick_config(scheme, str(data), str(run), seed=seed,
                       **{"gan.enabled": False, **budget, **changes, "run.progress": False, "run.device": "cpu"})
    t0 = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - t0
    records = list(RunDir(run).metrics())
    tail = records[-max(1, len(records) // 4):]  # last quarter: the weights the model finished with

    def tail_mean(key: str) -> float | None:
        vals = [r[key] for r in tail if key in r and not math.isnan(r[key])]
        return statistics.fmean(vals) if vals else None

    t1 = time.perf_counter()
    val = evaluate_run(run, EvalOptions(split="val", device="cpu", show_progress=False, batch_size=8))
    row: dict[str, Any] = {
        "variant": name, "scheme": scheme, "seed": seed, "changes": changes, "budget": budget,
        "train_seconds": round(train_s, 1), "iters_per_s": round(result.iters_per_s, 2),
        "val_miou": val.miou, "val_iou": val.iou,
        "train_weight_realistic": tail_mean("weight_realistic"),
        "train_weight_deviating": tail_mean("weight_deviating"),
        "train_weight_mean": tail_mean("weight_mean"),
        "train_target_loss": tail_mean("target"), "train_source_loss": tail_mean("source"),
    }
    if SCHEMES[scheme].weighting is not None:
        quality = evaluate_run(run, EvalOptions(split="source", device="cpu", show_progress=False,
                                                batch_size=cfg.data.batch_size, max_images=100))
        q = quality.to_dict()
        row["source_auc"] = q["auc"]
        row["source_weight_realistic"] = q["mean_weight_realistic"]
        row["source_weight_deviating"] = q["mean_weight_deviating"]
        row["source_levels"] = q["levels"]
    row["eval_seconds"] = round(time.perf_counter() - t1, 1)
    shutil.rmtree(run / "checkpoints", ignore_errors=True)  # keep config + metrics, drop the weights
    return row


def load_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _by_variant(rows: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["variant"], {})[r["seed"]] = r
    return by


def _fmt(v: float | None, nd: int = 2) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{nd}f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: val mIoU per seed, the paired difference to joint (same seed), weights and AUC."""
    by = _by_variant(rows)
    joint = by.get("joint", {})
    lines = ["| variant | val mIoU mean | per seed | Δ vs joint, paired (mean ± sd, n) "
             "| weight realistic / deviating (train) | AUC (source, pixel / region / image) | train s/run |",
             "|---|---|---|---|---|---|---|"]
    for name in VARIANTS:
        if name not in by:
            continue
        rs = [by[name][k] for k in sorted(by[name])]
        m = statistics.fmean(100 * r["val_miou"] for r in rs)
        seeds = ", ".join(f"{100 * r['val_miou']:.1f}" for r in rs)
        deltas = [100 * (r["val_miou"] - joint[r["seed"]]["val_miou"]) for r in rs if r["seed"] in joint]
        if deltas and name != "joint":
            sd = statistics.stdev(deltas) if len(deltas) > 1 else math.nan
            delta = f"{statistics.fmean(deltas):+.1f} ± {_fmt(sd, 1)} ({len(deltas)})"
        else:
            delta = "—"
        wr = [r["train_weight_realistic"] for r in rs if r.get("train_weight_realistic") is not None]
        wd = [r["train_weight_deviating"] for r in rs if r.get("train_weight_deviating") is not None]
        weights = f"{statistics.fmean(wr):.2f} / {statistics.fmean(wd):.2f}" if wr and wd else "—"
        aucs = [r["source_auc"] for r in rs if r.get("source_auc") is not None]
        if aucs:
            lv = {k: statistics.fmean(r["source_levels"][k]["auc"] for r in rs) for k in rs[0]["source_levels"]}
            auc = f"{statistics.fmean(aucs):.2f} ({' / '.join(_fmt(lv.get(k)) for k in ('pixel', 'region', 'image'))})"
        else:
            auc = "1.00 (by construction)" if name == "oracle" else "—"
        secs = statistics.fmean(r["train_seconds"] for r in rs)
        lines.append(f"| {name} | {m:.1f} | {seeds} | {delta} | {weights} | {auc} | {secs:.0f} |")
    return "\n".join(lines)


def class_table(rows: list[dict[str, Any]], variants: list[str]) -> str:
    """Per-class IoU change against joint (mean over shared seeds), for classes any run segments at all."""
    by = _by_variant(rows)
    joint = by.get("joint", {})
    classes = [c for c in next(iter(joint.values()))["val_iou"]
               if any((r["val_iou"].get(c) or 0) > 0.01 for v in by.values() for r in v.values())]
    head = "| class | joint IoU | " + " | ".join(f"Δ {v}" for v in variants) + " |"
    lines = [head, "|---" * (len(variants) + 2) + "|"]
    for c in classes:
        base = statistics.fmean(100 * (r["val_iou"][c] or 0) for r in joint.values())
        cells = []
        for v in variants:
            ds = [100 * ((by[v][s]["val_iou"][c] or 0) - (joint[s]["val_iou"][c] or 0)) for s in by.get(v, {})
                  if s in joint]
            cells.append(f"{statistics.fmean(ds):+.1f}" if ds else "—")
        lines.append(f"| {c} | {base:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def inspect(run_dir: Path, max_images: int = 100) -> str:
    """What the weights pick, per source class: realistic share, mean weight on realistic / deviating
    pixels, and the AUC *within* the class (ranking realistic above deviating pixels of the same class,
    which a per-class prior cannot do)."""
    from hrseg.data.dataset import open_split
    from hrseg.data.labels import IGNORE_INDEX
    from hrseg.evaluation.metrics import CLASS_NAMES, roc_auc
    from hrseg.evaluation.weighting import weight_maps

    loaded = RunDir(run_dir).load_for_inference()
    cfg = loaded.config
    assert loaded.weighting is not None, "inspect needs a w1/w19 run"
    ds = open_split(cfg.data.data, cfg.data.source, cfg.data.source_split, fields=("image", "label", "realism"))
    ws, ys, rs = [], [], []
    n = min(max_images, len(ds))
    bs = cfg.data.batch_size
    for start in range(0, n - bs + 1, bs):
        items = [ds[i] for i in range(start, start + bs)]
        images = torch.stack([it["image"] for it in items])
        labels = torch.stack([it["label"] for it in items]).long()
        maps = weight_maps(loaded.segmenter, loaded.weighting, images, labels, cfg.weighting.input)
        ws.append(maps.weight.flatten())
        ys.append(labels.flatten())
        rs.append(torch.stack([it["realism"] for it in items]).flatten())
    w, y, r = torch.cat(ws), torch.cat(ys), torch.cat(rs)
    known = (y != IGNORE_INDEX) & (r != 255)
    lines = [f"weights of {run_dir} on {n} source images (combined weight)", "",
             "| class | share of pixels | realistic share | mean w realistic | mean w deviating | AUC within class |",
             "|---|---|---|---|---|---|"]
    total = int(known.sum())
    for c in range(19):
        m = known & (y == c)
        if int(m.sum()) < 100:
            continue
        real, dev = m & (r == 1), m & (r == 0)
        auc = roc_auc(w[m], r[m] == 1) if int(real.sum()) and int(dev.sum()) else math.nan
        lines.append(f"| {CLASS_NAMES[c]} | {int(m.sum()) / total:.3f} | {int(real.sum()) / int(m.sum()):.2f} | "
                     f"{_fmt(w[real].mean().item() if real.any() else None)} | "
                     f"{_fmt(w[dev].mean().item() if dev.any() else None)} | {_fmt(auc)} |")
    overall = roc_auc(w[known], r[known] == 1)
    lines.append(f"\noverall AUC {overall:.3f}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/hrseg-variants"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/variants.jsonl"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--iters", type=int, default=None, help="override the quick budget's iterations")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", type=Path, default=None, help="print the markdown table of a results file")
    ap.add_argument("--inspect", type=Path, default=None, help="per-class weights of a finished w1/w19 run dir")
    args = ap.parse_args()
    if args.inspect is not None:
        torch.set_num_threads(args.threads)
        print(inspect(args.inspect))
        return
    if args.table is not None:
        rows = load_rows(args.table)
        print(table(rows))
        print()
        present = {r["variant"] for r in rows}
        print(class_table(rows, [v for v in ("target-only", "oracle", "w19-product-batch", "w19-mean-batch", "w19-ratio-batch-c3",
                                             "w1-mean-batch", "w19-product-none") if v in present]))
        return
    torch.set_num_threads(args.threads)  # 1: oversubscribed OpenMP threads on a shared machine crawl
    budget = {} if args.iters is None else {"optim.iters": args.iters}
    done = {(r["variant"], r["seed"]) for r in load_rows(args.out)}
    print(f"budget: {json.dumps({**QUICK_BUDGET, **budget})}", flush=True)
    for seed in args.seeds:
        for name in args.variants:
            if (name, seed) in done:
                continue
            row = run_one(name, seed, args.data, args.work, budget)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{name} seed {seed}: val mIoU {100 * row['val_miou']:.1f}  train {row['train_seconds']}s  "
                  f"w real/dev {row['train_weight_realistic']}/{row['train_weight_deviating']}  "
                  f"auc {row.get('source_auc')}", flush=True)


if __name__ == "__main__":
    main()
