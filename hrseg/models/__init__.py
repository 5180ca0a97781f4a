"""Networks: segmenters (FCN-8s, PSPNet), weighting networks, generator and discriminator."""

from hrseg.models.backbones import VGG16, ResNet50
from hrseg.models.common import SegOutput
from hrseg.models.factory import SEGMENTERS, ModelInfo, build_segmenter, count_parameters, describe_models
from hrseg.models.fcn import FCN8s
from hrseg.models.gan import Discriminator, Generator
from hrseg.models.pretrained import IMAGENET_URLS, load_strict
from hrseg.models.pspnet import PSPNet
from hrseg.models.weighting import COMBINERS, LEVELS, HierarchicalWeighting, WeightOutput

__all__ = [
    "COMBINERS",
    "IMAGENET_URLS",
    "LEVELS",
    "SEGMENTERS",
    "VGG16",
    "Discriminator",
    "FCN8s",
    "Generator",
    "HierarchicalWeighting",
    "ModelInfo",
    "PSPNet",
    "ResNet50",
    "SegOutput",
    "WeightOutput",
    "build_segmenter",
    "count_parameters",
    "describe_models",
    "load_strict",
]
