"""The whole hrseg workflow from Python, without the CLI.

Generates the procedural scenes, trains direct joint training and W^19 on
them with the quick start's small CPU budget, evaluates both (mIoU at full
label resolution and the weighting quality against the realism mask), draws
the weight maps and prints a Table-1 style comparison.

    python examples/python_api.py --out /tmp/hrseg-api            # ~2 minutes on 2 CPU cores
    python examples/python_api.py --out /tmp/hrseg-api --iters 50  # a quick smoke run

For real data, replace step 1 with hrseg.data.prepare.prepare(PrepareConfig(...))
for "gtav" and "cityscapes", and use a preset instead of quick_config:
``PRESETS["w19"].config()`` with ``override(cfg, {"data.data": ..., "run.out": ...})``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hrseg.data.synthetic import SceneConfig, SyntheticPrepareConfig, prepare_synthetic
from hrseg.evaluation.evaluate import EvalOptions, evaluate_and_save
from hrseg.reporting import build_report, write_report
from hrseg.training.presets import quick_config
from hrseg.training.trainer import train
from hrseg.visualization.render import VisualizeOptions, visualize_weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("hrseg-api"))
    ap.add_argument("--iters", type=int, default=None, help="iterations per run (default: the quick budget)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)  # the small model is fastest on one thread (benchmarks/README.md)

    # 1. data: procedural scenes in GTAV / Cityscapes formats, prepared into shards
    data = args.out / "data"
    prepare_synthetic(SyntheticPrepareConfig(out=data, scenes=SceneConfig(seed=0), workers=2))

    runs = []
    for scheme in ("joint", "w19"):
        # 2. train: a typed TrainConfig; quick_config is the small CPU budget, any field can be overridden
        run = args.out / "runs" / f"{scheme}-s{args.seed}"
        changes = {"run.device": "cpu"} | ({"optim.iters": args.iters} if args.iters else {})
        result = train(quick_config(scheme, str(data), str(run), seed=args.seed, **changes))
        print(f"{scheme}: {result.iteration} iterations in {result.seconds:.0f} s -> {result.checkpoint}")

        # 3. evaluate: val mIoU (saved where `hrseg report` looks for it) ...
        val, _ = evaluate_and_save(run, EvalOptions(split="val", device="cpu"))
        print(f"{scheme}: val mIoU {100 * val.miou:.1f}, pixel accuracy {100 * val.pixel_accuracy:.1f}")
        # ... and, for a weighting scheme, how well W separates realistic from deviating source pixels
        if scheme == "w19":
            quality, _ = evaluate_and_save(run, EvalOptions(split="source", device="cpu", max_images=100))
            print(f"{scheme}: weight AUC {quality.combined.auc:.3f}, mean weight realistic "
                  f"{quality.combined.mean_realistic:.2f} / deviating {quality.combined.mean_deviating:.2f}")
            # 4. pictures: one labelled panel per source image and an index.html
            gallery = visualize_weights(run, VisualizeOptions(out=str(args.out / "weights"), num=4, device="cpu"))
            print(f"weight maps: {gallery.index}")
        runs.append(run)

    # 5. compare: the Table-1 style report as Markdown and JSON
    report = build_report(runs)
    md, js = write_report(report, args.out)
    print(md.read_text())


if __name__ == "__main__":
    main()
