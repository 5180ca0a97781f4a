"""A self-contained index.html gallery: one static file, relative links, no scripts."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from hrseg.atomic import atomic_path


@dataclass(frozen=True)
class GalleryItem:
    """One figure: a caption and the panel PNG(s) shown under it, paths relative to the index."""

    caption: str
    images: tuple[str, ...]
    notes: dict[str, str] = field(default_factory=dict)


_STYLE = """
body{font-family:system-ui,sans-serif;background:#181818;color:#e8e8e8;margin:1.5em}
h1{font-size:1.3em}figure{margin:0 0 2em 0}figcaption{margin:.3em 0;font-weight:600}
img{max-width:100%;display:block;margin-bottom:.4em}table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #444;padding:.2em .6em;text-align:left}code{color:#9cf}
"""


def render_index(title: str, items: Sequence[GalleryItem], summary: dict[str, str] | None = None) -> str:
    """The HTML text; every string from data is escaped."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if summary:
        parts.append("<table>")
        for key, value in summary.items():
            parts.append(f"<tr><th>{html.escape(key)}</th><td>{html.escape(value)}</td></tr>")
        parts.append("</table>")
    for item in items:
        parts.append("<figure>")
        parts.append(f"<figcaption>{html.escape(item.caption)}</figcaption>")
        if item.notes:
            notes = ", ".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in item.notes.items())
            parts.append(f"<div>{notes}</div>")
        for src in item.images:
            ref = html.escape(Path(src).as_posix(), quote=True)
            alt = html.escape(item.caption, quote=True)
            parts.append(f'<a href="{ref}"><img src="{ref}" alt="{alt}" loading="lazy"></a>')
        parts.append("</figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_index(path: str | os.PathLike[str], title: str, items: Sequence[GalleryItem],
                summary: dict[str, str] | None = None) -> Path:
    out = Path(path)
    with atomic_path(out) as tmp:
        tmp.write_text(render_index(title, items, summary), encoding="utf-8")
    return out
