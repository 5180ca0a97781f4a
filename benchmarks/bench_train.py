"""Training speed per scheme, with and without the GAN, as ratios to target-only.

All schemes are built once, then timed in interleaved rounds (A B C ... A B C ...)
so load from other processes hits every scheme alike; the report is the median
iteration time per scheme and its ratio to target-only, measured in the same run.

    python benchmarks/bench_train.py                       # CPU, small FCN, procedural scenes
    python benchmarks/bench_train.py --device cuda --width 1.0 --crop 1024x512 --amp --batch-size 1
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hrseg.training.config import TrainConfig, override
from hrseg.training.schemes import plan
from hrseg.training.trainer import Trainer

CASES: list[tuple[str, str, bool]] = [
    ("target-only", "target-only", False),
    ("joint", "joint", False),
    ("w1", "w1", False),
    ("w19", "w19", False),
    ("joint+gan", "joint", True),
    ("w1+gan", "w1", True),
    ("w19+gan", "w19", True),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="prepared data (default: generate tiny scenes)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--arch", default="fcn8s-vgg16")
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--crop", default="128x64")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--iters-per-round", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.crop.split("x"))
    tmp = tempfile.TemporaryDirectory()
    data = args.data
    if data is None:
        from hrseg.data.synthetic import SceneConfig, SyntheticPrepareConfig, prepare_synthetic

        data = Path(tmp.name) / "data"
        prepare_synthetic(SyntheticPrepareConfig(out=data, scenes=SceneConfig(source_images=32, target_images=16,
                                                                               val_images=1, size=(2 * w, 2 * h))),
                          show_progress=False)
    trainers: dict[str, Trainer] = {}
    for name, scheme, gan in CASES:
        cfg = override(TrainConfig(scheme=scheme), {
            "model.arch": args.arch, "model.width": args.width, "weighting.width": args.width,
            "gan.width": args.width, "gan.enabled": gan, "data.data": str(data),
            "run.out": str(Path(tmp.name) / name), "data.crop": (w, h), "data.batch_size": args.batch_size,
            "run.device": args.device, "run.amp": args.amp, "run.compile": args.compile, "run.progress": False,
            "optim.iters": 10**6,
        })
        trainers[name] = Trainer(cfg)
    device = next(iter(trainers.values())).device
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for name, t in trainers.items():
        for _ in range(args.warmup):
            t.step(plan(t.cfg, t.iteration))
            t.iteration += 1
    for _ in range(args.rounds):
        for name, t in trainers.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.iters_per_round):
                t.step(plan(t.cfg, t.iteration))
                t.iteration += 1
            _sync(device)
            times[name].append((time.perf_counter() - t0) / args.iters_per_round)
    base = statistics.median(times["target-only"])
    rows = []
    for name, scheme, gan in CASES:
        med = statistics.median(times[name])
        rows.append({"case": name, "scheme": scheme, "gan": gan, "s_per_iter": med, "iters_per_s": 1 / med,
                     "time_ratio_vs_target_only": med / base})
    machine = (f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s)"
               if device.type == "cpu" else torch.cuda.get_device_name(device))
    print(f"machine: {machine}; {args.arch} width {args.width}, crop {w}x{h}, batch {args.batch_size}/domain, "
          f"amp {args.amp}, compile {args.compile}, median of {args.rounds} rounds x {args.iters_per_round} iters")
    print("| case | s/iter | iter/s | time vs target-only |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['s_per_iter']:.3f} | {r['iters_per_s']:.1f} | {r['time_ratio_vs_target_only']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "args": vars(args) | {"data": str(data),
                                         "json": str(args.json)}, "rows": rows}, indent=2))
    for t in trainers.values():
        for s in t.streams.values():
            s.close()
        t.close()


if __name__ == "__main__":
    main()
