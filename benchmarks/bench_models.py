"""Network benchmarks (run by hand): forward and forward+backward time of S, W^1, W^19, G and D.

    python benchmarks/bench_models.py [--size 1024x512] [--width 1.0 --width 0.25] [--reps 2]
                                      [--device cpu|cuda] [--amp] [--channels-last] [--out FILE.json]

Each network is timed on the input it sees in training, batch 1 (``--batch``):
- S: FCN-8s (VGG16) and PSPNet (dilated ResNet50, aux head) on the image;
  forward+backward = cross-entropy on the logits (and the aux logits);
- W^1 / W^19: the hierarchical module (three trunks: pixel, region, image) on the
  19-channel prediction at the image size; forward = the weight map under
  no_grad (what the weighted source loss uses), forward+backward = the
  domain-classifier loss, then backward;
- G: from the matching segmenter's feature map (stride 32 for FCN, 8 for PSPNet)
  to the image, L1 loss; D: on the image, domain + class cross-entropy.
Overheads are ratios to the segmenter they go with, measured side by side in one run.
Times are the median of ``--reps`` repetitions after one warm-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from hrseg.models import Discriminator, Generator, HierarchicalWeighting, build_segmenter, count_parameters

console = Console(width=150)


@dataclass
class Timing:
    width: float
    name: str
    pairs_with: str
    params: int
    forward_s: float
    train_s: float


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], None], reps: int, device: torch.device) -> float:
    fn()  # warm-up: allocator, cudnn autotune, lazy init
    sync(device)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_width(width: float, size: tuple[int, int], args: argparse.Namespace) -> list[Timing]:
    device = torch.device(args.device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    amp_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    autocast = lambda: torch.autocast(device.type, dtype=amp_dtype, enabled=args.amp)  # noqa: E731
    w_img, h_img = size
    b = args.batch
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(b, 3, h_img, w_img, generator=gen).to(device, memory_format=fmt)
    labels = torch.randint(0, 19, (b, h_img, w_img), generator=gen).to(device)
    prediction = torch.randn(b, 19, h_img, w_img, generator=gen).softmax(1).to(device, memory_format=fmt)
    rows: list[Timing] = []

    def add(name: str, pairs_with: str, module: torch.nn.Module, fwd: Callable[[], object],
            loss: Callable[[], torch.Tensor]) -> None:
        def forward() -> None:
            with torch.no_grad(), autocast():
                fwd()

        def train() -> None:
            module.zero_grad(set_to_none=True)
            with autocast():
                value = loss()
            value.backward()

        console.print(f"  width {width:g}: {name} ...", highlight=False, end=" ")
        module.train()
        t_fwd = median_time(forward, args.reps, device)
        t_train = median_time(train, args.reps, device)
        rows.append(Timing(width, name, pairs_with, count_parameters(module), t_fwd, t_train))
        console.print(f"forward {t_fwd:.3f} s, fwd+bwd {t_train:.3f} s", highlight=False)

    torch.manual_seed(0)
    for arch, label, stride in (("fcn8s-vgg16", "S FCN-8s", 32), ("pspnet-r50", "S PSPNet+aux", 8)):
        seg = build_segmenter(arch, width=width, aux=arch == "pspnet-r50").to(device, memory_format=fmt)

        def seg_loss(seg: torch.nn.Module = seg) -> torch.Tensor:
            out = seg(image)
            total = F.cross_entropy(out.logits.float(), labels)
            return total if out.aux is None else total + 0.4 * F.cross_entropy(out.aux.float(), labels)

        add(label, label, seg, lambda seg=seg: seg(image), seg_loss)
        with torch.no_grad():
            features = seg(image).features.detach()
        g = Generator(seg.feature_channels, stride, width).to(device, memory_format=fmt)
        add(f"G stride {stride}", label, g, lambda g=g, f=features: g(f, size=(h_img, w_img)),
            lambda g=g, f=features: F.l1_loss(g(f, size=(h_img, w_img)).float(), image))
        del seg, g, features
    for scheme, label in (("w1", "W^1 (3 levels)"), ("w19", "W^19 (3 levels)")):
        w = HierarchicalWeighting(scheme, width=width).to(device, memory_format=fmt)
        add(label, "S", w, lambda w=w: w(prediction, labels, update_running=False).weight,
            lambda w=w: w.classifier_loss(prediction, labels, 0.0))
    d = Discriminator(width=width).to(device, memory_format=fmt)

    def d_loss() -> torch.Tensor:
        domain, cls = d(image)
        small = F.interpolate(labels[:, None].float(), size=cls.shape[-2:], mode="nearest")[:, 0].long()
        return F.cross_entropy(domain.float(), torch.zeros_like(small)) + F.cross_entropy(cls.float(), small)

    add("D", "S", d, lambda: d(image), d_loss)
    return rows


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores visible, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def report(rows: list[Timing], args: argparse.Namespace) -> None:
    table = Table(title=f"networks at {args.size}, batch {args.batch}, {args.device}"
                  f"{' AMP' if args.amp else ''}{' channels_last' if args.channels_last else ''}")
    for col in ("width", "network", "params", "forward s", "fwd+bwd s", "fwd / FCN", "fwd+bwd / FCN",
                "fwd+bwd / PSPNet"):
        table.add_column(col, justify="left" if col == "network" else "right")
    for r in rows:
        fcn = next(x for x in rows if x.width == r.width and x.name == "S FCN-8s")
        psp = next(x for x in rows if x.width == r.width and x.name == "S PSPNet+aux")
        table.add_row(f"{r.width:g}", r.name, f"{r.params:,}", f"{r.forward_s:.3f}", f"{r.train_s:.3f}",
                      f"{r.forward_s / fcn.forward_s:.2f}", f"{r.train_s / fcn.train_s:.2f}",
                      f"{r.train_s / psp.train_s:.2f}")
    console.print(table)
    if args.markdown:
        print("| width | network | params | forward s | fwd+bwd s | fwd+bwd / FCN-8s | fwd+bwd / PSPNet |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            fcn = next(x for x in rows if x.width == r.width and x.name == "S FCN-8s")
            psp = next(x for x in rows if x.width == r.width and x.name == "S PSPNet+aux")
            print(f"| {r.width:g} | {r.name} | {r.params:,} | {r.forward_s:.3f} | {r.train_s:.3f} | "
                  f"{r.train_s / fcn.train_s:.2f} | {r.train_s / psp.train_s:.2f} |")
    for width in sorted({r.width for r in rows}, reverse=True):
        by = {r.name: r for r in rows if r.width == width}
        for seg, g in (("S FCN-8s", "G stride 32"), ("S PSPNet+aux", "G stride 8")):
            s = by[seg].train_s
            console.print(
                f"width {width:g}, {seg[2:]}: W^1 +{by['W^1 (3 levels)'].train_s / s:.0%}, "
                f"W^19 +{by['W^19 (3 levels)'].train_s / s:.0%}, "
                f"GAN (G + D) +{(by[g].train_s + by['D'].train_s) / s:.0%} of the segmenter's fwd+bwd",
                highlight=False,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1024x512", help="WIDTHxHEIGHT")
    parser.add_argument("--width", type=float, action="append", help="width multiplier(s); default 1.0")
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", action="store_true", help="autocast (bf16 on CPU, fp16 on CUDA)")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--out", help="write the timings as JSON here")
    parser.add_argument("--markdown", action="store_true", help="also print the table as markdown on stdout")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.lower().split("x"))
    widths = args.width or [1.0]
    if args.threads:
        torch.set_num_threads(args.threads)
    console.print(f"machine: {machine()}", highlight=False)
    rows: list[Timing] = []
    for width in widths:
        rows += bench_width(width, (size[0], size[1]), args)
    report(rows, args)
    if args.out:
        from hrseg.atomic import write_json

        write_json(args.out, {"machine": machine(), "args": vars(args), "rows": [asdict(r) for r in rows]})


if __name__ == "__main__":
    main()
