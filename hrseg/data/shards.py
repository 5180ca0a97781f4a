"""HDF5 shards of fixed-size uint8 arrays plus a JSON manifest that describes a split.

Decoding large PNGs every epoch starves an accelerator, so each split is
decoded, resized and label-mapped once into shards. A shard holds one image
per HDF5 chunk, so a random read touches exactly one chunk. Shards are
written under a temporary name and renamed when complete, and their bytes
are a pure function of their content (no HDF5 timestamps), so an
interrupted-and-resumed ``prepare`` yields the very same files and sha256
values as an uninterrupted one.

Every row (image, label, realism mask, full label, name, original size)
also carries a checksum (``hrseg.data.checksums``) in the ``checksums``
dataset, so damage is found by whoever reads the row, not only by
``hrseg prepare verify``. Shards of format 1 have no checksums; they still
load (``ShardDataset`` warns once) until the next ``prepare`` rebuilds them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from hrseg.atomic import atomic_path, write_json
from hrseg.data.checksums import ALGORITHM, row_checksum
from hrseg.data.filespace import reserve, trim_hdf5
from hrseg.data.labels import IGNORE_INDEX, NUM_CLASSES
from hrseg.errors import HrsegError

FORMAT = "hrseg-shards/2"
OLD_FORMATS = ("hrseg-shards/1",)  # readable, without per-row checksums
MANIFEST_NAME = "manifest.json"
COMPRESSIONS = ("none", "lzf", "gzip")
NAME_BYTES = 256  # fixed-length names keep shard bytes deterministic and reads cheap


@dataclass(frozen=True)
class ShardInfo:
    """One shard file of a split, with the checksum `verify` compares against."""

    file: str
    count: int
    sha256: str


@dataclass(frozen=True)
class ShardOptions:
    """Everything that changes the bytes of a split; a resumed run must match it exactly."""

    size: tuple[int, int]  # (W, H) of images and labels in the shards
    resize: str  # image interpolation: "area" or "bilinear"; labels are always nearest
    compression: str
    shard_size: int
    full_labels: bool
    full_size: tuple[int, int] | None = None  # (W, H) of full_labels; None without them

    def to_dict(self) -> dict[str, Any]:
        return {
            "size": list(self.size),
            "resize": self.resize,
            "compression": self.compression,
            "shard_size": self.shard_size,
            "full_labels": self.full_labels,
            "full_size": list(self.full_size) if self.full_size is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ShardOptions":
        full = d.get("full_size")
        return cls(
            size=(int(d["size"][0]), int(d["size"][1])),
            resize=str(d["resize"]),
            compression=str(d["compression"]),
            shard_size=int(d["shard_size"]),
            full_labels=bool(d["full_labels"]),
            full_size=(int(full[0]), int(full[1])) if full is not None else None,
        )


@dataclass
class Manifest:
    """The JSON description of one prepared split (``DATA/<dataset>/<split>/manifest.json``)."""

    dataset: str
    split: str
    size: tuple[int, int]  # (W, H)
    options: ShardOptions
    num_images: int = 0
    shards: list[ShardInfo] = field(default_factory=list)
    class_pixels: list[int] = field(default_factory=lambda: [0] * NUM_CLASSES)
    has_realism: bool = False
    has_full_labels: bool = False
    skipped: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    format: str = FORMAT
    root: str = ""  # the folder the split was prepared from (absolute); "" when unknown (older manifests)

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    def class_frequencies(self) -> np.ndarray:
        """Share of labelled pixels per trainId (zeros when the split has no labelled pixel)."""
        pix = np.asarray(self.class_pixels, dtype=np.float64)
        total = pix.sum()
        return pix / total if total > 0 else pix

    def shard_paths(self, split_dir: str | Path) -> list[Path]:
        return [Path(split_dir) / s.file for s in self.shards]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "dataset": self.dataset,
            "split": self.split,
            "size": list(self.size),
            "options": self.options.to_dict(),
            "num_images": self.num_images,
            "shards": [dataclasses.asdict(s) for s in self.shards],
            "class_pixels": [int(v) for v in self.class_pixels],
            "has_realism": self.has_realism,
            "has_full_labels": self.has_full_labels,
            "skipped": {k: list(v) for k, v in self.skipped.items()},
            "counts": dict(self.counts),
            "root": self.root,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        return cls(
            format=str(d["format"]),
            dataset=str(d["dataset"]),
            split=str(d["split"]),
            size=(int(d["size"][0]), int(d["size"][1])),
            options=ShardOptions.from_dict(d["options"]),
            num_images=int(d["num_images"]),
            shards=[ShardInfo(str(s["file"]), int(s["count"]), str(s["sha256"])) for s in d["shards"]],
            class_pixels=[int(v) for v in d["class_pixels"]],
            has_realism=bool(d["has_realism"]),
            has_full_labels=bool(d["has_full_labels"]),
            skipped={str(k): [str(x) for x in v] for k, v in d.get("skipped", {}).items()},
            counts={str(k): int(v) for k, v in d.get("counts", {}).items()},
            root=str(d.get("root", "")),
        )

    def save(self, split_dir: str | Path) -> Path:
        path = Path(split_dir) / MANIFEST_NAME
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, split_dir: str | Path) -> "Manifest":
        """Read a split's manifest; a missing or malformed one is a user error naming the file."""
        path = Path(split_dir)
        if path.name != MANIFEST_NAME:
            path = path / MANIFEST_NAME
        if not path.is_file():
            raise HrsegError(f"{path}: no manifest; prepare this split first (hrseg prepare ...)")
        try:
            data = json.loads(path.read_text())
            manifest = cls.from_dict(data)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise HrsegError(f"{path}: not a valid hrseg manifest ({type(exc).__name__}: {exc})") from None
        if manifest.format != FORMAT and manifest.format not in OLD_FORMATS:
            raise HrsegError(f"{path}: format {manifest.format!r} is not {FORMAT!r}; run the prepare command again")
        problem = manifest.inconsistency()
        if problem:
            raise HrsegError(f"{path}: {problem}; the manifest is damaged or was edited, run the prepare command again")
        return manifest

    def inconsistency(self) -> str | None:
        """What makes this manifest self-contradictory (image counts, shard names), or None."""
        total = sum(s.count for s in self.shards)
        if total != self.num_images:
            return f"its shards hold {total} images in total but num_images says {self.num_images}"
        for s in self.shards:
            if s.count < 0 or not s.file or Path(s.file).name != s.file or s.file.startswith("."):
                return f"shard entry {s.file!r} with count {s.count} is not valid"
        if len(self.class_pixels) != NUM_CLASSES:
            return f"class_pixels has {len(self.class_pixels)} entries, not {NUM_CLASSES}"
        return None

    @property
    def has_checksums(self) -> bool:
        """False for shards written before per-row checksums (format 1)."""
        return self.format not in OLD_FORMATS


@dataclass
class ShardSample:
    """One decoded, resized, trainId-mapped sample, ready to be written to a shard."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8 RGB
    label: np.ndarray  # (H, W) uint8 trainIds
    orig_size: tuple[int, int]  # (H, W) before resizing
    realism: np.ndarray | None = None  # (H, W) uint8
    full_label: np.ndarray | None = None  # (Hf', Wf') uint8, padded to the split's full size on write


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _compression_kwargs(compression: str) -> dict[str, Any]:
    if compression == "none":
        return {}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": 4}
    raise HrsegError(f"--compression: unknown value {compression!r}; choose one of {', '.join(COMPRESSIONS)}")


def pad_full_label(label: np.ndarray, full_size: tuple[int, int]) -> np.ndarray:
    """Place a full-resolution label in the split's (W, H) canvas, padding with the ignore label."""
    w, h = full_size
    out = np.full((h, w), IGNORE_INDEX, dtype=np.uint8)
    lh, lw = min(h, label.shape[0]), min(w, label.shape[1])
    out[:lh, :lw] = label[:lh, :lw]
    return out


ROW_FIELDS = ("names", "orig_sizes", "images", "labels", "realism", "full_labels")
EXTRA_CRC_ATTR = "extras_crc32"


class ShardWriter:
    """Append samples to a new shard, one HDF5 chunk per image; ``close`` renames it into place.

    Samples are written as they come (a worker never holds a whole shard in
    memory). No timestamps are stored, so the same samples and ``extra``
    payload always give the same bytes. If anything fails before ``close``,
    ``abort`` (or leaving the ``with`` block by an exception) removes the
    temporary file: a reader never sees a partial shard. ``expected_rows``
    reserves the shard's disk space first (see ``hrseg.data.filespace``), so
    a full disk is an ``OSError(ENOSPC)`` naming the shard, not an HDF5 crash.
    """

    def __init__(
        self,
        path: str | Path,
        size: tuple[int, int],
        *,
        compression: str = "none",
        realism: bool = False,
        full_size: tuple[int, int] | None = None,
        expected_rows: int = 0,
    ) -> None:
        self.path = Path(path)
        self.count = 0
        self._info: ShardInfo | None = None
        self._extras_crc = 0
        kw = _compression_kwargs(compression)
        w, h = size
        self._size = (h, w)
        self._full_size = full_size
        self._ctx = atomic_path(self.path, suffix=".h5")
        self._tmp = self._ctx.__enter__()
        try:
            self._f = h5py.File(self._tmp, "w", libver="earliest")
            self._f.attrs["format"] = FORMAT
            row_bytes = 0

            def make(key: str, shape: tuple[int, ...], dtype: Any, compress: bool = True) -> None:
                nonlocal row_bytes
                self._f.create_dataset(
                    key, shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                    chunks=(1, *shape) if compress else (64, *shape), track_times=False, **(kw if compress else {}),
                )
                row_bytes += int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize

            make("images", (h, w, 3), np.uint8)
            make("labels", (h, w), np.uint8)
            if realism:
                make("realism", (h, w), np.uint8)
            if full_size is not None:
                make("full_labels", (full_size[1], full_size[0]), np.uint8)
            make("names", (), f"S{NAME_BYTES}", compress=False)
            make("orig_sizes", (2,), np.int32, compress=False)
            self._fields = [k for k in ROW_FIELDS if k in self._f]
            make("checksums", (len(self._fields),), np.uint32, compress=False)
            self._f["checksums"].attrs["fields"] = ",".join(self._fields)
            self._f["checksums"].attrs["algorithm"] = ALGORITHM
            if expected_rows > 0:  # measured: ~40 KiB of HDF5 structures + ~1 KiB per row of names, index, extras
                reserve(self._tmp, expected_rows * (row_bytes + 2048) + (256 << 10), name=self.path)
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add(self, sample: ShardSample) -> None:
        h, w = self._size
        if sample.image.shape != (h, w, 3) or sample.label.shape != (h, w):
            raise ValueError(f"{sample.name}: image {sample.image.shape} / label {sample.label.shape} are not {(h, w)}")
        name = sample.name.encode("utf-8")
        if len(name) > NAME_BYTES:
            raise ValueError(f"sample name longer than {NAME_BYTES} bytes: {sample.name!r}")
        i = self.count
        rows: dict[str, Any] = {"images": np.ascontiguousarray(sample.image, dtype=np.uint8),
                                "labels": np.ascontiguousarray(sample.label, dtype=np.uint8), "names": name,
                                "orig_sizes": np.asarray(sample.orig_size, dtype=np.int32)}
        if "realism" in self._f:
            if sample.realism is None:
                raise ValueError(f"{sample.name}: this shard stores realism masks but the sample has none")
            rows["realism"] = np.ascontiguousarray(sample.realism, dtype=np.uint8)
        if self._full_size is not None:
            if sample.full_label is None:
                raise ValueError(f"{sample.name}: this shard stores full labels but the sample has none")
            rows["full_labels"] = pad_full_label(sample.full_label, self._full_size)
        rows["checksums"] = np.array([row_checksum(rows[k]) for k in self._fields], dtype=np.uint32)
        for key, value in rows.items():
            ds = self._f[key]
            ds.resize(i + 1, axis=0)
            ds[i] = value
        self.count += 1

    def put_extra(self, key: str, data: bytes | Sequence[str]) -> None:
        """Store bookkeeping (e.g. the prepare statistics) as a fixed, timestamp-free dataset."""
        if isinstance(data, bytes):
            arr = np.frombuffer(data, dtype=np.uint8)
        else:
            arr = np.array([s.encode("utf-8") for s in data], dtype=f"S{NAME_BYTES}").reshape(-1)
        self._f.create_dataset(key, data=arr, track_times=False)
        self._extras_crc = extra_checksum(key, arr, self._extras_crc)

    def close(self) -> ShardInfo:
        if self._info is None:
            try:
                self._f.attrs[EXTRA_CRC_ATTR] = np.uint32(self._extras_crc)
                self._f.close()
                trim_hdf5(self._tmp)
                info = ShardInfo(file=self.path.name, count=self.count, sha256=sha256_file(self._tmp))
            except BaseException:
                self.abort()
                raise
            self._ctx.__exit__(None, None, None)
            self._info = info
        return self._info

    def abort(self) -> None:
        if self._info is not None:
            return
        try:
            if getattr(self, "_f", None) is not None and self._f.id.valid:
                self._f.close()
        except Exception:  # a failed flush must not keep the temporary file
            pass
        finally:
            self._tmp.unlink(missing_ok=True)


def extra_checksum(key: str, arr: np.ndarray, crc: int = 0) -> int:
    """Running checksum over the bookkeeping datasets (their names and bytes, in write order)."""
    return zlib.crc32(np.ascontiguousarray(arr).tobytes(), zlib.crc32(key.encode() + b"\0", crc)) & 0xFFFFFFFF


def write_shard(
    path: str | Path,
    samples: Sequence[ShardSample],
    *,
    compression: str = "none",
    full_size: tuple[int, int] | None = None,
) -> ShardInfo:
    """Write ``samples`` to a shard at ``path`` atomically and return its manifest entry."""
    if not samples:
        raise ValueError("a shard needs at least one sample; use ShardWriter for an empty one")
    h, w = samples[0].label.shape
    with ShardWriter(
        path, (w, h), compression=compression, realism=samples[0].realism is not None, full_size=full_size,
        expected_rows=len(samples),
    ) as writer:
        for s in samples:
            writer.add(s)
        return writer.close()


class ShardReader:
    """Random access to one shard; keeps the HDF5 file open until ``close``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._f = h5py.File(self.path, "r")
        except OSError as exc:
            raise HrsegError(f"{self.path}: cannot open shard ({exc})") from None

    def __len__(self) -> int:
        return int(self._f["labels"].shape[0])

    def __enter__(self) -> "ShardReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    def has(self, key: str) -> bool:
        return key in self._f

    def dataset(self, key: str) -> h5py.Dataset:
        return self._f[key]

    def read(self, key: str, index: int) -> np.ndarray:
        return self._f[key][index]

    def read_all(self, key: str) -> np.ndarray:
        """Every row of ``key``, each checked against its stored checksum (format 2; unchecked before)."""
        try:
            rows = self._f[key][()]
            table = self._f["checksums"] if "checksums" in self._f else None
            columns = str(table.attrs.get("fields", "")).split(",") if table is not None else []
            sums = np.asarray(table[()], dtype=np.uint32) if table is not None and key in columns else None
        except (OSError, KeyError, ValueError) as exc:
            raise HrsegError(f"{self.path}: {key} unreadable ({exc}); run hrseg prepare verify") from None
        if sums is not None:
            col = columns.index(key)
            for i in range(len(rows)):
                value = bytes(rows[i]) if key == "names" else rows[i]
                if i >= len(sums) or row_checksum(value) != int(sums[i, col]):
                    raise HrsegError(f"{self.path}: {key} of row {i} is damaged (it does not match the checksum "
                                     "prepare wrote); run hrseg prepare verify, then the prepare command again")
        return rows

    def name(self, index: int) -> str:
        return bytes(self._f["names"][index]).rstrip(b"\0").decode("utf-8")

    def names(self) -> list[str]:
        return [bytes(b).rstrip(b"\0").decode("utf-8") for b in self._f["names"][()]]


def count_class_pixels(labels: np.ndarray) -> np.ndarray:
    """Pixels per trainId (int64, length 19); the ignore label is not counted."""
    counts = np.bincount(labels.reshape(-1), minlength=256)
    return counts[:NUM_CLASSES].astype(np.int64)
