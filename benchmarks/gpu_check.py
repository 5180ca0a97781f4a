"""One command that says whether hrseg's GPU path works and how fast it is.

For FCN-8s, PSPNet and DeepLab-v2 at full width (1024x512 target crops, 1280x720
source images, each segmenter's preset budget, AMP and channels_last) it trains
target-only, joint, w19 and w19+GAN for ~50 steps through the real ``Trainer``
and reports images/s, peak memory, the loader's wait as a share of the step,
and whether the losses stay finite and fall. Then torch.compile on one case,
evaluation with 2048x1024 labels through ``evaluate_segmenter``, and a
one-process ``torchrun -m hrseg train`` (NCCL on a GPU, gloo on the CPU).
The data are procedural scenes written and prepared by hrseg's own pipeline.

    python benchmarks/gpu_check.py                          # one GPU, about 6 minutes
    python benchmarks/gpu_check.py --cases 'deeplabv2/*,eval/*'
    python benchmarks/gpu_check.py --tiny --device cpu      # 1/16 width on the CPU (the test suite's run)

A GPU machine cannot download ImageNet weights, so the frozen-BN DeepLab-v2
cases load a backbone file written here: random weights whose batch-norm
statistics were measured on the scenes (``--pretrained PATH``, the real path).
At a reduced width no weight file can load, so ``--tiny`` trains batch norm.
"""

from __future__ import annotations

import argparse
import fnmatch
import gc
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

import hrseg
from hrseg.atomic import write_json
from hrseg.console import console, progress
from hrseg.data.augment import normalize
from hrseg.data.dataset import open_split
from hrseg.evaluation.evaluate import evaluate_segmenter, full_label_sizes
from hrseg.models import SEGMENTERS
from hrseg.device import resolve_device
from hrseg.training.build import amp_dtype, build_segmenter_of
from hrseg.training.config import TrainConfig, override
from hrseg.training.presets import PRESET_BUDGETS
from hrseg.training.rundir import RunDir
from hrseg.training.schemes import plan
from hrseg.training.trainer import NonFiniteLoss, Trainer

ARCHS: dict[str, str] = {"fcn8s": "fcn8s-vgg16", "pspnet": "pspnet-r50", "deeplabv2": "deeplabv2-r101"}
TRAIN_CASES: tuple[tuple[str, str, bool], ...] = (
    ("target-only", "target-only", False), ("joint", "joint", False), ("w19", "w19", False),
    ("w19+gan", "w19", True),
)
COMPILE_CASE = ("deeplabv2", "target-only")
TORCHRUN_CASE = ("pspnet", "joint", "sync")  # SyncBatchNorm + DDP in one process
GOAL_GAN_RATIO, GOAL_LOADER_SHARE = 1.6, 0.05


@dataclass(frozen=True)
class Scale:
    """Sizes and widths of one check; ``full`` is what the goals are about."""

    name: str
    scene: tuple[int, int]  # drawn target scenes = full label size (W, H); source: same width, 16:9
    target: tuple[int, int]  # prepared target size
    source: tuple[int, int]  # prepared source size
    crop: tuple[int, int]
    width: float
    weight_width: float
    gan_width: float
    steps: int
    warmup: int
    torchrun_iters: int
    images: tuple[int, int, int]  # source, target train, target val


FULL = Scale("full", (2048, 1024), (1024, 512), (1280, 720), (1024, 512), 1.0, 1.0, 1.0, 50, 5, 20, (16, 8, 8))
TINY = Scale("tiny", (128, 64), (64, 32), (80, 45), (64, 32), 0.0625, 0.125, 0.0625, 4, 1, 3, (6, 4, 2))


@dataclass
class Context:
    scale: Scale
    device: torch.device
    data: Path
    work: Path
    deadline: float
    workers: int
    threads: int
    amp: bool
    pretrained: dict[str, str]  # arch -> --pretrained for the frozen-BN cases

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def all_cases() -> list[str]:
    """In running order: compilation, the slowest and least essential, comes last."""
    names = [f"{a}/{c}" for a in ARCHS for c, _, _ in TRAIN_CASES]
    names += [f"eval/{a}" for a in ARCHS]
    return [*names, "torchrun", f"{COMPILE_CASE[0]}/{COMPILE_CASE[1]}+compile"]


def select_cases(patterns: str) -> list[str]:
    """Cases matching any comma-separated glob, in the check's order; a pattern matching nothing is an error."""
    cases = all_cases()
    chosen: set[str] = set()
    for pattern in (p.strip() for p in patterns.split(",") if p.strip()):
        hits = fnmatch.filter(cases, pattern)
        if not hits:
            raise SystemExit(f"--cases: {pattern!r} matches no case (cases: {', '.join(cases)})")
        chosen.update(hits)
    return [c for c in cases if c in chosen]


# --- data and weights --------------------------------------------------------------------------

def prepare_data(scale: Scale, out: Path, workers: int) -> Path:
    """Procedural scenes at the check's sizes, through hrseg's generator and ``prepare``."""
    from hrseg.data.prepare import PrepareConfig, prepare
    from hrseg.data.synthetic import SceneConfig, generate_raw

    n_src, n_tgt, n_val = scale.images
    raw = out / "raw"
    generate_raw(SceneConfig(seed=0, source_images=n_src, target_images=n_tgt, val_images=n_val, size=scale.scene),
                 raw, workers=workers)
    common: dict[str, Any] = {"out": out, "workers": workers, "shard_size": 8}
    prepare(PrepareConfig(dataset="gtav", root=raw / "GTAV", size=scale.source, **common), False)
    prepare(PrepareConfig(dataset="cityscapes", root=raw / "cityscapes", splits=("train", "val"), size=scale.target,
                          **common), False)
    return out


def calibrated_backbone(arch: str, width: float, data: Path, device: torch.device, batches: int = 4) -> dict[str, Any]:
    """A backbone state dict with random weights and batch-norm statistics measured on the target scenes.

    Frozen batch norm needs statistics; without ImageNet weights these stand in
    for them, so the frozen network normalises like a trained one would.
    """
    net = SEGMENTERS[arch].build_backbone(width).to(device)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batches
    net.train()
    images = open_split(data, "cityscapes", "train", fields=("image",))
    with torch.no_grad():
        for i in range(min(batches, len(images))):
            net(normalize(images[i]["image"][None].to(device)))
    return {k: v.detach().cpu() for k, v in net.state_dict().items()}


# --- training cases ----------------------------------------------------------------------------

class LoaderClock:
    """Seconds the loop spent waiting in the data streams' ``next()`` (reading, collating, pinning)."""

    def __init__(self, trainer: Trainer) -> None:
        self.seconds = 0.0
        for stream in trainer.data.streams.values():
            stream.next = self._timed(stream.next)  # type: ignore[method-assign]

    def _timed(self, real: Any) -> Any:
        def timed() -> Any:
            t0 = time.perf_counter()
            try:
                return real()
            finally:
                self.seconds += time.perf_counter() - t0
        return timed


def case_config(ctx: Context, arch: str, scheme: str, gan: bool, name: str, **extra: Any) -> TrainConfig:
    """The segmenter's preset budget (batch, lr, BN mode, AMP) at the check's sizes."""
    sc = ctx.scale
    changes: dict[str, Any] = {
        **PRESET_BUDGETS[arch], "scheme": scheme, "gan.enabled": gan, "model.width": sc.width,
        "weighting.width": sc.weight_width, "gan.width": sc.gan_width, "data.crop": sc.crop,
        "model.pretrained": ctx.pretrained.get(arch, "none"), "data.data": str(ctx.data),
        "data.workers": ctx.workers, "run.out": str(ctx.work / "runs" / name.replace("/", "_")),
        "run.device": str(ctx.device), "run.amp": ctx.amp, "run.channels_last": True, "run.progress": False,
        "run.threads": ctx.threads, "run.checkpoint_every": 10**6, **extra,
    }
    if sc.width < 1 and changes.get("model.bn") == "frozen":
        changes["model.bn"] = "train"  # no weight file loads at a reduced width (see the module docstring)
    return override(TrainConfig(scheme=scheme), changes)


def _loss_health(values: list[dict[str, float]]) -> dict[str, Any]:
    finite = all(math.isfinite(v) for row in values for v in row.values())
    target = [row["target"] for row in values if "target" in row]
    k = max(1, len(target) // 5)
    first, last = (statistics.fmean(target[:k]), statistics.fmean(target[-k:])) if target else (math.nan, math.nan)
    return {"finite": finite, "target_loss_first": first, "target_loss_last": last,
            "loss_falls": bool(target) and len(target) > 1 and last < first}


def train_case(ctx: Context, name: str, arch: str, scheme: str, gan: bool, compile_: bool = False) -> dict[str, Any]:
    sc, device = ctx.scale, ctx.device
    row: dict[str, Any] = {"case": name, "kind": "train", "arch": arch, "scheme": scheme, "gan": gan,
                           "compile": compile_}
    cfg = case_config(ctx, arch, scheme, gan, name, **{"run.compile": compile_})
    row.update(bn=cfg.model.bn, batch_per_domain=cfg.data.batch_size, lr=cfg.optim.lr)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    trainer = Trainer(cfg)
    steps: list[float] = []
    waits: list[float] = []
    values: list[dict[str, float]] = []
    try:
        clock = LoaderClock(trainer)
        row["build_s"] = time.perf_counter() - t0
        row["amp_dtype"] = str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "float32"
        p = plan(trainer.cfg, 0)
        row["images_per_step"] = cfg.data.batch_size * (int(p.source) + int(p.target))
        row["status"] = "ok"
        for i in range(sc.warmup + sc.steps):
            if ctx.left() <= 0:
                row["status"] = "partial (budget)"
                break
            clock.seconds = 0.0
            _sync(device)
            start = time.perf_counter()
            values.append(trainer.step(plan(trainer.cfg, trainer.iteration)))
            trainer.iteration += 1
            _sync(device)
            dt = time.perf_counter() - start
            if i == 0:
                row["first_step_s"] = dt  # cudnn autotuning, compilation
            if i >= sc.warmup:
                steps.append(dt)
                waits.append(clock.seconds)
    except NonFiniteLoss as exc:
        row.update(status="non-finite", error=str(exc))
    finally:
        trainer.data.close()
        trainer.close()
        del trainer
        gc.collect()
    row["steps_timed"] = len(steps)
    if steps:
        med = statistics.median(steps)
        row.update(step_s=med, images_per_s=row["images_per_step"] / med,
                   loader_wait_share=sum(waits) / sum(steps))
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    row.update(_loss_health(values))
    return row


# --- evaluation and torchrun -------------------------------------------------------------------

def eval_case(ctx: Context, name: str, arch: str) -> dict[str, Any]:
    """``evaluate_segmenter`` as ``hrseg eval`` runs it (fp32, eval mode); the second of two passes is timed."""
    cfg = case_config(ctx, arch, "target-only", False, name)
    seg = build_segmenter_of(cfg, pretrained="none").to(ctx.device).eval()
    ds = open_split(ctx.data, "cityscapes", "val", fields=("image", "full_label", "name"))
    h, w = full_label_sizes(ds)[0]
    row: dict[str, Any] = {"case": name, "kind": "eval", "arch": arch, "label_size": f"{w}x{h}",
                           "input_size": "x".join(map(str, ctx.scale.target)), "images": len(ds)}
    evaluate_segmenter(seg, ds, device=ctx.device, batch_size=2, show_progress=False)
    _sync(ctx.device)
    t0 = time.perf_counter()
    evaluate_segmenter(seg, ds, device=ctx.device, batch_size=2, show_progress=False)
    _sync(ctx.device)
    seconds = time.perf_counter() - t0
    row.update(status="ok", eval_s=seconds, images_per_s=len(ds) / seconds)
    del seg
    gc.collect()
    return row


def torchrun_case(ctx: Context, name: str) -> dict[str, Any]:
    """``torchrun --nproc_per_node=1 -m hrseg train --config ...``: the multi-GPU code path on one device."""
    short, scheme, bn = TORCHRUN_CASE
    cfg = case_config(ctx, ARCHS[short], scheme, False, name,
                      **{"model.bn": bn, "optim.iters": ctx.scale.torchrun_iters})
    config = ctx.work / "torchrun-config.json"
    write_json(config, cfg.to_dict())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=1",
           "-m", "hrseg", "train", "--config", str(config), "--no-progress"]
    root = str(Path(hrseg.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
    if ctx.threads:
        env["OMP_NUM_THREADS"] = str(ctx.threads)
    row: dict[str, Any] = {"case": name, "kind": "torchrun", "arch": ARCHS[short], "scheme": scheme, "bn": bn,
                           "backend": "nccl" if ctx.device.type == "cuda" else "gloo",
                           "iters": cfg.optim.iters}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=max(1.0, ctx.left()),
                              check=False)
    except subprocess.TimeoutExpired:
        row.update(status="timeout (budget)", wall_s=time.perf_counter() - t0)
        return row
    row["wall_s"] = time.perf_counter() - t0
    run = RunDir(cfg.run.out)
    summary = run.summary() if proc.returncode == 0 else None
    if summary is None or summary.get("status") != "finished":
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        row.update(status=f"failed (exit {proc.returncode})", error=" | ".join(tail))
        return row
    values = [{k: v for k, v in r.items() if isinstance(v, float)} for r in run.metrics()]
    row.update(status="ok", images_per_s=summary["images_per_s"], seconds=summary["seconds"], **_loss_health(values))
    return row


# --- report ------------------------------------------------------------------------------------

def goals(rows: list[dict[str, Any]], scale: Scale) -> list[dict[str, Any]]:
    """The README's targets, judged on this run's rows (at full width only; --tiny reports them unjudged)."""
    by = {r["case"]: r for r in rows}
    out: list[dict[str, Any]] = []
    judged = scale.name == "full"
    for short in ARCHS:
        gan, joint = by.get(f"{short}/w19+gan", {}), by.get(f"{short}/joint", {})
        if "step_s" in gan and "step_s" in joint:
            ratio = gan["step_s"] / joint["step_s"]
            out.append({"goal": f"{short}: w19+GAN step / joint step <= {GOAL_GAN_RATIO}", "value": ratio,
                        "met": ratio <= GOAL_GAN_RATIO if judged else None})
    shares = [r["loader_wait_share"] for r in rows if "loader_wait_share" in r]
    if shares:
        out.append({"goal": f"loader wait <= {GOAL_LOADER_SHARE:.0%} of the step (worst case)", "value": max(shares),
                    "met": max(shares) <= GOAL_LOADER_SHARE if judged else None})
    trained = [r for r in rows if r["kind"] in ("train", "torchrun") and "finite" in r]
    if trained:
        bad = sum(1 for r in trained if not r["finite"] or r["status"] == "non-finite")
        dtypes = sorted({r.get("amp_dtype", "") for r in trained} - {""})
        out.append({"goal": f"no non-finite loss ({', '.join(dtypes) or 'float32'})", "value": bad,
                    "met": bad == 0})
    return out


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_report(result: dict[str, Any]) -> None:
    out = console if console.is_terminal else Console(stderr=True, width=150)  # a log keeps whole columns
    rows = result["cases"]
    table = Table(title=f"gpu_check ({result['scale']['name']}) on {result['machine']['device']}")
    for col in ("case", "status", "img/s", "step ms", "peak GiB", "loader wait", "target loss", "falls", "finite"):
        table.add_column(col, justify="left" if col in ("case", "status") else "right", no_wrap=True)
    for r in rows:
        loss = (f"{r['target_loss_first']:.3f} -> {r['target_loss_last']:.3f}"
                if "target_loss_first" in r and not math.isnan(r["target_loss_first"]) else "-")
        step = r.get("step_s")
        table.add_row(
            r["case"], r["status"], _fmt(r.get("images_per_s"), ".1f"),
            _fmt(step * 1000 if step is not None else None, ".1f"), _fmt(r.get("peak_memory_gib"), ".2f"),
            _fmt(r.get("loader_wait_share"), ".1%"), loss,
            {True: "yes", False: "no"}.get(r.get("loss_falls"), "-"),  # type: ignore[arg-type]
            {True: "yes", False: "NO"}.get(r.get("finite"), "-"),  # type: ignore[arg-type]
        )
    out.print(table)
    compiled = [r for r in rows if r.get("compile")]
    for r in compiled:
        base = next((b for b in rows if b["case"] == r["case"].removesuffix("+compile") and "step_s" in b), None)
        if base and "step_s" in r:
            out.print(f"torch.compile: {r['case']} step {base['step_s'] * 1000:.1f} ms -> "
                          f"{r['step_s'] * 1000:.1f} ms ({base['step_s'] / r['step_s']:.2f}x), first step (compiling) "
                          f"{r.get('first_step_s', math.nan):.1f} s")
    goal_table = Table(title="goals" + ("" if result["scale"]["name"] == "full" else " (not judged below full width)"))
    for col in ("goal", "value", "met"):
        goal_table.add_column(col)
    for g in result["goals"]:
        value = g["value"]
        text = f"{value:.1%}" if "loader" in g["goal"] else (f"{value:.2f}x" if "step" in g["goal"] else str(value))
        goal_table.add_row(g["goal"], text, {True: "[green]met[/]", False: "[red]not met[/]"}.get(g["met"], "-"))
    out.print(goal_table)
    out.print(f"{result['seconds']:.0f} s in all (data {result['data_seconds']:.0f} s); JSON: {result['json']}")


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "cpus": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(device=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    memory_gib=props.total_memory / 2**30, bf16=torch.cuda.is_bf16_supported())
    else:
        info["device"] = f"cpu ({platform.processor() or platform.machine()})"
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="1/16 width, 64x32 crops, 4 steps (CPU smoke run)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--cases", default="*", help=f"comma-separated globs over: {', '.join(all_cases())}")
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop starting / continuing cases after this")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per case (default 50; tiny 4)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps (default 5; tiny 1)")
    ap.add_argument("--workers", type=int, default=0, help="data.workers per domain (0: the presets')")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--no-amp", dest="amp", action="store_false", help="train in float32 on the GPU")
    ap.add_argument("--out", type=Path, default=None, help="keep data and runs here (default: a temporary folder)")
    ap.add_argument("--json", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    cases = select_cases(args.cases)
    scale = TINY if args.tiny else FULL
    changes = {k: v for k, v in (("steps", args.steps), ("warmup", args.warmup)) if v is not None}
    scale = Scale(**{**asdict(scale), **changes})
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    tmp = tempfile.TemporaryDirectory(prefix="gpu_check-") if args.out is None else None
    work = Path(tmp.name) if tmp is not None else args.out
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": machine(device), "scale": asdict(scale), "cases_selected": cases,
                              "command": " ".join(sys.argv), "json": str(args.json), "cases": [], "goals": []}
    try:
        t0 = time.perf_counter()
        data = prepare_data(scale, work / "data", workers=min(8, os.cpu_count() or 1))
        result["data_seconds"] = time.perf_counter() - t0
        ctx = Context(scale, device, data, work, t_start + args.budget_s, args.workers, args.threads,
                      args.amp and device.type == "cuda", {})
        for arch in {ARCHS[c.split("/")[0]] for c in cases if c.split("/")[0] in ARCHS}:
            if PRESET_BUDGETS[arch].get("model.bn") == "frozen" and scale.width == 1.0:
                path = work / f"{arch}-calibrated-backbone.pt"
                torch.save(calibrated_backbone(arch, scale.width, data, device), path)
                ctx.pretrained[arch] = str(path)
        dtype = amp_dtype(case_config(ctx, "fcn8s-vgg16", "joint", False, "probe"), device)
        result["amp_dtype"] = str(dtype).replace("torch.", "") if dtype is not None else "float32 (no AMP)"
        with progress("case", disable=args.no_progress) as bar:
            task = bar.add_task("gpu_check", total=len(cases), rate="")
            for name in cases:
                bar.update(task, description=name)
                result["cases"].append(_run_case(ctx, name))
                result["goals"] = goals(result["cases"], scale)
                result["seconds"] = time.monotonic() - t_start
                write_json(args.json, result)  # after every case: a killed run keeps what it measured
                bar.advance(task)
    finally:
        if tmp is not None:
            tmp.cleanup()
    result["seconds"] = time.monotonic() - t_start
    write_json(args.json, result)
    print_report(result)
    return 0 if all(r["status"] in ("ok", "partial (budget)", "skipped (budget)") for r in result["cases"]) else 1


def _run_case(ctx: Context, name: str) -> dict[str, Any]:
    """One case; a failure (out of memory, a crash) is recorded and the check goes on."""
    kind = "torchrun" if name == "torchrun" else "eval" if name.startswith("eval/") else "train"
    if ctx.left() <= 0:
        return {"case": name, "kind": kind, "status": "skipped (budget)"}
    try:
        if name == "torchrun":
            return torchrun_case(ctx, name)
        head, tail = name.split("/")
        if head == "eval":
            return eval_case(ctx, name, ARCHS[tail])
        compile_ = tail.endswith("+compile")
        label = tail.removesuffix("+compile")
        _, scheme, gan = next(c for c in TRAIN_CASES if c[0] == label)
        return train_case(ctx, name, ARCHS[head], scheme, gan, compile_)
    except Exception as exc:  # noqa: BLE001 - the report says what broke; the other cases still run
        first = (str(exc).splitlines() or [""])[0]
        return {"case": name, "kind": kind, "status": "error", "error": f"{type(exc).__name__}: {first}"}
    finally:
        if ctx.device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    raise SystemExit(main())
