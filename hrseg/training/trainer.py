"""The one training loop behind every scheme, and loading a run back for inference.

Per iteration (METHOD §3): S sees a source and/or a target batch (one forward
over both); the source CE is weighted by W's map (or the realism mask for the
oracle, or 1); W learns to tell target predictions from source ones; G and D
play LSD-seg's game. All gradients of a step are computed from the same
parameters, then every optimiser steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hrseg.atomic import atomic_path, write_json
from hrseg.console import console, progress
from hrseg.data.augment import augment_batch
from hrseg.data.dataset import ShardDataset, open_split
from hrseg.data.labels import IGNORE_INDEX
from hrseg.data.shards import Manifest
from hrseg.errors import HrsegError
from hrseg.training import distributed as ddp
from hrseg.training import losses
from hrseg.training.checkpoint import (
    capture_rng,
    checkpoint_dir,
    load_checkpoint,
    resolve_checkpoint,
    restore_rng,
    save_checkpoint,
)
from hrseg.training.config import TrainConfig
from hrseg.training.sampling import DomainStream, mix_seed, pick_subset, road_share
from hrseg.training.schemes import StepPlan, check_scheme, needs_realism, phase_bounds, plan, uses_source, uses_weighting


class NonFiniteLoss(HrsegError):
    """A loss term became NaN/inf; the run stops and keeps its last good checkpoint."""


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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LoadedRun:
    config: TrainConfig
    segmenter: nn.Module
    weighting: nn.Module | None
    checkpoint: Path
    iteration: int


# ---------------------------------------------------------------------------------------------
# setup helpers


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise HrsegError(f"--device: not a device: {name!r} (use cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise HrsegError(f"--device {name}: CUDA is not available on this machine")
    return device


def _amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if not cfg.run.amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _data_signature(manifest: Manifest) -> dict[str, Any]:
    """What must not change under a resumed run: size, count and shard content."""
    return {
        "size": list(manifest.size),
        "num_images": manifest.num_images,
        "shards": [s.sha256 for s in manifest.shards],
    }


def _check_split(ds: ShardDataset, cfg: TrainConfig, role: str) -> None:
    path = ds.split_dir / "manifest.json"
    if len(ds.manifest.class_pixels) != cfg.model.num_classes:
        raise HrsegError(
            f"{path}: {role} split has {len(ds.manifest.class_pixels)} classes but the model has "
            f"{cfg.model.num_classes}"
        )
    if ds.manifest.num_images == 0:
        raise HrsegError(f"{path}: {role} split is empty (0 images)")


def build_networks(cfg: TrainConfig) -> dict[str, nn.Module]:
    """S, and W / G / D where the scheme uses them (on the CPU, freshly initialised)."""
    from hrseg.models import Discriminator, Generator, build_segmenter

    nets: dict[str, nn.Module] = {}
    seg = build_segmenter(
        cfg.model.arch, num_classes=cfg.model.num_classes, width=cfg.model.width,
        pretrained=cfg.model.pretrained, aux=cfg.model.aux,
    )
    nets["segmenter"] = seg
    if uses_weighting(cfg) is not None:
        nets["weighting"] = build_weighting(cfg)
    if cfg.gan.enabled:
        nets["generator"] = Generator(in_channels=seg.feature_channels, stride=seg.feature_stride, width=cfg.gan.width)
        nets["discriminator"] = Discriminator(num_classes=cfg.model.num_classes, width=cfg.gan.width)
    return nets


def build_weighting(cfg: TrainConfig) -> nn.Module:
    from hrseg.models import HierarchicalWeighting

    w = cfg.weighting
    return HierarchicalWeighting(
        scheme=cfg.scheme if cfg.scheme in ("w1", "w19") else "w1",
        in_channels=cfg.model.num_classes if w.input == "pred" else 3,
        num_classes=cfg.model.num_classes,
        levels=tuple(w.levels), combine=w.combine, normalize=w.normalize, clamp=w.clamp, width=w.width,
    )


def _poly(cfg: TrainConfig):  # noqa: ANN202 - a LambdaLR factor function
    power = cfg.optim.poly_power

    def factor(step: int) -> float:
        start, end = phase_bounds(cfg, min(step, cfg.optim.iters - 1))
        return max(0.0, 1.0 - (step - start) / max(1, end - start)) ** power

    return factor


def _optimisers(cfg: TrainConfig, nets: dict[str, nn.Module]) -> dict[str, torch.optim.Optimizer]:
    opts: dict[str, torch.optim.Optimizer] = {
        "segmenter": torch.optim.SGD(
            nets["segmenter"].parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
        )
    }
    if "weighting" in nets:
        opts["weighting"] = torch.optim.Adam(nets["weighting"].parameters(), lr=cfg.weighting.lr,
                                             betas=tuple(cfg.weighting.betas))
    for name in ("generator", "discriminator"):
        if name in nets:
            opts[name] = torch.optim.Adam(nets[name].parameters(), lr=cfg.gan.lr, betas=tuple(cfg.gan.betas))
    return opts


class _InterruptFlag:
    """First Ctrl-C asks the loop to stop after the current step (and checkpoint); a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> "_InterruptFlag":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        console.print("[yellow]interrupt: finishing this step and writing a checkpoint (Ctrl-C again aborts)[/]")

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _tensorboard(run_dir: Path) -> Any:
    """A SummaryWriter when tensorboard is installed; None otherwise (it is optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - ImportError or a broken optional install
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


# ---------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """Holds the networks, optimisers, data streams and counters of one run."""

    def __init__(self, cfg: TrainConfig, resume: bool = False) -> None:
        cfg.validate()
        check_scheme(cfg)
        if not cfg.run.out:
            raise HrsegError("--out: a run directory is required")
        self.cfg = cfg
        self.run_dir = Path(cfg.run.out)
        if cfg.run.threads > 0:
            torch.set_num_threads(cfg.run.threads)
        self.device = resolve_device(cfg.run.device)
        self.dist = ddp.init_from_env(self.device.type)
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.is_main = self.dist.is_main
        try:
            self._setup(resume)
        except BaseException:
            ddp.shutdown(self.dist)  # a refused run must not leave the process group behind
            raise

    def _setup(self, resume: bool) -> None:
        cfg = self.cfg
        self.amp_dtype = _amp_dtype(cfg, self.device)
        if cfg.run.amp and self.device.type != "cuda" and self.is_main:
            console.print("[yellow]--amp has no effect on the CPU; training in float32[/]")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        payload = self._load_resume_payload() if resume else None
        self._open_data(payload)
        self._seed_everything()
        self.nets = build_networks(cfg)
        for name, net in self.nets.items():
            net.to(self.device)
            if self.device.type == "cuda" and cfg.run.channels_last:
                net.to(memory_format=torch.channels_last)
            ddp.broadcast_module(net, self.dist)
        self.opts = _optimisers(cfg, self.nets)
        self.scheds = {k: torch.optim.lr_scheduler.LambdaLR(o, _poly(cfg)) for k, o in self.opts.items()}
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        # one augmentation generator per domain: a scheme that adds source batches leaves the target crops alone
        self.aug_gens = {d: torch.Generator().manual_seed(mix_seed(cfg.run.seed, 3, i, self.dist.rank))
                         for i, d in enumerate(("source", "target"))}
        # dropout draws from the global RNG: re-seed it so it does not depend on which networks were built
        torch.manual_seed(mix_seed(cfg.run.seed, 4, self.dist.rank))
        self.iteration = 0
        if payload is not None:
            self._restore(payload)
        seg: nn.Module = ddp.wrap_ddp(self.nets["segmenter"], self.dist, self.device)
        if cfg.run.compile:
            seg = torch.compile(seg)  # type: ignore[assignment]
        self.seg = seg
        self._make_streams(payload)

    # --- data -------------------------------------------------------------------------------

    def _open_data(self, payload: dict[str, Any] | None) -> None:
        cfg = self.cfg
        if not cfg.data.data:
            raise HrsegError("--data: the prepared data directory is required")
        if not Path(cfg.data.data).is_dir():
            raise HrsegError(f"{cfg.data.data}: data directory not found (run hrseg prepare first)")
        target_full = open_split(cfg.data.data, cfg.data.target, cfg.data.target_split, fields=("image", "label"))
        _check_split(target_full, cfg, "target")
        if payload is not None:
            self.target_indices = [int(i) for i in payload["data"]["target_indices"]]
        else:
            self.target_indices = pick_subset(
                len(target_full), cfg.data.target_images, cfg.data.target_fraction, cfg.run.seed,
                f"{cfg.data.target}/{cfg.data.target_split}",
            )
        self.target_ds = target_full.subset(self.target_indices)
        self.signature: dict[str, Any] = {"target": _data_signature(target_full.manifest)}
        self.source_ds: ShardDataset | None = None
        self.source_indices: list[int] = []
        if uses_source(cfg):
            probe = open_split(cfg.data.data, cfg.data.source, cfg.data.source_split, fields=("label",))
            _check_split(probe, cfg, "source")
            if needs_realism(cfg) and not probe.manifest.has_realism:
                raise HrsegError(
                    f"{probe.split_dir / 'manifest.json'}: the oracle scheme needs realism masks in the source split"
                )
            fields = ("image", "label", "realism") if probe.manifest.has_realism else ("image", "label")
            if payload is not None:
                self.source_indices = [int(i) for i in payload["data"]["source_indices"]]
            elif cfg.scheme == "image-select":
                self.source_indices = self._select_images(probe)
            else:
                self.source_indices = list(range(len(probe)))
            self.source_ds = open_split(cfg.data.data, cfg.data.source, cfg.data.source_split,
                                        fields=fields).subset(self.source_indices)
            self.signature["source"] = _data_signature(probe.manifest)
        if payload is not None:
            old = payload["data"]["signature"]
            for role, sig in self.signature.items():
                if old.get(role) != sig:
                    raise HrsegError(
                        f"{self.run_dir}: the {role} data changed since this run started "
                        f"(size/count/shards {old.get(role)} -> {sig}); resume needs the same prepared data"
                    )

    def _select_images(self, probe: ShardDataset) -> list[int]:
        thr = self.cfg.image_select.road_share
        keep = [i for i in range(len(probe)) if road_share(probe[i]["label"]) >= thr]
        if not keep:
            raise HrsegError(
                f"--select-road-share {thr}: no image of {probe.split_dir} has that much road; lower the threshold"
            )
        return keep

    def _make_streams(self, payload: dict[str, Any] | None) -> None:
        cfg = self.cfg
        pos = payload["data"]["positions"] if payload is not None else {"source": 0, "target": 0}
        pin = self.device.type == "cuda"
        common = dict(batch_size=cfg.data.batch_size, seed=cfg.run.seed, rank=self.dist.rank,
                      world=self.dist.world_size, workers=cfg.data.workers, pin_memory=pin)
        self.streams: dict[str, DomainStream] = {
            "target": DomainStream(self.target_ds, domain="target", start=int(pos["target"]), **common)  # type: ignore[arg-type]
        }
        if self.source_ds is not None:
            self.streams["source"] = DomainStream(self.source_ds, domain="source", start=int(pos["source"]),
                                                  **common)  # type: ignore[arg-type]

    def _batch(self, domain: str) -> dict[str, torch.Tensor]:
        raw = self.streams[domain].next()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in raw.items() if isinstance(v, torch.Tensor)}
        cfg = self.cfg.data
        gen = self.aug_gens[domain]
        out = augment_batch(batch, crop=tuple(cfg.crop), scale=tuple(cfg.scale), flip=cfg.flip, generator=gen)
        if domain == "source" and self.cfg.scheme == "image-select" and self.cfg.image_select.nonroad_keep < 1:
            lab = out["label"]
            drop = torch.rand(lab.shape, generator=gen).to(lab.device) >= self.cfg.image_select.nonroad_keep
            out["label"] = torch.where((lab != 0) & drop, torch.full_like(lab, IGNORE_INDEX), lab)
        if self.device.type == "cuda" and self.cfg.run.channels_last:
            out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
        return out

    # --- state ------------------------------------------------------------------------------

    def _seed_everything(self) -> None:
        seed = self.cfg.run.seed
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)  # network initialisation: identical on every rank

    def _load_resume_payload(self) -> dict[str, Any]:
        path = checkpoint_dir(self.run_dir) / "last.pt"
        if not path.is_file():
            raise HrsegError(f"{self.run_dir}: nothing to resume (no checkpoints/last.pt)")
        payload = load_checkpoint(path)
        if int(payload["world_size"]) != self.dist.world_size:
            raise HrsegError(
                f"{path}: written by {payload['world_size']} process(es), resumed with {self.dist.world_size}; "
                "exact resume needs the same number"
            )
        if int(payload["iteration"]) >= self.cfg.optim.iters:
            raise HrsegError(f"{self.run_dir}: the run already finished ({payload['iteration']} iterations)")
        return payload

    def _restore(self, payload: dict[str, Any]) -> None:
        for name, net in self.nets.items():
            if name not in payload["models"]:
                raise HrsegError(f"{self.run_dir}: checkpoint has no {name} state")
            net.load_state_dict(payload["models"][name])
        for name, opt in self.opts.items():
            opt.load_state_dict(payload["optimizers"][name])
            self.scheds[name].load_state_dict(payload["schedulers"][name])
        self.scaler.load_state_dict(payload["scaler"])
        self.iteration = int(payload["iteration"])
        restore_rng(payload["rng"][self.dist.rank], self.aug_gens)

    def state(self) -> dict[str, Any]:
        rng = ddp.gather_objects(capture_rng(self.aug_gens), self.dist)
        positions = {k: s.consumed for k, s in self.streams.items()}
        positions.setdefault("source", 0)
        return {
            "iteration": self.iteration,
            "world_size": self.dist.world_size,
            "arch": self.cfg.model.arch,
            "num_classes": self.cfg.model.num_classes,
            "config": self.cfg.to_dict(),
            "models": {k: ddp.unwrap(n).state_dict() for k, n in self.nets.items()},
            "optimizers": {k: o.state_dict() for k, o in self.opts.items()},
            "schedulers": {k: s.state_dict() for k, s in self.scheds.items()},
            "scaler": self.scaler.state_dict(),
            "rng": rng,
            "data": {
                "positions": positions,
                "target_indices": list(self.target_indices),
                "source_indices": list(self.source_indices),
                "signature": self.signature,
            },
        }

    def save(self, *names: str) -> Path | None:
        """Write the state under each name (rank 0); every rank takes part in gathering RNG states."""
        payload = self.state()
        if not self.is_main:
            return None
        ckdir = checkpoint_dir(self.run_dir)
        path = ckdir / names[0]
        save_checkpoint(path, payload)
        for other in names[1:]:
            save_checkpoint(ckdir / other, payload)
        return path

    # --- one iteration ----------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def step(self, p: StepPlan) -> dict[str, float]:
        """One iteration of ``p``; returns the logged values (all synced in one transfer)."""
        cfg = self.cfg
        src = self._batch("source") if p.source else None
        tgt = self._batch("target") if p.target else None
        parts = [b["image"] for b in (src, tgt) if b is not None]
        n_s = src["image"].shape[0] if src is not None else 0

        with self._autocast():
            out = self.seg(torch.cat(parts) if len(parts) > 1 else parts[0])
        logits = out.logits
        terms: dict[str, torch.Tensor] = {}
        stats: dict[str, torch.Tensor] = {}
        s_loss = logits.new_zeros((), dtype=torch.float32)
        if tgt is not None:
            terms["target"] = losses.target_loss(logits[n_s:], tgt["label"])
            s_loss = s_loss + terms["target"]
            if out.aux is not None:
                terms["target_aux"] = 0.4 * losses.target_loss(out.aux[n_s:], tgt["label"])
                s_loss = s_loss + terms["target_aux"]

        w_in_s = w_in_t = None
        w_logits_s: dict[str, torch.Tensor] | None = None
        if src is not None:
            weight = None
            if p.weighting is not None:
                w_in_s = self._weight_input(logits[:n_s], src["image"])
                wo = self.nets["weighting"](w_in_s, src["label"])  # with grad: its logits train W below
                ddp.average_buffers(self.nets["weighting"], self.dist)
                w_logits_s = wo.logits
                valid = src["label"] != IGNORE_INDEX
                weight = _sharpen(wo.weight.detach().float(), valid, cfg.weighting.sharpen,
                                  cfg.weighting.normalize != "none", cfg.weighting.clamp)
                for level, score in wo.scores.items():
                    stats[f"score_{level}"] = _masked_mean(score.detach().float(), valid)
            elif p.oracle:
                weight = (src["realism"] != 0).float()
            terms["source"] = losses.weighted_source_loss(logits[:n_s], src["label"], weight)
            s_loss = s_loss + terms["source"]
            if out.aux is not None:
                terms["source_aux"] = 0.4 * losses.weighted_source_loss(out.aux[:n_s], src["label"], weight)
                s_loss = s_loss + terms["source_aux"]
            stats.update(_weight_stats(weight, src))

        w_loss = None
        if p.weighting is not None and tgt is not None:
            w_in_t = self._weight_input(logits[n_s:], tgt["image"])
            w_loss = losses.weighting_loss(self.nets["weighting"], w_in_s, src["label"], w_in_t, tgt["label"],
                                           source_logits=w_logits_s)
            terms["w_cls"] = w_loss

        g_loss = d_loss = None
        if p.gan:
            g_loss, d_loss, s_adv = self._gan_terms(out.features, src, tgt, n_s, terms)
            s_loss = s_loss + s_adv
        terms["total_s"] = s_loss

        stacked = torch.stack([t.detach().float() for t in (*terms.values(), *stats.values())])
        values = ddp.all_reduce_mean(stacked, self.dist).tolist()  # a NaN on any rank stops every rank
        names = [*terms.keys(), *stats.keys()]
        logged = dict(zip(names, values))
        for name, value in zip(terms, values):
            if not math.isfinite(value):
                raise NonFiniteLoss(
                    f"non-finite loss {name!r} ({value}) at iteration {self.iteration + 1}; the run stopped and "
                    f"kept its last good checkpoint in {checkpoint_dir(self.run_dir)} (try a lower --lr)"
                )

        for opt in self.opts.values():
            opt.zero_grad(set_to_none=True)
        seg_params = [q for q in self.nets["segmenter"].parameters() if q.requires_grad]
        scale = self.scaler.scale
        scale(s_loss).backward(inputs=seg_params, retain_graph=g_loss is not None)
        if g_loss is not None and d_loss is not None:
            scale(g_loss).backward(inputs=list(self.nets["generator"].parameters()), retain_graph=True)
            scale(d_loss).backward(inputs=list(self.nets["discriminator"].parameters()))
        if w_loss is not None:
            scale(w_loss).backward(inputs=list(self.nets["weighting"].parameters()))
        for name in ("weighting", "generator", "discriminator"):
            if name in self.nets:
                ddp.average_gradients(self.nets[name], self.dist)
        for name, opt in self.opts.items():
            if name == "weighting" and w_loss is None or name in ("generator", "discriminator") and g_loss is None:
                continue
            if name == "segmenter" and not any(q.grad is not None for q in seg_params):
                continue
            self.scaler.step(opt)
        self.scaler.update()
        for sched in self.scheds.values():
            sched.step()
        return logged

    def _weight_input(self, logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if self.cfg.weighting.input == "image":
            return image.float()
        return torch.softmax(logits.detach().float(), dim=1)

    def _gan_terms(
        self, features: torch.Tensor, src: dict[str, torch.Tensor] | None, tgt: dict[str, torch.Tensor] | None,
        n_s: int, terms: dict[str, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """G, D and S's adversarial losses from one D pass over (x_s, x_t, G(f_s), G(f_t)).

        Each loss later back-propagates only into its own network (``backward(inputs=...)``),
        so D's loss on the fakes needs no separate detached pass.
        """
        assert src is not None and tgt is not None
        gan = self.cfg.gan
        G, D = self.nets["generator"], self.nets["discriminator"]
        xs, xt, ys = src["image"], tgt["image"], src["label"]
        n_t = xt.shape[0]
        with self._autocast():
            fake = G(features, size=tuple(xs.shape[-2:]))
            dom, cls = D(torch.cat([xs, xt, fake]))
        dom_xs, dom_xt = dom[:n_s], dom[n_s : n_s + n_t]
        dom_fs, dom_ft = dom[n_s + n_t : 2 * n_s + n_t], dom[2 * n_s + n_t :]
        cls_xs, cls_fs = cls[:n_s], cls[n_s + n_t : 2 * n_s + n_t]
        fake_s, fake_t = fake[:n_s], fake[n_s:]
        cls_fake = losses.class_ce_downsampled(cls_fs, ys)
        s_adv = gan.adv_weight * (losses.domain_ce(dom_fs, losses.TARGET_REAL)
                                  + losses.domain_ce(dom_ft, losses.SOURCE_REAL)) + gan.cls_weight_s * cls_fake
        g_adv = losses.domain_ce(dom_fs, losses.SOURCE_REAL) + losses.domain_ce(dom_ft, losses.TARGET_REAL)
        recon = losses.reconstruction_l1(fake_s, xs) + losses.reconstruction_l1(fake_t, xt)
        g_loss = gan.cls_weight_g * cls_fake + gan.adv_weight * g_adv + gan.recon_weight * recon
        d_dom = (losses.domain_ce(dom_xs, losses.SOURCE_REAL) + losses.domain_ce(dom_fs, losses.SOURCE_FAKE)
                 + losses.domain_ce(dom_xt, losses.TARGET_REAL) + losses.domain_ce(dom_ft, losses.TARGET_FAKE))
        d_cls = losses.class_ce_downsampled(cls_xs, ys)
        d_loss = d_dom + d_cls
        terms.update({"s_adv": s_adv, "g": g_loss, "g_recon": recon, "d": d_loss, "d_cls": d_cls})
        return g_loss, d_loss, s_adv

    # --- the loop ---------------------------------------------------------------------------

    def run(self, stop_after: int | None = None) -> TrainResult:
        """Train to ``optim.iters``; ``stop_after`` ends this call early, as a Ctrl-C would (resumable)."""
        cfg = self.cfg
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / "config.json", cfg.to_dict())
            write_json(self.run_dir / "data_subset.json", {
                "target": {"dataset": cfg.data.target, "split": cfg.data.target_split,
                           "indices": self.target_indices},
                "source": {"dataset": cfg.data.source, "split": cfg.data.source_split,
                           "count": len(self.source_indices),
                           "indices": self.source_indices if cfg.scheme == "image-select" else None},
            })
            _truncate_metrics(self.run_dir / "metrics.jsonl", self.iteration)
        tb = _tensorboard(self.run_dir) if self.is_main else None
        start_iter = self.iteration
        t_start = time.perf_counter()
        last: dict[str, float] = {}
        status = "finished"
        images_per_iter = 0
        interrupt = _InterruptFlag()
        bar = progress("it") if (self.is_main and cfg.run.progress) else None
        log = (self.run_dir / "metrics.jsonl").open("a") if self.is_main else None
        try:
            with interrupt, (bar if bar is not None else contextlib.nullcontext()):
                task = bar.add_task("train", total=cfg.optim.iters, completed=self.iteration, rate="") if bar else None
                while self.iteration < cfg.optim.iters:
                    p = plan(cfg, self.iteration)
                    lr = self.opts["segmenter"].param_groups[0]["lr"]
                    t0 = time.perf_counter()
                    values = self.step(p)
                    dt = time.perf_counter() - t0
                    self.iteration += 1
                    images_per_iter = cfg.data.batch_size * (int(p.source) + int(p.target)) * self.dist.world_size
                    record = {"iter": self.iteration, "phase": p.phase,
                              "lr": lr,
                              "images_per_s": images_per_iter / dt if dt > 0 else 0.0, **values}
                    last = record
                    if log is not None and (self.iteration % cfg.run.log_every == 0
                                            or self.iteration == cfg.optim.iters):
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                        if tb is not None:
                            for k, v in record.items():
                                if isinstance(v, (int, float)) and k != "iter":
                                    tb.add_scalar(k, v, self.iteration)
                    if bar is not None and task is not None:
                        bar.update(task, completed=self.iteration, description=_describe(values),
                                   rate=f"{record['images_per_s']:.1f} img/s")
                    stop = self._agree(interrupt.requested or (
                        stop_after is not None and self.iteration - start_iter >= stop_after))
                    if self.iteration % cfg.run.checkpoint_every == 0 and self.iteration < cfg.optim.iters:
                        names = ["last.pt"] + ([f"iter_{self.iteration:06d}.pt"] if cfg.run.keep_checkpoints else [])
                        self.save(*names)
                    if stop:
                        status = "interrupted"
                        break
        finally:
            if log is not None:
                log.close()
            if tb is not None:
                tb.close()
            for stream in self.streams.values():
                stream.close()
        if status == "interrupted":
            path = self.save("last.pt")
        else:
            path = self.save("final.pt", "last.pt")
        seconds = time.perf_counter() - t_start
        done = self.iteration - start_iter
        result = TrainResult(
            run_dir=str(self.run_dir), status=status, iteration=self.iteration, iters=cfg.optim.iters,
            seconds=seconds, iters_per_s=done / seconds if seconds > 0 else 0.0,
            images_per_s=done * images_per_iter / seconds if seconds > 0 else 0.0,
            last={k: v for k, v in last.items() if isinstance(v, float)},
            checkpoint=str(path) if path else "", target_images=len(self.target_indices),
            source_images=len(self.source_indices),
        )
        if self.is_main:
            write_json(self.run_dir / "summary.json", result.to_dict())
        ddp.barrier(self.dist)
        return result

    def _agree(self, requested: bool) -> bool:
        """Every rank stops at the same iteration when any of them was interrupted."""
        if not self.dist.enabled:
            return requested
        flag = torch.tensor([1.0 if requested else 0.0], device=self.device)
        torch.distributed.all_reduce(flag)
        return bool(flag.item() > 0)

    def close(self) -> None:
        ddp.shutdown(self.dist)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.float()
    return (x * m).sum() / m.sum().clamp_min(1.0)


def _sharpen(weight: torch.Tensor, valid: torch.Tensor, power: float, renormalise: bool,
             clamp: float | None) -> torch.Tensor:
    """w**power, back to batch mean 1 when W normalises: a soft step toward hard selection."""
    if power == 1.0:
        return weight
    out = weight.pow(power)
    if renormalise:
        out = out / _masked_mean(out, valid).clamp_min(1e-12)
    return out if clamp is None else out.clamp(max=clamp)


def _weight_stats(weight: torch.Tensor | None, src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mean weight over valid source pixels, and on realistic vs deviating ones where the mask exists."""
    valid = src["label"] != IGNORE_INDEX
    w = weight if weight is not None else torch.ones_like(src["label"], dtype=torch.float32)
    out = {"weight_mean": _masked_mean(w, valid)}
    if "realism" in src:
        out["weight_realistic"] = _masked_mean(w, valid & (src["realism"] == 1))
        out["weight_deviating"] = _masked_mean(w, valid & (src["realism"] == 0))
    return out


def _describe(values: dict[str, float]) -> str:
    parts = [f"{k} {values[k]:.3f}" for k in ("target", "source", "w_cls", "g", "d") if k in values]
    if "weight_mean" in values:
        parts.append(f"w {values['weight_mean']:.2f}")
    return "train " + " ".join(parts)


def _truncate_metrics(path: Path, iteration: int) -> None:
    """Drop log lines past ``iteration`` (an interrupted run may have logged beyond its checkpoint)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if int(json.loads(line)["iter"]) <= iteration:
                keep.append(line)
        except (ValueError, KeyError):
            continue
    with atomic_path(path) as tmp:
        tmp.write_text("".join(k + "\n" for k in keep))


# ---------------------------------------------------------------------------------------------
# public entry points


def train(cfg: TrainConfig, resume: bool = False, stop_after: int | None = None) -> TrainResult:
    """Train ``cfg`` into ``cfg.run.out`` (or continue it when ``resume``); see ``Trainer.run``."""
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.run(stop_after=stop_after)
    finally:
        trainer.close()


def resume_config(run_dir: str | Path) -> TrainConfig:
    """The config a run was started with (from RUN/config.json)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise HrsegError(f"{run_dir}: not a run directory (no config.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HrsegError(f"{path}: not valid JSON ({exc})") from None
    cfg = TrainConfig.from_dict(data)
    cfg.run.out = str(run_dir)
    return cfg


def load_for_inference(
    run_dir: str | Path, checkpoint: str | Path | None = None, device: str | torch.device = "cpu"
) -> LoadedRun:
    """The run's segmenter (eval mode) and weighting network from a checkpoint.

    ``checkpoint`` is None (final.pt, else last.pt), a name in RUN/checkpoints/ or a path.
    A checkpoint of another architecture or class count than the run's config is refused.
    """
    run_dir = Path(run_dir)
    cfg = resume_config(run_dir)
    path = resolve_checkpoint(run_dir, checkpoint)
    payload = load_checkpoint(path, map_location="cpu")
    if payload.get("arch") != cfg.model.arch:
        raise HrsegError(f"{path}: checkpoint is for {payload.get('arch')!r}, the run uses {cfg.model.arch!r}")
    if int(payload.get("num_classes", -1)) != cfg.model.num_classes:
        raise HrsegError(
            f"{path}: checkpoint has {payload.get('num_classes')} classes, the run has {cfg.model.num_classes}"
        )
    from hrseg.models import build_segmenter

    seg = build_segmenter(cfg.model.arch, num_classes=cfg.model.num_classes, width=cfg.model.width,
                          pretrained="none", aux=cfg.model.aux)
    _load_state(seg, payload["models"].get("segmenter"), path, "segmenter")
    weighting = None
    if "weighting" in payload["models"]:
        weighting = build_weighting(cfg)
        _load_state(weighting, payload["models"]["weighting"], path, "weighting")
        weighting.to(device).eval()
    seg.to(device).eval()
    return LoadedRun(cfg, seg, weighting, path, int(payload["iteration"]))


def _load_state(net: nn.Module, state: dict[str, Any] | None, path: Path, what: str) -> None:
    if state is None:
        raise HrsegError(f"{path}: checkpoint has no {what} weights")
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise HrsegError(f"{path}: {what} weights do not fit the run's config ({first})") from None


def iterate_metrics(run_dir: str | Path) -> Iterator[dict[str, Any]]:
    """The records of RUN/metrics.jsonl (for reports and tests)."""
    with (Path(run_dir) / "metrics.jsonl").open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
