"""Compare runs in one table like the paper's Table 1 (docs/method.md).

Runs whose configurations differ only in how they ran (seed, output folder,
device, logging) are one configuration: their mIoU is reported as mean ± std
with the number of runs. The delta column compares each configuration with
the target-only configuration of the same backbone and target-image budget,
which is the question the paper asks: did the synthetic data help?

Where an oracle row (perfect selection from the realism mask) and a direct
joint row share a backbone and budget, every row also gets the share of the
oracle's gain it captures, (mIoU - joint) / (oracle - joint): how much of
what selection could gain the method gets.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hrseg.atomic import atomic_path, write_json
from hrseg.ownership import check_replace, json_mark, json_owned, text_owned
from hrseg.errors import HrsegError
from hrseg.models import LEVELS, OPTIONAL_LEVELS, SEGMENTERS
from hrseg.models.weighting import INPUTS, WeightingConfig
from hrseg.training.resume import flatten
from hrseg.training.rundir import RunDir
from hrseg.training.schemes import SCHEMES

# fields that change how a run executed, not what it learned
_RUN_ONLY = ("run", "preset")
ALL_LEVELS: tuple[str, ...] = (*LEVELS, *OPTIONAL_LEVELS)
#: column heads of narrow tables
LEVEL_SHORT = {"pixel": "pix", "region": "reg", "image": "img", "agreement": "agr"}


@dataclass
class RunResult:
    """One run directory as the report sees it."""

    path: str
    config: dict[str, Any]
    miou: float
    seed: int
    auc: float | None = None  # weighting quality, when eval/source.json exists
    weight_realistic: float | None = None
    weight_deviating: float | None = None
    level_auc: dict[str, float] = field(default_factory=dict)  # per level (pixel, region, image)
    checkpoint: str = "?"  # the checkpoint the evaluation scored (final.pt, best.pt, iter_XXXXXX.pt, ...)
    iou: dict[str, float | None] = field(default_factory=dict)  # per class, as the evaluation wrote it
    stale: str | None = None  # why the evaluation may not be the run's result (older than its final checkpoint)

    @property
    def scheme(self) -> str:
        return str(self.config.get("scheme", "?"))

    @property
    def arch(self) -> str:
        return str(self.config.get("model", {}).get("arch", "?"))

    @property
    def target_images(self) -> str:
        data = self.config.get("data", {})
        if data.get("target_images") is not None:
            return str(data["target_images"])
        if data.get("target_fraction") is not None:
            return f"{100 * float(data['target_fraction']):g}%"
        return "all"

    def key(self) -> str:
        """Identity of the configuration: the config without its run-only sections."""
        return json.dumps({k: v for k, v in self.config.items() if k not in _RUN_ONLY}, sort_keys=True)


@dataclass
class ReportRow:
    """One configuration: its runs and their statistics."""

    configuration: str
    backbone: str
    target_images: str
    runs: list[RunResult] = field(default_factory=list)
    delta: float | None = None
    captured: float | None = None  # share of the oracle's gain over joint training

    @property
    def mious(self) -> list[float]:
        return [r.miou for r in self.runs]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.mious)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.mious) if len(self.runs) > 1 else None

    def _mean_of(self, attr: str) -> float | None:
        vals = [getattr(r, attr) for r in self.runs if getattr(r, attr) is not None]
        return statistics.fmean(vals) if vals else None

    @property
    def auc(self) -> float | None:
        return self._mean_of("auc")

    @property
    def checkpoint(self) -> str:
        """The checkpoint(s) the row's evaluations scored, e.g. ``final.pt`` or ``best.pt``."""
        return ", ".join(sorted({r.checkpoint for r in self.runs}))

    def weight_means(self) -> tuple[float | None, float | None]:
        return self._mean_of("weight_realistic"), self._mean_of("weight_deviating")

    def level_aucs(self) -> dict[str, float]:
        """Mean AUC per weighting level over the runs that report it (image level included)."""
        levels = [lvl for lvl in ALL_LEVELS if any(lvl in r.level_auc for r in self.runs)]
        return {lvl: statistics.fmean(r.level_auc[lvl] for r in self.runs if lvl in r.level_auc) for lvl in levels}

    def level_auc_text(self, levels: tuple[str, ...] = LEVELS) -> str:
        aucs = self.level_aucs()
        return " / ".join(f"{aucs[lvl]:.2f}" if lvl in aucs else "—" for lvl in levels) if aucs else "—"

    def miou_text(self) -> str:
        text = f"{100 * self.mean:.1f}"
        if self.std is not None:
            text += f" ± {100 * self.std:.1f}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "configuration": self.configuration,
            "backbone": self.backbone,
            "target_images": self.target_images,
            "num_runs": len(self.runs),
            "seeds": [r.seed for r in self.runs],
            "miou_mean": self.mean,
            "miou_std": self.std,
            "mious": self.mious,
            "delta_to_target_only": self.delta,
            "captured_oracle_gain": self.captured,
            "weighting_auc": self.auc,
            "weighting_auc_levels": self.level_aucs(),
            "weight_realistic": self._mean_of("weight_realistic"),
            "weight_deviating": self._mean_of("weight_deviating"),
            "runs": [r.path for r in self.runs],
            "checkpoints": [r.checkpoint for r in self.runs],
            "stale": {r.path: r.stale for r in self.runs if r.stale},
        }


@dataclass
class Report:
    rows: list[ReportRow]
    split: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (run, why) of runs left out

    def to_dict(self) -> dict[str, Any]:
        return {"split": self.split, "metric": "mIoU (fraction; the tables show percent)",
                "rows": [r.to_dict() for r in self.rows],
                "skipped": [{"run": run, "reason": why} for run, why in self.skipped]}

    @property
    def has_oracle(self) -> bool:
        return any(r.captured is not None for r in self.rows)

    @property
    def has_level_auc(self) -> bool:
        return any(r.level_aucs() for r in self.rows)

    @property
    def levels(self) -> tuple[str, ...]:
        """The paper's three levels, plus an optional one (agreement) where a row has it."""
        return (*LEVELS, *(lvl for lvl in OPTIONAL_LEVELS if any(lvl in r.level_aucs() for r in self.rows)))

    def markdown(self) -> str:
        has_auc = any(r.auc is not None for r in self.rows)
        checkpoints = {r.checkpoint for r in self.rows}
        per_row = len(checkpoints) > 1  # one shared checkpoint is said under the table instead of a column
        head = ["configuration", "backbone", "target images", "runs", *(["checkpoint"] * per_row),
                f"mIoU {self.split} (%)", "Δ vs target only"]
        if self.has_oracle:
            head.append("share of oracle gain")
        if has_auc:
            head += ["weighting AUC", "mean weight realistic / deviating"]
        levels = self.levels
        if self.has_level_auc:
            head.append("AUC " + " / ".join(levels))
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in self.rows:
            cells = [r.configuration, r.backbone, r.target_images, str(len(r.runs)), *([r.checkpoint] * per_row),
                     r.miou_text(), _delta_text(r.delta)]
            if self.has_oracle:
                cells.append(captured_text(r.captured))
            if has_auc:
                cells.append(f"{r.auc:.3f}" if r.auc is not None else "—")
                real, dev = r.weight_means()
                cells.append(f"{real:.2f} / {dev:.2f}" if real is not None and dev is not None else "—")
            if self.has_level_auc:
                cells.append(r.level_auc_text(levels))
            lines.append("| " + " | ".join(cells) + " |")
        if not per_row and checkpoints != {"?"}:
            lines += ["", f"Every row scored checkpoints/{checkpoints.pop()}."]
        lines += [f"\nNot the run's result: {r.path}: {r.stale}" for row in self.rows for r in row.runs if r.stale]
        return "\n".join(lines) + "\n"


def captured_text(captured: float | None) -> str:
    return "—" if captured is None else f"{100 * captured:.0f} %"


def _delta_text(delta: float | None) -> str:
    return "—" if delta is None else f"{100 * delta:+.1f}"


class MissingEvaluation(HrsegError):
    """A run without the requested evaluation (yet): skipped by a report unless it is strict."""


def _stale(run: RunDir, ev: dict[str, Any], split: str) -> str | None:
    """Why an evaluation of last.pt / final.pt is not the run's result, or None (best.pt, snapshots: a choice)."""
    name = Path(str(ev.get("checkpoint") or "")).name
    if name not in ("last.pt", "final.pt"):
        return None
    try:
        summary = json.loads(run.summary_path.read_text())
    except (OSError, ValueError):
        summary = {}
    done = summary.get("iteration") if summary.get("status") == "finished" else None
    scored = ev.get("iteration")
    again = f"evaluate it again (hrseg eval {run} --split {split})"
    if done is None:
        if run.checkpoint_path("last.pt").is_file() and not run.checkpoint_path("final.pt").is_file():
            return f"scored iteration {scored if scored is not None else '?'} of a run that has not finished; {again}"
        return None
    if not isinstance(scored, int):
        return None if name == "final.pt" else f"scored last.pt at an unrecorded iteration (the run finished at " \
                                                  f"{done}); {again}"
    if scored < int(done):
        return f"scored iteration {scored}, the run finished at {done}; {again}"
    return None


def load_run(run_dir: str | Path, split: str = "val") -> RunResult:
    """Read a run's config and its saved full evaluation; a run not evaluated yet is a user error.

    Only the full evaluation counts: one of the first N images (``--max-images``)
    has another file name and never enters a report.
    """
    run = RunDir(run_dir)
    config = run.config().to_dict()
    ev = run.eval_results(split)
    if ev is None:
        raise MissingEvaluation(f"{run.eval_path(split)}: missing; evaluate the run first "
                                f"(hrseg eval {run} --split {split})")
    miou = ev.get("miou")
    if not isinstance(miou, (int, float)) or math.isnan(float(miou)):
        raise HrsegError(f"{run.eval_path(split)}: no mIoU in this file")
    result = RunResult(path=str(run), config=config, miou=float(miou), seed=int(config["run"]["seed"]),
                       checkpoint=Path(str(ev.get("checkpoint") or "?")).name, iou=dict(ev.get("iou") or {}),
                       stale=_stale(run, ev, split))
    src = run.eval_results("source")
    if src is not None:
        result.auc = src.get("auc")
        result.weight_realistic = src.get("mean_weight_realistic")
        result.weight_deviating = src.get("mean_weight_deviating")
        levels = src.get("levels") or {}
        result.level_auc = {k: float(v["auc"]) for k, v in levels.items()
                            if isinstance(v, dict) and isinstance(v.get("auc"), (int, float))}
    return result


def _title(result: RunResult) -> str:
    scheme = SCHEMES[result.scheme] if result.scheme in SCHEMES else None
    title = scheme.title if scheme is not None else result.scheme
    if result.config.get("gan", {}).get("enabled"):
        title += " + GAN"
    w_input = result.config.get("weighting", {}).get("input")
    if scheme is not None and scheme.weighting is not None and w_input != WeightingConfig.input:
        title += f" ({INPUTS[str(w_input)].title if w_input in INPUTS else w_input} input)"
    return title


def _disambiguate(rows: list[ReportRow]) -> None:
    """Rows that would read the same get the settings that tell them apart appended."""
    by_title: dict[tuple[str, str, str], list[ReportRow]] = {}
    for row in rows:  # backbone and target images have their own columns
        by_title.setdefault((row.configuration, row.backbone, row.target_images), []).append(row)
    for same in by_title.values():
        if len(same) < 2:
            continue
        flats = [flatten({k: v for k, v in r.runs[0].config.items() if k not in _RUN_ONLY}) for r in same]
        differing = sorted(k for k in flats[0] if len({json.dumps(f.get(k)) for f in flats}) > 1)
        for row, flat in zip(same, flats):
            shown = ", ".join(f"{k.split('.')[-1]}={flat.get(k)}" for k in differing[:3])
            row.configuration += f" ({shown})"


def _order(row: ReportRow) -> tuple[str, float, int, bool]:
    """Backbone, then target-image budget (ascending, "all" last), then schemes in Table-1 order."""
    first = row.runs[0]
    data = first.config.get("data", {})
    if data.get("target_images") is not None:
        budget = float(data["target_images"])
    elif data.get("target_fraction") is not None:
        budget = 1e9 * float(data["target_fraction"])
    else:
        budget = math.inf
    schemes = SCHEMES.names()
    rank = schemes.index(first.scheme) if first.scheme in schemes else len(schemes)
    return row.backbone, budget, rank, bool(first.config.get("gan", {}).get("enabled"))


def build_report(run_dirs: Sequence[str | Path], split: str = "val", strict: bool = False) -> Report:
    """Group runs by configuration, sorted like Table 1, with target-only deltas.

    A run without the requested evaluation (still training, not evaluated yet)
    is left out and listed in ``Report.skipped``, so ``hrseg report runs/*``
    works while some runs are unfinished; ``strict`` refuses it instead. A
    report with no evaluated run at all is refused either way.
    """
    if not run_dirs:
        raise HrsegError("report: give at least one run directory")
    groups: dict[str, ReportRow] = {}
    skipped: list[tuple[str, str]] = []
    for run_dir in run_dirs:
        try:
            result = load_run(run_dir, split)
        except MissingEvaluation as exc:
            if strict:
                raise
            skipped.append((str(run_dir), str(exc)))
            continue
        key = result.key()
        if key not in groups:
            title = SEGMENTERS[result.arch].title if result.arch in SEGMENTERS else result.arch
            groups[key] = ReportRow(configuration=_title(result), backbone=title,
                                    target_images=result.target_images)
        groups[key].runs.append(result)
    if not groups:
        raise HrsegError(f"report: none of the {len(run_dirs)} run(s) has an evaluation of {split!r} "
                         f"(first: {skipped[0][1]})")
    rows = sorted(groups.values(), key=_order)
    _disambiguate(rows)
    for row in rows:
        base = [r for r in rows if _role(r) == "baseline" and r.backbone == row.backbone
                and r.target_images == row.target_images]
        if len(base) == 1:
            row.delta = row.mean - base[0].mean
    _capture_ratios(rows)
    return Report(rows=rows, split=split, skipped=skipped)


def _role(row: ReportRow) -> str:
    """The scheme table's role for a row's runs ("method" for a scheme this version does not know)."""
    scheme = row.runs[0].scheme
    return SCHEMES[scheme].role if scheme in SCHEMES else "method"


def _capture_ratios(rows: list[ReportRow]) -> None:
    """(mIoU - reference) / (upper bound - reference) per row, where one row of each (the reference without the
    GAN) shares its backbone and budget: with today's table, (mIoU - joint) / (oracle - joint)."""
    for row in rows:
        same = [r for r in rows if r.backbone == row.backbone and r.target_images == row.target_images]
        joint = [r for r in same if _role(r) == "reference" and not r.runs[0].config.get("gan", {}).get("enabled")]
        oracle = [r for r in same if _role(r) == "upper bound"]
        if len(joint) == 1 and len(oracle) == 1 and oracle[0].mean != joint[0].mean:
            row.captured = (row.mean - joint[0].mean) / (oracle[0].mean - joint[0].mean)


REPORT_MARK = "<!-- written by hrseg report -->"


def write_report(report: Report, out_dir: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """``report.md`` and ``report.json`` in ``out_dir``, each written atomically.

    A ``report.md`` or ``report.json`` there that hrseg did not write is replaced only with ``overwrite``.
    """
    out = Path(out_dir)
    md_path, json_path = out / "report.md", out / "report.json"
    check_replace(md_path, text_owned(REPORT_MARK), overwrite, "a report", "--out")
    check_replace(json_path, json_owned("hrseg report"), overwrite, "a report", "--out")
    with atomic_path(md_path) as tmp:
        tmp.write_text(REPORT_MARK + "\n" + report.markdown(), encoding="utf-8")
    write_json(json_path, {**json_mark("hrseg report"), **report.to_dict()})
    return md_path, json_path
