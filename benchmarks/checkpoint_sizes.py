"""What a full-width run keeps on disk (run by hand): last.pt, final.pt, a snapshot, and exported models.

    python benchmarks/checkpoint_sizes.py --data DATA --work /tmp/sizes [--scheme w19] [--arch fcn8s-vgg16]
                                          [--out sizes.json]

Trains the paper's network at width 1.0 (no ImageNet download: ``pretrained none``,
which changes no size) for two iterations on tiny crops, so every optimiser has
its state, with ``--save-every 1``: ``iter_000001.pt`` is a weight snapshot,
``last.pt`` the resumable state at iteration 2 and ``final.pt`` its second name.
Then exports the segmenter in float32 and float16. DATA is any prepared data
folder with the run's source and target (``hrseg prepare synthetic --out DATA``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from hrseg.export import export_model
from hrseg.training.config import TrainConfig, override
from hrseg.training.trainer import train


def _mib(n: int) -> float:
    return round(n / 2**20, 1)


def _disk(path: Path) -> int:
    """Bytes the files under ``path`` take, each inode counted once (hard links are one file)."""
    seen, total = set(), 0
    for p in path.rglob("*"):
        st = p.stat()
        if p.is_file() and st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_size
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--scheme", default="w19")
    ap.add_argument("--arch", default="fcn8s-vgg16")
    ap.add_argument("--gan", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    run = args.work / f"{args.scheme}-{args.arch}"
    cfg = override(TrainConfig(scheme=args.scheme), {
        "model.arch": args.arch, "model.width": 1.0, "model.pretrained": "none", "gan.enabled": args.gan,
        "weighting.width": 1.0, "gan.width": 1.0, "optim.iters": 2, "data.batch_size": 1, "data.crop": (64, 64),
        "data.target_images": 4, "data.data": str(args.data), "run.out": str(run), "run.device": "cpu",
        "run.threads": 1, "run.save_every": 1, "run.progress": False,
    })
    t0 = time.perf_counter()
    train(cfg, overwrite=True)
    seconds = time.perf_counter() - t0
    ckpt = run / "checkpoints"
    fp32 = export_model(run, args.work / "model.pt")
    fp16 = export_model(run, args.work / "model-half.pt", half=True)
    last = torch.load(ckpt / "last.pt", weights_only=True)
    params = {k: sum(v.numel() for v in s.values() if v.is_floating_point()) for k, s in last["models"].items()}
    rows = {
        "last.pt (resumable: every network, optimiser moments, RNG, data position)": (ckpt / "last.pt").stat().st_size,
        "final.pt (hard link to last.pt: extra bytes on disk)":
            0 if os.path.samefile(ckpt / "final.pt", ckpt / "last.pt") else (ckpt / "final.pt").stat().st_size,
        "iter_000001.pt (snapshot: S and W weights)": (ckpt / "iter_000001.pt").stat().st_size,
        "hrseg export (S, float32)": fp32.bytes,
        "hrseg export --half (S, float16)": fp16.bytes,
        "checkpoints/ on disk (last.pt = final.pt = iter_000002.pt, one file; + iter_000001.pt)": _disk(ckpt),
    }
    result = {"scheme": args.scheme, "arch": args.arch, "gan": args.gan, "parameters": params,
              "train_seconds": round(seconds, 1), "bytes": rows, "mib": {k: _mib(v) for k, v in rows.items()}}
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
