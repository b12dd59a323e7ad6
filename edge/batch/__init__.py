"""``edge batch``: run one model over a pile of files (folders, globs, images, videos) on several
interpreters at once, writing one JSON line per image or video frame, resumably.

Output: JSON Lines in completion order. Each line is the core's result (``Result.to_dict()``)
with two keys in front: ``path`` (the file) and ``frame_index`` (the video frame number from 0;
0 for a still image). ``(path, frame_index)`` is the line's key. A file that cannot be read is
a line ``{"path", "frame_index", "error"}`` (``frame_index`` null when a whole input could not
be opened). Every line is written with one ``write`` as soon as its item finishes, so a crash
loses at most the items in flight; a rerun with the same output reads the keys already there
(ignoring a torn last line), skips them, and appends the rest. Error lines count as done too.

Modules: ``runner`` (planning, threads, the run), ``output`` (records, resume, CSV),
``progress`` (the progress line); the command line is ``edge.commands.batch``. Importing this
package loads no model runtime, numpy or OpenCV: they are imported when a batch runs.
"""

from __future__ import annotations

import os

from edge.batch.output import read_done, write_csv
from edge.batch.progress import Progress
from edge.batch.runner import BatchSettings, Summary, format_summary, run_batch

__all__ = [
    "BatchSettings",
    "Progress",
    "Summary",
    "default_workers",
    "format_summary",
    "read_done",
    "run_batch",
    "write_csv",
]


def default_workers() -> int:
    """One worker per core available to this process."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
