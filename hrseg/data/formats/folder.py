"""``folder``: any dataset laid out as images + label PNGs + a class table, prepared without code.

    ROOT/classes.toml                      (or classes.json)
    ROOT/images/<split>/**/<stem>.png|jpg  the images (sub-folders allowed)
    ROOT/labels/<split>/**/<stem>.png      their labels, same relative path and stem

The class table lists the classes the label PNGs hold, each with the Cityscapes
class it is trained as (hrseg's models and reports have the 19 Cityscapes
classes; ``ignore`` drops a class) and how it is stored: ``id`` (the value in a
grey or palettised label PNG) and/or ``color`` (RGB, for colour label PNGs)::

    [[classes]]
    name = "road"
    id = 7
    color = [128, 64, 128]

``train_as`` names the Cityscapes class when ``name`` is not one (``name =
"street", train_as = "road"``). Values the table does not list become the
ignore label and are counted. ``hrseg prepare folder --root ROOT --out DATA
--name NAME`` writes ``DATA/NAME/{train,val}``; ``--target NAME`` trains on it
and ``hrseg eval`` scores its val split.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrseg import toml
from hrseg.data.labels import CLASS_NAMES, IGNORE_INDEX
from hrseg.data.png import PngError, decode_palette_indices
from hrseg.data.readers import (
    DatasetSpec, Listing, RawSample, _imdecode_unchanged, _png_header, _require_dirs, register_dataset,
)
from hrseg.errors import HrsegError

TABLE_NAMES = ("classes.toml", "classes.json")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
IGNORE_NAMES = ("ignore", "void", "unlabeled", "unlabelled")


@dataclass(frozen=True)
class ClassTable:
    """Label value -> trainId (grey / palettised PNGs) and RGB colour -> trainId (colour PNGs)."""

    by_id: np.ndarray  # (256,) uint8 trainIds; 255 for values not listed
    known_ids: np.ndarray  # (256,) bool
    by_color: dict[tuple[int, int, int], int]


def table_path(root: Path) -> Path:
    for name in TABLE_NAMES:
        if (root / name).is_file():
            return root / name
    raise HrsegError(f"--root {root}: no class table; write {TABLE_NAMES[0]} (or {TABLE_NAMES[1]}) listing the "
                     "classes: name, id and/or color")


@functools.lru_cache(maxsize=8)
def load_table(path: Path) -> ClassTable:
    """The class table at ``path``, checked; every problem is one line naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
        data = toml.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise HrsegError(f"{path}: cannot read the class table ({str(exc).splitlines()[0]})") from None
    rows = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows:
        raise HrsegError(f"{path}: expected a non-empty list 'classes' of {{name, id and/or color}}")
    by_id = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    known = np.zeros(256, dtype=bool)
    by_color: dict[tuple[int, int, int], int] = {}
    for i, row in enumerate(rows):
        where = f"{path}: classes[{i}]"
        if not isinstance(row, dict) or not isinstance(row.get("name"), str):
            raise HrsegError(f"{where}: needs a 'name'")
        target = row.get("train_as", row["name"])
        if not isinstance(target, str):
            raise HrsegError(f"{where}: 'train_as' must be a class name")
        if target.lower() in IGNORE_NAMES:
            train_id = IGNORE_INDEX
        elif target in CLASS_NAMES:
            train_id = CLASS_NAMES.index(target)
        else:
            raise HrsegError(f"{where}: {target!r} is not a Cityscapes class (one of {', '.join(CLASS_NAMES)}, or "
                             "ignore); set 'train_as' to the class it is trained as")
        if "id" not in row and "color" not in row:
            raise HrsegError(f"{where}: give its 'id' (grey/palettised labels) and/or 'color' (colour labels)")
        if "id" in row:
            value = row["id"]
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
                raise HrsegError(f"{where}: 'id' must be an integer 0..255, got {value!r}")
            if known[value]:
                raise HrsegError(f"{where}: id {value} is listed twice")
            by_id[value], known[value] = train_id, True
        if "color" in row:
            rgb = row["color"]
            if not (isinstance(rgb, list) and len(rgb) == 3 and all(isinstance(c, int) and 0 <= c <= 255
                                                                  for c in rgb)):
                raise HrsegError(f"{where}: 'color' must be [R, G, B] with integers 0..255, got {rgb!r}")
            if tuple(rgb) in by_color:
                raise HrsegError(f"{where}: colour {rgb} is listed twice")
            by_color[(rgb[0], rgb[1], rgb[2])] = train_id
    return ClassTable(by_id, known, by_color)


def list_folder(root: Path, split: str) -> Listing:
    """Images under ``images/<split>/`` paired with ``labels/<split>/`` by relative path and stem."""
    images, labels = root / "images" / split, root / "labels" / split
    _require_dirs(root, "folder", [images, labels])
    table = table_path(root)
    load_table(table)  # a bad table is refused before any worker starts
    imgs = {p.relative_to(images).with_suffix(""): p for p in images.rglob("*")
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}
    labs = {p.relative_to(labels).with_suffix(""): p for p in labels.rglob("*.png") if p.is_file()}
    samples = [RawSample(str(imgs[k].relative_to(root)), imgs[k], labs[k], classes=table)
               for k in sorted(imgs.keys() & labs.keys())]
    skipped: dict[str, list[str]] = {}
    if imgs.keys() - labs.keys():
        skipped["missing_label"] = sorted(str(imgs[k].relative_to(root)) for k in imgs.keys() - labs.keys())
    if labs.keys() - imgs.keys():
        skipped["missing_image"] = sorted(str(labs[k].relative_to(root)) for k in labs.keys() - imgs.keys())
    return Listing("folder", split, root, samples, skipped)


def folder_labels(data: bytes, sample: RawSample) -> tuple[np.ndarray, int]:
    """Grey or palettised PNGs through the table's ids, colour PNGs through its colours."""
    assert sample.classes is not None
    table = load_table(sample.classes)
    depth, colour = _png_header(data)
    if colour in (2, 6):  # RGB(A): colour-coded labels
        if not table.by_color:
            raise PngError("colour label PNG, but the class table gives no 'color'")
        rgb = np.ascontiguousarray(_imdecode_unchanged(data)[:, :, 2::-1]).astype(np.uint32)
        if depth != 8:
            raise PngError(f"colour label PNG must be 8-bit, not {depth}-bit")
        code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        out = np.full(code.shape, IGNORE_INDEX, dtype=np.uint8)
        hit = np.zeros(code.shape, dtype=bool)
        for (r, g, b), train_id in table.by_color.items():
            mask = code == ((r << 16) | (g << 8) | b)
            out[mask], hit[mask] = train_id, True
        return out, int(hit.size - np.count_nonzero(hit))
    if depth != 8:
        raise PngError(f"label PNG is {depth}-bit; ids must be 8-bit grey or palettised")
    ids = decode_palette_indices(data) if colour == 3 else _imdecode_unchanged(data)
    if ids.ndim != 2:
        raise PngError("id label PNG must be single-channel")
    return table.by_id[ids], int(ids.size - np.count_nonzero(table.known_ids[ids]))


register_dataset(DatasetSpec(
    "folder", "folder",
    "Any dataset: images/<split>/ + labels/<split>/ (PNG ids or colours) + classes.toml -> DATA/<--name>/<split>.",
    ("train", "val", "test"), (1024, 512), list_folder, folder_labels, evaluated_splits=("val",),
    default_splits=("train", "val"), renamable=True))
