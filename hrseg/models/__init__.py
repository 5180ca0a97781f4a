"""Networks: segmenters (registered by name), weighting networks, generator and discriminator.

Importing this package imports every model file, and each registers itself in
``hrseg.models.registry.SEGMENTERS``; a new backbone's module is added here.
"""

# registration order is the order of --arch choices and report rows: the paper's two, then DeepLab-v2
from hrseg.models import fcn, pspnet  # noqa: F401, I001 - imported for their registrations
from hrseg.models import deeplabv2  # noqa: F401, E402
from hrseg.models.backbones import VGG16, ResNet50, ResNet101
from hrseg.models.common import SegOutput
from hrseg.models.deeplabv2 import DeepLabV2
from hrseg.models.factory import ModelInfo, count_parameters, describe_models
from hrseg.models.fcn import FCN8s
from hrseg.models.gan import Discriminator, Generator
from hrseg.models.pretrained import IMAGENET_URLS, load_strict
from hrseg.models.pspnet import PSPNet
from hrseg.models.registry import SEGMENTERS, SegmenterSpec, build_segmenter, logits_of
from hrseg.models.weighting import (
    COMBINATIONS,
    LEVELS,
    NORMALIZATIONS,
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
