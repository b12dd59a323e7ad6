"""Label files in both formats found in the wild."""

from __future__ import annotations

from edge.labels import parse_labels


def test_one_label_per_line() -> None:
    """Line i is class i; blank trailing lines are ignored, blank inner lines keep their id."""
    assert parse_labels("circle\nsquare\n\ntriangle\n\n") == {
        0: "circle",
        1: "square",
        2: "",
        3: "triangle",
    }


def test_coral_id_label_with_gaps() -> None:
    """Coral's `id  label` COCO files keep their ids, gaps included."""
    text = "0  person\n1  bicycle\n2  car\n12  stop sign\n89  hair drier\n"
    labels = parse_labels(text)
    assert labels[0] == "person" and labels[12] == "stop sign" and labels[89] == "hair drier"
    assert 11 not in labels and len(labels) == 5


def test_colon_separated_ids_and_crlf() -> None:
    """`id: label` and Windows line endings are understood."""
    assert parse_labels("0: cat\r\n1: dog\r\n") == {0: "cat", 1: "dog"}


def test_numeric_labels_stay_a_plain_list() -> None:
    """A plain list whose labels are numbers is not mistaken for ids."""
    assert parse_labels("10\n20\n30\n") == {0: "10", 1: "20", 2: "30"}


def test_mixed_file_is_a_plain_list() -> None:
    """When not every line has an id, lines are labels as written."""
    assert parse_labels("0 background\nperson\n") == {0: "0 background", 1: "person"}
