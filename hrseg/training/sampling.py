"""Per-domain batch streams, the few-real-images subset and the source filters (ImageSelect).

The data order is a pure function of (seed, domain, epoch) (``DomainSampler``), so
a checkpoint only needs how many batches each domain has consumed.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from hrseg.data.dataset import DomainSampler, ShardDataset
from hrseg.data.labels import IGNORE_INDEX
from hrseg.errors import HrsegError
from hrseg.training.interrupt import handles_sigterm
from hrseg.registry import Registry

if TYPE_CHECKING:
    from hrseg.training.config import TrainConfig

_DOMAIN_SALT = {"source": 1, "target": 2, "unlabelled": 3}


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from several integers (SeedSequence keeps nearby inputs unrelated)."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def domain_seed(seed: int, domain: str) -> int:
    """Sampler seed per domain, so source and target of equal size are not shuffled alike."""
    return mix_seed(seed, _DOMAIN_SALT[domain]) % (2**31)


def _ignore_sigint(worker_id: int) -> None:
    """Loader workers leave Ctrl-C to the main process, which finishes the step and checkpoints.

    A terminal sends SIGINT to the whole process group; a worker that died of it
    would break the batch the main process still has to fetch.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if handles_sigterm():  # a cluster signals every process; the main one checkpoints
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


class DomainStream:
    """Batches of one domain in the seeded DomainSampler order, counting what the loop consumed.

    Loader workers prefetch ahead of the loop, so the checkpointed position is the
    number of batches *consumed* here, never the sampler's own (advanced) state.
    """

    def __init__(
        self, dataset: ShardDataset, batch_size: int, seed: int, domain: str, start: int,
        rank: int, world: int, workers: int, pin_memory: bool,
    ) -> None:
        self.consumed = start
        sampler = DomainSampler(len(dataset), seed=domain_seed(seed, domain), rank=rank, world_size=world)
        sampler.set_consumed(start * batch_size)
        self._loader = DataLoader(
            dataset,
            sampler=sampler,
            batch_size=batch_size,
            num_workers=workers,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            # worker seeds come from this generator, not the global RNG the loop checkpoints
            generator=torch.Generator().manual_seed(domain_seed(seed, domain) + start),
            worker_init_fn=_ignore_sigint if workers > 0 else None,
        )
        self._iter: Iterator[Any] | None = None

    def next(self) -> dict[str, Any]:
        if self._iter is None:
            self._iter = iter(self._loader)
        self.consumed += 1
        return next(self._iter)

    def close(self) -> None:
        """Stop the loader workers now: they ignore SIGTERM, so they must not be left to exit-time termination."""
        shutdown = getattr(self._iter, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._iter = None


def pick_subset(n: int, count: int | None, fraction: float | None, seed: int, what: str) -> list[int]:
    """A seeded subset of ``range(n)`` (sorted); all of it when neither count nor fraction is set."""
    if count is None and fraction is None:
        return list(range(n))
    k = count if count is not None else max(1, round(fraction * n))  # type: ignore[operator]
    if k > n:
        raise HrsegError(f"--target-images: asked for {k} images but {what} has only {n}")
    rng = np.random.default_rng(mix_seed(seed, 7919))
    return sorted(int(i) for i in rng.choice(n, size=k, replace=False))


def road_share(label: np.ndarray | torch.Tensor, road_id: int = 0) -> float:
    """Share of road among the valid pixels of one label map (ImageSelect's criterion)."""
    lab = torch.as_tensor(label)
    valid = lab != 255
    n = int(valid.sum())
    return float((lab[valid] == road_id).sum()) / n if n else 0.0


@dataclass(frozen=True)
class SourceFilter:
    """A scheme's own data rule: which source images it keeps, and how it relabels their batches."""

    select: Callable[[ShardDataset, "TrainConfig"], list[int]]
    relabel: Callable[[torch.Tensor, "TrainConfig", torch.Generator], torch.Tensor] | None = None


def _road_rich(probe: ShardDataset, cfg: "TrainConfig") -> list[int]:
    thr = cfg.image_select.road_share
    keep = [i for i in range(len(probe)) if road_share(probe[i]["label"]) >= thr]
    if not keep:
        raise HrsegError(
            f"--select-road-share {thr}: no image of {probe.split_dir} has that much road; lower the threshold"
        )
    return keep


def _mostly_road(labels: torch.Tensor, cfg: "TrainConfig", gen: torch.Generator) -> torch.Tensor:
    """Ignore all but ``nonroad_keep`` of the non-road pixels, drawn from the source augmentation generator."""
    keep = cfg.image_select.nonroad_keep
    if keep >= 1:
        return labels
    drop = torch.rand(labels.shape, generator=gen).to(labels.device) >= keep
    return torch.where((labels != 0) & drop, torch.full_like(labels, IGNORE_INDEX), labels)


SOURCE_FILTERS: Registry[SourceFilter] = Registry("source filter", "scheme source_filter")
SOURCE_FILTERS.add("road-share", SourceFilter(select=_road_rich, relabel=_mostly_road))
