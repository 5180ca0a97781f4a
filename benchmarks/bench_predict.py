"""Throughput of `predict` on generated street scenes, and the cost of each test-time option, side by side.

Run by hand from the repository root, e.g.

    python benchmarks/bench_predict.py                                   # CPU, width 0.25
    python benchmarks/bench_predict.py --device cuda --width 1.0 --images 64 --batch-size 8

Every case segments the same images (random weights: speed does not depend on
them) at the same working size and writes labelId PNGs, so the ratios to the
plain case are what each option costs on this machine.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from hrseg.data.scenes import draw_scene
from hrseg.inference.outputs import OutputSpec
from hrseg.inference.predictor import predict
from hrseg.inference.tta import InferenceOptions
from hrseg.models import build_segmenter
from hrseg.visualization.panels import write_png


def _size(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="fcn8s-vgg16")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--image-size", type=_size, default=(1024, 512), help="input files, WxH")
    ap.add_argument("--size", type=_size, default=(512, 256), help="working resolution, WxH")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per case; the fastest counts (load noise)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_segmenter(args.arch, num_classes=19, width=args.width, pretrained="none")
    w, h = args.size
    cases = {
        "plain": InferenceOptions(size=args.size),
        "flip": InferenceOptions(size=args.size, flip=True),
        "scales 0.75,1,1.25": InferenceOptions(size=args.size, scales=(0.75, 1.0, 1.25)),
        "slide (W/2 x H, 1/3 overlap)": InferenceOptions(size=args.size, slide=True, window=(w // 2, h)),
    }
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        for i in range(args.images):
            write_png(src / f"scene_{i:03d}.png", draw_scene(0, "target", i, args.image_size).image)
        predict(model, [src], Path(tmp) / "warmup", cases["plain"], OutputSpec(colour=False, overlay=False),
                batch_size=args.batch_size, device=args.device, workers=args.workers, show_progress=False)
        runs = [(name, opts, OutputSpec(colour=False, overlay=False)) for name, opts in cases.items()]
        runs.append(("plain, + colour + overlay PNGs", cases["plain"], OutputSpec()))
        rows = []
        for name, opts, spec in runs:
            best = 0.0
            for r in range(args.repeats):
                t0 = time.perf_counter()
                res = predict(model, [src], Path(tmp) / f"{len(rows)}-{r}", opts, spec, batch_size=args.batch_size,
                              device=args.device, workers=args.workers, show_progress=False)
                best = max(best, res.images / (time.perf_counter() - t0))
            rows.append((name, best))
    base = rows[0][1]
    print(f"{args.arch} width {args.width}, {args.images} images {args.image_size[0]}x{args.image_size[1]} -> "
          f"working {w}x{h}, batch {args.batch_size}, device {args.device}, amp {res.amp}, "
          f"torch threads {torch.get_num_threads()}")
    for name, ips in rows:
        print(f"  {name:34s} {ips:7.2f} img/s   {base / ips:5.2f}x the plain time")


if __name__ == "__main__":
    main()
