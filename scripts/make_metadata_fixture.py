#!/usr/bin/env python3
"""Build the TFLite Metadata test fixtures in ``tests/data/metadata/`` in three steps, run in
order; the first two need separate environments because the official metadata writer
(``tflite-support``) and current TensorFlow cannot share one (tflite-support 0.4.4 pins
protobuf<4, TensorFlow 2.16+ needs a newer one):

1. ``python scripts/make_metadata_fixture.py model``, with TensorFlow installed, writes
   ``plain.tflite``: a 32×32×3 uint8 image → 8×8 average pool → dense → softmax over 4 classes,
   full-integer quantized with uint8 input and output (the shape Model Maker exports), random
   weights from a fixed seed. It carries no metadata.
2. ``python scripts/make_metadata_fixture.py attach``, with ``pip install tflite-support==0.4.4``
   (Python ≤ 3.11), writes two copies of it with metadata packed by tflite-support's own
   ``MetadataPopulator``, so the bytes are what TFLite Model Maker and the TF Hub tools emit:

   - ``classifier_metadata.tflite``: ``metadata_writers.image_classifier.MetadataWriter``
     (the writer Model Maker uses) with name, version, description, mean/std 127.5 and
     ``labels.txt`` as TENSOR_AXIS_LABELS on the output tensor;
   - ``value_labels.tflite``: metadata built with the low-level schema classes, no
     normalization, and a ``labelmap.txt`` in ``id label`` form with gaps, attached to the
     output as TENSOR_VALUE_LABELS (how detection models attach their label map).
3. ``python scripts/make_metadata_fixture.py offset``, with ai-edge-litert installed (for its
   generated schema classes), writes ``buffer_offset.tflite``: ``classifier_metadata.tflite``
   re-packed with every buffer's bytes moved after the flatbuffer and referenced by
   ``Buffer.offset``/``Buffer.size`` (from the start of the file, 16-byte aligned), the layout
   TensorFlow's converter uses for models over 2 GB, with the packed-files archive still last.

The model is random, so its scores mean nothing; the fixtures test the reading of metadata only.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "metadata"
SIZE = 32
LABELS = ["background", "circle", "traffic light", "square"]
ID_LABELS = "0 person\n2 car\n3 traffic light\n"
MEAN = STD = 127.5


def make_model(out: Path) -> None:
    """Write ``plain.tflite``: the tiny uint8 classifier without metadata (needs TensorFlow)."""
    import tensorflow as tf  # only this step needs it

    tf.keras.utils.set_random_seed(0)
    keras = tf.keras
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.AveragePooling2D(8)(inp)
    x = keras.layers.Flatten()(x)
    outp = keras.layers.Dense(len(LABELS), activation="softmax", name="scores")(x)
    model = keras.Model(inp, outp)

    def representative() -> Any:
        rng = np.random.default_rng(1)
        for _ in range(32):  # the float model sees (pixel - 127.5) / 127.5, i.e. [-1, 1]
            yield [rng.uniform(-1.0, 1.0, (1, SIZE, SIZE, 3)).astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = tf.uint8
    (out / "plain.tflite").write_bytes(conv.convert())


def attach(out: Path) -> None:
    """Write the two metadata-bearing copies of ``plain.tflite`` (needs tflite-support)."""
    from tflite_support import metadata as md  # only this step needs it
    from tflite_support import metadata_schema_py_generated as schema
    from tflite_support.metadata_writers import image_classifier, metadata_info, writer_utils

    plain = bytearray((out / "plain.tflite").read_bytes())
    (in_type,) = writer_utils.get_input_tensor_types(plain)
    (out_type,) = writer_utils.get_output_tensor_types(plain)
    with tempfile.TemporaryDirectory() as tmp:
        labels = Path(tmp) / "labels.txt"
        labels.write_text("\n".join(LABELS) + "\n", encoding="utf-8")
        writer = image_classifier.MetadataWriter.create_from_metadata_info(
            plain,
            general_md=metadata_info.GeneralMd(
                name="Tiny shapes classifier",
                version="v3",
                description="Random-weight 4-class image classifier (test fixture).",
                author="edge",
                licenses="Apache-2.0",
            ),
            input_md=metadata_info.InputImageTensorMd(
                name="image",
                norm_mean=[MEAN],
                norm_std=[STD],
                color_space_type=schema.ColorSpaceType.RGB,
                tensor_type=in_type,
            ),
            output_md=metadata_info.ClassificationTensorMd(
                name="probability",
                label_files=[metadata_info.LabelFileMd(str(labels))],
                tensor_type=out_type,
            ),
        )
        (out / "classifier_metadata.tflite").write_bytes(writer.populate())

        labelmap = Path(tmp) / "labelmap.txt"
        labelmap.write_text(ID_LABELS, encoding="utf-8")
        label_file = schema.AssociatedFileT()
        label_file.name = labelmap.name
        label_file.description = "Labels for the class ids the output holds."
        label_file.type = schema.AssociatedFileType.TENSOR_VALUE_LABELS
        image = schema.TensorMetadataT()
        image.name = "image"
        scores = schema.TensorMetadataT()
        scores.name = "scores"
        scores.associatedFiles = [label_file]
        graph = schema.SubGraphMetadataT()
        graph.inputTensorMetadata = [image]
        graph.outputTensorMetadata = [scores]
        model_md = schema.ModelMetadataT()
        model_md.name = "value labels"
        model_md.subgraphMetadata = [graph]
        builder = md.flatbuffers.Builder(0)
        builder.Finish(model_md.Pack(builder), md.MetadataPopulator.METADATA_FILE_IDENTIFIER)
        pop = md.MetadataPopulator.with_model_buffer(plain)
        pop.load_metadata_buffer(builder.Output())
        pop.load_associated_files([str(labelmap)])
        pop.populate()
        (out / "value_labels.tflite").write_bytes(pop.get_model_buffer())


def move_buffers_out(out: Path) -> None:
    """Write ``buffer_offset.tflite`` (needs ai-edge-litert and flatbuffers)."""
    import io
    import zipfile

    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    data = (out / "classifier_metadata.tflite").read_bytes()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:  # header offsets include the prefix
        tail = data[min(i.header_offset for i in archive.infolist()) :]
    model = tfl.ModelT.InitFromPackedBuf(data, 0)
    moved = [
        (b, bytes(bytearray(b.data))) for b in model.buffers if b.data is not None and len(b.data)
    ]

    def pack(first: int) -> bytes:
        at = first
        for buf, blob in moved:
            buf.data, buf.offset, buf.size = None, at, len(blob)
            at = (at + len(blob) + 15) // 16 * 16
        builder = flatbuffers.Builder(0)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    # Offsets are never 0 here, so both packings have the same length.
    head = pack(1 << 40)
    first = (len(head) + 15) // 16 * 16
    size = len(head)
    head = pack(first)
    assert len(head) == size
    body = bytearray(head.ljust(first, b"\0"))
    for buf, blob in moved:
        body += blob.ljust((len(blob) + 15) // 16 * 16, b"\0")
        assert buf.offset + buf.size <= len(body)
    (out / "buffer_offset.tflite").write_bytes(bytes(body) + tail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("step", choices=["model", "attach", "offset"])
    ap.add_argument("--out", type=Path, default=OUT, help="fixture directory")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "model":
        make_model(args.out)
    elif args.step == "attach":
        attach(args.out)
    else:
        move_buffers_out(args.out)


if __name__ == "__main__":
    main()
