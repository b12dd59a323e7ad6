"""Label files: the two formats found in the wild, parsed into class id → label."""

from __future__ import annotations

import re

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
