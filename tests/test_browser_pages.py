"""The pages hrseg writes, opened in headless Chromium: every image loads, no console error, sorting works.

Chromium comes from Debian's ``chromium`` package (``.ci/run`` installs it).
Without it these tests skip locally, but fail where ``HRSEG_REQUIRE_BROWSER``
is set (CI sets it), so CI never passes with them silently skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import pytest

from hrseg.inference import outputs
from hrseg.reporting import build_report
from hrseg.training.config import override
from hrseg.training.presets import quick_config
from hrseg.training.trainer import train
from hrseg.visualization.render import VisualizeOptions, visualize_predictions, visualize_weights
from hrseg.visualization.report_page import GalleryLink, write_report_page
from tests.browser import Browser, find_chromium
from tests.data_fixtures import cached_synthetic_data
from tests.test_inference_video import write_overlay_video as write_test_video
from tests.test_report_page import fake_runs

TINY = {
    "model.width": 0.0625, "weighting.width": 0.125, "data.batch_size": 2, "data.crop": (64, 32),
    "optim.iters": 3, "run.device": "cpu", "run.progress": False, "data.target_images": 4,
}

IMAGES_LOADED = "Array.from(document.images).map(i => [i.getAttribute('src').slice(0, 40), i.complete, i.naturalWidth])"
ORDER = "Array.from(document.querySelectorAll('figure.item')).filter(f => !f.hidden).map(f => f.dataset.name)"


def _select(browser: Browser, element: str, value: str) -> None:
    browser.eval(f"(() => {{ const e = document.getElementById({element!r}); e.value = {value!r}; "
                 "e.dispatchEvent(new Event('change')); })()")


def _type(browser: Browser, element: str, value: str) -> None:
    browser.eval(f"(() => {{ const e = document.getElementById({element!r}); e.value = {value!r}; "
                 "e.dispatchEvent(new Event('input')); })()")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    exe = find_chromium()
    if exe is None:
        if os.environ.get("HRSEG_REQUIRE_BROWSER"):
            pytest.fail("HRSEG_REQUIRE_BROWSER is set but no chromium was found (apt-get install chromium)")
        pytest.skip("no chromium on PATH (apt-get install chromium); CI installs it and runs these tests")
    with Browser(exe) as b:
        yield b


@pytest.fixture(scope="module")
def w19_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = cached_synthetic_data(tmp_path_factory)
    run = tmp_path_factory.mktemp("browser-runs") / "w19"
    train(override(quick_config("w19", str(data), str(run)), TINY))
    return run


def assert_page_sound(browser: Browser, expected_images: int) -> None:
    images = browser.eval(IMAGES_LOADED)
    assert len(images) == expected_images
    assert all(complete and width > 0 for _, complete, width in images), images
    assert browser.errors == []
    assert browser.eval("document.documentElement.outerHTML.includes('http://') || "
                        "Array.from(document.querySelectorAll('[src],[href]')).some(e => "
                        "/^https?:/.test(e.getAttribute('src') || e.getAttribute('href')))") is False


def test_weights_gallery_in_a_browser(browser: Browser, w19_run: Path, tmp_path: Path) -> None:
    gallery = visualize_weights(w19_run, VisualizeOptions(out=str(tmp_path / "g"), num=5, device="cpu",
                                                          show_progress=False))
    browser.open(gallery.index.resolve().as_uri())
    assert_page_sound(browser, 5)
    names = browser.eval(ORDER)
    assert names == sorted(names)  # by name first

    by_auc = {it.name: it.numbers["auc"] for it in gallery.items}
    _select(browser, "sort", "auc:desc")
    order = browser.eval(ORDER)
    assert order == sorted(by_auc, key=lambda n: -by_auc[n]) and order != names
    _select(browser, "sort", "auc:asc")
    assert browser.eval(ORDER) == list(reversed(order))

    # filter: only images whose AUC is at least the median stay visible
    limit = sorted(by_auc.values())[2]
    _select(browser, "filter-key", "auc")
    _type(browser, "filter-value", repr(limit))
    shown = browser.eval(ORDER)
    assert sorted(shown) == sorted(n for n, v in by_auc.items() if v >= limit) and len(shown) < 5
    assert browser.eval("document.getElementById('count').textContent") == f"{len(shown)} of 5 shown"
    heights = browser.eval("Array.from(document.querySelectorAll('figure.item')).map(f => [f.hidden, f.offsetHeight])")
    assert all((height == 0) == hidden for hidden, height in heights)  # filtered panels are really not drawn
    _type(browser, "filter-value", "")

    # keyboard: j twice lands on the second panel in the current order, k goes back
    current = "document.querySelector('figure.current') && document.querySelector('figure.current').dataset.name"
    browser.key("j")
    browser.key("j")
    assert browser.eval(current) == browser.eval(ORDER)[1]
    browser.key("k")
    assert browser.eval(current) == browser.eval(ORDER)[0]
    # panels are shown at the page's full width (less its margins), not half of it
    widths = browser.eval("[document.querySelector('figure img').getBoundingClientRect().width, "
                          "document.documentElement.clientWidth]")
    assert widths[0] > 0.85 * widths[1]
    assert browser.errors == []
    browser.screenshot(tmp_path / "gallery.png")
    assert (tmp_path / "gallery.png").stat().st_size > 10_000


def test_predictions_gallery_in_a_browser(browser: Browser, w19_run: Path, tmp_path: Path) -> None:
    gallery = visualize_predictions(w19_run, VisualizeOptions(out=str(tmp_path / "p"), num=4, device="cpu",
                                                              show_progress=False))
    browser.open(gallery.index.resolve().as_uri())
    assert_page_sound(browser, 4)
    by_miou = {it.name: it.numbers["miou"] for it in gallery.items}
    _select(browser, "sort", "miou:asc")
    assert browser.eval(ORDER) == sorted(by_miou, key=lambda n: (by_miou[n], n))
    assert browser.errors == []


def test_a_missing_image_is_caught(browser: Browser, w19_run: Path, tmp_path: Path) -> None:
    """The check itself: a gallery with a deleted panel fails it."""
    gallery = visualize_predictions(w19_run, VisualizeOptions(out=str(tmp_path / "p"), num=2, device="cpu",
                                                              show_progress=False))
    gallery.panels[0].unlink()
    browser.open(gallery.index.resolve().as_uri())
    with pytest.raises(AssertionError):
        assert_page_sound(browser, 2)


def test_report_page_in_a_browser(browser: Browser, w19_run: Path, tmp_path: Path) -> None:
    gallery = visualize_weights(w19_run, VisualizeOptions(out=str(tmp_path / "weights"), num=2, device="cpu",
                                                          show_progress=False))
    report = build_report(fake_runs(tmp_path / "runs", val_every=5))
    page = write_report_page(report, tmp_path / "report" / "report.html",
                             [GalleryLink("weight maps", gallery.index.parent)])
    browser.open(page.resolve().as_uri())
    assert_page_sound(browser, 2)  # the per-class bars and the curves
    links = browser.eval("Array.from(document.querySelectorAll('a')).map(a => a.href)")
    assert links == [gallery.index.resolve().as_uri()]  # the relative link lands on the gallery
    sizes = browser.eval("Array.from(document.images).map(i => [i.naturalWidth, i.getBoundingClientRect().width])")
    assert all(natural >= 1000 and shown > 900 for natural, shown in sizes)
    assert browser.eval("document.querySelectorAll('table.results tbody tr').length") == 2
    browser.open(links[0])
    assert_page_sound(browser, 2)


def test_overlay_video_plays_in_the_browser(browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The H.264 overlay video decodes in Chromium; the MPEG-4 Part 2 fallback does not (why H.264 is the default)."""
    h264 = write_test_video(tmp_path / "h264", frames=10, size=(96, 64))
    monkeypatch.setattr(outputs, "h264_encoder", lambda: None)
    mpeg4 = write_test_video(tmp_path / "mpeg4", frames=10, size=(96, 64))
    page = tmp_path / "videos.html"
    page.write_text(f'<!doctype html><video id="a" muted src="{h264.relative_to(tmp_path).as_posix()}"></video>'
                    f'<video id="b" muted src="{mpeg4.relative_to(tmp_path).as_posix()}"></video>')
    browser.open(page.as_uri())
    state = ("new Promise(done => { const t0 = Date.now(); (function poll() { const a = a_(), b = b_(); "
             "if ((a.readyState >= 2 || a.error) && (b.readyState >= 2 || b.error) || Date.now() - t0 > 10000) "
             "done([a.readyState, a.videoWidth, a.error && a.error.code, b.readyState, b.error && b.error.code]); "
             "else setTimeout(poll, 50); })(); })")
    state = state.replace("a_()", "document.getElementById('a')").replace("b_()", "document.getElementById('b')")
    a_ready, a_width, a_error, b_ready, b_error = browser.eval(state)
    assert (a_ready >= 2, a_width, a_error) == (True, 96, None)
    assert b_error == 4  # MEDIA_ERR_SRC_NOT_SUPPORTED
