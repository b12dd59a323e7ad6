"""A model that runs on the camera's sensor (the AI Camera's IMX500), as the engine sees it.

The host never invokes it: the sensor runs the network on every frame it can and the frame's
metadata carries the output tensors (:class:`edge.frame.SensorOutput`, filled by
:mod:`edge.sources.imx500`). What the engine needs at load, before any camera is opened, is the
outputs' layout, so that the same postprocessing (:mod:`edge.postprocess`) and publishing serve
it as serve host inference; :class:`SensorModel` declares that layout from the network file's
intrinsics (:mod:`edge.rpk`):

- ``object detection`` (and a network without intrinsics, as picamera2's examples assume): the
  sensor's post-processed boxes [N,4], scores [N], classes [N] and count, handed on in the
  order of TFLite's SSD post-process (boxes, classes, scores, count) so the SSD decoder reads
  them. N varies per network and is read per frame; it is declared as -1.
- ``classification``: one score vector, as long as the network's labels.

Networks whose outputs picamera2 post-processes on the CPU (``cpu.post_processing``, e.g.
``nanodet``), pose estimation and segmentation are refused with a ModelError.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import ModelError
from edge.preprocess import TensorSpec
from edge.rpk import NetworkFile, read_network

log = logging.getLogger(__name__)

BACKEND = "imx500"
# The intrinsics' task names (picamera2's NetworkIntrinsics schema) → edge's tasks.
TASKS = {"object detection": "detection", "classification": "classification"}
DEFAULT_INPUT = (320, 320)  # when network_info.txt does not give the input size
_F32 = np.dtype(np.float32)


def network_task(intrinsics: dict[str, Any], path: Path) -> str:
    """edge's task for a network's intrinsics; ModelError for what edge cannot decode."""
    task = intrinsics.get("task", "object detection")
    post = (intrinsics.get("cpu") or {}).get("post_processing")
    if task not in TASKS:
        raise ModelError(
            f"{path.name} is a {task} network; edge decodes the AI Camera's object detection "
            "and classification networks. Use one of those (for example "
            "imx500_network_ssd_mobilenetv2_fpnlite_320x320_pp.rpk)."
        )
    if post:
        raise ModelError(
            f"{path.name}'s outputs are post-processed on the CPU ({post!r} in its intrinsics), "
            "which edge does not decode; use a network whose sensor post-processing gives "
            "boxes, scores and classes (the *_pp.rpk networks)."
        )
    return TASKS[task]


def network_labels(intrinsics: dict[str, Any]) -> list[str]:
    """The labels, class id order: with ``ignore_undefined``, the ``-`` and empty entries are
    left out first, as picamera2's examples do before indexing them by class."""
    classes = intrinsics.get("classes") or {}
    labels = [str(x) for x in classes.get("labels") or []]
    if classes.get("ignore_undefined"):
        labels = [x for x in labels if x and x != "-"]
    return labels


class SensorModel:
    """The :class:`~edge.runtime.ModelInterpreter` of a network the sensor runs: it declares
    the outputs (see the module docstring) and refuses to be invoked."""

    runs_on_sensor = True  # what Engine.on_sensor asks

    def __init__(self, network: NetworkFile, init_ms: float) -> None:
        from edge.runtime import LoadInfo  # the runtime package imports this module lazily

        self.network = network
        self.task = network_task(network.intrinsics, network.path)
        w, h = network.input_size or DEFAULT_INPUT
        self.inputs = (TensorSpec(0, "input", (1, h, w, 3), np.dtype(np.uint8)),)
        if self.task == "detection":
            self.outputs: tuple[TensorSpec, ...] = (
                TensorSpec(0, "boxes", (1, -1, 4), _F32),
                TensorSpec(1, "classes", (1, -1), _F32),
                TensorSpec(2, "scores", (1, -1), _F32),
                TensorSpec(3, "count", (1,), _F32),
            )
        else:
            labels = network_labels(network.intrinsics)
            if not labels:
                raise ModelError(
                    f"{network.path.name} is a classification network without labels in its "
                    "intrinsics; put it in a model directory with a labels.txt and a "
                    "manifest.json"
                )
            self.outputs = (TensorSpec(0, "scores", (1, len(labels)), _F32),)
        self.info = LoadInfo(BACKEND, "", BACKEND, 0, init_ms)

    def _refuse(self) -> ModelError:
        return ModelError(
            f"{self.network.path.name} runs on the AI Camera's sensor: its outputs come with "
            "the frames of an imx500 source, the host cannot invoke it"
        )

    def input_view(self) -> np.ndarray:
        raise self._refuse()

    def set_input(self, values: np.ndarray, index: int = 0) -> None:
        raise self._refuse()

    def invoke(self) -> None:
        raise self._refuse()

    def output(self, i: int) -> np.ndarray:
        raise self._refuse()

    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def close(self) -> None:
        """Nothing to release: the network lives on the sensor."""


def load(path: Path) -> SensorModel:
    """The sensor model of the network file ``path`` (read, not uploaded: the imx500 source
    uploads it when it opens the camera). Raises ModelError as :func:`edge.rpk.read_network`
    and :func:`network_task` do."""
    t0 = time.perf_counter()
    network = read_network(path)
    model = SensorModel(network, (time.perf_counter() - t0) * 1000)
    log.info(
        "%s: %s network for the AI Camera's sensor, input %s",
        path.name,
        model.task,
        "x".join(str(s) for s in model.inputs[0].shape[2:0:-1]),
    )
    return model
