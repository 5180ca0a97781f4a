"""Regenerate the documentation's screenshots of the pages hrseg writes (run by hand, needs chromium).

    python docs/images/screenshots.py --quickstart hrseg-quickstart --work /tmp/hrseg-shots

From a finished quick start (``hrseg quickstart --out hrseg-quickstart``):

- ``report-page.png``: its ``report.html``, the whole page;
- ``weights-example.png``: the first panel of its W^19 weight-map gallery (the README's picture);
- ``gallery-1280x720.png`` and ``weights-panel-1280x720.jpg`` (JPEG keeps the repository small):
  the quick start's W^19 model drawn on procedural scenes generated at 1280x720 (the GTAV size), as the gallery page shows
  it in a 1280-pixel-wide browser, and the panel file itself. The model was trained on the
  quick start's small scenes, so its maps at this size show the layout, not a result.

The browser is driven by ``tests/browser.py`` (the page tests' DevTools driver).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.browser import Browser, find_chromium  # noqa: E402

HERE = Path(__file__).resolve().parent


def hrseg(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "hrseg", *args], check=True, cwd=ROOT)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quickstart", type=Path, default=Path("hrseg-quickstart"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/hrseg-shots"))
    args = ap.parse_args()
    qs, work = args.quickstart.resolve(), args.work.resolve()
    exe = find_chromium()
    if exe is None:
        sys.exit("no chromium on PATH (apt-get install chromium)")

    data = work / "data-1280x720"
    hrseg("prepare", "synthetic", "--out", str(data), "--source-scenes", "4", "--target-scenes", "2",
          "--val-scenes", "2", "--scene-size", "1280x640", "--size", "1280x640")
    gallery = work / "weights-1280x720"
    if gallery.exists():
        shutil.rmtree(gallery)
    hrseg("visualize", "weights", "--run", str(qs / "runs" / "w19-s0"), "--data", str(data), "--out", str(gallery),
          "--num", "2", "--no-progress")

    panels = sorted(gallery.glob("*.png"))
    panel = cv2.imread(str(panels[0]))
    cv2.imwrite(str(HERE / "weights-panel-1280x720.jpg"), panel, [cv2.IMWRITE_JPEG_QUALITY, 88])
    first = sorted((qs / "weights" / "w19").glob("*.png"))[0]
    shutil.copyfile(first, HERE / "weights-example.png")

    with Browser(exe, width=1280, height=1100) as browser:
        browser.open((gallery / "index.html").as_uri())
        assert browser.errors == [], browser.errors
        browser.screenshot(HERE / "gallery-1280x720.png", full_page=False)
        browser.open((qs / "report.html").as_uri())
        assert browser.errors == [], browser.errors
        browser.screenshot(HERE / "report-page.png")
    for name in ("gallery-1280x720.png", "report-page.png", "weights-panel-1280x720.jpg", "weights-example.png"):
        image = cv2.imread(str(HERE / name))
        print(f"{name}: {image.shape[1]}x{image.shape[0]}, {(HERE / name).stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main()
