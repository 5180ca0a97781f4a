"""From uint8 RGB arrays to trainId maps: device, mixed precision, working resolution, test-time views.

The model sees every input at the working resolution (``options.size``, the
resolution it was trained at) and its scores are upsampled bilinearly
(``align_corners=False``) to the input's own resolution before argmax, as
evaluation does, so a picture of a validation image shows exactly what was scored.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from hrseg.data.augment import normalize
from hrseg.data.resize import resize_image
from hrseg.device import resolve_amp, resolve_device
from hrseg.inference.tta import InferenceOptions, predict_train_ids
from hrseg.models.common import eval_mode



def working_image(rgb: np.ndarray, options: InferenceOptions) -> np.ndarray:
    """The input as the model sees it: resized to ``options.size`` (W, H) the way prepare resizes."""
    return rgb if options.size is None else resize_image(rgb, tuple(options.size), options.resize)


class Engine:
    """uint8 RGB arrays of one working size -> trainId maps at each input's own size."""

    def __init__(self, segmenter: Callable[[torch.Tensor], Any], options: InferenceOptions,
                 device: torch.device, amp_dtype: torch.dtype | None) -> None:
        self.segmenter, self.options, self.device, self.amp_dtype = segmenter, options, device, amp_dtype

    def __call__(self, images: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(self.device)
        preds = predict_train_ids(self.segmenter, normalize(batch), self.options, sizes, amp_dtype=self.amp_dtype)
        return [p.cpu().numpy() for p in preds]


@torch.no_grad()
def segment_image(segmenter: Callable[[torch.Tensor], Any], rgb: np.ndarray,
                  options: InferenceOptions | None = None, *, device: str | torch.device | None = None,
                  amp: bool | None = None) -> np.ndarray:
    """trainId map (H, W) uint8 for one RGB uint8 array (H, W, 3), e.g. in a notebook.

    Runs where the module's weights are unless ``device`` is given (then the
    module is moved there).
    """
    image = np.asarray(rgb)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB uint8 array (H, W, 3), got {image.dtype} {image.shape}")
    opts = (options or InferenceOptions()).validate()
    if device is not None:
        dev = resolve_device(str(device))
        if isinstance(segmenter, torch.nn.Module):
            segmenter.to(dev)
    elif isinstance(segmenter, torch.nn.Module):
        dev = next((p.device for p in segmenter.parameters()), torch.device("cpu"))
    else:
        dev = torch.device("cpu")
    with eval_mode(segmenter):
        engine = Engine(segmenter, opts, dev, resolve_amp(dev, amp))
        return engine([working_image(np.ascontiguousarray(image), opts)], [image.shape[:2]])[0]
