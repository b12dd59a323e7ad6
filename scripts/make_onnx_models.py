#!/usr/bin/env python3
"""Make the bundled ONNX models from the bundled TFLite ones, offline and reproducibly (no
training, no download, no random step). Needs ``pip install 'edge[onnx-tools]'`` (tf2onnx and
onnx, with onnxruntime and TensorFlow, which tf2onnx imports).

tf2onnx converts each int8 ``model.tflite`` (uint8 input and output); ``onnx_graph.py`` then
gives the graph float input and output with a batch of 1:

- ``models/shapes-detector-onnx/model.onnx``: the detector with its weights dequantized (the
  int8 model's own weights in float32, float activations), input NCHW ``[1,3,192,192]`` float
  0..1 as PyTorch and ultralytics exports take, output the float ``[1,7,576]`` YOLOv8 layout.
- ``models/shapes-detector-onnx/model-int8.onnx``: the detector with the TFLite model's own
  quantization kept as QuantizeLinear/DequantizeLinear pairs (a QDQ int8 model, which
  onnxruntime runs with int8 kernels), with the same float I/O.
- ``models/shapes-classifier-onnx/model.onnx``: the classifier dequantized like the float
  detector, keeping its NHWC ``[1,64,64,3]`` input.

Each directory gets the TFLite model's labels and pre- and postprocessing, and figures measured
through edge's Engine against the TFLite model on the held-out frames that model was measured
on; they go into its manifest and its section of ``models/README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_shapes_classifier as classifier_script
import make_shapes_detector as detector_script
from model_readme import size_text, update_section
from onnx_graph import OPSET, convert
from shapes_data import seconds

from edge.bench import bench
from edge.engine import Engine
from edge.quantize.metrics import Boxes, match
from edge.runtime import RuntimeOptions

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
FLOAT, INT8 = "model.onnx", "model-int8.onnx"


def model_dir(source: Path, out: Path, models: dict[str, Any], description: str) -> None:
    """``out`` with ``models`` (file name → graph; the first is the directory's default), the
    source's labels, and its manifest retold."""
    import onnx

    out.mkdir(parents=True, exist_ok=True)
    for name, model in models.items():
        model.producer_name, model.producer_version = "edge scripts/make_onnx_models.py", ""
        onnx.save(model, str(out / name))
    shutil.copyfile(source / "labels.txt", out / "labels.txt")
    manifest = json.loads((source / "manifest.json").read_text(encoding="utf-8"))
    manifest.update(
        name=out.name,
        model=next(iter(models)),
        description=description,
        made_by="scripts/make_onnx_models.py",
        metrics={},
    )
    write_manifest(out, manifest)


def write_manifest(d: Path, manifest: dict[str, Any]) -> None:
    (d / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def add_metrics(d: Path, metrics: dict[str, Any]) -> None:
    manifest = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    manifest["metrics"] = metrics
    write_manifest(d, manifest)


# -- measuring -------------------------------------------------------------------------------
def detections(model: Path, images: list[np.ndarray], delegate: str = "xnnpack") -> list[Boxes]:
    """Each image's detections at the model's shipped threshold."""
    engine = Engine.load(model, RuntimeOptions(threads=1, delegate=delegate))
    return [Boxes.of(engine.infer(image).detections) for image in images]


def agreement(reference: list[Boxes], candidate: list[Boxes]) -> dict[str, float]:
    """How closely ``candidate`` reproduces ``reference``'s detections, frame by frame: the
    share of frames with the same labels, of reference boxes matched (same class, IoU ≥ 0.5),
    and the matched boxes' IoU."""
    same = sum(
        sorted(a.classes.tolist()) == sorted(b.classes.tolist())
        for a, b in zip(reference, candidate, strict=True)
    )
    ious = [iou for r, c in zip(reference, candidate, strict=True) for _, _, iou in match(c, r)]
    return {
        "same_labels": round(same / len(reference), 4),
        "box_recall": round(len(ious) / sum(len(r) for r in reference), 4),
        "median_iou": round(float(np.median(ious)), 4),
        "p5_iou": round(float(np.percentile(ious, 5)), 4),
    }


def speeds(models: dict[str, Path], rounds: int = 5) -> dict[str, dict[int, float]]:
    """Invoke p50 (ms) per model and thread count (1, 2): the median over ``rounds`` rounds of
    ``edge.bench``, each round timing every model in turn, so that all of them see the same
    load on this shared machine."""
    got: dict[tuple[str, int], list[float]] = {}
    for _ in range(rounds):
        for key, path in models.items():
            for threads in (1, 2):
                report = bench(path, RuntimeOptions(threads=threads), runs=200, warmup=20)
                got.setdefault((key, threads), []).append(report.p50_ms)
    out: dict[str, dict[int, float]] = {}
    for (key, threads), values in got.items():
        out.setdefault(key, {})[threads] = round(float(np.median(values)), 3)
    return out


def measure_detector(tflite: Path, onnx_dir: Path) -> dict[str, Any]:
    """mAP@0.5 of the TFLite model and both ONNX ones on the TFLite model's held-out frames,
    their agreement with the TFLite model at the shipped threshold (and, for scale, that of
    TFLite's builtin kernels with XNNPACK), and invoke p50."""
    apart = detector_script.frames(1000, 500)
    touching = detector_script.frames(3000, 500, touching=True)
    models = {"tflite": tflite, "onnx": onnx_dir / FLOAT, "onnx_int8": onnx_dir / INT8}
    out: dict[str, Any] = {"holdout_images": len(apart), "touching_holdout_images": len(touching)}
    images = [image for image, _ in apart + touching]
    reference = detections(tflite, images)
    out["vs_tflite_builtin"] = agreement(reference, detections(tflite, images, "cpu"))
    for key, path in models.items():
        out[f"map50_{key}"] = round(detector_script.evaluate(path, apart)[0], 4)
        out[f"map50_touching_{key}"] = round(detector_script.evaluate(path, touching)[0], 4)
        if key != "tflite":
            out[f"vs_tflite_{key}"] = agreement(reference, detections(path, images))
    out["int8_convs"] = int8_convs(onnx_dir / INT8)
    for key, p50 in speeds(models).items():
        out[f"invoke_p50_ms_{key}"] = p50
    return out


def int8_convs(path: Path) -> dict[str, int]:
    """How many of the model's convolutions onnxruntime's graph optimizations turn into int8
    ``QLinearConv`` kernels (the rest run in float between the QDQ nodes)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]
    return {
        "qlinear": ops.count("QLinearConv"),
        "all": ops.count("QLinearConv") + ops.count("Conv"),
    }


def measure_classifier(tflite: Path, onnx_dir: Path) -> dict[str, Any]:
    """Top-1 of the TFLite and ONNX classifiers on the TFLite model's held-out frames, how
    often they agree, and invoke p50."""
    images, labels = classifier_script.frames(1000, 1000)
    models = {"tflite": tflite, "onnx": onnx_dir / FLOAT}
    top: dict[str, np.ndarray] = {}
    for key, path in models.items():
        engine = Engine.load(path, RuntimeOptions(threads=1))
        top[key] = np.array([engine.infer(image).classes[0].class_id for image in images])
    out: dict[str, Any] = {"holdout_images": len(images)}
    for key, ids in top.items():
        out[f"top1_{key}"] = round(float(np.mean(ids == np.array(labels))), 4)
    out["top1_agreement"] = round(float(np.mean(top["tflite"] == top["onnx"])), 4)
    for key, p50 in speeds(models).items():
        out[f"invoke_p50_ms_{key}"] = p50
    return out


# -- main ------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(MODELS), help="where the model directories go")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.basicConfig(level=logging.WARNING)
    t0 = time.perf_counter()
    out = Path(args.out)
    det_src, cls_src = MODELS / "shapes-detector", MODELS / "shapes-classifier"
    det, cls = out / "shapes-detector-onnx", out / "shapes-classifier-onnx"
    model_dir(
        det_src,
        det,
        {
            FLOAT: convert(det_src / "model.tflite", "nchw", dequantize=True),
            INT8: convert(det_src / "model.tflite", "nchw", dequantize=False),
        },
        "The bundled shapes-detector converted to ONNX: model.onnx with its int8 weights "
        "dequantized to float32, model-int8.onnx with its int8 quantization as QDQ nodes; NCHW "
        "float input, YOLOv8-layout output. Synthetic demo shapes only.",
    )
    model_dir(
        cls_src,
        cls,
        {FLOAT: convert(cls_src / "model.tflite", "nhwc", dequantize=True)},
        "The bundled shapes-classifier converted to ONNX with its int8 weights dequantized to "
        "float32; NHWC float input, softmax output. Synthetic demo shapes only.",
    )
    det_metrics = measure_detector(det_src / "model.tflite", det)
    cls_metrics = measure_classifier(cls_src / "model.tflite", cls)
    measured = "x86_64 build machine, 2 shared cores (edge.bench, median of 5 rounds)"
    add_metrics(det, {**det_metrics, "measured_on": measured})
    add_metrics(cls, {**cls_metrics, "measured_on": measured})
    print(json.dumps({"detector": det_metrics, "classifier": cls_metrics}, indent=2))
    if out.resolve() == MODELS.resolve():
        readme(det, cls, det_metrics, cls_metrics, time.perf_counter() - t0)
    return 0


def readme(det: Path, cls: Path, d: dict[str, Any], c: dict[str, Any], took: float) -> None:
    """The two sections of models/README.md, from what was measured."""
    f, q, b = d["vs_tflite_onnx"], d["vs_tflite_onnx_int8"], d["vs_tflite_builtin"]
    lat = {k: d[f"invoke_p50_ms_{k}"] for k in ("tflite", "onnx", "onnx_int8")}
    frames = f"{d['holdout_images']} + {d['touching_holdout_images']}"
    fused, convs = d["int8_convs"]["qlinear"], d["int8_convs"]["all"]

    def agree(a: dict[str, float]) -> str:
        return (
            f"same label set on {100 * a['same_labels']:.1f} % of frames, "
            f"{100 * a['box_recall']:.1f} % of the TFLite boxes matched (same class, IoU ≥ 0.5) "
            f"with median IoU {a['median_iou']:.3f} (5th percentile {a['p5_iou']:.3f})"
        )

    update_section(
        det.name,
        reflow(f"""## shapes-detector-onnx

Made by `scripts/make_onnx_models.py` (`pip install 'edge[onnx-tools]'`; no training and no
download; about {seconds(took)} for the three ONNX models with their measurements) from the
bundled `shapes-detector/model.tflite`, by tf2onnx (opset {OPSET}) and a rewrite of its graph's
input and output.

- **`model.onnx`** ({size_text((det / FLOAT).stat().st_size)}, the directory's default): the
  TFLite model's int8 weights dequantized to float32, float activations. Input NCHW
  `[1,3,192,192]` float32 (RGB 0..1, letterboxed with pad 114, as the manifest says), output
  `[1,7,576]` float32 in the YOLOv8 layout, decoded as for the TFLite model.
- **`model-int8.onnx`** ({size_text((det / INT8).stat().st_size)}): the TFLite model's own int8
  quantization kept as QuantizeLinear/DequantizeLinear nodes (QDQ), with the same float input
  and output. onnxruntime fuses {fused} of its {convs} convolutions into int8 `QLinearConv`
  kernels and runs the rest in float between the QDQ nodes, which makes it slower here than
  the float model. Use it by path:
  `edge infer models/shapes-detector-onnx/model-int8.onnx frame.png`.
- **Same answers as the TFLite model** (edge's Engine at the shipped threshold, on the {frames}
  held-out frames, shapes apart and touching, that the TFLite model was measured on): float
  ONNX: {agree(f)}; int8 ONNX: {agree(q)}. For scale: the TFLite model run with TFLite's
  builtin kernels instead of XNNPACK: {agree(b)}. One step of the int8 output is 0.77 px of
  the 192-px input, so the float model and TFLite's builtin kernels, which round otherwise,
  move small boxes by a few percent of IoU; the int8 ONNX model computes on the TFLite model's
  own int8 grid from the same quantized input, and its boxes are the TFLite ones.
- **How well it does** (mAP@0.5, shapes apart / touching): TFLite int8
  {d["map50_tflite"]:.3f} / {d["map50_touching_tflite"]:.3f}, ONNX float
  {d["map50_onnx"]:.3f} / {d["map50_touching_onnx"]:.3f}, ONNX int8
  {d["map50_onnx_int8"]:.3f} / {d["map50_touching_onnx_int8"]:.3f}.
- **Speed** (invoke p50 in ms at 1 / 2 threads on the x86_64 machine that built it, 2 cores
  shared with other work, `edge.bench`, median of 5 interleaved rounds): TFLite int8 (LiteRT,
  XNNPACK)
  {lat["tflite"][1]:.2f} / {lat["tflite"][2]:.2f}; onnxruntime (CPU) float
  {lat["onnx"][1]:.2f} / {lat["onnx"][2]:.2f}, int8 {lat["onnx_int8"][1]:.2f} /
  {lat["onnx_int8"][2]:.2f}.
"""),
    )
    lat_c = {k: c[f"invoke_p50_ms_{k}"] for k in ("tflite", "onnx")}
    update_section(
        cls.name,
        reflow(f"""## shapes-classifier-onnx

Made by `scripts/make_onnx_models.py` with the detector above, from the bundled
`shapes-classifier/model.tflite`.

- **`model.onnx`** ({size_text((cls / FLOAT).stat().st_size)}): the int8 weights dequantized
  to float32, float activations; input NHWC `[1,64,64,3]` float32 (RGB 0..1, stretched),
  output `[1,12]` softmax probabilities.
- **Same answers as the TFLite model**: the same top-1 class on
  **{100 * c["top1_agreement"]:.1f} %** of the TFLite model's {c["holdout_images"]} held-out
  frames; top-1 accuracy {100 * c["top1_onnx"]:.1f} % (TFLite int8
  {100 * c["top1_tflite"]:.1f} %).
- **Speed** (invoke p50 in ms at 1 / 2 threads, as above): TFLite int8
  {lat_c["tflite"][1]:.3f} / {lat_c["tflite"][2]:.3f}, ONNX float {lat_c["onnx"][1]:.3f} /
  {lat_c["onnx"][2]:.3f}.
"""),
    )


def reflow(text: str, width: int = 96) -> str:
    """Markdown paragraphs and bullets wrapped again (the figures put in break the lines)."""
    blocks = []
    for block in text.strip().split("\n\n"):
        items = [" ".join(i.split()) for i in re.split(r"\n(?=- )", block)]
        blocks.append(
            "\n".join(
                textwrap.fill(
                    i,
                    width,
                    subsequent_indent="  " if i.startswith("- ") else "",
                    break_long_words=False,
                    break_on_hyphens=False,
                )
                for i in items
            )
        )
    return "\n\n".join(blocks) + "\n"


if __name__ == "__main__":
    sys.exit(main())
