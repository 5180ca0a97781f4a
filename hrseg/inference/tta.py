"""Test-time views of a segmenter: plain, sliding-window, multi-scale and horizontally flipped.

Shared by prediction on user images and by evaluation, so a score and a
picture come from the same computation. Two rules decide the numbers:

- **One view** (``scales=(1.0,)``, no flip) returns raw *logits*, upsampled
  bilinearly (``align_corners=False``) to the output size, exactly what
  evaluation has always done; turning test-time options off changes nothing,
  bit for bit.
- **Several views** (scales x flips) return the *mean of softmax
  probabilities*, each view's logits first upsampled to the output size. This
  is what MMSegmentation's test-time augmentation does (its ``SegTTAModel``
  sums ``softmax`` of every augmented prediction and divides by their
  number). Probabilities are averaged rather than logits because logits of
  different views are not on one scale: a view at another scale can be
  systematically more confident, and averaging its raw logits would let it
  outvote the others; probabilities are bounded and comparable.

Sliding windows are a way of computing *one* view, so inside a view the
overlapping windows' logits are averaged (as MMSegmentation's ``slide``
mode does): the window result must stay a logit map for the view rules above.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from hrseg.data.resize import RESIZE_MODES
from hrseg.errors import HrsegError
from hrseg.models.registry import logits_of

MIN_WINDOW = 8  # the smallest sliding window, as the smallest training crop
ALIGN_CORNERS = False  # the evaluation's rule for every bilinear resize of logits

Segmenter = Callable[[torch.Tensor], Any]
Size = tuple[int, int]


@dataclass(frozen=True)
class InferenceOptions:
    """How a model looks at an image at test time.

    ``size`` (W, H) is the working resolution every input is resized to before
    the model sees it (the resolution the model was trained at, supplied by
    whoever loaded the model); ``None`` feeds each image at its own resolution.
    ``resize`` is how the input is resized (``area``: like ``hrseg prepare``
    by default, so a user image is seen as the prepared validation images were).
    ``window`` (W, H) and ``overlap`` (fraction of a window shared with its
    neighbour, in [0, 1)) apply when ``slide`` is on; ``scales`` multiply the
    working resolution; ``flip`` adds the mirrored image of every scale.
    """

    size: Size | None = None
    resize: str = "area"
    slide: bool = False
    window: Size | None = None
    overlap: float = 1 / 3
    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def validate(self) -> "InferenceOptions":
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise HrsegError(f"--size: expected a positive WIDTHxHEIGHT, got {self.size}")
        if self.resize not in RESIZE_MODES:
            raise HrsegError(f"--resize: must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.slide and self.window is None:
            raise HrsegError("--slide: needs --window WIDTHxHEIGHT (e.g. the training crop size)")
        if self.window is not None and (len(self.window) != 2 or min(self.window) < 1):
            raise HrsegError(f"--window: expected a positive WIDTHxHEIGHT, got {self.window}")
        if self.slide and self.window is not None and min(self.window) < MIN_WINDOW:
            raise HrsegError(f"--window {self.window[0]}x{self.window[1]}: both sides must be >= {MIN_WINDOW} pixels "
                             "(a smaller window means a forward pass for every few pixels)")
        if not 0.0 <= self.overlap < 1.0:
            raise HrsegError(f"--overlap: must be in [0, 1), got {self.overlap}")
        if not self.scales:
            raise HrsegError("--scales: give at least one scale (1.0 is the working resolution)")
        bad = [s for s in self.scales if not (math.isfinite(s) and s > 0)]
        if bad:
            raise HrsegError(f"--scales: every scale must be a positive number, got {bad[0]}")
        if len(set(self.scales)) != len(self.scales):
            raise HrsegError(f"--scales: a scale is listed twice in {list(self.scales)}")
        return self

    def with_default_window(self, crop: Size | Sequence[int] | None) -> "InferenceOptions":
        """``--slide`` without ``--window`` slides the training crop (what the model learnt on): the one rule
        evaluation, prediction and exported models share."""
        if self.slide and self.window is None and crop is not None:
            return replace(self, window=(int(crop[0]), int(crop[1])))
        return self

    @property
    def views(self) -> int:
        """How many predictions are averaged per image."""
        return len(self.scales) * (2 if self.flip else 1)

    @property
    def averages(self) -> bool:
        """True when the scores are mean probabilities, False when they are one view's logits."""
        return self.views > 1

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("size", "window"):
            out[key] = None if out[key] is None else list(out[key])
        out["scales"] = list(self.scales)
        out["scores"] = "mean softmax probabilities" if self.averages else "logits"
        return out


def window_starts(length: int, window: int, overlap: float) -> list[int]:
    """Window offsets along one axis: steps of ``window * (1 - overlap)``, the last one flush with the border.

    A length not longer than the window needs one window (padded by the caller).
    """
    if length <= window:
        return [0]
    stride = max(1, round(window * (1.0 - overlap)))
    count = math.ceil((length - window) / stride) + 1
    return [min(i * stride, length - window) for i in range(count)]


def _forward(segmenter: Segmenter, x: torch.Tensor, amp_dtype: torch.dtype | None) -> torch.Tensor:
    ctx = torch.autocast(device_type=x.device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    with ctx:
        logits = logits_of(segmenter(x))
    return logits.float()


def _slide(segmenter: Segmenter, x: torch.Tensor, window: Size, overlap: float,
           amp_dtype: torch.dtype | None) -> torch.Tensor:
    """Logits (B,C,H,W) of ``x`` from overlapping windows, averaged where they overlap.

    An image smaller than the window is padded at the bottom/right with zeros
    (the mean colour once normalised), so the model always sees whole windows.
    """
    _, _, h, w = x.shape
    ww, wh = window
    if h < wh or w < ww:
        x = F.pad(x, (0, max(ww - w, 0), 0, max(wh - h, 0)))
    ph, pw = x.shape[-2:]
    total: torch.Tensor | None = None
    count = torch.zeros((1, 1, ph, pw), dtype=torch.float32, device=x.device)
    for y0 in window_starts(ph, wh, overlap):
        for x0 in window_starts(pw, ww, overlap):
            crop = x[:, :, y0 : y0 + wh, x0 : x0 + ww]
            out = _forward(segmenter, crop, amp_dtype)
            if out.shape[-2:] != crop.shape[-2:]:
                out = F.interpolate(out, size=crop.shape[-2:], mode="bilinear", align_corners=ALIGN_CORNERS)
            if total is None:
                total = torch.zeros((x.shape[0], out.shape[1], ph, pw), dtype=torch.float32, device=x.device)
            total[:, :, y0 : y0 + wh, x0 : x0 + ww] += out
            count[:, :, y0 : y0 + wh, x0 : x0 + ww] += 1.0
    assert total is not None
    return (total / count)[:, :, :h, :w]


def _view(segmenter: Segmenter, x: torch.Tensor, options: InferenceOptions,
          amp_dtype: torch.dtype | None) -> torch.Tensor:
    if options.slide:
        assert options.window is not None
        return _slide(segmenter, x, options.window, options.overlap, amp_dtype)
    return _forward(segmenter, x, amp_dtype)


def _resize_each(logits: torch.Tensor, sizes: Sequence[Size]) -> list[torch.Tensor]:
    """(B,C,h,w) -> per-image (C,H_i,W_i); one batched call when every image wants the same size."""
    if all(s == sizes[0] for s in sizes):
        size = tuple(sizes[0])
        if tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=ALIGN_CORNERS)
        return list(logits.unbind(0))
    return [
        F.interpolate(logits[b : b + 1], size=tuple(s), mode="bilinear", align_corners=ALIGN_CORNERS)[0]
        for b, s in enumerate(sizes)
    ]


def scaled_size(hw: Size, scale: float) -> Size:
    """(H, W) times ``scale``, rounded, never below one pixel."""
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def _views(segmenter: Segmenter, x: torch.Tensor, opts: InferenceOptions,
           amp_dtype: torch.dtype | None) -> list[torch.Tensor]:
    """Each view's logits (B,C,h,w) at the view's own resolution, mirrored views flipped back."""
    _, _, h, w = x.shape
    out = []
    for scale in opts.scales:
        xs = x
        if scale != 1.0:
            xs = F.interpolate(x, size=scaled_size((h, w), scale), mode="bilinear", align_corners=ALIGN_CORNERS)
        for flipped in (False, True) if opts.flip else (False,):
            logits = _view(segmenter, xs.flip(-1) if flipped else xs, opts, amp_dtype)
            out.append(logits.flip(-1) if flipped else logits)
    return out


def _sizes(x: torch.Tensor, out_sizes: Sequence[Size] | None) -> list[Size]:
    b, _, h, w = x.shape
    sizes: list[Size] = [(h, w)] * b if out_sizes is None else [tuple(s) for s in out_sizes]  # type: ignore[misc]
    if len(sizes) != b:
        raise ValueError(f"out_sizes has {len(sizes)} sizes for a batch of {b}")
    return sizes


@torch.no_grad()
def infer(segmenter: Segmenter, x: torch.Tensor, options: InferenceOptions | None = None,
          out_sizes: Sequence[Size] | None = None, *, amp_dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Per-image class scores (C, H_i, W_i) for a normalised batch ``x`` (B,3,H,W).

    ``out_sizes`` are the (H, W) each image's scores are wanted at (default:
    the batch's own size). ``x`` is already at the working resolution
    (``options.size`` is applied where images are read). The scores are
    logits for one view and mean probabilities for several (see the module
    docstring); their argmax is the prediction either way. Scales resize the
    normalised batch bilinearly without antialiasing, as training's scale
    augmentation does.
    """
    opts = (options or InferenceOptions()).validate()
    sizes = _sizes(x, out_sizes)
    acc: list[torch.Tensor] | None = None
    for logits in _views(segmenter, x, opts, amp_dtype):
        per_image = _resize_each(logits, sizes)
        if not opts.averages:
            return per_image
        probs = [p.softmax(dim=0) for p in per_image]
        acc = probs if acc is None else [a.add_(p) for a, p in zip(acc, probs)]
    assert acc is not None
    return [a.div_(opts.views) for a in acc]


#: above this many output pixels an image's several views are averaged channel by channel (bounded memory,
#: equal up to float rounding); at or below it exactly as :func:`infer` (every evaluation split is below)
EXACT_AVERAGE_PIXELS = 4_194_304


def _up(plane: torch.Tensor, size: Size) -> torch.Tensor:
    """One (h, w) score plane bilinearly at ``size`` (H, W): bit for bit that plane of a batched resize."""
    if tuple(plane.shape) == tuple(size):
        return plane
    return F.interpolate(plane[None, None], size=tuple(size), mode="bilinear", align_corners=ALIGN_CORNERS)[0, 0]


def _running_argmax(planes: Any, size: Size, device: torch.device) -> torch.Tensor:
    """argmax over channels of planes given one at a time: the first maximum wins, NaN counts as largest."""
    best: torch.Tensor | None = None
    ids = torch.zeros(tuple(size), dtype=torch.uint8, device=device)
    for c, plane in enumerate(planes):
        if best is None:
            best = plane.clone()
            continue
        better = (plane > best) | (plane.isnan() & ~best.isnan())
        best = torch.where(better, plane, best)
        ids[better] = c
    return ids


def _argmax_one(views: list[torch.Tensor], b: int, size: Size, opts: InferenceOptions) -> torch.Tensor:
    """trainIds (H, W) of image ``b`` without holding its C score planes at full size at once."""
    classes, device = views[0].shape[1], views[0].device
    if len(views) == 1:
        return _running_argmax((_up(views[0][b, c], size) for c in range(classes)), size, device)
    if size[0] * size[1] <= EXACT_AVERAGE_PIXELS:
        acc = None
        for v in views:
            probs = _resize_each(v[b : b + 1], [size])[0].softmax(dim=0)
            acc = probs if acc is None else acc.add_(probs)
        assert acc is not None
        return acc.div_(opts.views).argmax(dim=0).to(torch.uint8)
    # softmax per view streamed over channels: max and normaliser first, then each class's mean probability
    stats = []
    for v in views:
        top = _running_max((_up(v[b, c], size) for c in range(classes)))
        total = torch.zeros_like(top)
        for c in range(classes):
            total.add_((_up(v[b, c], size) - top).exp_())
        stats.append((top, total))

    def mean_probs() -> Any:
        for c in range(classes):
            p = torch.zeros(tuple(size), dtype=torch.float32, device=device)
            for v, (top, total) in zip(views, stats):
                p.add_((_up(v[b, c], size) - top).exp_().div_(total))
            yield p.div_(opts.views)

    return _running_argmax(mean_probs(), size, device)


def _running_max(planes: Any) -> torch.Tensor:
    top: torch.Tensor | None = None
    for plane in planes:
        top = plane.clone() if top is None else torch.maximum(top, plane)
    assert top is not None
    return top


@torch.no_grad()
def predict_train_ids(segmenter: Segmenter, x: torch.Tensor, options: InferenceOptions | None = None,
                      out_sizes: Sequence[Size] | None = None, *,
                      amp_dtype: torch.dtype | None = None) -> list[torch.Tensor]:
    """Per-image trainId maps (H_i, W_i) uint8: the argmax of :func:`infer`'s scores.

    Memory stays bounded at any output size: the C score planes are upsampled and compared one at a time
    (bit for bit the argmax of :func:`infer`), so a 48 MP photo needs a few float planes, not C of them.
    """
    opts = (options or InferenceOptions()).validate()
    sizes = _sizes(x, out_sizes)
    views = _views(segmenter, x, opts, amp_dtype)
    return [_argmax_one(views, b, size, opts) for b, size in enumerate(sizes)]
