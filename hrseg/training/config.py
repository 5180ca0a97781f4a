"""Training configuration: one typed dataclass per concern, composed into TrainConfig.

The whole configuration is a plain JSON document (``to_dict``/``from_dict``) so a
run directory records exactly what produced it and ``--resume`` can rebuild it.
Presets are the rows of the paper's Table 1 (METHOD §4); explicit CLI flags
override them field by field.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from hrseg.errors import HrsegError

Scheme = Literal["target-only", "joint", "finetune", "image-select", "w1", "w19", "oracle"]
SCHEMES: tuple[str, ...] = get_args(Scheme)
#: Schemes offered on the command line; ``oracle`` (weight = realism mask) is for the variant study only.
PUBLIC_SCHEMES: tuple[str, ...] = tuple(s for s in SCHEMES if s != "oracle")
ARCHS: tuple[str, ...] = ("fcn8s-vgg16", "pspnet-r50")
COMBINES: tuple[str, ...] = ("product", "mean", "ratio")
NORMALIZES: tuple[str, ...] = ("none", "batch", "running")


@dataclass
class ModelConfig:
    """The segmentation network S."""

    arch: str = "fcn8s-vgg16"
    width: float = 1.0
    pretrained: str = "none"  # "none" | "imagenet" | path to a weight file
    num_classes: int = 19
    aux: bool = False


@dataclass
class DataConfig:
    """Which prepared splits feed training and how batches are formed."""

    data: str = ""
    source: str = "gtav"
    target: str = "cityscapes"
    source_split: str = "train"
    target_split: str = "train"
    target_images: int | None = None  # few real images: an absolute count ...
    target_fraction: float | None = None  # ... or a fraction of target train
    batch_size: int = 2  # per domain and per process
    crop: tuple[int, int] = (512, 256)  # (W, H)
    scale: tuple[float, float] = (0.75, 1.25)
    flip: bool = True
    workers: int = 0


@dataclass
class WeightingConfig:
    """The hierarchical weighting networks W (schemes w1 / w19)."""

    input: str = "pred"  # "pred" (softmax of S) | "image" (ablation "W^1 (Image)")
    levels: tuple[str, ...] = ("pixel", "region", "image")
    # default = the best variant of the study in docs/weighting-variants.md
    combine: str = "product"
    normalize: str = "batch"
    clamp: float | None = None
    sharpen: float = 1.0  # exponent on the combined weight, re-normalised (>1 moves toward hard selection)
    width: float = 1.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)


@dataclass
class GanConfig:
    """Generator G and discriminator D with the LSD-seg loss weights."""

    enabled: bool = False
    width: float = 1.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    adv_weight: float = 0.1  # domain terms of G and S
    cls_weight_s: float = 0.1  # D's class CE on G(f_s), in S's loss
    cls_weight_g: float = 1.0  # same term in G's loss
    recon_weight: float = 1.0


@dataclass
class OptimConfig:
    """The segmentation network's optimiser and schedule."""

    iters: int = 20000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9


@dataclass
class FinetuneConfig:
    """Scheme ``finetune``: source pre-training, then target fine-tuning, in one run."""

    source_iters: int = 0  # 0: half of optim.iters


@dataclass
class ImageSelectConfig:
    """Scheme ``image-select``: source images with a large road share only."""

    road_share: float = 0.25
    nonroad_keep: float = 0.1  # fraction of non-road pixels kept as labels (1.0 keeps all)


@dataclass
class RunConfig:
    """Where the run lives and how it executes (not what it learns)."""

    out: str = ""
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    amp: bool = False
    compile: bool = False
    channels_last: bool = True  # CUDA only
    checkpoint_every: int = 1000
    keep_checkpoints: bool = False  # keep iter_XXXXXX.pt files besides last.pt
    log_every: int = 1
    progress: bool = True
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 per process on a shared machine


@dataclass
class TrainConfig:
    scheme: str = "target-only"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    image_select: ImageSelectConfig = field(default_factory=ImageSelectConfig)
    run: RunConfig = field(default_factory=RunConfig)
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, data, "config")

    def validate(self) -> "TrainConfig":
        """Refuse contradictory or out-of-range settings before anything is built."""
        if self.scheme not in SCHEMES:
            raise HrsegError(f"--scheme: unknown scheme {self.scheme!r} (choose from {', '.join(PUBLIC_SCHEMES)})")
        if self.model.arch not in ARCHS:
            raise HrsegError(f"--arch: unknown architecture {self.model.arch!r} (choose from {', '.join(ARCHS)})")
        if self.model.width <= 0:
            raise HrsegError(f"--width: must be > 0, got {self.model.width}")
        if self.weighting.combine not in COMBINES:
            raise HrsegError(f"--weight-combine: unknown {self.weighting.combine!r} (choose from {', '.join(COMBINES)})")
        if self.weighting.normalize not in NORMALIZES:
            raise HrsegError(
                f"--weight-normalize: unknown {self.weighting.normalize!r} (choose from {', '.join(NORMALIZES)})"
            )
        if self.weighting.input not in ("pred", "image"):
            raise HrsegError(f"--weight-input: must be 'pred' or 'image', got {self.weighting.input!r}")
        if self.weighting.sharpen <= 0:
            raise HrsegError(f"--weight-sharpen: must be > 0, got {self.weighting.sharpen}")
        if self.weighting.clamp is not None and self.weighting.clamp <= 0:
            raise HrsegError(f"--weight-clamp: must be > 0, got {self.weighting.clamp}")
        if self.data.target_images is not None and self.data.target_fraction is not None:
            raise HrsegError("--target-images and --target-fraction are exclusive; give one")
        if self.data.target_images is not None and self.data.target_images < 1:
            raise HrsegError(f"--target-images: must be >= 1, got {self.data.target_images}")
        if self.data.target_fraction is not None and not 0 < self.data.target_fraction <= 1:
            raise HrsegError(f"--target-fraction: must be in (0, 1], got {self.data.target_fraction}")
        if self.optim.iters < 1:
            raise HrsegError(f"--iters: must be >= 1, got {self.optim.iters}")
        if self.data.batch_size < 1:
            raise HrsegError(f"--batch-size: must be >= 1, got {self.data.batch_size}")
        if min(self.data.crop) < 8:
            raise HrsegError(f"--crop: both sides must be >= 8 pixels, got {self.data.crop}")
        if self.scheme == "finetune" and self.finetune_source_iters() >= self.optim.iters:
            raise HrsegError(
                f"--finetune-source-iters: {self.finetune.source_iters} leaves no target iteration "
                f"out of --iters {self.optim.iters}"
            )
        if not 0 <= self.image_select.nonroad_keep <= 1:
            raise HrsegError(f"--select-nonroad-keep: must be in [0, 1], got {self.image_select.nonroad_keep}")
        if self.run.threads < 0:
            raise HrsegError(f"--threads: must be >= 0, got {self.run.threads}")
        if self.run.checkpoint_every < 1 or self.run.log_every < 1:
            raise HrsegError("--checkpoint-every and --log-every must be >= 1")
        return self

    def finetune_source_iters(self) -> int:
        return self.finetune.source_iters or self.optim.iters // 2


def _to_jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    return obj


def _from_dict(cls: type, data: dict[str, Any], where: str) -> Any:
    """Rebuild a (nested) dataclass; unknown keys are an error so typos do not pass silently."""
    if not isinstance(data, dict):
        raise HrsegError(f"{where}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise HrsegError(f"{where}: unknown key(s) {', '.join(unknown)}")
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for name, value in data.items():
        current = getattr(defaults, name)
        if dataclasses.is_dataclass(current):
            kwargs[name] = _from_dict(type(current), value, f"{where}.{name}")
        elif isinstance(current, tuple) and isinstance(value, list):
            kwargs[name] = tuple(value)
        elif name in ("crop", "scale", "betas", "levels") and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


def override(cfg: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """Apply dotted-path overrides (``{"optim.lr": 0.01}``) and return a new config."""
    data = cfg.to_dict()
    for path, value in changes.items():
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            if part not in node or not isinstance(node[part], dict):
                raise HrsegError(f"config override: unknown section {path!r}")
            node = node[part]
        if leaf not in node:
            raise HrsegError(f"config override: unknown field {path!r}")
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return TrainConfig.from_dict(data)


@dataclass(frozen=True)
class Preset:
    """A named row of Table 1: a description and the config changes it makes."""

    name: str
    description: str
    paper_miou: float | None
    changes: dict[str, Any]

    def config(self) -> TrainConfig:
        return override(TrainConfig(preset=self.name), self.changes)


# Paper-scale budget [reconstructed: the paper does not state iterations or learning rates].
_FCN = {"model.arch": "fcn8s-vgg16", "model.pretrained": "imagenet", "optim.lr": 1e-3,
        "optim.iters": 40000, "data.batch_size": 1, "data.crop": (1024, 512), "run.amp": True}
_PSP = {"model.arch": "pspnet-r50", "model.pretrained": "imagenet", "model.aux": True, "optim.lr": 1e-2,
        "optim.iters": 40000, "data.batch_size": 2, "data.crop": (768, 384), "run.amp": True}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("baseline1-target-only", "Baseline1: FCN-VGG16, target only", 65.3, {**_FCN, "scheme": "target-only"}),
        Preset("gan", "+ GAN: joint source + target with G and D", 64.0,
               {**_FCN, "scheme": "joint", "gan.enabled": True}),
        Preset("gan-imageselect", "+ GAN + ImageSelect: road-rich source images", 65.4,
               {**_FCN, "scheme": "image-select", "gan.enabled": True}),
        Preset("gan-w1-image", "+ GAN + W^1 (Image): weighting on RGB input", 67.1,
               {**_FCN, "scheme": "w1", "gan.enabled": True, "weighting.input": "image"}),
        Preset("w1", "Ours with W^1 (FCN-VGG16, GAN)", 67.6, {**_FCN, "scheme": "w1", "gan.enabled": True}),
        Preset("w19", "Ours with W^19 (FCN-VGG16, GAN)", 68.1, {**_FCN, "scheme": "w19", "gan.enabled": True}),
        Preset("baseline2-target-only", "Baseline2: PSPNet-R50, target only", 76.1,
               {**_PSP, "scheme": "target-only"}),
        Preset("pspnet-w1", "Ours with W^1 (PSPNet-R50, GAN)", 77.6, {**_PSP, "scheme": "w1", "gan.enabled": True}),
        Preset("joint", "Baseline: direct joint training (FCN-VGG16, no GAN)", None, {**_FCN, "scheme": "joint"}),
        Preset("finetune", "Baseline: source pre-training, then target fine-tuning", None,
               {**_FCN, "scheme": "finetune"}),
    )
}

#: Small budget for the procedural-scene quick-start and the variant study (see docs/weighting-variants.md).
QUICK_BUDGET: dict[str, Any] = {
    "model.arch": "fcn8s-vgg16", "model.width": 0.125, "model.pretrained": "none",
    "optim.iters": 500, "optim.lr": 0.01, "data.batch_size": 4, "data.crop": (128, 64),
    "data.target_images": 16, "weighting.width": 0.125, "gan.width": 0.125, "gan.enabled": False,
    "run.checkpoint_every": 1000, "run.threads": 1,
}


def quick_config(scheme: str, data: str, out: str, seed: int = 0, **changes: Any) -> TrainConfig:
    """The recommended small-budget config for ``scheme`` on procedural scenes (CPU friendly)."""
    base = override(TrainConfig(scheme=scheme), QUICK_BUDGET)
    return override(base, {"data.data": data, "run.out": out, "run.seed": seed, **changes})


def default_gan(scheme: str) -> bool:
    """"Ours" (w1, w19) uses the GAN by default, as in the paper; the baselines do not."""
    return scheme in ("w1", "w19")
