"""The end-to-end demo on procedural scenes: data, four schemes x K seeds, evaluation, pictures, report.

Everything runs through the same library calls a user would make (prepare
synthetic, train, evaluate_run, visualize_weights, build_report), so the
quick start doubles as the smallest complete example. It is resumable: a run
that already finished with the same configuration is kept, an interrupted
one continues from its last checkpoint, and evaluations are redone only when
missing.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from hrseg.atomic import write_json
from hrseg.console import console, progress
from hrseg.data.synthetic import SceneConfig, SyntheticPrepareConfig, prepare_synthetic
from hrseg.errors import HrsegError
from hrseg.evaluation.evaluate import EvalOptions, evaluate_and_save
from hrseg.reporting import Report, build_report, write_report
from hrseg.training.config import TrainConfig, override
from hrseg.training.presets import quick_config
from hrseg.training.rundir import RunDir
from hrseg.training.schemes import QUICKSTART_SCHEMES, SCHEMES
from hrseg.training.trainer import train
from hrseg.visualization.render import Gallery, VisualizeOptions, visualize_weights


@dataclass
class QuickstartConfig:
    """The whole demo; defaults are what `hrseg quickstart` runs (measured to fit 10 min on 2 CPU cores)."""

    out: str = "hrseg-quickstart"
    seeds: int = 3
    schemes: tuple[str, ...] = QUICKSTART_SCHEMES
    oracle: bool = False  # also train the perfect-selection upper bound (weight = realism mask); costs ~25 % more
    iters: int | None = None  # None: the training engineer's QUICK_BUDGET
    scene_seed: int = 0
    scene_size: tuple[int, int] = SceneConfig.size  # (W, H) of the generated target scenes
    source_images: int = SceneConfig.source_images
    target_images: int = SceneConfig.target_images
    val_images: int = SceneConfig.val_images
    visualize_images: int = 6
    device: str = "cpu"
    jobs: int = 2  # runs trained at the same time, in worker processes (1: in this process, with live bars)
    threads: int = 1  # torch CPU threads: tiny convolutions run faster on one, and never stall on a busy box
    workers: int = 2  # scene generation / shard preparation processes
    show_progress: bool = True

    def validate(self) -> "QuickstartConfig":
        if self.seeds < 1:
            raise HrsegError(f"--seeds: must be >= 1, got {self.seeds}")
        for scheme in self.schemes:
            SCHEMES.check(scheme)
        if self.iters is not None and self.iters < 1:
            raise HrsegError(f"--iters: must be >= 1, got {self.iters}")
        if self.jobs < 1:
            raise HrsegError(f"--jobs: must be >= 1, got {self.jobs}")
        if self.threads < 1:
            raise HrsegError(f"--threads: must be >= 1, got {self.threads}")
        return self

    @property
    def trained_schemes(self) -> tuple[str, ...]:
        """The schemes every seed trains: ``schemes``, plus the oracle row when asked for."""
        return self.schemes + (("oracle",) if self.oracle and "oracle" not in self.schemes else ())

    @property
    def data_dir(self) -> Path:
        return Path(self.out) / "data"

    def run_dir(self, scheme: str, seed: int) -> RunDir:
        return RunDir(Path(self.out) / "runs" / f"{scheme}-s{seed}")

    def train_config(self, scheme: str, seed: int) -> TrainConfig:
        changes: dict[str, Any] = {"run.device": self.device, "run.progress": self.show_progress,
                                   "run.threads": self.threads}
        if self.iters is not None:
            changes["optim.iters"] = self.iters
        # small scenes (--scene-size) are prepared smaller than the quick budget's crop: crop what there is
        prepared = SyntheticPrepareConfig(out=self.data_dir, scenes=SceneConfig(size=self.scene_size))
        width, height = prepared.target_prepared_size()
        crop = quick_config(scheme, "", "").data.crop
        if width < crop[0] or height < crop[1]:
            changes["data.crop"] = (min(crop[0], width), min(crop[1], height))
        return quick_config(scheme, str(self.data_dir), str(self.run_dir(scheme, seed)), seed=seed, **changes)


@dataclass
class QuickstartResult:
    report: Report
    report_files: tuple[Path, Path]
    galleries: dict[str, Gallery]
    seconds: dict[str, float] = field(default_factory=dict)
    runs: list[Path] = field(default_factory=list)
    report_page: Path | None = None  # report.html (None: matplotlib is not installed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "report": self.report.to_dict(),
            "report_files": [str(p) for p in self.report_files],
            "report_page": None if self.report_page is None else str(self.report_page),
            "galleries": {k: g.to_dict() for k, g in self.galleries.items()},
            "seconds": self.seconds,
            "runs": [str(r) for r in self.runs],
        }


def _train_once(run: RunDir, cfg: TrainConfig) -> str:
    """Keep a finished run of the same config, continue an interrupted one, else train afresh."""
    if run.is_finished(cfg):
        return "kept"
    resume = run.can_resume(cfg)
    quiet, console.quiet = console.quiet, True  # each run's start lines would interleave between parallel runs
    try:
        train(cfg, resume=resume, overwrite=not resume)  # the quick start owns its run folders
    finally:
        console.quiet = quiet
    return "resumed" if resume else "trained"


def _evaluate_once(run: RunDir, opts: EvalOptions) -> None:
    if not run.eval_is_current(opts.split):
        evaluate_and_save(run.path, opts)


def _evaluate_run_dir(cfg: QuickstartConfig, scheme: str, seed: int, show_progress: bool) -> float:
    """Val mIoU (and, for a weighting scheme, its quality on source); returns the seconds spent."""
    t = time.perf_counter()
    run = cfg.run_dir(scheme, seed)
    common = dict(device=cfg.device, show_progress=show_progress)
    _evaluate_once(run, EvalOptions(split="val", **common))
    if SCHEMES[scheme].weighting is not None:
        _evaluate_once(run, EvalOptions(split="source", **common))  # all of it: reports read only full ones
    return time.perf_counter() - t


def _train_sequential(cfg: QuickstartConfig, jobs: list[tuple[int, str]], say: Callable[[str], None]) -> float:
    t_eval = 0.0
    for k, (seed, scheme) in enumerate(jobs, 1):
        run, tcfg = cfg.run_dir(scheme, seed), cfg.train_config(scheme, seed)
        say(f"[{k}/{len(jobs)}] {scheme}, seed {seed}: train {tcfg.optim.iters} iterations -> {run}")
        if _train_once(run, tcfg) == "kept":
            console.print("  already trained with this configuration; kept")
        t_eval += _evaluate_run_dir(cfg, scheme, seed, cfg.show_progress)
    return t_eval


def _train_job(run: str, config: dict[str, Any]) -> tuple[str, float]:
    """Worker side of the parallel mode: one run, no live display (the parent draws the bar)."""
    t = time.perf_counter()
    state = _train_once(RunDir(run), TrainConfig.from_dict(config))
    return state, time.perf_counter() - t


def _train_parallel(cfg: QuickstartConfig, jobs: list[tuple[int, str]], say: Callable[[str], None]) -> float:
    """``cfg.jobs`` runs at a time in worker processes (one torch thread each); evaluate each as it ends.

    Every run is seeded on its own, so the results are those of the sequential
    mode; only the order of the log lines differs.
    """
    from hrseg.data.workers import pool_context

    t_eval = 0.0
    todo = []
    for seed, scheme in jobs:
        run, tcfg = cfg.run_dir(scheme, seed), cfg.train_config(scheme, seed)
        if run.is_finished(tcfg):
            console.print(f"{scheme}, seed {seed}: already trained with this configuration; kept")
            t_eval += _evaluate_run_dir(cfg, scheme, seed, cfg.show_progress)
        else:
            todo.append((seed, scheme, tcfg))
    if not todo:
        return t_eval
    iters = todo[0][2].optim.iters
    say(f"training {len(todo)} runs of {iters} iterations, {min(cfg.jobs, len(todo))} at a time")
    with progress("run", disable=not cfg.show_progress) as bar, \
            ProcessPoolExecutor(max_workers=min(cfg.jobs, len(todo)), mp_context=pool_context()) as pool:
        task = bar.add_task("train runs", total=len(todo), rate="")
        futures: dict[Future[tuple[str, float]], tuple[int, str]] = {}
        for seed, scheme, tcfg in todo:
            quiet = override(tcfg, {"run.progress": False})
            futures[pool.submit(_train_job, str(cfg.run_dir(scheme, seed).path), quiet.to_dict())] = (seed, scheme)
        for future in as_completed(futures):
            seed, scheme = futures[future]
            state, secs = future.result()
            t_eval += _evaluate_run_dir(cfg, scheme, seed, False)  # one live display at a time: the bar above
            miou = (cfg.run_dir(scheme, seed).eval_results("val") or {})["miou"]
            console.print(f"{scheme}, seed {seed}: {state} in {secs:.0f} s, val mIoU {100 * miou:.1f}")
            bar.update(task, advance=1)
    return t_eval


def run_quickstart(cfg: QuickstartConfig, on_step: Callable[[str], None] | None = None) -> QuickstartResult:
    """Generate data, train every scheme for every seed, evaluate, draw the weights, compare.

    torch's CPU thread count is set to ``cfg.threads`` for the duration: with
    two or more threads, the small convolutions of the quick budget spend more
    time synchronising than computing, and on a machine where anything else
    runs they stall (measured: 20x slower per iteration with 2 threads on a
    busy 2-core box, see benchmarks/README.md).
    """
    cfg.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run(cfg, on_step)
    finally:
        torch.set_num_threads(threads)


def _report_page(report: Report, cfg: QuickstartConfig, galleries: dict[str, Gallery],
                 say: Callable[[str], None]) -> Path | None:
    """report.html beside report.md, linking the weight-map galleries; skipped, in one line, without matplotlib."""
    from hrseg.visualization.report_page import MISSING, GalleryLink, plots_available, write_report_page

    if not plots_available():
        say(f"no report.html: {MISSING}")
        return None
    links = [GalleryLink(f"weight maps, {SCHEMES[s].title}, seed 0", g.index.parent) for s, g in galleries.items()]
    return write_report_page(report, Path(cfg.out) / "report.html", links, title="hrseg quick start")


def _run(cfg: QuickstartConfig, on_step: Callable[[str], None] | None) -> QuickstartResult:
    say = on_step or (lambda text: console.print(f"[bold cyan]{text}[/]"))
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()

    say("scenes + shards (hrseg prepare synthetic)")
    scenes = SceneConfig(seed=cfg.scene_seed, source_images=cfg.source_images, target_images=cfg.target_images,
                         val_images=cfg.val_images, size=cfg.scene_size)
    prepare_synthetic(SyntheticPrepareConfig(out=cfg.data_dir, scenes=scenes, workers=cfg.workers),
                      show_progress=cfg.show_progress)
    seconds["prepare"] = time.perf_counter() - t0

    runs = [cfg.run_dir(scheme, seed).path for seed in range(cfg.seeds) for scheme in cfg.trained_schemes]
    jobs = [(seed, scheme) for seed in range(cfg.seeds) for scheme in cfg.trained_schemes]
    t = time.perf_counter()
    if cfg.jobs > 1:
        t_eval = _train_parallel(cfg, jobs, say)
    else:
        t_eval = _train_sequential(cfg, jobs, say)
    seconds["train"] = time.perf_counter() - t - t_eval
    seconds["evaluate"] = t_eval

    t = time.perf_counter()
    galleries: dict[str, Gallery] = {}
    for scheme in cfg.schemes:
        if SCHEMES[scheme].weighting is not None:
            say(f"weight maps of {scheme}, seed 0")
            galleries[scheme] = visualize_weights(cfg.run_dir(scheme, 0).path, VisualizeOptions(
                out=str(Path(cfg.out) / "weights" / scheme), num=cfg.visualize_images, device=cfg.device,
                show_progress=cfg.show_progress))
    seconds["visualize"] = time.perf_counter() - t

    report = build_report(runs, "val")
    files = write_report(report, cfg.out)
    page = _report_page(report, cfg, galleries, say)
    seconds["total"] = time.perf_counter() - t0
    result = QuickstartResult(report=report, report_files=files, galleries=galleries, seconds=seconds, runs=runs,
                              report_page=page)
    write_json(Path(cfg.out) / "quickstart.json", result.to_dict())
    return result
