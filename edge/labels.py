"""Label files: the two formats found in the wild, parsed into class id → label, and how a file
lines up with the class ids of the model it was shipped with."""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge.errors import ModelError

_ID_LABEL = re.compile(r"^\s*(\d+)(?:\s*[:,]\s*|\s+)(\S.*?)\s*$")


def parse_labels(text: str) -> dict[int, str]:
    """Labels from either common format.

    One label per line (line i is class i), or ``id label`` lines with gaps, as Coral's model zoo
    ships COCO (``0  person``, ``2  car``). The second format is chosen only when every non-empty
    line starts with a number followed by a label, so a plain list whose labels are numbers
    (``0``, ``1``) stays a plain list.
    """
    lines = [ln.rstrip("\r") for ln in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    content = [ln for ln in lines if ln.strip()]
    if content and all(_ID_LABEL.match(ln) for ln in content):
        out = {}
        for ln in content:
            m = _ID_LABEL.match(ln)
            assert m is not None
            out[int(m.group(1))] = m.group(2)
        return out
    return {i: ln.strip() for i, ln in enumerate(lines)}


# First lines that stand for "no class" in label files shipped with models: TF-slim ImageNet
# models (``background``), TF's SSD examples (``???``), Detectron-style files.
BACKGROUND = frozenset({"background", "__background__", "???", "bg", "unlabeled", "unlabelled"})
_FIX = (
    "Give one label per class (line i = class i) or `id label` lines, or set labels_offset "
    "(manifest.json postprocess, or [model] labels_offset) to say how the lines are shifted."
)


def is_background(label: str) -> bool:
    """Whether ``label`` is one of the names label files use for a background entry."""
    return label.strip().lower() in BACKGROUND


@dataclass(frozen=True, slots=True)
class LabelFit:
    """How a labels file lines up with a model's class ids.

    offset: added to a class id before the label lookup (the ``labels_offset`` setting): -1
    when the file lacks the model's background class 0, +1 when it starts with a background
    entry the model does not have. note: why a non-zero offset was chosen, for the WARNING
    the engine logs; empty when the labels fit as written (or, for a single-channel
    segmenter, when the one line names the foreground).
    """

    offset: int = 0
    note: str = ""


def fit_labels(
    labels: dict[int, str],
    classes: int | None,
    source: str,
    *,
    binary: bool = False,
    background_excluded: bool = False,
) -> LabelFit:
    """The offset that lines ``labels`` up with a model of ``classes`` classes (None when the
    outputs do not tell, as with SSD post-processed class ids).

    A plain list (line i = class i) with as many lines as classes fits. One line short means
    the model has the background class 0 that the file leaves out (TF-slim's 1001-class ImageNet
    models with a 1000-line file), offset -1; one line over with a first line such as
    ``background`` or ``???`` means the file has a background entry the model does not, +1.
    ``binary``: a single-channel segmenter, classes 0 background and 1 foreground, where a
    one-line file names the foreground. ``background_excluded``: the model's class ids never
    include a background (the SSD post-process op), so a background first line is skipped.
    ``id label`` files keep their ids. ``source`` names the file in messages.

    Raises ModelError when the counts disagree in a way no single shift explains, or one line
    short while the first line is a background entry (which end is missing cannot be told).
    """
    if not labels:
        return LabelFit()
    n = len(labels)
    plain = sorted(labels) == list(range(n))
    first = labels.get(0, "")
    if not plain:
        top = max(labels)
        if classes is not None and top >= classes:
            raise ModelError(
                f"{source} names class id {top}, but the model has {classes} classes "
                f"(0..{classes - 1}). Fix the ids, or set labels_offset (manifest.json "
                "postprocess, or [model] labels_offset): 1 when the ids count from 1."
            )
        return LabelFit()
    if classes is None:
        if background_excluded and is_background(first):
            return LabelFit(
                1,
                f"{source} starts with {first!r}, but the model's class ids leave out the "
                f"background: the first line is skipped, class 0 is named by the second, "
                f"{labels.get(1, '')!r} (labels_offset 1)",
            )
        return LabelFit()
    if binary:
        if n == 1:
            return LabelFit(-1)
        if n == 2:
            return LabelFit()
        raise ModelError(
            f"{source} has {n} labels, but a single-channel segmentation model has two classes, "
            "background and foreground. Give one line (the foreground's label) or two "
            "(background, then foreground)."
        )
    if n == classes:
        return LabelFit()
    if n == classes - 1 and not is_background(first):
        return LabelFit(
            -1,
            f"{source} has {n} labels for the model's {classes} classes: class 0 is taken as "
            f"the background the file leaves out, class 1 is named by the first line, {first!r} "
            "(labels_offset -1)",
        )
    if n == classes + 1 and is_background(first):
        return LabelFit(
            1,
            f"{source} has {n} labels for the model's {classes} classes and starts with "
            f"{first!r}, which is no class of this model: the first line is skipped, class 0 "
            f"is named by the second, {labels.get(1, '')!r} (labels_offset 1)",
        )
    if n == classes - 1:
        why = f"it starts with {first!r}, so edge cannot tell which class has no label"
    elif n == classes + 1:
        why = (
            f"its first line {first!r} is no background entry, "
            "so edge cannot tell which line is extra"
        )
    else:
        why = "edge cannot tell which class each line names"
    raise ModelError(f"{source} has {n} labels but the model has {classes} classes; {why}. {_FIX}")
