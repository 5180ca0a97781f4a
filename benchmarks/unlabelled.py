"""The unlabelled-target study (docs/unlabelled-target.md) on the bundled procedural scenes.

Two tables, every row at the quick start's budget (``quick_config``), paired by
seed against the same machine's reference rows:

(a) 16 labelled target images: target-only, joint, oracle, W^19, self-training,
    W^19 + self-training, oracle + self-training;
(b) no labelled target image (UDA): source-only, MinEnt, self-training,
    W^19 + self-training, oracle + self-training.

Each (row, seed) trains, is scored on val (the student, and for self-training
rows the mean teacher too) and, for W^19 rows, W's weighting quality on the
source split (realism AUC). One JSON line per (row, seed) goes to the results
file; re-running skips what is there, so the study can be stopped and resumed.
Run folders keep config.json and eval/*.json (not the weights), so
``hrseg report WORK/*`` prints the same rows as mean ± std.

    hrseg prepare synthetic --out /tmp/study/data
    python benchmarks/unlabelled.py --data /tmp/study/data --work /tmp/study/runs \\
        --out benchmarks/unlabelled-results.jsonl --seeds 0 1 2 3 4 --jobs 2
    python benchmarks/unlabelled.py --table benchmarks/unlabelled-results.jsonl
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variants import AGREE, DEFAULT19, ByVariant, _mean_sd, load_rows, paired, run_study, scenes_of  # noqa: E402

from hrseg.evaluation.evaluate import EvalOptions, evaluate_and_save  # noqa: E402
from hrseg.training.presets import quick_config  # noqa: E402
from hrseg.training.rundir import RunDir  # noqa: E402
from hrseg.training.schemes import SCHEMES  # noqa: E402
from hrseg.training.trainer import train  # noqa: E402

UDA = {"data.target_images": 0}
ROUND2_19 = {**DEFAULT19, **AGREE, "weighting.balance": "class"}
WARM = {"unlabelled.start": 250}
# name -> (table, scheme, config changes); every row at the quick budget. The W^19 rows spell out the settings
# they were measured with (round one's default, 0.2.0), so they keep their meaning when defaults change.
ROWS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "target-only": ("a", "target-only", {}),
    "joint": ("a", "joint", {}),
    "oracle": ("a", "oracle", {}),
    "w19": ("a", "w19", DEFAULT19),
    "self-training": ("a", "self-training", {}),
    "w19+self-training": ("a", "w19+self-training", DEFAULT19),
    "oracle+self-training": ("a", "oracle+self-training", {}),
    "uda:source-only": ("b", "source-only", UDA),
    "uda:minent": ("b", "minent", UDA),
    "uda:self-training": ("b", "self-training", UDA),
    "uda:w19+self-training": ("b", "w19+self-training", {**DEFAULT19, **UDA}),
    # round two's W^19 (the 0.3.0 default: the agreement level and W's loss balanced over classes)
    "w19-round2": ("a", "w19", ROUND2_19),
    "w19-round2+self-training": ("a", "w19+self-training", ROUND2_19),
    "uda:w19-round2+self-training": ("b", "w19+self-training", {**ROUND2_19, **UDA}),
    # self-training from a warmed-up model: the pseudo-label term starts at half the budget (chosen before
    # measuring, not tuned; the teacher follows S from the first step)
    "self-training-warm": ("a", "self-training", WARM),
    "w19-round2+self-training-warm": ("a", "w19+self-training", {**ROUND2_19, **WARM}),
    "uda:self-training-warm": ("b", "self-training", {**UDA, **WARM}),
    "uda:w19-round2+self-training-warm": ("b", "w19+self-training", {**ROUND2_19, **UDA, **WARM}),
    "uda:oracle+self-training": ("b", "oracle+self-training", UDA),
}
#: the paired comparisons each table reports: (row, against)
PAIRS = {
    "a": [("joint", "target-only"), ("oracle", "joint"), ("w19", "joint"), ("self-training", "joint"),
          ("w19+self-training", "w19"), ("w19+self-training", "self-training"),
          ("oracle+self-training", "self-training"), ("oracle+self-training", "w19+self-training"),
          ("w19-round2", "joint"), ("w19-round2+self-training", "w19-round2"),
          ("w19-round2+self-training", "self-training"), ("self-training-warm", "self-training"),
          ("self-training-warm", "joint"), ("w19-round2+self-training-warm", "w19-round2"),
          ("w19-round2+self-training-warm", "self-training-warm")],
    "b": [("uda:minent", "uda:source-only"), ("uda:self-training", "uda:source-only"),
          ("uda:w19+self-training", "uda:self-training"), ("uda:oracle+self-training", "uda:self-training"),
          ("uda:oracle+self-training", "uda:w19+self-training"),
          ("uda:w19-round2+self-training", "uda:self-training"), ("uda:self-training-warm", "uda:source-only"),
          ("uda:w19-round2+self-training-warm", "uda:self-training-warm")],
}


def _tail_mean(records: list[dict[str, Any]], key: str) -> float | None:
    tail = records[-max(1, len(records) // 4):]
    vals = [r[key] for r in tail if key in r and not math.isnan(r[key])]
    return statistics.fmean(vals) if vals else None


def run_one(name: str, seed: int, data: str, work: str, iters: int | None) -> dict[str, Any]:
    """Train one (row, seed), score it; the run folder keeps its config and evaluations, not its weights."""
    torch.set_num_threads(1)
    table, scheme, changes = ROWS[name]
    run = Path(work) / f"{name.replace(':', '-')}-s{seed}"
    shutil.rmtree(run, ignore_errors=True)
    budget = {} if iters is None else {"optim.iters": iters}
    cfg = quick_config(scheme, data, str(run), seed=seed,
                       **{**budget, **changes, "run.progress": False, "run.device": "cpu", "run.threads": 1})
    t0 = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - t0
    records = list(RunDir(run).metrics())
    t1 = time.perf_counter()
    opts = dict(device="cpu", show_progress=False, batch_size=8, threads=1)
    val, _ = evaluate_and_save(run, EvalOptions(split="val", **opts))
    row: dict[str, Any] = {
        "variant": name, "table": table, "scheme": scheme, "seed": seed, "changes": changes, "budget": budget,
        "scenes": scenes_of(Path(data)), "train_seconds": round(train_s, 1),
        "iters_per_s": round(result.iters_per_s, 2), "val_miou": val.miou, "val_iou": val.iou,
        **{f"train_{k}": _tail_mean(records, k) for k in ("pseudo_quality", "self_training", "minent",
                                                         "weight_realistic", "weight_deviating")},
    }
    if SCHEMES[scheme].unlabelled == "self-training":
        teacher, _ = evaluate_and_save(run, EvalOptions(split="val", model="teacher", **opts))
        row["teacher_val_miou"] = teacher.miou
    if SCHEMES[scheme].weighting is not None:
        quality, _ = evaluate_and_save(run, EvalOptions(split="source", max_images=100, **{**opts, "batch_size": 4}))
        q = quality.to_dict()
        row.update(source_auc=q["auc"], source_weight_realistic=q["mean_weight_realistic"],
                   source_weight_deviating=q["mean_weight_deviating"])
    row["eval_seconds"] = round(time.perf_counter() - t1, 1)
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return row


def _fmt(v: float | None, nd: int = 1, scale: float = 100.0) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{scale * v:.{nd}f}"


def rows_table(rows: list[dict[str, Any]], table: str) -> str:
    """Per row: seeds, val mIoU mean ± sd (student; teacher), realism AUC, pseudo-label quality, seconds per run."""
    by = ByVariant(rows)
    out = ["| row | seeds | val mIoU (mean ± sd) | teacher mIoU | W's realism AUC | pseudo-label quality "
           "| train s/run |", "|---|---|---|---|---|---|---|"]
    for name, (t, _, _) in ROWS.items():
        if t != table or name not in by:
            continue
        rs = [by[name][s] for s in sorted(by[name])]
        m = [100 * r["val_miou"] for r in rs]
        sd = f" ± {statistics.stdev(m):.1f}" if len(m) > 1 else ""
        teacher = [r["teacher_val_miou"] for r in rs if r.get("teacher_val_miou") is not None]
        auc = [r["source_auc"] for r in rs if r.get("source_auc") is not None]
        quality = [r["train_pseudo_quality"] for r in rs if r.get("train_pseudo_quality") is not None]
        out.append(f"| {name} | {','.join(str(r['seed']) for r in rs)} | {statistics.fmean(m):.1f}{sd} | "
                   f"{_fmt(statistics.fmean(teacher)) if teacher else '—'} | "
                   f"{_fmt(statistics.fmean(auc), 2, 1.0) if auc else '—'} | "
                   f"{_fmt(statistics.fmean(quality), 2, 1.0) if quality else '—'} | "
                   f"{statistics.fmean(r['train_seconds'] for r in rs):.0f} |")
    return "\n".join(out)


def pairs_table(rows: list[dict[str, Any]], table: str) -> str:
    """Paired mIoU differences (points, mean ± sd over seeds, n), with how many seeds the first row won."""
    by = ByVariant(rows)
    out = ["| comparison | Δ mIoU (mean ± sd, n) | seeds better |", "|---|---|---|"]
    for a, b in PAIRS[table]:
        d = list(paired(by, a, b).values())
        wins = f"{sum(x > 0 for x in d)} / {len(d)}" if d else "—"
        out.append(f"| {a} − {b} | {_mean_sd(d)} | {wins} |")
    return "\n".join(out)


def per_seed(rows: list[dict[str, Any]], table: str) -> str:
    by = ByVariant(rows)
    names = [n for n, (t, _, _) in ROWS.items() if t == table and n in by]
    seeds = sorted({s for n in names for s in by[n]})
    out = ["| row | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    for n in names:
        out.append(f"| {n} | " + " | ".join(f"{100 * by[n][s]['val_miou']:.1f}" if s in by[n] else "—"
                                             for s in seeds) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--work", type=Path, default=Path("/tmp/hrseg-unlabelled"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/unlabelled-results.jsonl"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--queue", nargs="+", default=None, metavar="ROW@SEED",
                    help="train exactly these (row, seed) pairs in this order instead of --rows x --seeds")
    ap.add_argument("--iters", type=int, default=None, help="override the quick budget's iterations")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (one thread each)")
    ap.add_argument("--table", type=Path, default=None, help="print the markdown tables of a results file")
    args = ap.parse_args()
    if args.table is not None:
        rows = load_rows(args.table)
        for t, title in (("a", "(a) 16 labelled target images"), ("b", "(b) no labelled target image (UDA)")):
            print(f"{title}\n\n{rows_table(rows, t)}\n\n{pairs_table(rows, t)}\n\n{per_seed(rows, t)}\n")
        return
    if args.data is None:
        raise SystemExit("--data is required to train (or give --table)")
    # seed-major order: a stopped study leaves whole seeds, which pair
    order = [(n, int(s)) for n, s in (q.rsplit("@", 1) for q in args.queue)] if args.queue else \
        [(name, seed) for seed in args.seeds for name in args.rows]
    unknown = [n for n, _ in order if n not in ROWS]
    if unknown:
        raise SystemExit(f"--queue: unknown rows {unknown}")
    run_study(run_one, order, args, lambda row: (
        f"{row['variant']} seed {row['seed']}: val mIoU {100 * row['val_miou']:.1f}  "
        f"teacher {_fmt(row.get('teacher_val_miou'))}  train {row['train_seconds']}s"))


if __name__ == "__main__":
    main()
