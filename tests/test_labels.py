"""Label files in both formats found in the wild, and how they line up with a model's classes."""

from __future__ import annotations

import pytest

from edge.errors import ModelError
from edge.labels import LabelFit, fit_labels, parse_labels


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


def plain(*names: str) -> dict[int, str]:
    return dict(enumerate(names))


def test_fit_labels_counts_and_evident_offsets() -> None:
    """Labels fitting the classes need no offset; one short without a background line is -1,
    one over with a background first line is +1, each with a note for the warning."""
    assert fit_labels(plain("a", "b", "c"), 3, "f") == LabelFit()
    assert fit_labels(plain("background", "a", "b"), 3, "f") == LabelFit()
    short = fit_labels(plain("a", "b"), 3, "f")
    assert short.offset == -1 and "class 1 is named by the first line, 'a'" in short.note
    over = fit_labels(plain("???", "a", "b"), 2, "f")
    assert over.offset == 1 and "class 0 is named by the second, 'a'" in over.note
    assert fit_labels({}, 5, "f") == LabelFit()
    assert fit_labels(plain("a", "b"), None, "f") == LabelFit()


@pytest.mark.parametrize(
    ("labels", "classes", "says"),
    [
        (plain("a", "b"), 4, "has 2 labels but the model has 4 classes"),
        (plain("background", "a"), 3, "edge cannot tell which class has no label"),
        (plain("a", "b", "c", "d"), 3, "which line is extra"),
        ({0: "person", 5: "car"}, 4, "names class id 5, but the model has 4 classes (0..3)"),
    ],
)
def test_fit_labels_refuses_ambiguous_files(
    labels: dict[int, str], classes: int, says: str
) -> None:
    """Counts that no single shift explains, and ids beyond the classes, are ModelErrors
    naming the file and the labels_offset setting."""
    with pytest.raises(ModelError) as err:
        fit_labels(labels, classes, "x/labels.txt")
    assert str(err.value).startswith("x/labels.txt ") and says in str(err.value)
    assert "labels_offset" in str(err.value)


def test_fit_labels_binary_and_ssd() -> None:
    """A sigmoid segmenter's one line names the foreground (silently); SSD class ids skip a
    `???` first line; id files keep their ids."""
    assert fit_labels(plain("person"), 2, "f", binary=True) == LabelFit(-1)
    assert fit_labels(plain("bg", "person"), 2, "f", binary=True) == LabelFit()
    with pytest.raises(ModelError, match="two classes, background and foreground"):
        fit_labels(plain("a", "b", "c"), 2, "f", binary=True)
    assert fit_labels(plain("???", "person"), None, "f", background_excluded=True).offset == 1
    assert fit_labels(plain("???", "person"), None, "f").offset == 0
    assert fit_labels({0: "person", 2: "car"}, None, "f", background_excluded=True).offset == 0
