"""Render the sample clip of moving shapes and its per-frame ground truth.

Usage: python scripts/make_sample_clip.py [--out samples/shapes.mp4] [--seconds 12] [--fps 10]
[--seed 0] [--count 4] [--width 640] [--height 480]

Frames come from edge.scene.MovingScene, frame i showing the scene at i / fps seconds. The clip is
MPEG-4 Part 2 ('mp4v'), which opencv-python's bundled FFmpeg both writes and reads; MJPG would
be over 3 MB for the same clip because the textured background compresses poorly frame by
frame. Next to the clip, a JSON file of the same name holds each frame's shapes with boxes
normalized to the frame (x0, y0, x1, y1, clipped to 0..1). Same arguments → same truth, and the
same bytes with the same OpenCV build.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from edge.scene import MovingScene


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("samples/shapes.mp4"))
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=4, help="shapes in the scene")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args(argv)

    # numpy's generator: the clip and its truth were made with it (see MovingScene's draws).
    scene = MovingScene(
        args.width, args.height, count=args.count, seed=args.seed, draws=np.random.default_rng
    )
    frames = round(args.seconds * args.fps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(
        str(args.out),
        cv2.CAP_FFMPEG,
        cv2.VideoWriter.fourcc(*"mp4v"),
        args.fps,
        (args.width, args.height),
    )
    if not writer.isOpened():
        print(f"error: OpenCV cannot write {args.out} with the mp4v codec", file=sys.stderr)
        return 1
    truth = []
    try:
        for i in range(frames):
            image, shapes = scene.frame(i / args.fps)
            writer.write(image)
            objects = []
            for s in shapes:
                x0, y0, x1, y1 = s.box()
                box = [
                    round(min(max(v / d, 0.0), 1.0), 5)
                    for v, d in (
                        (x0, args.width),
                        (y0, args.height),
                        (x1, args.width),
                        (y1, args.height),
                    )
                ]
                objects.append({"label": s.kind, "colour": s.colour, "box": box})
            truth.append({"index": i, "objects": objects})
    finally:
        writer.release()

    meta = {
        "clip": args.out.name,
        "generator": "edge.scene.MovingScene",
        "width": args.width,
        "height": args.height,
        "fps": args.fps,
        "seed": args.seed,
        "count": args.count,
        "box": "x0, y0, x1, y1 normalized to the frame, clipped to 0..1",
        "frames": [],
    }
    truth_path = args.out.with_suffix(".json")
    # One frame per line keeps the file readable and its diffs small.
    head = json.dumps(meta, indent=1)[:-2]  # everything up to the closing "]\n}"
    body = ",\n".join("  " + json.dumps(f, separators=(",", ":")) for f in truth)
    truth_path.write_text(head.replace('"frames": []', '"frames": [\n') + body + "\n ]\n}\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {frames} frames) and {truth_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
