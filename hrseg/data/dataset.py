"""A torch Dataset over a prepared split, plus the infinite per-domain sampler training uses.

HDF5 handles must not cross a fork or be pickled to a spawned worker, so a
``ShardDataset`` opens its shards lazily, per process: the handles are keyed
by the process id and dropped when the dataset is pickled. Items are uint8
tensors; conversion to float, normalisation and augmentation happen on whole
batches (see ``hrseg.data.augment``), where they can run on the accelerator.

Every row read is checked against the checksum ``prepare`` stored for it
(``hrseg.data.checksums``; it costs about one more pass over bytes already in
memory), so training, evaluation and visualisation never use a damaged image
or label: they stop with one line naming the shard and the image.
"""

from __future__ import annotations

import bisect
import os
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from hrseg.data.checksums import pread_checksum, row_checksum
from hrseg.data.shards import MANIFEST_NAME, Manifest, ShardInfo
from hrseg.errors import HrsegError

FIELDS = ("image", "label", "realism", "full_label", "name", "index")
_H5_KEYS = {"image": "images", "label": "labels", "realism": "realism", "full_label": "full_labels"}
_READ_ERRORS = (OSError, ValueError, KeyError, IndexError, RuntimeError)
_WHAT = {"image": "pixels", "label": "label", "realism": "realism mask", "full_label": "full-resolution label"}
_warned_unverified: set[str] = set()


class ShardReadError(HrsegError):
    """A shard or one of its rows cannot be used (damaged, truncated, inconsistent with the manifest).

    Raised inside a DataLoader worker, torch re-raises the same type in the
    main process with the worker's traceback prepended to the message; this
    keeps just the original one line, so the CLI still prints one line.
    """

    def __init__(self, message: str) -> None:
        if message.startswith("Caught ") and "\n" in message:
            last = message.rstrip().splitlines()[-1]
            message = last.split(": ", 1)[1] if ": " in last else last
        super().__init__(message)


class UnverifiedShardsWarning(UserWarning):
    """A split prepared before shards carried checksums: damaged images cannot be detected when read."""


def _warn_unverified(split: Path) -> None:
    key = str(split.resolve())
    if key not in _warned_unverified:
        _warned_unverified.add(key)
        warnings.warn(
            f"{split}: prepared by an older hrseg, without per-image checksums, so damaged images cannot be "
            "detected while reading; run the same hrseg prepare command again to rebuild the shards with them",
            UnverifiedShardsWarning, stacklevel=3,
        )


def split_dir(data_dir: str | Path, dataset: str, split: str) -> Path:
    return Path(data_dir) / dataset / split


def prepared_size(data_dir: str | Path, dataset: str, splits: tuple[str, ...]) -> tuple[int, int] | None:
    """(W, H) the first of ``splits`` that is prepared was prepared at; None when none is there."""
    for split in splits:
        folder = split_dir(data_dir, dataset, split)
        if (folder / MANIFEST_NAME).is_file():
            width, height = Manifest.load(folder).size
            return int(width), int(height)
    return None


class _OpenShard:
    """One shard opened in this process: the HDF5 file, plus direct chunk reads where possible.

    With compression "none" every image is one contiguous chunk in the file, so
    its bytes are read with a single ``pread`` at the offset HDF5 reports
    (the raw-bytes ceiling); compressed chunks go through h5py's filters.
    ``verify`` checks each row against the shard's checksum table.
    """

    def __init__(self, path: Path, fields: Sequence[str], info: ShardInfo, verify: bool) -> None:
        self.path = path
        try:
            # no chunk cache: random access reads each chunk once, and a worker may hold many shards open
            self.h5 = h5py.File(path, "r", rdcc_nbytes=0)
        except OSError as exc:
            raise ShardReadError(f"{path}: cannot open shard ({exc}); run hrseg prepare verify") from None
        try:
            self._check_layout(info, fields)
            self.datasets = {f: self.h5[_H5_KEYS[f]] for f in fields if f in _H5_KEYS}
            self.sums: dict[str, np.ndarray] = {}
            if verify and "checksums" in self.h5:
                table = self.h5["checksums"]
                columns = str(table.attrs.get("fields", "")).split(",")
                values = np.asarray(table[()], dtype=np.uint32)
                if values.shape != (info.count, len(columns)):
                    raise ShardReadError(f"{path}: its checksum table is damaged; {_REBUILD}")
                self.sums = {k: values[:, j] for j, k in enumerate(columns)}
            self.fd = os.open(path, os.O_RDONLY)
        except _READ_ERRORS as exc:
            self.h5.close()
            raise ShardReadError(f"{path}: unreadable shard ({exc}); {_REBUILD}") from None
        except BaseException:
            self.h5.close()
            raise
        self.offsets: dict[str, list[int]] = {}
        direct = {} if not hasattr(os, "preadv") else self.datasets  # e.g. Windows: h5py reads only
        for field, ds in direct.items():
            if ds.compression is None and ds.chunks is not None and ds.chunks[0] == 1 and ds.shape[0] > 0:
                infos = [ds.id.get_chunk_info(k) for k in range(ds.id.get_num_chunks())]
                offsets = {info.chunk_offset[0]: info.byte_offset for info in infos}
                row_bytes = ds.dtype.itemsize * int(np.prod(ds.shape[1:]))
                if len(offsets) == ds.shape[0] and all(info.size == row_bytes for info in infos):
                    self.offsets[field] = [offsets[r] for r in range(ds.shape[0])]

    def _check_layout(self, info: ShardInfo, fields: Sequence[str]) -> None:
        """The shard holds as many rows as the manifest says, in every dataset we read."""
        for field in [f for f in fields if f in _H5_KEYS] + ["name"]:
            key = _H5_KEYS.get(field, "names")
            if key not in self.h5:
                raise ShardReadError(f"{self.path}: no {key} dataset although the manifest lists it; {_REBUILD}")
            rows = int(self.h5[key].shape[0])
            if rows != info.count:
                raise ShardReadError(
                    f"{self.path}: holds {rows} images but the manifest says {info.count}; the manifest or the "
                    f"shard was changed after prepare wrote them, {_REBUILD}"
                )

    def read(self, field: str, row: int) -> np.ndarray:
        ds = self.datasets[field]
        offsets = self.offsets.get(field)
        expected = self.sums.get(_H5_KEYS[field])
        crc: int | None = None
        try:
            if offsets is None:
                out = ds[row]
            else:
                out = np.empty(ds.shape[1:], dtype=ds.dtype)
                if expected is None:
                    got = os.preadv(self.fd, [memoryview(out).cast("B")], offsets[row])
                else:
                    got, crc = pread_checksum(self.fd, out, offsets[row])
                if got != out.nbytes:
                    raise ShardReadError(f"{self.path}: short read; the shard is truncated, {_REBUILD}")
        except _READ_ERRORS as exc:
            raise ShardReadError(
                f"{self.path}: {_WHAT[field]} of image {self._label(row)} is unreadable ({exc}); {_REBUILD}"
            ) from None
        if expected is not None and (row_checksum(out) if crc is None else crc) != int(expected[row]):
            raise ShardReadError(f"{self.path}: {_WHAT[field]} of image {self._label(row)} is damaged "
                                 f"(it does not match the checksum prepare wrote); {_REBUILD}")
        return out

    def name(self, row: int) -> str:
        try:
            raw = bytes(self.h5["names"][row])
        except _READ_ERRORS as exc:
            raise ShardReadError(
                f"{self.path}: the name of image row {row} is unreadable ({exc}); {_REBUILD}"
            ) from None
        expected = self.sums.get("names")
        if expected is not None and row_checksum(raw) != int(expected[row]):
            raise ShardReadError(f"{self.path}: the name of image row {row} is damaged; {_REBUILD}")
        return raw.rstrip(b"\0").decode("utf-8")

    def _label(self, row: int) -> str:
        """``NAME (row N)`` for messages, or just the row when the name itself is damaged."""
        try:
            return f"{self.name(row)} (row {row})"
        except (HrsegError, UnicodeDecodeError):
            return f"row {row}"

    def close(self) -> None:
        self.h5.close()
        os.close(self.fd)


_REBUILD = "run hrseg prepare verify, then the same hrseg prepare command again to rebuild it"


class ShardDataset(Dataset):
    """Items of one prepared split: ``{"image": uint8 (3,H,W), "label": uint8 (H,W), ...}``.

    ``fields`` picks what ``__getitem__`` returns (only those are read from
    disk); ``indices`` restricts the dataset to a subset of the split, in the
    given order (e.g. the first N target images). ``verify=False`` skips the
    per-row checksums (for measuring their cost; nothing in hrseg turns them off).
    """

    def __init__(
        self,
        split_dir: str | Path,
        fields: Sequence[str] = ("image", "label"),
        indices: Sequence[int] | None = None,
        verify: bool = True,
    ) -> None:
        self.split_dir = Path(split_dir)
        self.manifest = Manifest.load(self.split_dir)
        self.verify = verify
        if verify and not self.manifest.has_checksums:
            _warn_unverified(self.split_dir)
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise ValueError(f"unknown field(s) {unknown}; choose from {FIELDS}")
        manifest_path = self.split_dir / "manifest.json"
        if "realism" in fields and not self.manifest.has_realism:
            raise HrsegError(f"{manifest_path}: this split has no realism masks (only procedural scenes do)")
        if "full_label" in fields and not self.manifest.has_full_labels:
            raise HrsegError(f"{manifest_path}: this split has no full-resolution labels")
        self.fields = tuple(fields)
        self._starts = np.cumsum([0] + [s.count for s in self.manifest.shards]).tolist()
        total = self._starts[-1]
        if total == 0:
            raise HrsegError(f"{manifest_path}: the split is empty (0 images)")
        if indices is None:
            self.indices = np.arange(total, dtype=np.int64)
        else:
            self.indices = np.asarray(indices, dtype=np.int64).reshape(-1)
            if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= total):
                raise IndexError(f"indices out of range for a split of {total} images")
        self._files: dict[int, _OpenShard] = {}
        self._pid = os.getpid()

    @property
    def size(self) -> tuple[int, int]:
        """(W, H) of images and labels."""
        return self.manifest.size

    def __len__(self) -> int:
        return int(self.indices.size)

    def subset(self, indices: Sequence[int]) -> "ShardDataset":
        """A dataset over some items of this one (indices relative to this dataset)."""
        return ShardDataset(self.split_dir, self.fields, self.indices[np.asarray(indices, dtype=np.int64)],
                            verify=self.verify)

    def with_fields(self, fields: Sequence[str]) -> "ShardDataset":
        return ShardDataset(self.split_dir, fields, self.indices, verify=self.verify)

    def locate(self, index: int) -> tuple[int, int]:
        """(shard number, row in shard) of split-level image ``index``."""
        shard = bisect.bisect_right(self._starts, index) - 1
        return shard, index - self._starts[shard]

    def _shard(self, shard: int) -> "_OpenShard":
        pid = os.getpid()
        if pid != self._pid:  # forked worker: the parent's handles are not ours to use
            self._files = {}
            self._pid = pid
        f = self._files.get(shard)
        if f is None:
            info = self.manifest.shards[shard]
            f = _OpenShard(self.split_dir / info.file, self.fields, info, self.verify)
            self._files[shard] = f
        return f

    def __getitem__(self, i: int) -> dict[str, Any]:
        index = int(self.indices[i])
        shard, row = self.locate(index)
        f = self._shard(shard)
        item: dict[str, Any] = {}
        for field in self.fields:
            if field == "name":
                item["name"] = f.name(row)
            elif field == "index":
                item["index"] = index
            elif field == "image":
                # a (3,H,W) view of the stored HWC pixels: batching (torch.stack) makes it contiguous
                item["image"] = torch.from_numpy(f.read("image", row)).permute(2, 0, 1)
            else:
                item[field] = torch.from_numpy(f.read(field, row))
        return item

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()

    def __del__(self) -> None:
        try:
            if getattr(self, "_pid", None) == os.getpid():
                self.close()
        except Exception:  # interpreter shutdown: h5py may already be gone
            pass


def open_split(
    data_dir: str | Path,
    dataset: str,
    split: str,
    fields: Sequence[str] = ("image", "label"),
    indices: Sequence[int] | None = None,
    verify: bool = True,
) -> ShardDataset:
    """Open ``DATA/<dataset>/<split>``; a split that was never prepared is a user error."""
    path = split_dir(data_dir, dataset, split)
    if not (path / "manifest.json").is_file():
        available = available_splits(data_dir)
        have = ", ".join(available) if available else "none"
        raise HrsegError(
            f"{path}: split {dataset}/{split} is not prepared (no manifest.json); prepared splits: {have}"
        )
    return ShardDataset(path, fields=fields, indices=indices, verify=verify)


def available_splits(data_dir: str | Path) -> list[str]:
    """``dataset/split`` names of every prepared split under ``data_dir``."""
    root = Path(data_dir)
    if not root.is_dir():
        return []
    return sorted(
        f"{p.parent.parent.name}/{p.parent.name}"
        for p in root.glob("*/*/manifest.json")
    )


class DomainSampler(Sampler[int]):
    """An endless, seeded stream of shuffled indices for one domain, shardable over ranks.

    Every epoch is a fresh permutation drawn from ``seed + epoch``, so the order
    depends only on (seed, epoch, position): ``state_dict`` is two integers and a
    resumed run reads exactly the items an uninterrupted one would. With
    ``world_size > 1`` each rank takes every ``world_size``-th index of the
    same permutation.
    """

    def __init__(self, num_items: int, seed: int = 0, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        if num_items <= 0:
            raise ValueError("DomainSampler needs at least one item")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.position = 0  # items of this rank already yielded in the current epoch

    def _order(self, epoch: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.num_items, generator=g).tolist()
        else:
            perm = list(range(self.num_items))
        # pad so every rank gets the same count, as DistributedSampler does
        per_rank = self.per_rank
        perm = (perm * (1 + per_rank * self.world_size // self.num_items))[: per_rank * self.world_size]
        return perm[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[int]:
        while True:
            order = self._order(self.epoch)
            while self.position < len(order):
                idx = order[self.position]
                self.position += 1
                yield idx
            self.epoch += 1
            self.position = 0

    @property
    def per_rank(self) -> int:
        """Indices this rank yields per epoch."""
        return -(-self.num_items // self.world_size)

    def set_consumed(self, consumed: int) -> None:
        """Position the stream after ``consumed`` items of this rank.

        A DataLoader's workers run ahead of the training loop, so a trainer
        should checkpoint how many items it *consumed* and restore with this,
        never the position of a sampler that has been prefetched.
        """
        self.epoch, self.position = divmod(int(consumed), self.per_rank)
