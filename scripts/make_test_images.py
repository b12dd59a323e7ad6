"""Draw the still images the tests use, with their ground truth.

Writes ``tests/data/shapes/``: one PNG per classifier class (a single centred shape, named
``<colour>_<shape>.png``), a few multi-shape scenes as PNG and JPEG (``scene_N.png|jpg``) of
varied sizes, a corrupt file, and ``truth.json`` with every image's label or boxes (x0, y0, x1,
y1 normalized to the image). Deterministic: the same command gives the same files.

    python scripts/make_test_images.py
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from edge.scene import COLOURS, SHAPES, Shape, background, random_shapes, render

SIZES = [(640, 480), (480, 640), (320, 240), (800, 800)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="tests/data/shapes")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20261128)
    truth: dict[str, object] = {}
    for kind in SHAPES:
        for colour in COLOURS:
            canvas = background(rng, 160, 120)
            shape = Shape(
                kind,
                colour,
                80 + rng.uniform(-10, 10),
                60 + rng.uniform(-8, 8),
                float(rng.uniform(35, 55)),
                float(rng.uniform(-15, 15)),
            )
            name = f"{colour}_{kind}.png"
            cv2.imwrite(str(out / name), render([shape], canvas))
            truth[name] = {"label": f"{colour} {kind}"}
    for i, (w, h) in enumerate(SIZES):
        short = min(w, h)
        shapes = random_shapes(rng, w, h, 4, short * 0.14, short * 0.3)
        img = render(shapes, background(rng, w, h))
        boxes = [
            {
                "label": s.kind,
                "colour": s.colour,
                "box": [
                    round(v, 4)
                    for v in (s.box()[0] / w, s.box()[1] / h, s.box()[2] / w, s.box()[3] / h)
                ],
            }
            for s in shapes
        ]
        # Noisy backgrounds make big PNGs: PNG only for the small scene, JPEG for all.
        for ext in ("png", "jpg") if w * h <= 320 * 240 else ("jpg",):
            name = f"scene_{i}.{ext}"
            params = [cv2.IMWRITE_JPEG_QUALITY, 90] if ext == "jpg" else []
            cv2.imwrite(str(out / name), img, params)
            truth[name] = {"objects": boxes, "width": w, "height": h}
    # A JPEG cut in half: decoders refuse it (used for "unreadable file" tests).
    data = (out / "scene_0.jpg").read_bytes()
    (out / "corrupt.jpg").write_bytes(data[:200])
    (out / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(truth)} images and truth.json to {out}")


if __name__ == "__main__":
    main()
