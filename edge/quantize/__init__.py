"""``edge quantize``: float model + representative images → full-integer TFLite model directory,
with a report of what quantization cost (agreement with the float model, size, latency, Edge TPU
mapping).

Needs the optional ``edge[quantize]`` extra (TensorFlow, ai-edge-quantizer); nothing here imports
them until a conversion runs, so the CLI can describe the command, and report the missing
package, without them. The daemon never imports this package.

Modules: :mod:`~edge.quantize.cli` (arguments and exit codes), :mod:`~edge.quantize.tool` (the
Python API, :func:`~edge.quantize.tool.quantize`), :mod:`~edge.quantize.convert` (TensorFlow and
ai-edge-quantizer), :mod:`~edge.quantize.images` (image folders),
:mod:`~edge.quantize.normalization` (the normalization a model applies to its own input),
:mod:`~edge.quantize.preprocessing` (which preprocessing to feed, and alerts when it normalizes
twice), :mod:`~edge.quantize.variation` (does the float model respond to the images),
:mod:`~edge.quantize.report` (the printed and JSON report), :mod:`~edge.quantize.compare`
and :mod:`~edge.quantize.metrics` (float vs int8, mAP), :mod:`~edge.quantize.compiler` (Edge
TPU).
"""

from __future__ import annotations

from edge.quantize.cli import EX_GATE, add_arguments, main, run

__all__ = ["EX_GATE", "add_arguments", "main", "run"]
