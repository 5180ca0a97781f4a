"""The data of one run: which prepared images it uses, and augmented batches per domain.

Opening checks the splits against the model (class count, emptiness, realism
masks for the oracle) and, on resume, against what the run started with, so a
changed data folder is refused instead of silently continuing on other images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hrseg.data.augment import augment_batch
from hrseg.data.dataset import ShardDataset, open_split
from hrseg.data.shards import Manifest
from hrseg.errors import HrsegError
from hrseg.training.config import TrainConfig
from hrseg.training.distributed import DistInfo
from hrseg.training.sampling import SOURCE_FILTERS, DomainStream, mix_seed, pick_subset
from hrseg.training.schemes import SCHEMES


def data_signature(manifest: Manifest) -> dict[str, Any]:
    """What must not change under a resumed run: size, count and shard content."""
    return {"size": list(manifest.size), "num_images": manifest.num_images,
            "shards": [s.sha256 for s in manifest.shards]}


def _check_split(ds: ShardDataset, cfg: TrainConfig, role: str) -> None:
    path = ds.split_dir / "manifest.json"
    if len(ds.manifest.class_pixels) != cfg.model.num_classes:
        raise HrsegError(f"{path}: {role} split has {len(ds.manifest.class_pixels)} classes but the model has "
                         f"{cfg.model.num_classes}")
    if ds.manifest.num_images == 0:
        raise HrsegError(f"{path}: {role} split is empty (0 images)")


class TrainData:
    """Target subset and (filtered) source set of a run, their streams and their augmentation."""

    def __init__(self, cfg: TrainConfig, dist: DistInfo, device: torch.device,
                 resumed: dict[str, Any] | None = None) -> None:
        self.cfg, self.dist, self.device = cfg, dist, device
        self.scheme = SCHEMES[cfg.scheme]
        if not cfg.data.data:
            raise HrsegError("--data: the prepared data directory is required")
        if not Path(cfg.data.data).is_dir():
            raise HrsegError(f"{cfg.data.data}: data directory not found (run hrseg prepare first)")
        d = cfg.data
        target_full = open_split(d.data, d.target, d.target_split, fields=("image", "label"))
        _check_split(target_full, cfg, "target")
        if resumed is not None:
            self.target_indices = [int(i) for i in resumed["target_indices"]]
        else:
            self.target_indices = pick_subset(len(target_full), d.target_images, d.target_fraction, cfg.run.seed,
                                              f"{d.target}/{d.target_split}")
        # 0 labelled images (UDA): no labelled target stream at all
        self.target = target_full.subset(self.target_indices) if self.target_indices else None
        self.heldout_indices = self._heldout(len(target_full))
        self.heldout = target_full.subset(self.heldout_indices) if self.heldout_indices else None
        self.signature: dict[str, Any] = {"target": data_signature(target_full.manifest)}
        self.source: ShardDataset | None = None
        self.source_indices: list[int] = []
        if self.scheme.uses_source:
            self._open_source(resumed)
        self.unlabelled: ShardDataset | None = None
        self.unlabelled_indices: list[int] = []
        if self.scheme.unlabelled is not None:
            self._open_unlabelled(len(target_full), resumed)
        if resumed is not None:
            self._check_unchanged(resumed["signature"])
        self.streams: dict[str, DomainStream] = {}
        # one augmentation generator per domain: a scheme that adds source batches leaves the target crops alone
        domains = ("source", "target", "heldout") if self.heldout is not None else ("source", "target")
        self.generators = {dom: torch.Generator().manual_seed(mix_seed(cfg.run.seed, 3, i, dist.rank))
                           for i, dom in enumerate(domains)}
        if self.unlabelled is not None:  # its crops, and self-training's mixing and strong augmentation
            for i, dom in ((5, "unlabelled"), (6, "mix")):
                self.generators[dom] = torch.Generator().manual_seed(mix_seed(cfg.run.seed, 3, i, dist.rank))

    def _heldout(self, n: int) -> list[int]:
        """Labelled target images W may learn "target" from, disjoint from S's subset (a pure function of the seed).

        S never trains on them, so its predictions there are not memorised: W
        cannot learn "confident = target" from them.
        """
        k = self.cfg.weighting.heldout_images
        if k == 0 or self.scheme.weighting is None:
            return []
        d = self.cfg.data
        used = set(self.target_indices)
        rest = [i for i in range(n) if i not in used]
        if k > len(rest):
            raise HrsegError(f"weighting.heldout_images: asked for {k} held-out images but {d.target}/"
                             f"{d.target_split} has only {len(rest)} beside the {len(self.target_indices)} "
                             "S trains on")
        return [rest[i] for i in pick_subset(len(rest), k, None, mix_seed(self.cfg.run.seed, 17), "held-out")]

    def _open_unlabelled(self, n: int, resumed: dict[str, Any] | None) -> None:
        """The target images S learns from without labels: the rest, all of them, or N of the rest (seeded).

        The dataset reads the ``image`` field only, so no label of these images
        is ever read, not even for the images the labelled subset shares with it.
        """
        d = self.cfg.data
        if resumed is not None:
            self.unlabelled_indices = [int(i) for i in resumed["unlabelled_indices"]]
        else:
            used = set(self.target_indices) | set(self.heldout_indices)
            rest = [i for i in range(n) if i not in used]
            amount = d.unlabelled_target
            if amount == "all":
                self.unlabelled_indices = list(range(n))
            elif amount == "rest":
                self.unlabelled_indices = rest
            else:
                if int(amount) > len(rest):
                    raise HrsegError(f"data.unlabelled_target: asked for {amount} unlabelled images but "
                                     f"{d.target}/{d.target_split} has only {len(rest)} beside the labelled ones")
                picked = pick_subset(len(rest), int(amount), None, mix_seed(self.cfg.run.seed, 23), "unlabelled")
                self.unlabelled_indices = [rest[i] for i in picked]
        if not self.unlabelled_indices:
            raise HrsegError(f"data.unlabelled_target: no unlabelled image left in {d.target}/{d.target_split} "
                             f"(all {n} are labelled); use data.unlabelled_target=all")
        self.unlabelled = open_split(d.data, d.target, d.target_split, fields=("image",),
                                     indices=self.unlabelled_indices)

    def _open_source(self, resumed: dict[str, Any] | None) -> None:
        d = self.cfg.data
        probe = open_split(d.data, d.source, d.source_split, fields=("label",))
        _check_split(probe, self.cfg, "source")
        if self.scheme.needs_realism and not probe.manifest.has_realism:
            raise HrsegError(f"{probe.split_dir / 'manifest.json'}: the {self.cfg.scheme} scheme needs realism "
                             "masks in the source split")
        fields = ("image", "label", "realism") if probe.manifest.has_realism else ("image", "label")
        if resumed is not None:
            self.source_indices = [int(i) for i in resumed["source_indices"]]
        elif self.scheme.source_filter is not None:
            self.source_indices = SOURCE_FILTERS[self.scheme.source_filter].select(probe, self.cfg)
        else:
            self.source_indices = list(range(len(probe)))
        self.source = open_split(d.data, d.source, d.source_split, fields=fields).subset(self.source_indices)
        self.signature["source"] = data_signature(probe.manifest)

    def _check_unchanged(self, old: dict[str, Any]) -> None:
        for role, sig in self.signature.items():
            if old.get(role) != sig:
                raise HrsegError(f"{self.cfg.run.out}: the {role} data changed since this run started "
                                 f"(size/count/shards {old.get(role)} -> {sig}); resume needs the same prepared data")

    def subset_record(self) -> dict[str, Any]:
        """What data_subset.json records: the images this run trains on."""
        d = self.cfg.data
        return {
            "target": {"dataset": d.target, "split": d.target_split, "indices": self.target_indices,
                       **({"heldout_indices": self.heldout_indices} if self.heldout_indices else {})},
            "source": {"dataset": d.source, "split": d.source_split, "count": len(self.source_indices),
                       "indices": self.source_indices if self.scheme.source_filter is not None else None},
            **({"unlabelled_target": {"dataset": d.target, "split": d.target_split,
                                      "indices": self.unlabelled_indices}} if self.unlabelled is not None else {}),
        }

    def start_streams(self, positions: dict[str, int] | None = None) -> None:
        cfg, pos = self.cfg, positions or {}
        common: dict[str, Any] = dict(batch_size=cfg.data.batch_size, seed=cfg.run.seed, rank=self.dist.rank,
                                      world=self.dist.world_size, workers=cfg.data.workers,
                                      pin_memory=self.device.type == "cuda")
        self.streams = {}
        if self.target is not None:
            self.streams["target"] = DomainStream(self.target, domain="target", start=int(pos.get("target", 0)),
                                                  **common)
        if self.source is not None:
            self.streams["source"] = DomainStream(self.source, domain="source", start=int(pos.get("source", 0)),
                                                  **common)
        if self.unlabelled is not None:
            self.streams["unlabelled"] = DomainStream(self.unlabelled, domain="unlabelled",
                                                      start=int(pos.get("unlabelled", 0)), **common)
        if self.heldout is not None:
            order = {**common, "seed": mix_seed(cfg.run.seed, 17) % (2**31)}
            self.streams["heldout"] = DomainStream(self.heldout, domain="target", start=int(pos.get("heldout", 0)),
                                                   **order)

    def positions(self) -> dict[str, int]:
        """Batches consumed per domain: with the seeded sampler, all a checkpoint needs to continue the order."""
        out = {k: s.consumed for k, s in self.streams.items()}
        out.setdefault("source", 0)
        out.setdefault("target", 0)
        return out

    def batch(self, domain: str) -> dict[str, torch.Tensor]:
        """The next batch of ``domain``, on the device, augmented (and relabelled by the scheme's filter).

        With held-out images a target batch also carries W's own target batch as
        ``heldout_image`` / ``heldout_label``.
        """
        out = self._draw(domain)
        if domain == "target" and self.heldout is not None:
            held = self._draw("heldout")
            out["heldout_image"], out["heldout_label"] = held["image"], held["label"]
        return out

    def _draw(self, domain: str) -> dict[str, torch.Tensor]:
        raw = self.streams[domain].next()
        batch = {k: v.to(self.device, non_blocking=True) for k, v in raw.items() if isinstance(v, torch.Tensor)}
        d, gen = self.cfg.data, self.generators[domain]
        out = augment_batch(batch, crop=tuple(d.crop), scale=tuple(d.scale), flip=d.flip, generator=gen)
        rule = SOURCE_FILTERS[self.scheme.source_filter] if self.scheme.source_filter else None
        if domain == "source" and rule is not None and rule.relabel is not None:
            out["label"] = rule.relabel(out["label"], self.cfg, gen)
        if self.device.type == "cuda" and self.cfg.run.channels_last:
            out["image"] = out["image"].contiguous(memory_format=torch.channels_last)
        return out

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()
