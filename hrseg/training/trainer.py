"""The one training loop behind every scheme.

Read top to bottom: set up (run folder, device, data, networks, optimisers,
resume state), then per iteration ask the scheme table for the step plan, draw
the batches, compute the objective, back-propagate each loss into its own
network, step every optimiser, log, checkpoint. What the losses are lives in
``objective.py``; what is built in ``build.py``; the data in ``batches.py``; the
folder in ``rundir.py``.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from hrseg.console import console, progress
from hrseg.device import resolve_device
from hrseg.errors import HrsegError
from hrseg.training import distributed as ddp
from hrseg.training.batches import TrainData
from hrseg.training.build import amp_dtype, apply_bn, build_networks, build_optimizers, build_schedulers
from hrseg.training.checkpoint import capture_rng, restore_rng, save_checkpoint
from hrseg.training.config import TrainConfig
from hrseg.training.interrupt import InterruptFlag
from hrseg.training.objective import Objective, StepLosses
from hrseg.data.dataset import prepared_size
from hrseg.training.checkpoint import check_checkpoint_fits, load_state
from hrseg.training.rundir import BEST, FINAL, LAST, PREVIOUS, RunDir
from hrseg.training.sampling import mix_seed
from hrseg.training.preflight import config_warnings
from hrseg.training.resume import auto_resume_mode, history_entry
from hrseg.training.schemes import SCHEMES, StepPlan, check_scheme, plan
from hrseg.training.selftrain import ema_update, make_teacher, teacher_momentum
from hrseg.training.runlog import RunLog, describe
from hrseg.training.loggers import check_loggers
from hrseg.training.tensorboard import WeightPicture
from hrseg.training.validation import ValResult, Validator, improves, validation_due


class NonFiniteLoss(HrsegError):
    """A loss term became NaN/inf; the run stops and keeps its last good checkpoint."""


#: a crop side may exceed the (largest-scale) image side by this factor; beyond, the crops are mostly padding
MAX_CROP_RATIO = 4


@dataclass
class TrainResult:
    run_dir: str
    status: str  # "finished" | "interrupted"
    iteration: int
    iters: int
    seconds: float
    iters_per_s: float
    images_per_s: float
    last: dict[str, float] = field(default_factory=dict)
    checkpoint: str = ""
    target_images: int = 0
    source_images: int = 0
    best: dict[str, Any] | None = None  # {"miou", "iteration", "split", "images"} with --val-every
    parameters: dict[str, int] = field(default_factory=dict)  # per network
    stopped_by: str = ""  # "SIGINT" / "SIGTERM" when a signal stopped the run (status "interrupted")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Trainer:
    """The networks, optimisers, data and counters of one run; ``run()`` is the loop."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
                 resume_from: str = LAST, validator: Validator | None = None, auto_resume: bool = False,
                 weight_picture: WeightPicture | None = None) -> None:
        cfg = cfg.resolved().validate()
        check_scheme(cfg)
        if not cfg.run.out:
            raise HrsegError("--out: a run directory is required")
        check_loggers(cfg)  # an unknown logger or a missing package stops the run before its folder is touched
        self.cfg, self.run_dir = cfg, RunDir(cfg.run.out)
        self.last_source: dict[str, torch.Tensor] | None = None
        self.validator, self.best = validator, None
        self.resumed = self.finished = False
        self.weight_picture = weight_picture
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        self.device = resolve_device(cfg.run.device)
        self.dist = ddp.init_from_env(self.device.type)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.is_main = self.dist.is_main
        self._owner = contextlib.ExitStack()
        try:
            if auto_resume:
                if resume or overwrite:
                    raise HrsegError("--auto-resume decides by itself whether to resume; drop --resume/--overwrite")
                mode = self._auto_resume_mode()
                resume, overwrite, self.finished = mode in ("resume", "finished"), mode == "restart", mode == "finished"
                resume_from = LAST
            if self.is_main:
                self._owner.enter_context(self.run_dir.claim(resume=resume, overwrite=overwrite))
            if self.finished:
                return
            self._setup(resume_from if resume else None)
        except BaseException:
            self.close()  # a refused run must not keep the folder locked or the process group alive
            if self.is_main:
                self.run_dir.abandon()
            raise

    def _auto_resume_mode(self) -> str:
        """Rank 0 decides (fresh / resume / restart / finished) and every rank follows, or every rank raises."""
        decision: tuple[str, str]
        if self.is_main:
            try:
                decision = ("ok", auto_resume_mode(self.run_dir, self.cfg))
            except HrsegError as exc:
                decision = ("error", str(exc))
        else:
            decision = ("", "")
        kind, value = ddp.broadcast_object(decision if self.is_main else None, self.dist)
        if kind == "error":
            raise HrsegError(value)
        if self.is_main and value != "fresh":
            console.print(f"--auto-resume: {self.run_dir} holds this run: "
                          + {"resume": "continuing from last.pt", "restart": "no checkpoint yet, starting it again",
                             "finished": "already finished"}[value], highlight=False)
        return value

    def _setup(self, resume_from: str | None) -> None:
        cfg = self.cfg
        self.amp_dtype = amp_dtype(cfg, self.device)
        if cfg.run.amp and self.device.type != "cuda" and self.is_main:
            console.print("[yellow]--amp has no effect on the CPU; training in float32[/]")
        for warning in config_warnings(cfg) if self.is_main else ():
            console.print(f"[yellow]warning: {warning}[/]", highlight=False)
        if cfg.run.val_every and self.validator is None and self.is_main:
            console.print("[yellow]run.val_every is set but no validator was given: not validating "
                          "(hrseg.evaluation.validation.train_with_validation validates)[/]")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        payload = self._resume_payload(resume_from) if resume_from else None
        self.data = TrainData(cfg, self.dist, self.device, payload["data"] if payload else None)
        self._check_crop()
        # the size the model works at, as the data is now; a resumed run keeps the one it started with
        self.working_size = (tuple(payload["working_size"]) if payload and payload.get("working_size")
                             else prepared_size(cfg.data.data, cfg.data.target, ("val", cfg.data.target_split)))
        random.seed(cfg.run.seed)
        np.random.seed(cfg.run.seed % (2**32))
        torch.manual_seed(cfg.run.seed)  # network initialisation: identical on every rank
        self.nets = build_networks(cfg)
        for net in self.nets.values():
            net.to(self.device)
            if self.device.type == "cuda" and cfg.run.channels_last:
                net.to(memory_format=torch.channels_last)
            ddp.broadcast_module(net, self.dist)
        # batch-norm mode: on the device (sync picks its layer by it), before the optimisers (frozen drops params)
        self.nets["segmenter"] = apply_bn(cfg, self.nets["segmenter"], warn=self.is_main)
        if SCHEMES[cfg.scheme].unlabelled == "self-training":  # a copy of S as it will train (after its bn mode)
            self.nets["teacher"] = make_teacher(self.nets["segmenter"])
        self.param_counts = {k: sum(p.numel() for p in n.parameters()) for k, n in self.nets.items()}
        if self.is_main:
            console.print("parameters: " + ", ".join(f"{k} {v / 1e6:.2f} M" for k, v in self.param_counts.items()),
                          highlight=False)
        self.opts = build_optimizers(cfg, self.nets)
        self.scheds = build_schedulers(cfg, self.opts)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # dropout draws from the global RNG: re-seed it so it does not depend on which networks were built
        torch.manual_seed(mix_seed(cfg.run.seed, 4, self.dist.rank))
        self.iteration = 0
        if payload is not None:
            self._restore(payload)
        seg: Any = ddp.wrap_ddp(self.nets["segmenter"], self.dist, self.device)
        if cfg.run.compile:
            seg = torch.compile(seg)
        self.objective = Objective(cfg, self.nets, seg, self.dist, self._autocast,
                                   mix_generator=self.data.generators.get("mix"))
        self.data.start_streams(payload["data"]["positions"] if payload else None)

    # --- checkpoints ------------------------------------------------------------------------

    def _resume_payload(self, name: str) -> dict[str, Any]:
        path, payload = self.run_dir.load_resumable(name)
        self._resumed_from = path
        check_checkpoint_fits(payload, self.cfg, path)
        if int(payload["world_size"]) != self.dist.world_size:
            raise HrsegError(f"{path}: written by {payload['world_size']} process(es), resumed with "
                             f"{self.dist.world_size}; exact resume needs the same number")
        if int(payload["iteration"]) >= self.cfg.optim.iters:
            raise HrsegError(f"{self.run_dir}: the run already finished ({payload['iteration']} iterations)")
        return payload

    def _restore(self, payload: dict[str, Any]) -> None:
        path = self._resumed_from
        for name, net in self.nets.items():
            load_state(net, payload["models"].get(name), path, name)
        for name, opt in self.opts.items():
            opt.load_state_dict(payload["optimizers"][name])
            sched = self.scheds[name]
            sched.load_state_dict(payload["schedulers"][name])
            # the rate the next step uses, from this config's schedule: the same value for a plain resume,
            # the re-planned one for an extended run (whose saved rate is the old plan's ~0)
            for group, base, factor in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
                group["lr"] = base * factor(sched.last_epoch)
        self.scaler.load_state_dict(payload["scaler"])
        self.iteration = int(payload["iteration"])
        self.resumed = True
        self.best = payload.get("best")  # the best validation so far survives a resume
        restore_rng(payload["rng"][self.dist.rank], self.data.generators)

    def _check_crop(self) -> None:
        """A crop many times the prepared images (even at the largest scale) trains on padding for minutes."""
        cfg, hi = self.cfg, max(self.cfg.data.scale)
        for dataset, split in ((cfg.data.source, cfg.data.source_split), (cfg.data.target, cfg.data.target_split)):
            size = prepared_size(cfg.data.data, dataset, (split,))
            limit = None if size is None else (int(size[0] * hi * MAX_CROP_RATIO), int(size[1] * hi * MAX_CROP_RATIO))
            if limit is not None and (cfg.data.crop[0] > limit[0] or cfg.data.crop[1] > limit[1]):
                raise HrsegError(f"data.crop {cfg.data.crop[0]}x{cfg.data.crop[1]}: more than {MAX_CROP_RATIO} times "
                                 f"the prepared {dataset}/{split} images ({size[0]}x{size[1]}, x{hi:g} at the "
                                 f"largest scale): mostly padding; choose a crop of at most {limit[0]}x{limit[1]}")

    def state(self) -> dict[str, Any]:
        """Everything exact resume needs, as one plain dict (weights_only-loadable)."""
        return {
            "iteration": self.iteration,
            "world_size": self.dist.world_size,
            "arch": self.cfg.model.arch,
            "num_classes": self.cfg.model.num_classes,
            "config": self.cfg.to_dict(),
            "working_size": None if self.working_size is None else list(self.working_size),
            "models": {k: ddp.unwrap(n).state_dict() for k, n in self.nets.items()},
            "optimizers": {k: o.state_dict() for k, o in self.opts.items()},
            "schedulers": {k: s.state_dict() for k, s in self.scheds.items()},
            "scaler": self.scaler.state_dict(),
            "best": self.best,
            "rng": ddp.gather_objects(capture_rng(self.data.generators), self.dist),
            "data": {"positions": self.data.positions(), "target_indices": list(self.data.target_indices),
                     "source_indices": list(self.data.source_indices), "signature": self.data.signature,
                     "unlabelled_indices": list(self.data.unlabelled_indices)},
        }

    def save(self, name: str = LAST) -> Any:
        """Write the resumable state (rank 0); every rank takes part in gathering RNG states."""
        payload = self.state()
        if not self.is_main:
            return None
        # the old last.pt becomes previous.pt once the new one is complete: a damaged last.pt never costs the run
        previous = self.run_dir.checkpoint_path(PREVIOUS) if name == LAST else None
        save_checkpoint(self.run_dir.checkpoint_path(name), payload, previous=previous)
        return self.run_dir.checkpoint_path(name)

    def snapshot(self) -> Any:
        """Keep this iteration's network weights as ``iter_XXXXXX.pt`` (rank 0).

        A snapshot is for evaluating, visualising, predicting and exporting a
        point along training, so it holds the weights and the config but not
        the optimiser, RNG and data state only ``last.pt`` needs for resuming:
        a third of the size for a w19+GAN run with its Adam moments.
        """
        if not self.is_main:
            return None
        full = self.state_models()
        path = self.run_dir.checkpoint_path(self.run_dir.snapshot_name(self.iteration))
        save_checkpoint(path, full)
        return path

    def validate(self) -> ValResult:
        """Score S with the validator (every rank); no random source or batch-norm statistic is touched.

        The RNG states are put back afterwards (a data loader draws a seed from
        the global generator even without workers), so validating never changes
        what is trained: a run with ``--val-every`` ends with the same weights.
        """
        assert self.validator is not None
        rng = capture_rng(self.data.generators)
        seg = ddp.unwrap(self.nets["segmenter"])
        was_training = seg.training
        seg.eval()
        try:
            with torch.no_grad():
                return self.validator(seg, self.dist)
        finally:
            seg.train(was_training)
            restore_rng(rng, self.data.generators)

    def _validate(self, log: RunLog) -> None:
        result = self.validate()
        better = improves(result, self.best)
        if better:
            self.best = {"miou": result.miou, "iteration": self.iteration, "split": result.split,
                         "images": result.images}
            if self.is_main:
                save_checkpoint(self.run_dir.checkpoint_path(BEST), {**self.state_models(), "best": self.best})
        log.record_val(result.record(self.iteration, better), self.iteration)

    def state_models(self) -> dict[str, Any]:
        """The part of :meth:`state` inference needs: S and W (never G and D), with what identifies them."""
        keep = ("segmenter", "weighting", "teacher")
        return {
            "iteration": self.iteration, "world_size": self.dist.world_size, "arch": self.cfg.model.arch,
            "num_classes": self.cfg.model.num_classes, "config": self.cfg.to_dict(), "kind": "snapshot",
            "working_size": None if self.working_size is None else list(self.working_size),
            "models": {k: ddp.unwrap(n).state_dict() for k, n in self.nets.items() if k in keep},
        }

    # --- one iteration ----------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def step(self, p: StepPlan) -> dict[str, float]:
        """One iteration of ``p``; returns the logged values (all synced in one transfer)."""
        src = self.data.batch("source") if p.source else None
        tgt = self.data.batch("target") if p.target else None
        unl = self.data.batch("unlabelled") if p.unlabelled else None
        self.last_source = src
        out = self.objective(p, src, tgt, unl)
        logged = self._sync(out)
        for opt in self.opts.values():
            opt.zero_grad(set_to_none=True)
        params = {name: [q for q in self.nets[name].parameters() if q.requires_grad] for name in out.losses}
        last = len(out.losses) - 1
        for i, (name, loss) in enumerate(out.losses.items()):  # each loss into its own network only
            self.scaler.scale(loss).backward(inputs=params[name], retain_graph=i < last)
        for name in self.opts:
            if name != "segmenter":  # S is DDP-wrapped: its gradients are averaged in backward
                ddp.average_gradients(self.nets[name], self.dist)
        for name, opt in self.opts.items():
            if any(q.grad is not None for q in params.get(name, ())):
                self.scaler.step(opt)
        self.scaler.update()
        with warnings.catch_warnings():  # a network idle this step (W before unlabelled.start) keeps its schedule
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
            for sched in self.scheds.values():
                sched.step()
        if "teacher" in self.nets:
            ema_update(self.nets["teacher"], self.nets["segmenter"],
                       teacher_momentum(self.iteration, self.cfg.unlabelled.teacher_momentum))
        return logged

    def _sync(self, out: StepLosses) -> dict[str, float]:
        """All logged values in one all-reduce; a non-finite loss on any rank stops every rank."""
        names = [*out.terms, *out.stats]
        stacked = torch.stack([t.detach().float() for t in (*out.terms.values(), *out.stats.values())])
        logged = dict(zip(names, ddp.all_reduce_mean(stacked, self.dist).tolist()))
        for name in out.terms:
            if not math.isfinite(logged[name]):
                raise NonFiniteLoss(
                    f"non-finite loss {name!r} ({logged[name]}) at iteration {self.iteration + 1}; the run stopped and "
                    f"kept its last good checkpoint in {self.run_dir.checkpoint_dir} (try a lower --lr)"
                )
        return logged

    # --- the loop ---------------------------------------------------------------------------

    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train to ``optim.iters``; ``stop_after`` ends this call early, as a Ctrl-C would (resumable)."""
        cfg, run = self.cfg, self.run_dir
        if self.finished:
            summary = run.summary() or {}
            return TrainResult(**{k: v for k, v in summary.items() if k in TrainResult.__dataclass_fields__})
        if self.is_main:
            before = run.config() if self.resumed else None
            event = "start" if before is None else "extend" if before.optim.iters != cfg.optim.iters else "resume"
            run.append_history(history_entry(event, self.iteration, before, cfg))
            run.write_config(cfg)
            run.write_subset(self.data.subset_record())
            run.truncate_metrics(self.iteration)
        start_iter, t_start = self.iteration, time.perf_counter()
        last: dict[str, Any] = {}
        status, images_per_iter = "finished", 0
        interrupt = InterruptFlag()
        bar = progress("it", disable=not (self.is_main and cfg.run.progress))
        log = RunLog(run, cfg, self.is_main, self.weight_picture)
        try:
            with interrupt, bar:
                task = bar.add_task("train", total=cfg.optim.iters, completed=self.iteration, rate="")
                while self.iteration < cfg.optim.iters:
                    p = plan(cfg, self.iteration)
                    lr = self.opts["segmenter"].param_groups[0]["lr"]
                    t0 = time.perf_counter()
                    values = self.step(p)
                    dt = time.perf_counter() - t0
                    self.iteration += 1
                    images_per_iter = cfg.data.batch_size * self.dist.world_size * (
                        int(p.source) + int(p.target) + int(p.unlabelled is not None))
                    last = {"iter": self.iteration, "phase": p.phase, "lr": lr,
                            "images_per_s": images_per_iter / dt if dt > 0 else 0.0, **values}
                    log.record(last, self.iteration)
                    if log.wants_image(self.iteration):
                        self._weight_image(log.tb)
                    if self.validator is not None and validation_due(cfg, self.iteration):
                        self._validate(log)
                    bar.update(task, completed=self.iteration, description=describe(values),
                               rate=f"{last['images_per_s']:.1f} img/s")
                    stop = self._agree(interrupt.requested or (
                        stop_after is not None and self.iteration - start_iter >= stop_after))
                    if self.iteration % cfg.run.checkpoint_every == 0 and self.iteration < cfg.optim.iters:
                        self.save(LAST)
                    if cfg.run.save_every and self.iteration % cfg.run.save_every == 0 \
                            and self.iteration < cfg.optim.iters:
                        self.snapshot()
                    if stop:
                        status = "interrupted"
                        break
        finally:
            log.close()
            self.data.close()
        path = self.save(LAST)
        if status == "finished" and self.is_main:
            path = run.link_checkpoint(LAST, FINAL)  # one file, two names: final.pt costs no disk space
            if cfg.run.save_every and self.iteration % cfg.run.save_every == 0:
                run.link_checkpoint(LAST, run.snapshot_name(self.iteration))
        seconds = time.perf_counter() - t_start
        done = self.iteration - start_iter
        result = TrainResult(
            run_dir=str(run), status=status, iteration=self.iteration, iters=cfg.optim.iters,
            seconds=seconds, iters_per_s=done / seconds if seconds > 0 else 0.0,
            images_per_s=done * images_per_iter / seconds if seconds > 0 else 0.0,
            last={k: v for k, v in last.items() if isinstance(v, float)},
            checkpoint=str(path) if path else "", target_images=len(self.data.target_indices),
            source_images=len(self.data.source_indices), best=self.best, parameters=self.param_counts,
            stopped_by=interrupt.signal_name,
        )
        if self.is_main:
            run.write_summary(result.to_dict())
        ddp.barrier(self.dist)
        return result

    def _weight_image(self, tb: Any) -> None:
        """The weight-map panel of the source batch just trained on (schemes with a weighting network)."""
        if "weighting" not in self.nets or self.last_source is None:
            return
        tb.weight_panel(self.nets["segmenter"], self.nets["weighting"], self.last_source, self.iteration,
                        title=f"{self.cfg.scheme}: source batch, iteration {self.iteration}")

    def _agree(self, requested: bool) -> bool:
        """Every rank stops at the same iteration when any of them was interrupted."""
        if not self.dist.enabled:
            return requested
        flag = torch.tensor([1.0 if requested else 0.0], device=self.device)
        torch.distributed.all_reduce(flag)
        return bool(flag.item() > 0)

    def close(self) -> None:
        self._owner.close()
        ddp.shutdown(self.dist)


def train(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None,
          overwrite: bool = False, resume_from: str = LAST, validator: Validator | None = None,
          auto_resume: bool = False, weight_picture: WeightPicture | None = None) -> TrainResult:
    """Train ``cfg`` into ``cfg.run.out`` (or continue it when ``resume``, from ``resume_from``).

    A fresh run refuses a folder that already holds a run or foreign files unless ``overwrite``.
    ``validator`` scores S every ``run.val_every`` iterations (``hrseg.evaluation.validation``
    builds the one ``hrseg train`` uses); without one, ``run.val_every`` is not acted on (said in one line).
    ``auto_resume`` (for preemptible jobs, torchrun restarts): start ``cfg`` fresh, continue it exactly
    from ``last.pt`` when the folder holds this same run, refuse a folder holding another
    (:func:`hrseg.training.resume.auto_resume_mode`).
    ``weight_picture`` draws TensorBoard's weight maps (``--tensorboard``); without it only values are logged.
    """
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite, resume_from=resume_from, validator=validator,
                      auto_resume=auto_resume, weight_picture=weight_picture)
    try:
        return trainer.run(stop_after=stop_after)
    finally:
        trainer.close()
