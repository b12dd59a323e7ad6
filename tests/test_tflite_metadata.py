"""TFLite Metadata reading against models whose metadata was packed by tflite-support's own
populator (see scripts/make_metadata_fixture.py), plus damaged copies of them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ModelError
from edge.models import load_spec
from edge.runtime import RuntimeOptions, load
from edge.tflite_metadata import Metadata, read_metadata

DATA = Path(__file__).parent / "data" / "metadata"
CLASSIFIER = DATA / "classifier_metadata.tflite"
LABELS = {0: "background", 1: "circle", 2: "traffic light", 3: "square"}
EXPECTED = Metadata(
    name="Tiny shapes classifier",
    version="v3",
    description="Random-weight 4-class image classifier (test fixture).",
    labels=LABELS,
    mean=(127.5,),
    std=(127.5,),
)


def metadata_block(data: bytes) -> tuple[int, int]:
    """(start, end) of the TFLITE_METADATA flatbuffer inside a model file."""
    assert data.count(b"M001") == 1
    start = data.index(b"M001") - 4  # the identifier follows the 4-byte root offset
    size = int.from_bytes(data[start - 4 : start], "little")  # the [ubyte] vector's length
    return start, start + size


def test_classifier_metadata_is_read() -> None:
    """Name, version, description, axis labels and mean/std come out as the writer put them in."""
    assert read_metadata(CLASSIFIER) == EXPECTED


def test_value_labels_with_ids() -> None:
    """A TENSOR_VALUE_LABELS file in ``id label`` form keeps its ids, gaps included."""
    meta = read_metadata(DATA / "value_labels.tflite")
    assert meta == Metadata(name="value labels", labels={0: "person", 2: "car", 3: "traffic light"})


def test_model_without_metadata() -> None:
    """A model with no TFLITE_METADATA entry gives None."""
    assert read_metadata(DATA / "plain.tflite") is None


def test_metadata_in_buffer_outside_flatbuffer() -> None:
    """Metadata referenced by Buffer.offset/size (the >2 GB layout) reads the same."""
    from ai_edge_litert import schema_py_generated as tfl  # an independent reader of the layout

    path = DATA / "buffer_offset.tflite"
    model = tfl.Model.GetRootAs(path.read_bytes(), 0)
    entries = [model.Metadata(i) for i in range(model.MetadataLength())]
    (index,) = [m.Buffer() for m in entries if m.Name() == b"TFLITE_METADATA"]
    buf = model.Buffers(index)
    assert buf.DataLength() == 0 and buf.Offset() > 1 and buf.Size() > 0
    assert read_metadata(path) == EXPECTED


def test_fixtures_run_and_agree() -> None:
    """Metadata does not change the graph: every fixture runs and gives the plain model's output."""
    x = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3), dtype=np.uint8)
    outputs = {}
    for name in ("plain", "classifier_metadata", "value_labels", "buffer_offset"):
        interp = load(DATA / f"{name}.tflite", RuntimeOptions(threads=1))
        interp.set_input(x)
        interp.invoke()
        outputs[name] = interp.output(0)
    assert outputs["plain"].shape == (1, 4)
    for out in outputs.values():
        np.testing.assert_array_equal(out, outputs["plain"])


def test_corrupt_root_falls_back_to_packed_labels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A metadata block whose root offset points outside it logs a warning, does not raise, and
    still finds labels.txt in the packed archive."""
    data = bytearray(CLASSIFIER.read_bytes())
    start, _ = metadata_block(bytes(data))
    data[start : start + 4] = b"\xff\xff\xff\x7f"
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="edge.tflite_metadata"):
        meta = read_metadata(bad)
    assert meta == Metadata(labels=LABELS)
    assert any("malformed TFLite metadata" in r.getMessage() for r in caplog.records)


def test_every_flipped_byte_is_survived(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Inverting any single byte of the model file never raises; damage to the metadata block is
    reported as a warning."""
    data = CLASSIFIER.read_bytes()
    start, end = metadata_block(data)
    bad = tmp_path / "flipped.tflite"
    results: list[Metadata | None] = []
    warned = 0
    with caplog.at_level(logging.WARNING, logger="edge.tflite_metadata"):
        for i in range(len(data)):
            copy = bytearray(data)
            copy[i] ^= 0xFF
            bad.write_bytes(bytes(copy))
            caplog.clear()
            results.append(read_metadata(bad))
            warned += bool(caplog.records) and start <= i < end
    assert all(r is None or isinstance(r, Metadata) for r in results)
    assert results.count(EXPECTED) > 0  # padding and unused bytes change nothing
    assert warned > (end - start) // 4


def test_damaged_archive_keeps_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A truncated packed-files archive loses only the labels, with a warning."""
    data = CLASSIFIER.read_bytes()
    bad = tmp_path / "truncated.tflite"
    bad.write_bytes(data[:-30])  # cuts the archive's end-of-directory record
    with caplog.at_level(logging.WARNING, logger="edge.tflite_metadata"):
        meta = read_metadata(bad)
    assert meta is not None and meta.labels == {} and meta.mean == (127.5,)
    assert meta.name == EXPECTED.name
    assert any("cannot read labels 'labels.txt'" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("content", [b"", b"TFL3", b"<html>not a model</html>" * 10])
def test_not_a_tflite_file(tmp_path: Path, content: bytes) -> None:
    """Empty, tiny and non-TFLite files give None and leave the error to the runtime."""
    path = tmp_path / "model.tflite"
    path.write_bytes(content)
    assert read_metadata(path) is None


def test_missing_file(tmp_path: Path) -> None:
    """An unreadable path raises ModelError naming it."""
    with pytest.raises(ModelError, match=r"missing\.tflite"):
        read_metadata(tmp_path / "missing.tflite")


def test_load_spec_uses_embedded_metadata(tmp_path: Path) -> None:
    """A bare model file gets its labels and normalization from its own metadata."""
    path = tmp_path / "model.tflite"
    path.write_bytes(CLASSIFIER.read_bytes())
    spec = load_spec(path)
    assert spec.labels == LABELS
    assert spec.preprocess is not None
    assert (spec.preprocess.mean, spec.preprocess.std) == ((127.5,), (127.5,))
