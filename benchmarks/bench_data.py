"""Data-layer benchmarks (run by hand): shard reading vs PNG decoding vs raw bytes; prepare scaling.

    python benchmarks/bench_data.py [--images 12] [--repeats 3] [--workers-images 96]

1. Per-sample loading at 1024x512 (from 2048x1024 Cityscapes-size PNGs) and
   1280x720 (from 1914x1052 GTAV-size PNGs), measured side by side in one run:
   - png: decode image + label PNG and resize both, per sample (how
     AdaptSegNet / ADVENT load data);
   - shards: ``ShardDataset`` items (image + label) from prepared shards,
     for compression none and lzf, with the per-row checksums checked (the
     default) and without (``verify=False``, to show what checking costs);
   - raw: ``os.pread`` of exactly the same image + label bytes from one flat
     file (the ceiling for any on-disk format).
   Files are read in a shuffled order, several passes, from the page cache
   (the set is small), so this measures decoding/format overhead, not the disk.
2. ``prepare`` of GTAV-format 1914x1052 pairs to 1280x720 with 1 and 2
   workers, 8 shards. The worker pool's start-up is timed on its own (the
   first pool of a process also starts the fork server), and the ratio is
   given with and without it. Beside it, the control: 2 processes of pure
   CPU work against 1, measured just before and just after, says whether
   this machine had two free cores at the time.

Targets: verified shards >= 100x png (issue 10) and >= 0.5x raw (issue 2);
2 workers >= 1.7x 1 worker where the control shows ~2x.
The scenes are the procedural ones drawn at full resolution.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from hrseg.data.dataset import ShardDataset
from hrseg.data.labels import LABEL_PALETTE, LABEL_TO_TRAIN
from hrseg.data.png import decode_palette_indices, encode_palette_png
from hrseg.data.prepare import PrepareConfig, prepare, prepare_split
from hrseg.data.scenes import draw_scene
from hrseg.data.workers import open_pool


def write_gtav(root: Path, n: int, size: tuple[int, int], distinct: int | None = None) -> None:
    """``n`` GTAV-format pairs; only ``distinct`` scenes are drawn (slow), the rest are copies of them."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    distinct = min(n, distinct or n)
    for i in range(n):
        img, lab = root / "images" / f"{i + 1:05d}.png", root / "labels" / f"{i + 1:05d}.png"
        if i >= distinct:
            shutil.copyfile(root / "images" / f"{i % distinct + 1:05d}.png", img)
            shutil.copyfile(root / "labels" / f"{i % distinct + 1:05d}.png", lab)
            continue
        s = draw_scene(123, "source", i, size)
        cv2.imwrite(str(img), s.image[:, :, ::-1])
        lab.write_bytes(encode_palette_png(s.label_ids, LABEL_PALETTE))


def write_cityscapes(root: Path, n: int, size: tuple[int, int]) -> None:
    left, gt = root / "leftImg8bit" / "train" / "aachen", root / "gtFine" / "train" / "aachen"
    left.mkdir(parents=True, exist_ok=True)
    gt.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        s = draw_scene(123, "target", i, size)
        stem = f"aachen_{i:06d}_000019"
        cv2.imwrite(str(left / f"{stem}_leftImg8bit.png"), s.image[:, :, ::-1])
        cv2.imwrite(str(gt / f"{stem}_gtFine_labelIds.png"), s.label_ids)


def png_pairs(dataset: str, root: Path) -> list[tuple[Path, Path]]:
    if dataset == "gtav":
        return [(p, root / "labels" / p.name) for p in sorted((root / "images").glob("*.png"))]
    out = []
    for p in sorted((root / "leftImg8bit" / "train").rglob("*.png")):
        lab = str(p).replace("leftImg8bit", "gtFine", 1).replace("_leftImg8bit.png", "_gtFine_labelIds.png")
        out.append((p, Path(lab)))
    return out


def load_png(dataset: str, pair: tuple[Path, Path], size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    img = cv2.imread(str(pair[0]), cv2.IMREAD_COLOR)[:, :, ::-1]
    if dataset == "gtav":
        ids = decode_palette_indices(pair[1].read_bytes())
    else:
        ids = cv2.imread(str(pair[1]), cv2.IMREAD_UNCHANGED)
    img = cv2.resize(img, size, interpolation=cv2.INTER_LINEAR)
    lab = cv2.resize(LABEL_TO_TRAIN[ids], size, interpolation=cv2.INTER_NEAREST)
    return img, lab


def rate(fn, n: int, repeats: int) -> float:  # type: ignore[no-untyped-def]
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = max(best, n / (time.perf_counter() - t0))
    return best


def bench_loading(work: Path, dataset: str, full: tuple[int, int], size: tuple[int, int], n: int,
                  repeats: int) -> dict[str, float]:
    root = work / f"{dataset}-raw"
    (write_gtav if dataset == "gtav" else write_cityscapes)(root, n, full)
    for comp in ("none", "lzf"):
        prepare(PrepareConfig(dataset=dataset, root=root, out=work / f"data-{comp}", splits=("train",), size=size, workers=1,
                              shard_size=max(1, n // 2), compression=comp, full_labels=False), show_progress=False)
    pairs = png_pairs(dataset, root)
    order = np.random.default_rng(0).permutation(n * 4) % n  # shuffled, every sample 4 times per pass
    w, h = size
    sample_bytes = w * h * 3 + w * h
    flat = work / f"{dataset}.raw"
    with open(flat, "wb") as fh:
        for i in range(n):
            img, lab = load_png(dataset, pairs[i], size)
            fh.write(img.tobytes() + lab.tobytes())
    out: dict[str, float] = {}

    def run_png() -> None:
        for i in order:
            load_png(dataset, pairs[i], size)

    def run_raw() -> None:
        # the same bytes, straight into fresh arrays, as a loader over a flat file would do it
        fd = os.open(flat, os.O_RDONLY)
        try:
            for i in order:
                img = np.empty((h, w, 3), np.uint8)
                lab = np.empty((h, w), np.uint8)
                os.preadv(fd, [memoryview(img).cast("B")], int(i) * sample_bytes)
                os.preadv(fd, [memoryview(lab).cast("B")], int(i) * sample_bytes + w * h * 3)
        finally:
            os.close(fd)

    datasets = {(comp, verify): ShardDataset(work / f"data-{comp}" / dataset / "train", fields=("image", "label"),
                                             verify=verify)
                for comp in ("none", "lzf") for verify in (True, False)}

    def run_shards(comp: str, verify: bool) -> None:
        ds = datasets[(comp, verify)]
        for i in order:
            ds[int(i)]

    out["png"] = rate(run_png, len(order), max(1, repeats - 1))
    for _ in range(2):  # interleaved, so a change of machine load hits every variant alike
        out["raw"] = max(out.get("raw", 0.0), rate(run_raw, len(order), repeats))
        for comp in ("none", "lzf"):
            for verify in (True, False):
                key = f"{comp}-{'verified' if verify else 'unverified'}"
                out[key] = max(out.get(key, 0.0), rate(lambda: run_shards(comp, verify), len(order), repeats))
    return out


def bench_prepare(work: Path, n: int, repeats: int) -> dict[str, float]:
    """Best images/s with 1 and 2 workers; the 2-worker pool's start-up timed apart from the work."""
    root = work / "gtav-prep"
    if len(list((root / "labels").glob("*.png"))) != n:  # kept from an earlier run with the same --work
        shutil.rmtree(root, ignore_errors=True)
        write_gtav(root, n, (1914, 1052), distinct=24)
    out: dict[str, float] = {}
    for rep in range(repeats):
        for workers in (1, 2):
            dest = work / f"prep-{workers}"
            shutil.rmtree(dest, ignore_errors=True)
            cfg = PrepareConfig(dataset="gtav", root=root, out=dest, size=(1280, 720), workers=workers,
                                shard_size=max(1, n // 8))
            t0 = time.perf_counter()
            pool = open_pool(workers)
            started = time.perf_counter()
            try:
                res = prepare_split(cfg, "train", pool=pool)
            finally:
                if pool is not None:
                    pool.close()
            end = time.perf_counter()
            if workers == 2:
                key = "start-cold" if rep == 0 else "start-warm"
                out[key] = min(out.get(key, 1e9), started - t0)
            out[f"{workers}-total"] = max(out.get(f"{workers}-total", 0.0), n / (end - t0))
            out[f"{workers}-work"] = max(out.get(f"{workers}-work", 0.0), n / (end - started))
            out[f"{workers}-cores"] = max(out.get(f"{workers}-cores", 0.0), res.build_cpu_seconds / (end - started))
    return out


def _burn(n: int) -> float:
    x = 0
    for i in range(n):
        x += i * i
    return float(x)


def machine_parallelism(n: int = 10_000_000) -> float:
    """Throughput of 2 processes over 1 on pure-Python arithmetic: what 2 workers can gain at most here."""
    import multiprocessing as mp

    t0 = time.perf_counter()
    _burn(n)
    one = time.perf_counter() - t0
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(_burn, [1000, 1000])  # start-up out of the measurement
        t0 = time.perf_counter()
        pool.map(_burn, [n, n])
        two = time.perf_counter() - t0
    return 2 * one / two


def bench_prepare_table(work: Path, n: int, repeats: int) -> None:
    before = machine_parallelism()
    p = bench_prepare(work, n, repeats)
    after = machine_parallelism()
    print(f"\n| prepare {n} GTAV 1914x1052 -> 1280x720, 8 shards | img/s incl. start-up | img/s of the work "
          "| CPU cores busy building (CPU s / wall s) |\n|---|---|---|---|")
    print(f"| 1 worker (in-process) | {p['1-total']:.2f} | {p['1-work']:.2f} | {p['1-cores']:.2f} |")
    print(f"| 2 workers | {p['2-total']:.2f} | {p['2-work']:.2f} | {p['2-cores']:.2f} |")
    print(f"| ratio 2/1 | **{p['2-total'] / p['1-total']:.2f}x** | {p['2-work'] / p['1-work']:.2f}x | |")
    print(f"| pool start-up, 2 workers | first in a process (starts the fork server): {p['start-cold']:.2f} s; "
          f"later: {p.get('start-warm', float('nan')):.2f} s | | |")
    print(f"| control: 2 processes / 1 on pure CPU work | {before:.2f}x before, {after:.2f}x after | | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12, help="distinct full-resolution images per dataset")
    ap.add_argument("--workers-images", type=int, default=96, help="images for the prepare scaling test")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-loading", action="store_true", help="only the prepare scaling part")
    ap.add_argument("--skip-prepare", action="store_true", help="only the loading part")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="hrseg-bench-"))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average before: {os.getloadavg()[0]:.2f}; scratch {work}")
    if not args.skip_loading:
        print("\n| size | png (img/s) | raw ceiling | none, verified | none, unverified | verified / unverified "
              "| verified / png | verified / raw | lzf, verified | lzf, unverified | lzf verified / png |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for dataset, full, size in (("cityscapes", (2048, 1024), (1024, 512)), ("gtav", (1914, 1052), (1280, 720))):
            r = bench_loading(work, dataset, full, size, args.images, args.repeats)
            v, u = r["none-verified"], r["none-unverified"]
            print(f"| {size[0]}x{size[1]} ({dataset}) | {r['png']:.1f} | {r['raw']:.0f} | {v:.0f} | {u:.0f} | "
                  f"{v / u:.2f} | **{v / r['png']:.0f}x** | {v / r['raw']:.2f} | {r['lzf-verified']:.0f} | "
                  f"{r['lzf-unverified']:.0f} | {r['lzf-verified'] / r['png']:.1f}x |")
    if not args.skip_prepare:
        bench_prepare_table(work, args.workers_images, max(1, args.repeats - 1))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
