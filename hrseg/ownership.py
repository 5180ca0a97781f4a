"""Every command owns what it writes: it replaces only files it can recognise as its own.

``RunDir`` already refuses a folder that holds something else; this is the same
rule for every other output. A file hrseg writes carries a mark it can find
again (an exported model's format entry, a ``"written_by"`` key in JSON, a
first-line comment in Markdown and HTML). A file without the mark is the
user's: it is replaced only with ``--overwrite``. In an output folder, the
index hrseg writes there lists its files, and ``--overwrite`` removes only
those, never anything else in the folder.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

from hrseg.errors import HrsegError

Owned = Callable[[Path], bool]
#: the key hrseg's JSON files carry; its value names the command that wrote it
JSON_MARK = "written_by"
MAX_PROBE = 1 << 20  # bytes read from a file to find a mark; a mark sits at its start


def json_mark(kind: str) -> dict[str, str]:
    """The entry to put in a JSON object that ``kind`` (e.g. ``"hrseg predict"``) writes."""
    return {JSON_MARK: kind}


def json_owned(*kinds: str) -> Owned:
    """A test for JSON files carrying the mark of one of ``kinds``."""

    def owned(path: Path) -> bool:
        try:
            if path.stat().st_size > 64 * MAX_PROBE:
                return False
            obj = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            return False
        return isinstance(obj, dict) and obj.get(JSON_MARK) in kinds

    return owned


def text_owned(mark: str) -> Owned:
    """A test for text files (Markdown, HTML) whose first line holds ``mark``."""

    def owned(path: Path) -> bool:
        try:
            with path.open("rb") as f:
                head = f.read(4096)
        except OSError:
            return False
        return mark.encode() in head.split(b"\n", 1)[0]

    return owned


#: the tag every HTML page hrseg writes carries in its head
HTML_MARK = '<meta name="generator" content="hrseg">'


def html_owned(path: Path) -> bool:
    """An HTML page hrseg wrote (its head holds :data:`HTML_MARK`)."""
    try:
        with path.open("rb") as f:
            return HTML_MARK.encode() in f.read(8192)
    except OSError:
        return False


def torch_owned(fmt: str) -> Owned:
    """A test for torch files whose pickled dict holds ``"format": fmt`` (found without unpickling)."""
    needle = fmt.encode()

    def owned(path: Path) -> bool:
        try:
            with zipfile.ZipFile(path) as z:
                pkl = next((n for n in z.namelist() if n.endswith("/data.pkl")), None)
                if pkl is None:
                    return False
                with z.open(pkl) as f:
                    return needle in f.read(MAX_PROBE)
        except (OSError, zipfile.BadZipFile, ValueError):
            return False

    return owned


def check_replace(path: str | os.PathLike[str], owned: Owned, overwrite: bool, what: str,
                  option: str = "--out") -> Path:
    """Refuse to write ``path`` when a file is there that hrseg did not write as ``what``, unless ``overwrite``.

    Called before any work is done, so a refusal costs nothing.
    """
    target = Path(path)
    if target.is_symlink() and not target.exists():
        raise HrsegError(f"{option} {target}: is a broken symbolic link; remove it or choose another name")
    if not target.exists():
        return target
    if target.is_dir():
        raise HrsegError(f"{option} {target}: is a folder; give a file name such as {target / _example(what)}")
    if overwrite or owned(target):
        return target
    raise HrsegError(f"{option} {target}: exists and is not {what} written by hrseg; "
                     "pass --overwrite to replace it, or choose another name")


def _example(what: str) -> str:
    return {"an exported model": "model.pt"}.get(what, "out")


def check_folder(folder: Path, own: Iterable[str], planned: Iterable[str], overwrite: bool,
                 option: str = "--out") -> None:
    """Refuse to write the ``planned`` files (relative names) into ``folder`` over files hrseg did not write.

    ``own`` lists the files hrseg wrote there before (from the folder's index).
    """
    mine = set(own)
    for name in planned:
        p = folder / name
        if (p.exists() or p.is_symlink()) and name not in mine and not overwrite:
            raise HrsegError(f"{option} {folder}: {name} exists and was not written by hrseg; "
                             "pass --overwrite to replace it, or choose another --out")


def remove_own(folder: Path, own: Iterable[str], keep: Iterable[str] = ()) -> list[str]:
    """Remove the files hrseg wrote in ``folder`` (``own``, relative names) except ``keep``; returns them.

    Nothing outside ``folder`` is touched, whatever an index says.
    """
    root = folder.resolve()
    keep_set = set(keep)
    removed = []
    for name in own:
        if name in keep_set:
            continue
        p = folder / name
        try:
            inside = p.parent.resolve().is_relative_to(root)
        except (OSError, RuntimeError):
            inside = False
        if inside and (p.is_file() or p.is_symlink()):
            p.unlink()
            removed.append(name)
    return removed


def read_index(path: Path, owned: Owned) -> dict[str, Any] | None:
    """An index file hrseg wrote (marked as ours), parsed; None when absent or not ours."""
    if not path.is_file() or not owned(path):
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None
