"""Why `hrseg quickstart` runs torch on one CPU thread: quick-budget steps at 1 vs N threads, side by side.

Trainers for target-only and w19 with the quick start's exact budget
(``quick_config``) are built once; rounds then alternate the thread count
(1, N, 1, N ...) so load from other processes hits both settings alike. The
same is done for evaluation (FCN forward + full-resolution scoring of the
val split). Reported: median seconds per iteration / per val pass and the
ratio N-threads / 1-thread (above 1: one thread is faster).

    python benchmarks/bench_quickstart.py                # 2 vs 1 thread
    python benchmarks/bench_quickstart.py --threads 4 --rounds 7
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hrseg.data.dataset import open_split
from hrseg.data.synthetic import SceneConfig, SyntheticPrepareConfig, prepare_synthetic
from hrseg.evaluation.evaluate import evaluate_segmenter
from hrseg.training.presets import quick_config
from hrseg.training.schemes import plan
from hrseg.training.trainer import Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="compared with 1 thread")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters-per-round", type=int, default=5)
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    data = Path(tmp.name) / "data"
    prepare_synthetic(SyntheticPrepareConfig(out=data, scenes=SceneConfig(source_images=32, target_images=16,
                                                                           val_images=20)), show_progress=False)
    trainers = {s: Trainer(quick_config(s, str(data), str(Path(tmp.name) / s), **{"run.progress": False,
                                                                                  "run.device": "cpu"}))
                for s in ("target-only", "w19")}
    val = open_split(data, "cityscapes", "val", fields=("image", "full_label", "name"))
    settings = (1, args.threads)
    times: dict[tuple[str, int], list[float]] = {}

    def step(name: str, t: Trainer) -> None:
        t.step(plan(t.cfg, t.iteration))
        t.iteration += 1

    for threads in settings:  # warm-up at each setting
        torch.set_num_threads(threads)
        for name, t in trainers.items():
            for _ in range(3):
                step(name, t)
    for _ in range(args.rounds):
        for threads in settings:
            torch.set_num_threads(threads)
            for name, t in trainers.items():
                t0 = time.perf_counter()
                for _ in range(args.iters_per_round):
                    step(name, t)
                times.setdefault((f"train {name} (s/iter)", threads), []).append(
                    (time.perf_counter() - t0) / args.iters_per_round)
            seg = trainers["target-only"].nets["segmenter"].eval()
            t0 = time.perf_counter()
            evaluate_segmenter(seg, val, show_progress=False)
            seg.train()
            times.setdefault((f"eval {len(val)} val images (s)", threads), []).append(time.perf_counter() - t0)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPU(s) visible, load average "
          f"{os.getloadavg()[0]:.1f}, torch {torch.__version__}; quick budget, median of {args.rounds} rounds")
    print(f"| case | 1 thread | {args.threads} threads | {args.threads} threads / 1 thread |")
    print("|---|---|---|---|")
    for case in dict.fromkeys(c for c, _ in times):
        one = statistics.median(times[(case, 1)])
        many = statistics.median(times[(case, args.threads)])
        print(f"| {case} | {one:.3f} | {many:.3f} | {many / one:.2f}x |")
    for t in trainers.values():
        t.close()


if __name__ == "__main__":
    main()
