"""How much perfect selection could gain on the bundled procedural scenes (issue 9, "a benchmark with headroom").

Generates the default scenes (``hrseg prepare synthetic`` defaults, as the
quick start uses them), trains the three reference rows with the quick-start
budget (``quick_config``): target-only, direct joint training, and the oracle
(weight 1 on realistic, 0 on deviating source pixels, from the realism mask),
and scores val mIoU. Only these rows judge the scenes; no weighting variant
takes part, so the generator cannot be tuned towards one.

Results go to a JSONL file, one line per (tag, scheme, seed), plus one
``prepare`` line per tag with the generation time and a hash of the scenes;
re-running skips what is there, so a study can be stopped and resumed. The
tag names a generator version (e.g. ``before`` / ``after``); its data and
runs live under ``WORK/TAG``.

    python benchmarks/headroom.py --tag before --work /tmp/headroom --seeds 0 1 2 3 4 --jobs 2
    python benchmarks/headroom.py --table benchmarks/headroom-results.jsonl
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
from typing import Any

import torch

SCHEMES = ("target-only", "joint", "oracle")
PAIRS = (("oracle", "joint"), ("oracle", "target-only"), ("joint", "target-only"))


def scenes_hash(raw: Path) -> str:
    """sha256 over every generated PNG (path and bytes): tells two generator versions apart in the results."""
    h = hashlib.sha256()
    for p in sorted(raw.rglob("*.png")):
        h.update(str(p.relative_to(raw)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def prepare(data: Path, workers: int) -> dict[str, Any]:
    """The default scenes and shards under ``data`` (kept when already there)."""
    from hrseg.data.synthetic import SceneConfig, SyntheticPrepareConfig, prepare_synthetic

    result = prepare_synthetic(SyntheticPrepareConfig(out=data, scenes=SceneConfig(), workers=workers),
                               show_progress=False)
    stamp = json.loads((data / "raw" / "synthetic.json").read_text())
    return {"generated": result["generated"], "generate_seconds": round(float(result["generate_seconds"]), 2),
            "prepare_seconds": round(float(result["seconds"]), 2), "workers": workers,
            "generator": stamp.get("generator"), "scenes_sha": scenes_hash(data / "raw")}


def time_generation(n: int = 20) -> dict[str, float]:
    """Seconds per drawn scene in this process (no PNG writing): the generator's own cost."""
    from hrseg.data.scenes import draw_scene
    from hrseg.data.synthetic import SceneConfig

    cfg = SceneConfig()
    out = {}
    for domain, size in (("source", cfg.source_size), ("target", cfg.size)):
        t = time.perf_counter()
        for i in range(n):
            draw_scene(cfg.seed, domain, i, size)
        out[f"{domain}_ms_per_scene"] = round(1000 * (time.perf_counter() - t) / n, 1)
    return out


def run_one(tag: str, scheme: str, seed: int, data: str, work: str, iters: int | None) -> dict[str, Any]:
    """Train one reference row and score it on val; the run's weights are dropped afterwards."""
    from hrseg.evaluation.evaluate import EvalOptions, evaluate_run
    from hrseg.training.presets import quick_config
    from hrseg.training.trainer import train

    torch.set_num_threads(1)  # several runs share few cores: one thread each is fastest
    run = Path(work) / f"{scheme}-s{seed}"
    shutil.rmtree(run, ignore_errors=True)
    changes: dict[str, Any] = {"run.progress": False, "run.device": "cpu", "run.threads": 1}
    if iters is not None:
        changes["optim.iters"] = iters
    cfg = quick_config(scheme, data, str(run), seed=seed, **changes)
    t0 = time.perf_counter()
    result = train(cfg)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    val = evaluate_run(run, EvalOptions(split="val", device="cpu", show_progress=False, batch_size=8, threads=1))
    row = {"tag": tag, "scheme": scheme, "seed": seed, "iters": cfg.optim.iters,
           "val_miou": val.miou, "val_iou": val.iou, "train_seconds": round(train_s, 1),
           "iters_per_s": round(result.iters_per_s, 2), "eval_seconds": round(time.perf_counter() - t1, 1)}
    shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return row


def load_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "—"
    sd = statistics.stdev(xs) if len(xs) > 1 else math.nan
    return f"{statistics.fmean(xs):+.1f} ± {sd:.1f}" if not math.isnan(sd) else f"{xs[0]:+.1f}"


def table(rows: list[dict[str, Any]], tags: list[str] | None = None) -> str:
    """Markdown: per tag, val mIoU per seed of each row and the paired differences (same seed)."""
    runs = [r for r in rows if r.get("kind", "run") == "run"]
    preps = {r["tag"]: r for r in rows if r.get("kind") == "prepare"}
    order = tags or list(dict.fromkeys(r["tag"] for r in runs))
    out = []
    for tag in order:
        by: dict[str, dict[int, float]] = {}
        secs: dict[str, list[float]] = {}
        for r in runs:
            if r["tag"] == tag:
                by.setdefault(r["scheme"], {})[r["seed"]] = 100 * r["val_miou"]
                secs.setdefault(r["scheme"], []).append(r["train_seconds"])
        seeds = sorted(set().union(*(set(v) for v in by.values()))) if by else []
        p = preps.get(tag, {})
        out.append(f"### {tag}" + (f" (generator {p.get('generator')}, scenes {p.get('scenes_sha')})" if p else ""))
        out.append("")
        out.append("| row | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | train s/run |")
        out.append("|---" * (len(seeds) + 3) + "|")
        for scheme in SCHEMES:
            if scheme not in by:
                continue
            vals = [by[scheme].get(s) for s in seeds]
            cells = " | ".join("—" if v is None else f"{v:.1f}" for v in vals)
            m = statistics.fmean(v for v in vals if v is not None)
            out.append(f"| {scheme} | {cells} | {m:.1f} | {statistics.fmean(secs[scheme]):.0f} |")
        for a, b in PAIRS:
            if a not in by or b not in by:
                continue
            ds = {s: by[a][s] - by[b][s] for s in seeds if s in by[a] and s in by[b]}
            cells = " | ".join(f"{ds[s]:+.1f}" if s in ds else "—" for s in seeds)
            out.append(f"| {a} − {b} | {cells} | **{_mean_sd(list(ds.values()))}** (n={len(ds)}) | |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", default="current", help="name of the generator version under test")
    ap.add_argument("--work", type=Path, default=Path("/tmp/hrseg-headroom"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/headroom-results.jsonl"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=SCHEMES)
    ap.add_argument("--iters", type=int, default=None, help="override the quick budget's iterations")
    ap.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (one thread each)")
    ap.add_argument("--workers", type=int, default=2, help="scene generation processes (the quick start uses 2)")
    ap.add_argument("--table", type=Path, default=None, help="print the markdown tables of a results file")
    args = ap.parse_args()
    if args.table is not None:
        print(table(load_rows(args.table)))
        return

    rows = load_rows(args.out)
    data, runs = args.work / args.tag / "data", args.work / args.tag / "runs"
    info = prepare(data, args.workers)
    prep = next((r for r in rows if r.get("kind") == "prepare" and r["tag"] == args.tag), None)
    if prep is not None and prep["scenes_sha"] != info["scenes_sha"]:
        raise SystemExit(f"{args.out}: tag {args.tag!r} was measured on other scenes ({prep['scenes_sha']}, "
                         f"now {info['scenes_sha']}); use a new tag")
    if prep is None:
        _append(args.out, {"kind": "prepare", "tag": args.tag, **info, **time_generation()})
    how = f"generated in {info['generate_seconds']} s" if info["generated"] else "kept"
    print(f"{args.tag}: scenes {info['scenes_sha']} ({info['generator']}), {how}", flush=True)

    done = {(r["scheme"], r["seed"]) for r in rows if r.get("kind", "run") == "run" and r["tag"] == args.tag}
    todo = [(scheme, seed) for seed in args.seeds for scheme in args.schemes if (scheme, seed) not in done]
    from hrseg.data.workers import pool_context

    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=pool_context()) as pool:
        futures: dict[Future[dict[str, Any]], tuple[str, int]] = {
            pool.submit(run_one, args.tag, scheme, seed, str(data), str(runs), args.iters): (scheme, seed)
            for scheme, seed in todo}
        for fut in as_completed(futures):
            row = fut.result()
            _append(args.out, {"kind": "run", **row})
            print(f"{row['scheme']} seed {row['seed']}: val mIoU {100 * row['val_miou']:.1f}  "
                  f"train {row['train_seconds']} s", flush=True)
    print(table(load_rows(args.out), [args.tag]))


if __name__ == "__main__":
    main()
