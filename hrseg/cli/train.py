"""`hrseg train`: parse options, call ``build_config`` + ``train()``, print the result.

Every decision (presets, files, ``--set``, the GAN default, whether the run
folder may be used) belongs to the library; this module only maps flags to
config keys.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from hrseg.cli.common import (CONFIG_FLAGS, emit_json, flag_errors, in_flags, json_option, json_target, parse_size,
                              user_errors)
from hrseg.console import console
from hrseg.errors import HrsegError
from hrseg.models import COMBINATIONS, NORMALIZATIONS, SEGMENTERS, WEIGHTING_NETWORKS
from hrseg.models.batchnorm import BN_MODES
from hrseg.models.weighting import INPUTS
from hrseg.registry import Registry
from hrseg.training.config import OptimConfig, TrainConfig, parse_set
from hrseg.training.presets import PRESETS, build_config
from hrseg.training.preflight import config_sources, config_toml, config_warnings
from hrseg.training.resume import EXTEND_MODES, SettingFixed, continue_config, differences, flatten
from hrseg.training.schemes import PUBLIC_SCHEMES, SCHEMES, unused_settings

SchemeChoice = SCHEMES.choices(PUBLIC_SCHEMES)
ArchChoice = SEGMENTERS.choices()
NetworkChoice = WEIGHTING_NETWORKS.choices()
CombineChoice = COMBINATIONS.choices()
NormalizeChoice = NORMALIZATIONS.choices()
InputChoice = INPUTS.choices()
BnChoice = Registry("batch-norm mode", "--bn").choices(BN_MODES)
PresetChoice = Registry("preset", "--preset").choices(tuple(PRESETS))
ExtendChoice = Registry("extend mode", "--extend").choices(EXTEND_MODES)

def _param(flag: str) -> str:
    """The Python parameter of a flag: --weight-lr -> weight_lr (--compile -> compile_)."""
    name = flag[2:].replace("-", "_")
    return name + "_" if name == "compile" else name


#: parameter -> config key, from the one table CONFIG_FLAGS; the flag's value wins over --config / --preset / --set
#: (--weight-clamp and --progress have their own rule below)
FLAG_KEYS: dict[str, str] = {_param(flag): key for key, flag in CONFIG_FLAGS.items()
                             if key not in ("weighting.clamp", "run.progress")}



def presets_table() -> Table:
    """Each preset with its budget, narrow enough for an 80-column terminal (scheme, GAN and W: --json)."""
    table = Table(title="training presets (paper Table 1 + baselines) and their budgets", box=box.SIMPLE_HEAD,
                  show_edge=False, padding=(0, 1, 0, 0))
    for col in ("preset", "network", "iters", "lr", "crop", "batch", "paper"):
        table.add_column(col, no_wrap=True, justify="right" if col in ("iters", "lr", "batch", "paper") else "left")
    for p in PRESETS.values():
        cfg = p.config().resolved()
        table.add_row(p.name, cfg.model.arch, *budget_cells(cfg),
                      f"{p.paper_miou:.1f}" if p.paper_miou is not None else "-")
    return table


def budget_cells(cfg: TrainConfig) -> tuple[str, str, str, str]:
    """What a run costs: iterations, learning rate of S, crop, batch per domain and process."""
    return (str(cfg.optim.iters), f"{cfg.optim.lr:g}", f"{cfg.data.crop[0]}x{cfg.data.crop[1]}",
            str(cfg.data.batch_size))


_DEFAULT = TrainConfig()
#: the budget of a run without a preset, in --help (from the config's own defaults: one home)
BUDGET_HELP = (f"Without --preset: {_DEFAULT.optim.iters} iterations, --lr {_DEFAULT.optim.lr:g}, --crop "
               f"{_DEFAULT.data.crop[0]}x{_DEFAULT.data.crop[1]}, --batch-size {_DEFAULT.data.batch_size}, "
               f"--pretrained {_DEFAULT.model.pretrained}; each preset's budget: --list-presets.")


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
    if result.get("best"):
        best = result["best"]
        table.add_row("best val mIoU (best.pt)", f"{100 * best['miou']:.2f} % at iteration {best['iteration']}")
    return table


def _flag(name: str) -> str:
    """The option a parameter came from, as the user typed it."""
    return "--" + name.rstrip("_").replace("_", "-")


def _value(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    return value.value if hasattr(value, "value") else value


def register(app: typer.Typer) -> None:
    """Add `hrseg train` to the root application."""

    @app.command("train", help="Train a segmentation network with any scheme of the paper (target-only ... w19)."
                                "\n\n" + BUDGET_HELP + "\n\nThe schemes, presets and what each loss term is: "
                                "docs/method.md; --print-config shows the resolved config before anything runs.")
    def train_cmd(
        scheme: Optional[SchemeChoice] = typer.Option(None, "--scheme", help="Training scheme."),  # type: ignore[valid-type]
        data: Optional[Path] = typer.Option(None, "--data", help="Prepared data directory (hrseg prepare --out)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Run directory to create."),
        preset: Optional[PresetChoice] = typer.Option(None, "--preset", help="A row of Table 1; flags override it."),  # type: ignore[valid-type]
        config: Optional[Path] = typer.Option(
            None, "--config", help="Start from a config file: a run's config.json or a TOML file."),
        set_: Optional[List[str]] = typer.Option(
            None, "--set", help="Override any config field, e.g. --set optim.lr=0.005 (repeatable)."),
        list_presets: bool = typer.Option(False, "--list-presets", help="Show the presets and their budgets, and exit."),
        print_config: bool = typer.Option(
            False, "--print-config", help="Print the resolved config as TOML (loadable by --config), each value with "
                                          "where it came from, and exit without training."),
        resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this directory exactly."),
        resume_from: str = typer.Option(
            "last.pt", "--from", help="With --resume: the checkpoint to continue from (previous.pt after damage)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Start afresh in an --out that holds files."),
        auto_resume: bool = typer.Option(
            False, "--auto-resume", help="For preemptible jobs and torchrun restarts: start the run, or continue "
                                         "it exactly from last.pt when --out holds this same run; refuses a folder "
                                         "holding another config."),
        extend: Optional[ExtendChoice] = typer.Option(  # type: ignore[valid-type]
            None, "--extend", help="With --resume RUN --iters N: train a run on to N iterations; 'stretch' "
                                   "re-plans the poly schedule over N as if planned so from the start, 'restart' "
                                   "starts a new poly cycle from --lr at the old end."),
        arch: Optional[ArchChoice] = typer.Option(None, "--arch", help="Segmentation network."),  # type: ignore[valid-type]
        width: Optional[float] = typer.Option(None, "--width", help="Channel width multiplier of S."),
        pretrained: Optional[str] = typer.Option(None, "--pretrained", help="none, imagenet or a weight file."),
        bn: Optional[BnChoice] = typer.Option(  # type: ignore[valid-type]
            None, "--bn", help="Batch norm: train, frozen (ImageNet statistics kept) or sync (under torchrun)."),
        gan: Optional[bool] = typer.Option(None, "--gan/--no-gan", help="G and D (default: the scheme's)."),
        weight_network: Optional[NetworkChoice] = typer.Option(  # type: ignore[valid-type]
            None, "--weight-network", help="Weighting network design (default: the scheme's)."),
        weight_input: Optional[InputChoice] = typer.Option(  # type: ignore[valid-type]
            None, "--weight-input", help="What W sees: S's softmax (pred) or the image."),
        weight_combine: Optional[CombineChoice] = typer.Option(  # type: ignore[valid-type]
            None, "--weight-combine", help="How the level scores combine into one weight."),
        weight_normalize: Optional[NormalizeChoice] = typer.Option(  # type: ignore[valid-type]
            None, "--weight-normalize", help="How the combined weight is normalised."),
        weight_clamp: Optional[float] = typer.Option(None, "--weight-clamp", help="Largest weight; 0 = no clamp."),
        weight_sharpen: Optional[float] = typer.Option(
            None, "--weight-sharpen", help="Exponent on the combined weight (1 = as is)."),
        weight_width: Optional[float] = typer.Option(None, "--weight-width", help="Width multiplier of W."),
        gan_width: Optional[float] = typer.Option(None, "--gan-width", help="Width multiplier of G and D."),
        source: Optional[str] = typer.Option(None, "--source", help="Source dataset name (gtav, synthia)."),
        target: Optional[str] = typer.Option(None, "--target", help="Target dataset name (cityscapes)."),
        target_images: Optional[int] = typer.Option(None, "--target-images", help="Use N seeded target images."),
        target_fraction: Optional[float] = typer.Option(None, "--target-fraction", help="Use this share of them."),
        iters: Optional[int] = typer.Option(
            None, "--iters", help=f"Training iterations (default {OptimConfig.iters}; presets: --list-presets)."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per domain and process."),
        crop: Optional[str] = typer.Option(None, "--crop", help="Training crop WIDTHxHEIGHT."),
        lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate of S (poly schedule)."),
        seed: Optional[int] = typer.Option(None, "--seed", help="Fixes every random source."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N."),
        amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="Mixed precision on CUDA."),
        compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile S."),
        workers: Optional[int] = typer.Option(None, "--workers", help="Data loader worker processes."),
        threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (0 = default)."),
        checkpoint_every: Optional[int] = typer.Option(
            None, "--checkpoint-every", help="Rewrite checkpoints/last.pt (the resumable state) every N iterations."),
        save_every: Optional[int] = typer.Option(
            None, "--save-every", help="Also keep a snapshot checkpoints/iter_XXXXXX.pt (weights) every N "
                                       "iterations, to evaluate or export later (0: none)."),
        tensorboard: Optional[bool] = typer.Option(
            None, "--tensorboard/--no-tensorboard", help="TensorBoard events in RUN/tb: losses, and weight maps "
                                                         "(needs the tensorboard package)."),
        tensorboard_every: Optional[int] = typer.Option(
            None, "--tensorboard-every", help="With --tensorboard: a weight-map picture every N iterations."),
        logger: Optional[List[str]] = typer.Option(
            None, "--logger", help="Also log to an experiment tracker: wandb or mlflow (optional extras; "
                                   "--tensorboard is the TensorBoard one). Repeatable."),
        val_every: Optional[int] = typer.Option(
            None, "--val-every", help="Score S on the target val split every N iterations and at the end; keeps "
                                      "checkpoints/best.pt by val mIoU (0: never; presets: 2000)."),
        val_images: Optional[int] = typer.Option(
            None, "--val-images", help="With --val-every: only the first K val images (default: all)."),
        finetune_source_iters: Optional[int] = typer.Option(
            None, "--finetune-source-iters", help="finetune: source iterations first (0 = half)."),
        select_road_share: Optional[float] = typer.Option(
            None, "--select-road-share", help="image-select: minimum share of road pixels."),
        select_nonroad_keep: Optional[float] = typer.Option(
            None, "--select-nonroad-keep", help="image-select: share of non-road pixels kept (1 keeps all)."),
        progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Live progress display."),
        json_path: Optional[str] = json_option("Write the summary as JSON to PATH ('-': standard output)."),
    ) -> None:
        from hrseg.evaluation.validation import train_with_validation as train
        from hrseg.training.rundir import RunDir
        from hrseg.visualization.tensorboard import weight_picture

        given = locals()
        typed: list[str] = []  # config keys given by flag: the library's errors name those by their flag
        with user_errors(), flag_errors(typed):
            json_target(json_path)
            if list_presets:
                console.print(presets_table())
                emit_json({n: {"description": p.description, "paper_miou": p.paper_miou,
                               "budget": dict(zip(("iters", "lr", "crop", "batch_size"),
                                                  budget_cells(p.config().resolved()))),
                               "config": p.config().resolved().to_dict()} for n, p in PRESETS.items()}, json_path)
                return
            flags = {key: _value(given[name]) for name, key in FLAG_KEYS.items()}
            if crop is not None:
                flags["data.crop"] = parse_size(crop, "--crop", "512x256")
            if weight_clamp is not None:  # 0 means "no clamp", which a None-means-unset flag cannot say
                flags["weighting.clamp"] = weight_clamp if weight_clamp > 0 else None
            typed.extend(key for key, value in flags.items() if value is not None)
            if resume is not None:
                whole = [_flag(name) for name in ("scheme", "preset", "config", "overwrite", "auto_resume")
                         if given[name] not in (None, False)]
                if whole:
                    raise HrsegError(f"--resume continues a run with its own config; {', '.join(whole)} cannot "
                                     "be given with it")
                changes = {**parse_set(set_ or ()), **{k: v for k, v in flags.items() if v is not None}}
                if progress is not None:
                    changes["run.progress"] = progress
                try:
                    cfg = continue_config(RunDir(resume), changes, _value(extend))  # the library's resume rule
                except SettingFixed as exc:
                    named = [_flag(name) for name, key in FLAG_KEYS.items()
                             if key in exc.keys and given[name] is not None]
                    raise HrsegError(f"{exc} (got {', '.join(named or exc.keys)})") from None
                sources = {k: f"run {resume}" for k in flatten(cfg.to_dict())}
                sources.update({k: f"--extend {_value(extend)}" for k in differences(RunDir(resume).config(), cfg)})
                sources.update({k: "flag" for k in changes})
            else:
                if resume_from != "last.pt":
                    raise HrsegError("--from: only with --resume RUN")
                if extend is not None:
                    raise HrsegError("--extend: only with --resume RUN --iters N")
                flags["run.progress"] = progress
                given_config = dict(preset=_value(preset), config_file=config, scheme=_value(scheme),
                                    sets=set_ or (), flags=flags)
                cfg = build_config(**given_config)
                sources = config_sources(cfg, **given_config)
            unused = unused_settings(cfg, [k for k, src in sources.items() if src in ("flag", "--set")])
            if unused and int(os.environ.get("RANK", "0")) == 0:
                console.print(f"[yellow]warning: {escape(in_flags(unused, typed))}[/]", highlight=False)
            if print_config:
                typer.echo(config_toml(cfg, sources, config_warnings(cfg)), nl=False)
                return
            if resume is None:
                if not cfg.run.out:
                    raise HrsegError("--out: a run directory is required")
            result = train(cfg, resume=resume is not None, overwrite=overwrite, resume_from=resume_from,
                           auto_resume=auto_resume, weight_picture=weight_picture).to_dict()
            if int(os.environ.get("RANK", "0")) == 0:
                console.print(result_table(result))
                emit_json(result, json_path)
            if result["status"] == "interrupted":
                from hrseg.training.interrupt import EXIT_SIGINT, EXIT_SIGTERM

                by = " by SIGTERM" if result.get("stopped_by") == "SIGTERM" else ""
                console.print(f"[yellow]interrupted{by} at iteration {result['iteration']} (checkpoint written); "
                              f"continue with hrseg train --resume {result['run_dir']}[/]")
                raise typer.Exit(code=EXIT_SIGTERM if by else EXIT_SIGINT)
