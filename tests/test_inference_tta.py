"""Test-time options: sliding windows, multi-scale and flip averaging against plain inference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hrseg.errors import HrsegError
from hrseg.evaluation.evaluate import predict_full_resolution
from hrseg.inference.tta import InferenceOptions, infer, predict_train_ids, window_starts
from tests.inference_fixtures import ContextModel, PaletteModel


def _batch(b: int = 2, h: int = 20, w: int = 36, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _plain(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return (out.logits if hasattr(out, "logits") else out).float()


@pytest.mark.parametrize(
    "length, window, overlap",
    [(100, 40, 0.0), (100, 40, 0.5), (97, 32, 1 / 3), (33, 32, 0.9), (64, 64, 0.25), (10, 32, 0.5)],
)
def test_window_starts_cover_the_axis_and_end_at_the_border(length: int, window: int, overlap: float) -> None:
    starts = window_starts(length, window, overlap)
    covered = torch.zeros(max(length, window), dtype=torch.bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered[:length].all()
    assert starts == sorted(set(starts)) and starts[0] == 0
    assert starts[-1] == max(length - window, 0)  # last window flush with the border
    stride = max(1, round(window * (1 - overlap)))
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))


def test_window_starts_overlap_zero_tiles_without_overlap() -> None:
    assert window_starts(96, 32, 0.0) == [0, 32, 64]
    assert window_starts(100, 40, 0.5) == [0, 20, 40, 60]


def test_default_options_are_plain_inference_bit_for_bit() -> None:
    model = ContextModel().eval()
    x = _batch()
    got = infer(model, x, InferenceOptions(scales=(1.0,), flip=False))
    want = _plain(model, x)
    assert torch.equal(torch.stack(got), want)


def test_default_options_equal_evaluation_path_at_full_resolution() -> None:
    """infer + argmax at label size is the prediction evaluation has always made."""
    model = ContextModel().eval()
    images = torch.randint(0, 256, (2, 3, 16, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    sizes = [(33, 50), (40, 61)]
    from hrseg.data.augment import normalize

    ours = predict_train_ids(model, normalize(images), InferenceOptions(), sizes)
    theirs = predict_full_resolution(model, images, sizes)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_window_covering_the_whole_image_equals_plain_inference() -> None:
    model = ContextModel().eval()  # global context: any cropping or padding would change it
    x = _batch(h=20, w=36)
    got = infer(model, x, InferenceOptions(slide=True, window=(36, 20), overlap=0.5))
    assert torch.equal(torch.stack(got), _plain(model, x))


def test_overlapping_windows_of_a_translation_equivariant_model_equal_plain_inference() -> None:
    model = PaletteModel(plain=True).eval()
    x = _batch(h=40, w=70)
    model.seen.clear()
    got = infer(model, x, InferenceOptions(slide=True, window=(24, 16), overlap=0.5))
    assert len(model.seen) == len(window_starts(40, 16, 0.5)) * len(window_starts(70, 24, 0.5)) > 4
    assert all(s[-2:] == (16, 24) for s in model.seen)
    # summing then dividing overlapping copies rounds in float32: equal to 1e-6 relative (logits reach ~16)
    torch.testing.assert_close(torch.stack(got), _plain(model, x), rtol=1e-6, atol=1e-6)


def test_overlapping_windows_average_the_logits_of_a_context_model() -> None:
    """Where windows overlap the result is the mean of their logits (checked at one pixel by hand)."""
    model = ContextModel().eval()
    x = _batch(b=1, h=16, w=40)
    got = infer(model, x, InferenceOptions(slide=True, window=(16, 16), overlap=0.5))[0]
    assert window_starts(40, 16, 0.5) == [0, 8, 16, 24]
    col = 20  # inside the windows starting at 8 and 16 only
    a = _plain(model, x[:, :, :, 8:24])[0, :, :, col - 8]
    b = _plain(model, x[:, :, :, 16:32])[0, :, :, col - 16]
    torch.testing.assert_close(got[:, :, col], (a + b) / 2, rtol=0, atol=1e-5)
    assert not torch.allclose(got, _plain(model, x)[0], atol=1e-3)  # so the windows really did something


def test_image_smaller_than_the_window_is_padded_to_it() -> None:
    model = PaletteModel(plain=True).eval()
    x = _batch(h=10, w=12)
    model.seen.clear()
    got = infer(model, x, InferenceOptions(slide=True, window=(32, 16)))
    assert model.seen == [(2, 3, 16, 32)]
    assert got[0].shape == (19, 10, 12)
    torch.testing.assert_close(torch.stack(got), _plain(model, x), rtol=0, atol=1e-6)


def test_flip_averaging_of_a_flip_symmetric_model_equals_plain_inference() -> None:
    model = PaletteModel().eval()  # a 1x1 convolution commutes with mirroring
    x = _batch()
    got = torch.stack(infer(model, x, InferenceOptions(flip=True)))
    torch.testing.assert_close(got, _plain(model, x).softmax(dim=1), rtol=0, atol=1e-6)


def test_flip_averaging_averages_probabilities_of_both_views() -> None:
    model = ContextModel().eval()
    x = _batch()
    got = torch.stack(infer(model, x, InferenceOptions(flip=True)))
    plain = _plain(model, x).softmax(dim=1)
    mirrored = _plain(model, x.flip(-1)).flip(-1).softmax(dim=1)
    torch.testing.assert_close(got, (plain + mirrored) / 2, rtol=0, atol=1e-6)
    assert not torch.allclose(got, plain, atol=1e-3)


def test_multi_scale_averages_probabilities_upsampled_to_the_output_size() -> None:
    model = ContextModel().eval()
    x = _batch(b=1, h=16, w=24)
    out = (30, 50)
    got = infer(model, x, InferenceOptions(scales=(0.5, 1.0, 1.5)), [out])[0]
    want = torch.zeros_like(got)
    for s, hw in ((0.5, (8, 12)), (1.0, (16, 24)), (1.5, (24, 36))):
        xs = x if s == 1.0 else F.interpolate(x, size=hw, mode="bilinear", align_corners=False)
        up = F.interpolate(_plain(model, xs), size=out, mode="bilinear", align_corners=False)
        want += up[0].softmax(dim=0) / 3
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.sum(dim=0), torch.ones(out), rtol=0, atol=1e-5)


def test_multi_scale_with_slide_and_flip_on_a_palette_model_keeps_the_painted_classes() -> None:
    """Flat colour regions larger than any resampling blur are classified the same by every view."""
    model = PaletteModel().eval()
    x = torch.zeros(1, 3, 32, 48)
    x[..., :, :24] = model.conv.weight[3, :, 0, 0].view(3, 1, 1) / 2  # mu_3 (class 3's colour)
    x[..., :, 24:] = model.conv.weight[10, :, 0, 0].view(3, 1, 1) / 2
    opts = InferenceOptions(slide=True, window=(16, 16), scales=(0.75, 1.0, 1.25), flip=True)
    pred = predict_train_ids(model, x, opts, [(32, 48)])[0]
    assert (pred[:, :20] == 3).all() and (pred[:, 28:] == 10).all()


def test_per_image_output_sizes() -> None:
    model = PaletteModel().eval()
    x = _batch(b=3, h=8, w=12)
    sizes = [(8, 12), (16, 24), (5, 7)]
    got = infer(model, x, InferenceOptions(), sizes)
    assert [tuple(s.shape[-2:]) for s in got] == sizes
    for b, size in enumerate(sizes):
        want = F.interpolate(_plain(model, x[b : b + 1]), size=size, mode="bilinear", align_corners=False)[0]
        torch.testing.assert_close(got[b], want, rtol=0, atol=1e-6)


def test_plain_tensor_and_segoutput_models_agree() -> None:
    x = _batch()
    a = infer(PaletteModel(plain=True).eval(), x, InferenceOptions(flip=True))
    b = infer(PaletteModel(plain=False).eval(), x, InferenceOptions(flip=True))
    assert all(torch.equal(p, q) for p, q in zip(a, b))


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        (dict(slide=True), "--slide"),
        (dict(window=(0, 16)), "--window"),
        (dict(overlap=1.0), "--overlap"),
        (dict(overlap=-0.1), "--overlap"),
        (dict(scales=()), "--scales"),
        (dict(scales=(1.0, -2.0)), "--scales"),
        (dict(scales=(1.0, 1.0)), "--scales"),
        (dict(size=(0, 4)), "--size"),
        (dict(resize="cubic"), "--resize"),
    ],
)
def test_bad_options_name_the_flag(kwargs: dict, flag: str) -> None:
    with pytest.raises(HrsegError, match=flag):
        InferenceOptions(**kwargs).validate()


def test_options_describe_what_the_scores_are() -> None:
    assert InferenceOptions().to_dict()["scores"] == "logits"
    assert InferenceOptions(flip=True).views == 2
    assert InferenceOptions(scales=(0.5, 1.0), flip=True).to_dict()["scores"] == "mean softmax probabilities"


def test_autocast_views_return_float32_scores_close_to_full_precision() -> None:
    """The AMP path (bf16 autocast; CPU here, CUDA in use) casts the logits back before averaging."""
    model = ContextModel().eval()
    x = _batch()
    opts = InferenceOptions(slide=True, window=(16, 16), flip=True)
    full = torch.stack(infer(model, x, opts))
    half = torch.stack(infer(model, x, opts, amp_dtype=torch.bfloat16))
    assert half.dtype == torch.float32
    assert (half - full).abs().max() < 0.05
    assert (half.argmax(1) == full.argmax(1)).float().mean() > 0.95
