"""A gallery folder: panel PNGs, ``index.html`` to look at them and ``gallery.json`` to read them.

The page is one self-contained file (inline style and script, relative links,
nothing fetched from the network). Every panel carries its numbers; the page
sorts and filters by them and moves between panels with the keyboard
(j / k or the arrow keys, o opens the panel alone), so the worst or best
images of a run are one click away. ``gallery.json`` holds the same items for
scripts.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hrseg.atomic import atomic_path, write_json
from hrseg.ownership import HTML_MARK, check_folder, html_owned, json_mark, read_index

INDEX, LISTING = "index.html", "gallery.json"
WRITTEN_BY = "hrseg visualize"


@dataclass(frozen=True)
class Metric:
    """A per-image number: its key in :attr:`GalleryItem.numbers`, a label, and which way is better."""

    key: str
    label: str
    higher_is_better: bool | None = None  # None: neither (e.g. a mean weight)


@dataclass(frozen=True)
class GalleryItem:
    """One panel: the image's name, the PNG (relative to the index) and its numbers (None: not defined)."""

    name: str
    image: str
    numbers: dict[str, float | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "panel": self.image, "numbers": {k: _finite(v) for k, v in self.numbers.items()}}


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _num_text(v: float | None) -> str:
    v = _finite(v)
    return "—" if v is None else f"{v:.3f}"


_STYLE = """
:root{color-scheme:dark}
body{font-family:system-ui,sans-serif;background:#181818;color:#e8e8e8;margin:0;padding:1em 1.5em}
h1{font-size:1.3em;margin:.2em 0 .6em}
table.summary{border-collapse:collapse;margin-bottom:1em}
table.summary td,table.summary th{border:1px solid #444;padding:.2em .6em;text-align:left}
#controls{position:sticky;top:0;background:#181818;padding:.5em 0;z-index:1;display:flex;flex-wrap:wrap;gap:.8em;
 align-items:center;border-bottom:1px solid #333}
#controls label{white-space:nowrap}
select,input,button{background:#262626;color:#e8e8e8;border:1px solid #555;border-radius:3px;padding:.15em .3em}
#count{color:#aaa}
figure{margin:1em 0 2em 0;padding:.4em;border:2px solid transparent;border-radius:4px}
figure.current{border-color:#4a9eff}
figcaption{display:flex;flex-wrap:wrap;gap:.4em 1.2em;align-items:baseline;margin:0 0 .4em 0}
figcaption .name{font-weight:600}
figcaption .num{color:#bbb;font-variant-numeric:tabular-nums}
figcaption .num b{color:#e8e8e8;font-weight:600}
figure img{width:100%;height:auto;display:block}
.help{color:#888;font-size:.9em}
"""

_SCRIPT = """
(function(){
  const figs=Array.from(document.querySelectorAll('figure.item'));
  const box=document.getElementById('items');
  const sortSel=document.getElementById('sort');
  const nameIn=document.getElementById('name-filter');
  const keySel=document.getElementById('filter-key');
  const opSel=document.getElementById('filter-op');
  const valIn=document.getElementById('filter-value');
  const count=document.getElementById('count');
  let current=-1;
  function num(f,k){const v=f.dataset[k];return v===undefined||v===''?NaN:parseFloat(v);}
  function visible(){return figs.filter(f=>!f.hidden).sort((a,b)=>a.compareDocumentPosition(b)&4?-1:1);}
  function apply(){
    const [key,dir]=sortSel.value.split(':');
    const sign=dir==='desc'?-1:1;
    const order=figs.slice().sort((a,b)=>{
      if(key==='name'){return sign*a.dataset.name.localeCompare(b.dataset.name);}
      const x=num(a,key),y=num(b,key);
      if(isNaN(x)&&isNaN(y))return a.dataset.name.localeCompare(b.dataset.name);
      if(isNaN(x))return 1; if(isNaN(y))return -1;
      return sign*(x-y)||a.dataset.name.localeCompare(b.dataset.name);
    });
    order.forEach(f=>box.appendChild(f));
    const text=nameIn.value.trim().toLowerCase();
    const fk=keySel.value,limit=parseFloat(valIn.value);
    figs.forEach(f=>{
      let show=!text||f.dataset.name.toLowerCase().includes(text);
      if(show&&fk&&!isNaN(limit)){const v=num(f,fk);show=!isNaN(v)&&(opSel.value==='ge'?v>=limit:v<=limit);}
      f.hidden=!show;
    });
    const vis=visible();
    count.textContent=vis.length+' of '+figs.length+' shown';
    if(current>=0&&figs[current].hidden){setCurrent(-1);}
  }
  function setCurrent(i){
    figs.forEach(f=>f.classList.remove('current'));
    current=i;
    if(i>=0){figs[i].classList.add('current');figs[i].scrollIntoView({block:'start'});}
  }
  function step(d){
    const vis=visible(); if(!vis.length)return;
    let pos=current<0?-1:vis.indexOf(figs[current]);
    pos=pos<0?(d>0?0:vis.length-1):Math.min(vis.length-1,Math.max(0,pos+d));
    setCurrent(figs.indexOf(vis[pos]));
  }
  [sortSel,keySel,opSel].forEach(e=>e.addEventListener('change',apply));
  [nameIn,valIn].forEach(e=>e.addEventListener('input',apply));
  document.addEventListener('keydown',e=>{
    if(['INPUT','SELECT','TEXTAREA'].includes(e.target.tagName))return;
    if(e.key==='j'||e.key==='ArrowDown'){step(1);e.preventDefault();}
    else if(e.key==='k'||e.key==='ArrowUp'){step(-1);e.preventDefault();}
    else if(e.key==='Home'){setCurrent(-1);step(1);e.preventDefault();}
    else if(e.key==='End'){setCurrent(-1);step(-1);e.preventDefault();}
    else if(e.key==='o'&&current>=0){window.open(figs[current].querySelector('a').href);}
  });
  figs.forEach((f,i)=>f.addEventListener('click',()=>setCurrent(i)));
  apply();
})();
"""


def _data_key(key: str) -> str:
    """A metric key as an HTML data attribute (``data-auc``) and its dataset name in the script."""
    return "".join(ch if ch.isalnum() else "" for ch in key.lower())


def render_index(title: str, items: Sequence[GalleryItem], metrics: Sequence[Metric] = (),
                 summary: dict[str, str] | None = None) -> str:
    """The HTML text; every string from data is escaped."""
    esc = html.escape
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">', HTML_MARK,
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    if summary:
        parts.append('<table class="summary">')
        for key, value in summary.items():
            parts.append(f"<tr><th>{esc(key)}</th><td>{esc(value)}</td></tr>")
        parts.append("</table>")
    options = ['<option value="name:asc">name</option>']
    for m in metrics:
        k = _data_key(m.key)
        first, second = (("desc", "asc") if m.higher_is_better is not False else ("asc", "desc"))
        for d in (first, second):
            arrow = "highest first" if d == "desc" else "lowest first"
            options.append(f'<option value="{k}:{d}">{esc(m.label)}, {arrow}</option>')
    keys = "".join(f'<option value="{_data_key(m.key)}">{esc(m.label)}</option>' for m in metrics)
    parts.append('<div id="controls">')
    parts.append(f'<label>sort <select id="sort">{"".join(options)}</select></label>')
    parts.append('<label>name contains <input id="name-filter" type="search" size="14"></label>')
    parts.append(f'<label>show where <select id="filter-key"><option value="">(any number)</option>{keys}</select></label>'
                 '<select id="filter-op" aria-label="comparison"><option value="ge">&ge;</option>'
                 '<option value="le">&le;</option></select>'
                 '<input id="filter-value" type="number" step="any" size="6" aria-label="limit">')
    parts.append('<span id="count"></span>')
    parts.append('<span class="help">keys: j/k or &darr;/&uarr; next/previous, o opens the panel</span>')
    parts.append("</div>")
    parts.append('<div id="items">')
    for i, item in enumerate(items):
        attrs = [f'data-name="{esc(item.name, quote=True)}"']
        for m in metrics:
            v = _finite(item.numbers.get(m.key))
            attrs.append(f'data-{_data_key(m.key)}="{"" if v is None else repr(v)}"')
        ref = esc(Path(item.image).as_posix(), quote=True)
        nums = "".join(f'<span class="num">{esc(m.label)} <b>{_num_text(item.numbers.get(m.key))}</b></span>'
                       for m in metrics)
        parts.append(f'<figure class="item" id="item-{i}" tabindex="-1" {" ".join(attrs)}>')
        parts.append(f'<figcaption><span class="name">{esc(item.name)}</span>{nums}</figcaption>')
        parts.append(f'<a href="{ref}"><img src="{ref}" alt="panel of {esc(item.name, quote=True)}"></a>')
        parts.append("</figure>")
    parts.append("</div>")
    parts.append(f"<script>{_SCRIPT}</script>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_gallery(folder: str | os.PathLike[str], title: str, items: Sequence[GalleryItem],
                  metrics: Sequence[Metric] = (), summary: dict[str, str] | None = None) -> Path:
    """``index.html`` and ``gallery.json`` in ``folder`` (each written whole); returns the index's path."""
    out = Path(folder)
    index = out / INDEX
    with atomic_path(index) as tmp:
        tmp.write_text(render_index(title, items, metrics, summary), encoding="utf-8")
    write_json(out / LISTING, listing(title, items, metrics, summary))
    return index


def listing(title: str, items: Sequence[GalleryItem], metrics: Sequence[Metric] = (),
            summary: dict[str, str] | None = None) -> dict[str, Any]:
    """``gallery.json``'s content: the index, every panel, and each panel's numbers."""
    return {
        **json_mark(WRITTEN_BY),
        "title": title,
        "index": INDEX,
        "summary": dict(summary or {}),
        "metrics": [{"key": m.key, "label": m.label, "higher_is_better": m.higher_is_better} for m in metrics],
        "panels": [it.image for it in items],
        "items": [it.to_dict() for it in items],
    }


def read_listing(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A gallery's ``gallery.json`` (for the report page, which links galleries and shows their size)."""
    return json.loads((Path(folder) / LISTING).read_text(encoding="utf-8"))


def _listing_is_ours(path: Path) -> bool:
    """gallery.json written by hrseg (marked; or, from before the mark, shaped like one)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return False
    return isinstance(obj, dict) and (obj.get("written_by") == WRITTEN_BY or
                                      (obj.get("index") == INDEX and isinstance(obj.get("panels"), list)))


def check_gallery_folder(folder: str | os.PathLike[str], panels: Sequence[str], overwrite: bool = False) -> None:
    """Refuse to draw into ``folder`` over files hrseg did not write there (``overwrite``: replace them).

    Its own files are the index, the listing and the panels an earlier ``gallery.json`` lists.
    """
    out = Path(folder)
    listing_path = out / LISTING
    earlier = read_index(listing_path, _listing_is_ours)
    own = [str(p) for p in (earlier or {}).get("panels", []) if isinstance(p, str)]
    if earlier is not None:
        own.append(LISTING)
    if html_owned(out / INDEX):
        own.append(INDEX)
    check_folder(out, own, [*panels, INDEX, LISTING], overwrite)
