"""`hrseg train`: parse options into a TrainConfig, call train(), print the result."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from hrseg.cli.common import emit_json, parse_size, user_errors
from hrseg.console import console
from hrseg.errors import HrsegError
from hrseg.training.config import PRESETS, PUBLIC_SCHEMES, TrainConfig, default_gan, override


def build_config(preset: str | None, scheme: str | None, flags: dict[str, Any], gan: bool | None) -> TrainConfig:
    """Preset (or defaults), then every explicitly given flag on top."""
    if preset is not None:
        if preset not in PRESETS:
            raise HrsegError(f"--preset: unknown preset {preset!r} (see hrseg train --list-presets)")
        cfg = PRESETS[preset].config()
    elif scheme is None:
        raise HrsegError("--scheme or --preset is required (see hrseg train --help)")
    else:
        cfg = TrainConfig()
    changes = {k: v for k, v in flags.items() if v is not None}
    if scheme is not None:
        changes["scheme"] = scheme
    if gan is not None:
        changes["gan.enabled"] = gan
    elif preset is None:
        changes["gan.enabled"] = default_gan(scheme or cfg.scheme)
    return override(cfg, changes).validate()


def presets_table() -> Table:
    table = Table(title="training presets (paper Table 1 + baselines)")
    for col in ("preset", "scheme", "network", "GAN", "W input", "paper mIoU"):
        table.add_column(col, no_wrap=True)
    for p in PRESETS.values():
        cfg = p.config()
        table.add_row(
            p.name, cfg.scheme, cfg.model.arch, "yes" if cfg.gan.enabled else "no",
            cfg.weighting.input if cfg.scheme in ("w1", "w19") else "-",
            f"{p.paper_miou:.1f}" if p.paper_miou is not None else "-",
        )
    return table


def result_table(result: dict[str, Any]) -> Table:
    table = Table(title=f"training {result['status']}: {result['run_dir']}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("iterations", f"{result['iteration']} / {result['iters']}")
    table.add_row("time (s)", f"{result['seconds']:.1f}")
    table.add_row("iterations/s", f"{result['iters_per_s']:.2f}")
    table.add_row("images/s", f"{result['images_per_s']:.1f}")
    table.add_row("target images", str(result["target_images"]))
    table.add_row("source images", str(result["source_images"]))
    for key, value in result["last"].items():
        if key not in ("images_per_s",):
            table.add_row(f"last {key}", f"{value:.4g}")
    table.add_row("checkpoint", result["checkpoint"])
    return table


def register(app: typer.Typer) -> None:
    """Add `hrseg train` to the root application."""

    @app.command("train")
    def train_cmd(
        scheme: Optional[str] = typer.Option(None, "--scheme", help=f"One of {', '.join(PUBLIC_SCHEMES)}."),
        data: Optional[Path] = typer.Option(None, "--data", help="Prepared data directory (hrseg prepare --out)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Run directory to create."),
        preset: Optional[str] = typer.Option(None, "--preset", help="A row of Table 1; flags override it."),
        list_presets: bool = typer.Option(False, "--list-presets", help="Show the presets and exit."),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory exactly."),
        arch: Optional[str] = typer.Option(None, "--arch", help="fcn8s-vgg16 or pspnet-r50."),
        width: Optional[float] = typer.Option(None, "--width", help="Channel width multiplier of S."),
        pretrained: Optional[str] = typer.Option(None, "--pretrained", help="none, imagenet or a weight file."),
        gan: Optional[bool] = typer.Option(None, "--gan/--no-gan", help="G and D (default: on for w1/w19)."),
        weight_input: Optional[str] = typer.Option(None, "--weight-input", help="pred (softmax of S) or image."),
        weight_combine: Optional[str] = typer.Option(None, "--weight-combine", help="product, mean or ratio."),
        weight_normalize: Optional[str] = typer.Option(None, "--weight-normalize", help="none, batch or running."),
        weight_clamp: Optional[float] = typer.Option(None, "--weight-clamp", help="Largest weight; 0 = no clamp."),
        weight_sharpen: Optional[float] = typer.Option(
            None, "--weight-sharpen", help="Exponent on the combined weight (1 = as is)."),
        weight_width: Optional[float] = typer.Option(None, "--weight-width", help="Width multiplier of W."),
        gan_width: Optional[float] = typer.Option(None, "--gan-width", help="Width multiplier of G and D."),
        source: Optional[str] = typer.Option(None, "--source", help="Source dataset name (gtav, synthia)."),
        target: Optional[str] = typer.Option(None, "--target", help="Target dataset name (cityscapes)."),
        target_images: Optional[int] = typer.Option(None, "--target-images", help="Use N seeded target images."),
        target_fraction: Optional[float] = typer.Option(None, "--target-fraction", help="Use this share of them."),
        iters: Optional[int] = typer.Option(None, "--iters", help="Training iterations."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per domain and process."),
        crop: Optional[str] = typer.Option(None, "--crop", help="Training crop WIDTHxHEIGHT."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate of S (poly schedule)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Fixes every random source."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
        amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision on CUDA."),
        compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile S."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Data loader worker processes."),
        threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (0 = default)."),
        checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Checkpoint period."),
        finetune_source_iters: Optional[int] = typer.Option(
            None, "--finetune-source-iters", help="finetune: source iterations first (0 = half)."),
        select_road_share: Optional[float] = typer.Option(
            None, "--select-road-share", help="image-select: minimum share of road pixels."),
        select_nonroad_keep: Optional[float] = typer.Option(
            None, "--select-nonroad-keep", help="image-select: share of non-road pixels kept (1 keeps all)."),
        no_progress: bool = typer.Option(False, "--no-progress", help="No live progress display."),
        json_out: bool = typer.Option(False, "--json", help="Also print the summary as JSON on stdout."),
    ) -> None:
        """Train a segmentation network with any scheme of the paper (target-only ... w19)."""
        from hrseg.training.trainer import resume_config, train

        with user_errors():
            if list_presets:
                console.print(presets_table())
                emit_json({n: {"description": p.description, "paper_miou": p.paper_miou, "config": p.config().to_dict()}
                           for n, p in PRESETS.items()}, None, stdout=json_out)
                return
            flags: dict[str, Any] = {
                "data.data": str(data) if data is not None else None,
                "run.out": str(out) if out is not None else None,
                "model.arch": arch, "model.width": width, "model.pretrained": pretrained,
                "weighting.input": weight_input, "weighting.combine": weight_combine,
                "weighting.normalize": weight_normalize, "weighting.width": weight_width,
                "weighting.sharpen": weight_sharpen, "gan.width": gan_width,
                "data.source": source, "data.target": target,
                "data.target_images": target_images, "data.target_fraction": target_fraction,
                "optim.iters": iters, "data.batch_size": batch_size,
                "data.crop": parse_size(crop, "--crop", "512x256") if crop else None,
                "optim.lr": lr, "run.seed": seed, "run.amp": amp, "run.compile": compile_,
                "data.workers": workers, "run.threads": threads, "run.checkpoint_every": checkpoint_every,
                "finetune.source_iters": finetune_source_iters,
                "image_select.road_share": select_road_share, "image_select.nonroad_keep": select_nonroad_keep,
            }
            if resume is not None:
                given = sorted(k for k, v in flags.items() if v is not None)
                if given or scheme or preset or gan is not None or weight_clamp is not None:
                    raise HrsegError(
                        "--resume continues a run with its own config; only --device, --no-progress and --json "
                        f"may be given with it (got {', '.join(given) or 'scheme/preset/gan/clamp options'})"
                    )
                cfg = resume_config(resume)
                changes: dict[str, Any] = {"run.progress": not no_progress}
                if device is not None:
                    changes["run.device"] = device
                cfg = override(cfg, changes)
            else:
                flags["run.device"] = device
                cfg = build_config(preset, scheme, flags, gan)
                if weight_clamp is not None:  # 0 means "no clamp", which a None-means-unset flag cannot say
                    cfg = override(cfg, {"weighting.clamp": weight_clamp if weight_clamp > 0 else None}).validate()
                cfg.run.progress = not no_progress
                if out is None:
                    raise HrsegError("--out: a run directory is required")
                if (out / "checkpoints").exists():
                    raise HrsegError(f"{out}: already holds a run; use --resume {out} or another --out")
            result = train(cfg, resume=resume is not None).to_dict()
            if int(os.environ.get("RANK", "0")) == 0:
                console.print(result_table(result))
                emit_json(result, None, stdout=json_out)
            if result["status"] == "interrupted":
                console.print(f"[yellow]interrupted at iteration {result['iteration']}; continue with "
                              f"hrseg train --resume {result['run_dir']}[/]")
                raise typer.Exit(code=130)
