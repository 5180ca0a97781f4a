"""Networks: segmenters (registered by name), weighting networks, generator and discriminator.

Importing this package imports every model file, and each registers itself in
``hrseg.models.registry.SEGMENTERS``: adding a segmenter is adding its file.
"""

import importlib
import pkgutil

# Every module of this package is imported, so a model file registers itself by existing. The paper's two
# networks come first: registration order is the order of --arch choices, `hrseg models` rows and reports.
_FIRST = ("fcn", "pspnet")
for _module in sorted((m.name for m in pkgutil.iter_modules(__path__)), key=lambda n: (n not in _FIRST, n)):
    importlib.import_module(f"{__name__}.{_module}")
from hrseg.models.backbones import VGG16, ResNet50, ResNet101
from hrseg.models.common import SegOutput
from hrseg.models.deeplabv2 import DeepLabV2
from hrseg.models.describe import ModelInfo, count_parameters, describe_models
from hrseg.models.fcn import FCN8s
from hrseg.models.gan import Discriminator, Generator
from hrseg.models.pretrained import IMAGENET_URLS, load_strict
from hrseg.models.pspnet import PSPNet
from hrseg.models.registry import SEGMENTERS, SegmenterSpec, build_segmenter, logits_of
from hrseg.models.weighting import (
    COMBINATIONS,
    LEVELS,
    NORMALIZATIONS,
    OPTIONAL_LEVELS,
    WEIGHTING_NETWORKS,
    HierarchicalWeighting,
    WeightOutput,
    weighting_input,
)

__all__ = [
    "COMBINATIONS",
    "IMAGENET_URLS",
    "LEVELS",
    "NORMALIZATIONS",
    "OPTIONAL_LEVELS",
    "SEGMENTERS",
    "VGG16",
    "WEIGHTING_NETWORKS",
    "DeepLabV2",
    "Discriminator",
    "FCN8s",
    "Generator",
    "HierarchicalWeighting",
    "ModelInfo",
    "PSPNet",
    "ResNet50",
    "ResNet101",
    "SegOutput",
    "SegmenterSpec",
    "WeightOutput",
    "build_segmenter",
    "count_parameters",
    "describe_models",
    "load_strict",
    "logits_of",
    "weighting_input",
]
