"""``report.html``: the comparison table with its plots, for looking rather than reading.

Fed by :mod:`hrseg.reporting`'s Report (the rows, their runs and per-class
IoU; read through small protocols, since reporting sits above this layer) and by
each run's ``metrics.jsonl`` (the training curves). The page is one file: the
plots are PNGs embedded as data URIs, the style is inline, nothing is fetched,
so it can be mailed or archived as is. Galleries (``hrseg visualize``) are
linked, relative to the page.

The plots are drawn with matplotlib, an optional extra (``pip install
"hrseg[plots]"``): hrseg itself needs no plotting stack, only this page does.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from hrseg.atomic import atomic_path
from hrseg.ownership import HTML_MARK
from hrseg.data.labels import CLASS_NAMES
from hrseg.errors import HrsegError
from hrseg.training.rundir import RunDir
from hrseg.visualization.gallery import read_listing

MISSING = 'the HTML report draws its plots with matplotlib: pip install "hrseg[plots]" (or matplotlib)'
LOSSES = {"target": "target loss", "source": "source loss (weighted)", "w_cls": "weighting networks' loss",
          "g": "generator (adversarial) loss", "d": "discriminator loss"}
DPI = 100


class RunLike(Protocol):
    """What the page reads of a run (``hrseg.reporting.RunResult``, which sits above this layer)."""

    @property
    def path(self) -> str: ...
    @property
    def seed(self) -> int: ...
    @property
    def iou(self) -> dict[str, float | None]: ...


class RowLike(Protocol):
    """A configuration (``hrseg.reporting.RowLike``)."""

    @property
    def configuration(self) -> str: ...
    @property
    def runs(self) -> Sequence[RunLike]: ...


class ReportLike(Protocol):
    """The comparison (``hrseg.reporting.Report``): its rows, split and Markdown table."""

    @property
    def rows(self) -> Sequence[RowLike]: ...
    @property
    def split(self) -> str: ...
    def markdown(self) -> str: ...


@dataclass(frozen=True)
class GalleryLink:
    """A gallery folder to link from the page, under a caption (e.g. "weight maps, Ours with W^19, seed 0")."""

    caption: str
    folder: Path


def gallery_links(folders: Sequence[str | os.PathLike[str]]) -> list[GalleryLink]:
    """Links to gallery folders (``hrseg visualize`` outputs), captioned with their titles; a folder
    without gallery.json is a user error."""
    links = []
    for folder in folders:
        f = Path(folder)
        try:
            title = str(read_listing(f).get("title") or f.name)
        except (OSError, ValueError) as e:
            raise HrsegError(f"{f / 'gallery.json'}: not a gallery (write one with hrseg visualize): "
                             f"{getattr(e, 'strerror', None) or e}") from None
        links.append(GalleryLink(title, f))
    return links


def plots_available() -> bool:
    """Whether matplotlib (the optional ``plots`` extra) can be imported."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError:
        raise HrsegError(MISSING) from None
    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor=fig.get_facecolor())
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _colours(rows: Sequence[RowLike]) -> dict[str, Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10")
    return {r.configuration: cmap(i % 10) for i, r in enumerate(rows)}


def class_iou_figure(rows: Sequence[RowLike]) -> str | None:
    """Grouped bars: per class, one bar per configuration (mean over its runs, whisker = std)."""
    plt = _pyplot()
    classes = [c for c in CLASS_NAMES if any(run.iou.get(c) is not None for r in rows for run in r.runs)]
    if not classes:
        return None
    colours = _colours(rows)
    x = np.arange(len(classes))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(12, 4.2), layout="constrained")
    for i, row in enumerate(rows):
        means, stds = [], []
        for c in classes:
            vals = [100 * v for v in (run.iou.get(c) for run in row.runs) if v is not None]
            means.append(statistics.fmean(vals) if vals else math.nan)
            stds.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        ax.bar(x - 0.4 + (i + 0.5) * width, means, width, yerr=stds, label=row.configuration,
               color=colours[row.configuration], error_kw={"elinewidth": 0.8, "capsize": 0})
    ax.set_xticks(x, classes, rotation=35, ha="right")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title("per-class IoU, mean over runs (whisker: std)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", ncols=min(len(rows), 4), loc="upper right")
    src = _png(fig)
    plt.close(fig)
    return src


def _records(run: str) -> list[dict[str, Any]]:
    try:
        return list(RunDir(run).metrics())
    except (HrsegError, OSError, ValueError):
        return []


def _series(records: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["iter"], r[key]) for r in records
           if isinstance(r.get(key), (int, float)) and isinstance(r.get("iter"), (int, float))]
    if not pts:
        return np.zeros(0), np.zeros(0)
    a = np.asarray(pts, dtype=np.float64)
    return a[:, 0], a[:, 1]


def _smooth(y: np.ndarray) -> np.ndarray:
    """A centred moving average over ~1/25 of the curve: the losses of single steps are noise."""
    k = max(1, len(y) // 25)
    if k < 2:
        return y
    pad = np.pad(y, (k // 2, k - 1 - k // 2), mode="edge")
    return np.convolve(pad, np.ones(k) / k, mode="valid")


def _mean_curve(runs: list[list[dict[str, Any]]], key: str, smooth: bool) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray, np.ndarray] | None:
    """Mean over runs on the iterations all of them logged, with the min..max band."""
    series = [_series(r, key) for r in runs]
    series = [(x, y) for x, y in series if x.size]
    if not series:
        return None
    common = series[0][0]
    for x, _ in series[1:]:
        common = np.intersect1d(common, x)
    if not common.size:
        common, ys = series[0][0], [series[0][1]]
    else:
        ys = [y[np.isin(x, common)] for x, y in series]
    stack = np.stack([_smooth(y) if smooth else y for y in ys])
    return common, stack.mean(0), stack.min(0), stack.max(0)


Logs = dict[str, list[list[dict[str, Any]]]]  # configuration -> its runs' metrics.jsonl records


def curve_panels(rows: Sequence[RowLike]) -> tuple[Logs, Logs, list[tuple[str, list[tuple[str, str, bool]]]]]:
    """The runs' training and validation records, and the panels they fill: (title, [(key, line style, val?)])."""
    logs = {r.configuration: [_records(run.path) for run in r.runs] for r in rows}
    train = {c: [[x for x in recs if x.get("kind", "train") != "val"] for recs in runs] for c, runs in logs.items()}
    val = {c: [[x for x in recs if "val_miou" in x] for recs in runs] for c, runs in logs.items()}

    def logged(source: Logs, key: str) -> bool:
        return any(_series(recs, key)[0].size for runs in source.values() for recs in runs)

    panels: list[tuple[str, list[tuple[str, str, bool]]]] = []
    for key, title in LOSSES.items():
        if logged(train, key):
            panels.append((title, [(key, "-", False)]))
    if logged(train, "weight_realistic"):
        panels.append(("mean weight: realistic (solid) / deviating (dashed) source pixels",
                       [("weight_realistic", "-", False), ("weight_deviating", "--", False)]))
    if logged(val, "val_miou"):
        panels.append(("validation mIoU (%)", [("val_miou", "-o", True)]))
    return train, val, panels


def curves_figure(rows: Sequence[RowLike]) -> str | None:
    """One panel per logged quantity: losses, mean weight on realistic / deviating pixels, val mIoU."""
    plt = _pyplot()
    train, val, panels = curve_panels(rows)
    if not panels:
        return None
    colours = _colours(rows)
    cols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(12, 3.3 * nrows), layout="constrained", squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for row in rows:
            for key, style, is_val in keys:
                curve = _mean_curve((val if is_val else train)[row.configuration], key, smooth=not is_val)
                if curve is None:
                    continue
                x, mean, lo, hi = curve
                scale = 100.0 if key == "val_miou" else 1.0
                label = row.configuration if style != "--" else None
                ax.plot(x, scale * mean, style, color=colours[row.configuration], label=label, lw=1.4, ms=3)
                if len(row.runs) > 1:
                    ax.fill_between(x, scale * lo, scale * hi, color=colours[row.configuration], alpha=0.15, lw=0)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for ax in axes.flat:
        h, lab = ax.get_legend_handles_labels()
        if len(lab) > len(labels):
            handles, labels = h, lab
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 4), fontsize="small")
    fig.suptitle("training curves: mean over runs (band: min..max), losses smoothed", fontsize="medium")
    src = _png(fig)
    plt.close(fig)
    return src


def _table(markdown: str) -> str:
    """The report's Markdown table (one home for its columns) as an HTML table."""
    lines = [ln.strip() for ln in markdown.strip().splitlines() if ln.strip().startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines if not set(ln) <= set("|-: ")]
    if not cells:
        return ""
    head, body = cells[0], cells[1:]
    out = ["<table class='results'><thead><tr>"]
    out += [f"<th>{html.escape(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    for row in body:
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;padding:1.2em 2em;color:#1d1d1d;background:#fff;max-width:1300px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table.results{border-collapse:collapse;font-variant-numeric:tabular-nums}
table.results th,table.results td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
table.results th:first-child,table.results td:first-child{text-align:left}
table.results th{background:#f2f2f2}
img.plot{width:100%;max-width:1200px;height:auto;display:block}
.note{color:#555;font-size:.92em}
ul.galleries li{margin:.2em 0}
"""


def render_report_page(report: ReportLike, galleries: Sequence[GalleryLink] = (), page_dir: Path | None = None,
                       title: str = "hrseg report") -> str:
    """The page's HTML; gallery links are made relative to ``page_dir`` (where the page is written)."""
    esc = html.escape
    runs = sum(len(r.runs) for r in report.rows)
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">', HTML_MARK,
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{esc(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p class='note'>{len(report.rows)} configurations, {runs} runs; mIoU on {esc(report.split)} in %, "
             "mean ± std over runs; Δ: against target only with the same backbone and target images.</p>",
             "<h2>Results</h2>", _table(report.markdown())]
    bars = class_iou_figure(report.rows)
    if bars:
        parts += ["<h2>Per-class IoU</h2>", f'<img class="plot" src="{bars}" alt="per-class IoU per configuration">']
    curves = curves_figure(report.rows)
    parts.append("<h2>Training curves</h2>")
    if curves:
        parts.append(f'<img class="plot" src="{curves}" alt="training curves">')
        parts.append("<p class='note'>From each run's metrics.jsonl. Validation mIoU appears when the runs "
                     "validated while training.</p>")
    else:
        parts.append("<p class='note'>No run has a training log (metrics.jsonl).</p>")
    if galleries:
        parts += ["<h2>Galleries</h2>", "<ul class='galleries'>"]
        for g in galleries:
            index = g.folder / "index.html"
            href = Path(os.path.relpath(index, page_dir)) if page_dir is not None else index
            try:
                count = f" ({len(read_listing(g.folder)['items'])} panels)"
            except (OSError, ValueError, KeyError):
                count = ""
            parts.append(f'<li><a href="{esc(href.as_posix(), quote=True)}">{esc(g.caption)}</a>{esc(count)}</li>')
        parts.append("</ul>")
    parts.append("<h2>Runs</h2><ul class='note'>")
    for row in report.rows:
        listed = ", ".join(f"{Path(r.path).name} (seed {r.seed})" for r in row.runs)
        parts.append(f"<li>{esc(row.configuration)}: {esc(listed)}</li>")
    parts.append("</ul></body></html>")
    return "\n".join(parts) + "\n"


def write_report_page(report: ReportLike, path: str | os.PathLike[str], galleries: Sequence[GalleryLink] = (),
                      title: str = "hrseg report") -> Path:
    """``report.html`` at ``path``, written whole; needs matplotlib (a one-line error without it)."""
    _pyplot()
    out = Path(path)
    text = render_report_page(report, galleries, out.parent.resolve(), title)
    with atomic_path(out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return out
