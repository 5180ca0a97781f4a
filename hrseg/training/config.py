"""Training configuration: one typed dataclass per concern, composed into TrainConfig.

The whole configuration is a plain JSON document (``to_dict``/``from_dict``) so a
run directory records exactly what produced it and ``--resume`` can rebuild it.
Every value is type-checked against its field's annotation when a config is
built from a dict, a file or ``--set`` overrides. ``None`` in ``gan.enabled`` and
``weighting.network`` means "the scheme's default" (the scheme table in
``schemes.py``); :meth:`TrainConfig.resolved` fills those in, and is what a run
saves. Presets, the quick budget and ``build_config`` live in ``presets.py``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hrseg import toml
from hrseg.errors import HrsegError
from hrseg.models import SEGMENTERS
from hrseg.models.batchnorm import check_bn_setting
from hrseg.models.weighting import WeightingConfig
from hrseg.training.schemes import SCHEMES
from hrseg.training.value_checks import bounded, check_values
from hrseg.typed import from_dict, to_jsonable


@dataclass
class ModelConfig:
    """The segmentation network S."""

    arch: str = "fcn8s-vgg16"
    width: float = 1.0
    pretrained: str = "none"  # "none" | "imagenet" | path to a weight file
    num_classes: int = 19
    aux: bool = False
    # batch norm: "train" (plain), "frozen" (the backbone keeps its ImageNet statistics and affine
    # values) or "sync" (statistics of the whole batch across torchrun processes)
    bn: str = "train"


@dataclass
class DataConfig:
    """Which prepared splits feed training and how batches are formed."""

    data: str = ""
    source: str = "gtav"
    target: str = "cityscapes"
    source_split: str = "train"
    target_split: str = "train"
    target_images: int | None = None  # few real images: an absolute count ...
    target_fraction: float | None = None  # ... or a fraction of target train (0 images: no target labels, UDA)
    # schemes that learn from unlabelled target images: "rest" (the target train images not labelled),
    # "all" (every target train image, labels never read), or a count N (a seeded subset of the rest)
    unlabelled_target: int | str = "rest"
    batch_size: int = 2  # per domain and per process
    crop: tuple[int, int] = (512, 256)  # (W, H)
    scale: tuple[float, float] = (0.75, 1.25)
    flip: bool = True
    workers: int = 0


@dataclass
class GanConfig:
    """Generator G and discriminator D with the LSD-seg loss weights."""

    enabled: bool | None = None  # None: the scheme's default (on for the paper's "Ours" rows)
    width: float = 1.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    adv_weight: float = 0.1  # domain terms of G and S
    cls_weight_s: float = 0.1  # D's class CE on G(f_s), in S's loss
    cls_weight_g: float = 1.0  # same term in G's loss
    recon_weight: float = 1.0


@dataclass
class UnlabelledConfig:
    """What the schemes that learn from unlabelled target images do with them (docs/unlabelled-target.md).

    Self-training follows DACS (WACV 2021) as DAFormer's configs write it, except
    ``keep_unconfident``: hrseg ignores the pixels the teacher is unsure of
    (docs/unlabelled-target.md says why); MinEnt's weight is ADVENT's.
    """

    minent_weight: float = 1e-3  # ADVENT's lambda_ent at DeepLab-v2 scale
    teacher_momentum: float = 0.99  # EMA momentum, ramped as min(1 - 1/(t+1), momentum) as DACS does
    confidence: float = 0.968  # a target pixel's pseudo-label counts where the teacher's max softmax exceeds this
    keep_unconfident: bool = False  # True: DACS exactly (every pixel kept, weight = image's confident share)
    weight: float = 1.0  # weight of the pseudo-label loss on the (mixed) target images
    mix: str = "classmix"  # "classmix" (half of a source image's classes pasted on the target) | "none"
    jitter: float = 0.2  # colour jitter strength on the student's mixed image (0: off)
    jitter_prob: float = 0.8
    blur: bool = True  # Gaussian blur with probability 0.5, sigma 0.15-1.15
    start: int = 0  # iteration the unlabelled terms start at; before it the run trains as without them (warm-up)


@dataclass
class OptimConfig:
    """The segmentation network's optimiser and schedule."""

    iters: int = 20000
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    restarts: tuple[int, ...] = ()  # iterations where the poly schedule starts again from lr (an extended run)


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
    checkpoint_every: int = 1000  # last.pt, the resumable state, is rewritten every N iterations
    save_every: int = 0  # also keep a snapshot iter_XXXXXX.pt (network weights) every N iterations; 0: none
    log_every: int = 1
    progress: bool = True
    threads: int = 0  # CPU threads for torch (0: torch's default); 1 per process on a shared machine
    tensorboard: bool = False  # TensorBoard events in RUN/tb (needs the tensorboard package)
    tensorboard_every: int = 500  # a weight-map panel image every N iterations (weighting schemes)
    loggers: tuple[str, ...] = ()  # more experiment trackers (training/loggers.py: wandb, mlflow, tensorboard)
    val_every: int = 0  # score S on the target's val_split every N iterations and at the end (0: never)
    val_images: int | None = None  # validate on the first K images of the split only (None: all)
    val_split: str = "val"

    @staticmethod
    def upgrade(section: dict[str, Any]) -> dict[str, Any]:
        """A ``run`` section saved by an older hrseg, in today's fields.

        ``keep_checkpoints: true`` kept a snapshot at every checkpoint; that is
        ``save_every = checkpoint_every``.
        """
        if not isinstance(section, dict) or "keep_checkpoints" not in section:
            return section
        out = dict(section)
        keep = out.pop("keep_checkpoints")
        if not isinstance(keep, bool):
            raise HrsegError(f"run.keep_checkpoints: expected true/false, got {json.dumps(keep)}")
        if keep and not out.get("save_every"):
            out["save_every"] = out.get("checkpoint_every", RunConfig.checkpoint_every)
        return out


#: Keys an older hrseg wrote or accepted; still understood by from_dict and override (see RunConfig.upgrade).
LEGACY_KEYS = frozenset({"run.keep_checkpoints"})


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
    unlabelled: UnlabelledConfig = field(default_factory=UnlabelledConfig)
    run: RunConfig = field(default_factory=RunConfig)
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        if isinstance(data, dict) and "run" in data:
            data = {**data, "run": RunConfig.upgrade(data["run"])}
        return from_dict(cls, data, "config")

    def resolved(self) -> "TrainConfig":
        """A copy with the scheme's defaults filled in and data / run paths made absolute (what a run saves)."""
        scheme = SCHEMES[self.scheme]
        changes: dict[str, Any] = {}
        if self.gan.enabled is None:
            changes["gan.enabled"] = scheme.gan
        if self.weighting.network is None and scheme.weighting is not None:
            changes["weighting.network"] = scheme.weighting
        network = changes.get("weighting.network", self.weighting.network)
        if network is not None and scheme.weighting is not None:
            filled = dataclasses.replace(self.weighting, network=network).filled()
            changes.update({"weighting.levels": filled.levels, "weighting.balance": filled.balance})
        for key, value in (("data.data", self.data.data), ("run.out", self.run.out)):
            if value and not Path(value).is_absolute():
                changes[key] = str(Path(value).absolute())
        return override(self, changes)

    def validate(self) -> "TrainConfig":
        """Refuse contradictory or out-of-range settings before anything is built."""
        SCHEMES.check(self.scheme)
        SEGMENTERS.check(self.model.arch)
        self.weighting.check()
        check_bn_setting(self.model.arch, self.model.bn, self.model.pretrained, self.model.width)
        for option, value in (("model.width", self.model.width), ("gan.width", self.gan.width),
                              ("optim.lr", self.optim.lr), ("gan.lr", self.gan.lr)):
            _positive(option, value)
        for option, value in (("optim.weight_decay", self.optim.weight_decay),
                              ("optim.poly_power", self.optim.poly_power)):
            if not (math.isfinite(value) and value >= 0):
                raise HrsegError(f"{option}: must be a finite number >= 0, got {value}")
        if list(self.optim.restarts) != sorted(set(self.optim.restarts)) or any(
                not 0 < r < self.optim.iters for r in self.optim.restarts):
            raise HrsegError(f"optim.restarts: increasing iterations inside (0, optim.iters), "
                             f"got {list(self.optim.restarts)}")
        if not 0 <= self.optim.momentum < 1:
            raise HrsegError(f"optim.momentum: must be in [0, 1), got {self.optim.momentum}")
        if self.data.target_images is not None and self.data.target_fraction is not None:
            raise HrsegError("data.target_images and data.target_fraction are exclusive; give one")
        if self.data.target_images is not None and self.data.target_images < 0:
            raise HrsegError(f"data.target_images: must be >= 0, got {self.data.target_images}")
        self._validate_unlabelled()
        if self.data.target_fraction is not None and not 0 < self.data.target_fraction <= 1:
            raise HrsegError(f"data.target_fraction: must be in (0, 1], got {self.data.target_fraction}")
        if self.optim.iters < 1:
            raise HrsegError(f"optim.iters: must be >= 1, got {self.optim.iters}")
        if self.data.batch_size < 1:
            raise HrsegError(f"data.batch_size: must be >= 1, got {self.data.batch_size}")
        if self.data.workers < 0:
            raise HrsegError(f"data.workers: must be >= 0, got {self.data.workers}")
        if min(self.data.crop) < 8:
            raise HrsegError(f"data.crop: both sides must be >= 8 pixels, got {self.data.crop}")
        lo, hi = self.data.scale
        if not (0 < lo <= hi and math.isfinite(hi)):
            raise HrsegError(f"data.scale: expected 0 < min <= max, got {list(self.data.scale)}")
        if len(SCHEMES[self.scheme].phases) > 1 and self.finetune_source_iters() >= self.optim.iters:
            raise HrsegError(
                f"finetune.source_iters: {self.finetune.source_iters} leaves no target iteration "
                f"out of optim.iters {self.optim.iters}"
            )
        if self.finetune.source_iters < 0:
            raise HrsegError(f"finetune.source_iters: must be >= 0, got {self.finetune.source_iters}")
        if not 0 <= self.image_select.road_share <= 1:
            raise HrsegError(f"image_select.road_share: must be in [0, 1], got {self.image_select.road_share}")
        if not 0 <= self.image_select.nonroad_keep <= 1:
            raise HrsegError(f"image_select.nonroad_keep: must be in [0, 1], got {self.image_select.nonroad_keep}")
        if self.run.threads < 0:
            raise HrsegError(f"run.threads: must be >= 0, got {self.run.threads}")
        if self.run.checkpoint_every < 1 or self.run.log_every < 1:
            raise HrsegError("run.checkpoint_every and run.log_every must be >= 1")
        if self.run.save_every < 0:
            raise HrsegError(f"run.save_every: must be >= 0 (0: no snapshots), got {self.run.save_every}")
        if self.run.tensorboard_every < 1:
            raise HrsegError(f"run.tensorboard_every: must be >= 1, got {self.run.tensorboard_every}")
        if self.run.val_every < 0:
            raise HrsegError(f"run.val_every: must be >= 0 (0: no validation), got {self.run.val_every}")
        if self.run.val_images is not None and self.run.val_images < 1:
            raise HrsegError(f"run.val_images: must be >= 1, got {self.run.val_images}")
        if self.run.seed < 0:
            raise HrsegError(f"run.seed: must be >= 0, got {self.run.seed}")
        check_values(self)  # the rest: every float finite, GAN weights and betas, the seed's upper end
        return self

    def _validate_unlabelled(self) -> None:
        """Unlabelled-target settings in range, and 0 labelled target images only where a scheme can use that."""
        from hrseg.training.mixing import MIXES

        u, scheme = self.unlabelled, SCHEMES[self.scheme]
        amount = self.data.unlabelled_target
        if isinstance(amount, str) and amount not in ("rest", "all") or isinstance(amount, int) and amount < 1:
            raise HrsegError(f"data.unlabelled_target: \"rest\", \"all\" or a count >= 1, got {amount!r}")
        MIXES.check(u.mix)
        for key, value in (("unlabelled.teacher_momentum", u.teacher_momentum), ("unlabelled.confidence",
                                                                                  u.confidence),
                           ("unlabelled.jitter_prob", u.jitter_prob)):
            if not 0 <= value <= 1:
                raise HrsegError(f"{key}: must be in [0, 1], got {value}")
        for key, value in (("unlabelled.minent_weight", u.minent_weight), ("unlabelled.weight", u.weight),
                           ("unlabelled.jitter", u.jitter)):
            if not (math.isfinite(value) and value >= 0):
                raise HrsegError(f"{key}: must be a finite number >= 0, got {value}")
        if u.start < 0 or u.start >= max(self.optim.iters, 1):
            raise HrsegError(f"unlabelled.start: an iteration in [0, optim.iters), got {u.start}")
        if self.data.target_images == 0:
            if scheme.weighting is not None and scheme.unlabelled != "self-training":
                raise HrsegError(f"data.target_images 0: scheme {self.scheme!r} learns W's \"target\" from labelled "
                                 "target images; with none, use its self-training row (W reads the teacher's "
                                 "pseudo-labels)")
            if scheme.unlabelled is None and any(p.target for p in scheme.phases):
                raise HrsegError(f"data.target_images 0: scheme {self.scheme!r} trains on labelled target images; "
                                 "with none use source-only, minent or a self-training scheme")
            if self.gan.enabled:
                raise HrsegError("data.target_images 0: the GAN needs a labelled target batch every step; use --no-gan")
            if self.weighting.heldout_images:
                raise HrsegError("data.target_images 0: weighting.heldout_images needs labelled target images")

    def finetune_source_iters(self) -> int:
        return self.finetune.source_iters or self.optim.iters // 2


def _positive(option: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise HrsegError(f"{option}: must be a finite number > 0, got {value}")


def override(cfg: TrainConfig, changes: dict[str, Any]) -> TrainConfig:
    """Apply dotted-path overrides (``{"optim.lr": 0.01}``) and return a new, type-checked config."""
    data = cfg.to_dict()
    for path, value in changes.items():
        node = data
        *parents, leaf = path.split(".")
        for part in parents:
            if part not in node or not isinstance(node[part], dict):
                raise HrsegError(f"config override: unknown section {path!r}")
            node = node[part]
        if (leaf not in node and path not in LEGACY_KEYS) or isinstance(node.get(leaf), dict):
            raise HrsegError(f"config override: unknown field {path!r}")
        node[leaf] = list(value) if isinstance(value, tuple) else value
    return TrainConfig.from_dict(data)


def parse_set(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["optim.lr=0.01", "data.crop=512,256"]`` -> overrides; values are JSON, else text, commas make lists."""
    changes: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise HrsegError(f"--set {item!r}: expected KEY=VALUE such as optim.lr=0.01")
        changes[key.strip()] = _parse_value(text.strip())
    return changes


def _parse_value(text: str) -> Any:
    try:
        return bounded(lambda: json.loads(text), "--set")
    except ValueError:
        pass
    if "," in text:
        return [_parse_value(part.strip()) for part in text.split(",")]
    return {"none": None, "null": None}.get(text.lower(), text)


def load_config_file(path: str | Path) -> TrainConfig:
    """A run's ``config.json`` or a TOML file with the same sections (missing fields keep their defaults)."""
    file = Path(path)
    if not file.is_file():
        raise HrsegError(f"--config {file}: no such file")
    text = file.read_bytes()
    try:
        if file.suffix.lower() == ".toml":
            data = bounded(lambda: toml.loads(text.decode("utf-8")), str(file))
        else:
            data = bounded(lambda: json.loads(text), str(file))
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "TOML" if file.suffix.lower() == ".toml" else "JSON"
        raise HrsegError(f"{file}: not valid {kind} ({str(exc).splitlines()[0]})") from None
    try:
        return TrainConfig.from_dict(data)
    except HrsegError as exc:
        raise HrsegError(f"{file}: {exc}") from None
