"""Segment your own images from Python: load a run or an exported model, predict files, or one array.

    python examples/predict_own_images.py MODEL IMAGE [IMAGE ...] --out pred [--picture input-pred-overlay.png]

MODEL is a run folder, a checkpoint file or a model written by ``hrseg export``.
``predict`` writes the same files and index as ``hrseg predict``; ``segment_image``
returns the trainId map of one RGB array (e.g. in a notebook). ``--picture``
draws the first image, its prediction and the overlay side by side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hrseg.data.labels import CLASS_NAMES, colorize
from hrseg.data.png import write_png
from hrseg.export import load_model
from hrseg.inference import predict, read_image, segment_image
from hrseg.visualization.panels import Tile, blend, grid


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("images", nargs="+")
    ap.add_argument("--out", type=Path, default=Path("pred"))
    ap.add_argument("--picture", type=Path, default=None)
    ap.add_argument("--tile-width", type=int, default=384)
    args = ap.parse_args()
    torch.set_num_threads(1)

    # a run folder (its final checkpoint), a checkpoint file or an exported model: the segmenter and its working size
    model = load_model(args.model, device="cpu")
    print(f"{model.arch} (width {model.width}), iteration {model.iteration}, working size {model.size}")

    # files, folders, globs and videos -> labelIds/, colour/, overlay/ and predictions.json under --out
    options = model.options()  # e.g. model.options(flip=True, scales=(0.75, 1.0, 1.25)) for test-time averaging
    result = predict(model.segmenter, args.images, args.out, options, device="cpu", show_progress=False)
    print(f"{result.images} image(s) in {result.seconds:.1f} s, {len(result.skipped)} skipped; index {result.index}")

    # one array in, one trainId map out, at the array's own size
    rgb = read_image(Path(args.images[0]))
    ids = segment_image(model.segmenter, rgb, options)
    present = [CLASS_NAMES[c] for c in sorted(set(ids.flatten().tolist())) if c < len(CLASS_NAMES)]
    print(f"{args.images[0]}: {ids.shape[1]}x{ids.shape[0]}, classes {', '.join(present)}")
    if args.picture is not None:
        colours = colorize(ids)
        tiles = [Tile("input", rgb), Tile("prediction", colours), Tile("overlay", blend(rgb, colours, 0.5))]
        write_png(args.picture, grid(tiles, columns=3, tile_width=args.tile_width))
        print(f"wrote {args.picture}")


if __name__ == "__main__":
    main()
