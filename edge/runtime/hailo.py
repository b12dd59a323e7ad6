"""Hailo models (``.hef``) on the Raspberry Pi AI HAT+ / AI Kit (Hailo-8L, Hailo-8) and AI
HAT+ 2 (Hailo-10H) through HailoRT's Python API (``hailo_platform``), behind the same
:class:`edge.runtime.Interpreter` as TFLite and ONNX models.

HailoRT is not on PyPI: Raspberry Pi OS installs it with ``sudo apt install hailo-all``
(``hailo-h10-all`` for the Hailo-10H), so a virtual environment must be made with
``--system-site-packages`` to see it. It is imported only when a ``.hef`` is loaded: importing
it talks to the driver. At load edge checks what HailoRT would otherwise report as a bare
status code: the driver's version against the library's (HailoRT refuses any difference,
``HAILO_INVALID_DRIVER_VERSION``), the firmware's major.minor against the library's, and the
chip against the architecture the HEF was compiled for. ``hailo_platform`` does not expose
that target, so it is read from the HEF's header as ``hef.cpp`` parses it.

edge decodes HEFs compiled with HailoRT's NMS post-process: one output in the
``HAILO_NMS_BY_CLASS`` layout (per class, a count then that many ``y_min, x_min, y_max,
x_max, score`` boxes normalized to the input). :class:`HailoSession` exposes it as the four
outputs of TFLite's SSD post-process (boxes [1,N,4], classes [1,N], scores [1,N], count [1]),
which :mod:`edge.postprocess` already decodes; the HEF's own NMS settings (score and IoU
thresholds, boxes per class) apply as compiled, edge's ``threshold`` and ``max_detections``
on top. The input is uint8 NHWC as the HEF's input vstream says (normalization is compiled
into the HEF). Thread affinity: one thread at a time calls ``invoke()``, which waits for the
device with the GIL released.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.errors import DelegateError, ModelError, RuntimeUnavailableError
from edge.runtime import Interpreter  # the package is complete before its modules load
from edge.runtime.hef import SUFFIX, check_target, hef_target, shown

if TYPE_CHECKING:
    from edge.runtime import RuntimeOptions

log = logging.getLogger(__name__)

INSTALL = "sudo apt install hailo-all"
INSTALL_H10 = "sudo apt install hailo-h10-all"
RUN_TIMEOUT_MS = 10_000
# The kernel modules' versions (MODULE_VERSION in hailort-drivers): hailo_pci for Hailo-8/8L,
# hailo1x_pci for Hailo-10H. Tests point this elsewhere.
SYSFS_MODULES = Path("/sys/module")
DRIVER_MODULES = ("hailo_pci", "hailo1x_pci")

_NMS_ORDERS = ("HAILO_NMS_BY_CLASS", "HAILO_NMS")  # the second is its name before HailoRT 4.20
_BBOX = 5


def import_hailo_platform() -> Any:
    """The hailo_platform module, or RuntimeUnavailableError saying what to install."""
    try:
        return importlib.import_module("hailo_platform")
    # ImportError (not installed, libhailort missing, its version not the binding's) or
    # hailo_platform's own MissingPyHRTLib (an Exception) when the binding is absent.
    except Exception as exc:
        raise RuntimeUnavailableError(
            f".hef models need HailoRT's Python API (hailo_platform), which cannot be imported "
            f"({exc}). On Raspberry Pi OS install it with `{INSTALL}` (`{INSTALL_H10}` for the "
            "AI HAT+ 2), then reboot; in a virtual environment, create it with "
            "`python3 -m venv --system-site-packages` so it sees the apt-installed package."
        ) from exc


def driver_version() -> tuple[str, str]:
    """(kernel module, version) of the loaded Hailo driver, or ("", "") when none is readable."""
    for module in DRIVER_MODULES:
        try:
            return module, (SYSFS_MODULES / module / "version").read_text().strip()
        except OSError:
            continue
    return "", ""


def _packages(library: str) -> str:
    return INSTALL_H10 if library.startswith("5.") else INSTALL


def check_driver(library: str) -> None:
    """RuntimeUnavailableError when the loaded driver's version differs from the library's
    (HailoRT accepts only equal versions)."""
    module, version = driver_version()
    if version and version != library:
        raise RuntimeUnavailableError(
            f"the Hailo driver ({module} {version}) and the HailoRT library ({library}) differ; "
            f"HailoRT runs only with equal versions. Align them with `{_packages(library)}` "
            "(it installs the matching driver, firmware and library), then reboot."
        )


def check_firmware(library: str, firmware: tuple[int, int, int], device: str) -> None:
    """RuntimeUnavailableError when the device's firmware major.minor differs from the
    library's: HailoRT then refuses every operation but identify."""
    lib = tuple(int(p) for p in library.split(".")[:2])
    if firmware[:2] != lib:
        fw = ".".join(map(str, firmware))
        raise RuntimeUnavailableError(
            f"the {device}'s firmware ({fw}) does not match the HailoRT library ({library}). "
            f"Align them with `{_packages(library)}`, then reboot so the driver loads the "
            "matching firmware."
        )


def _explain_open(exc: Exception, library: str) -> Exception:
    """An error HailoRT raised while opening the device, as an actionable edge error."""
    text = str(exc)
    if "HAILO_INVALID_DRIVER_VERSION" in text or "(76)" in text:
        module, version = driver_version()
        driver = f"{module} {version}" if version else "the driver (see `dmesg | grep hailo`)"
        return RuntimeUnavailableError(
            f"HailoRT {library} refuses {driver}: their versions differ. Align them with "
            f"`{_packages(library)}`, then reboot."
        )
    return DelegateError(
        f"no usable Hailo device ({text}). Check that the AI HAT+ / AI Kit is fitted, that "
        "`hailortcli fw-control identify` lists it and that no other process (Frigate, a "
        "camera demo) holds it; on Raspberry Pi OS install the driver with "
        f"`{_packages(library)}` and reboot."
    )


class _Shared:
    """The process's one VDevice (a Hailo chip is opened once; every model is scheduled on
    it), counted by the sessions using it."""

    lock = threading.Lock()
    vdevice: Any = None
    users = 0
    # The chip's identity, read before the VDevice was opened: while it is open the chip is
    # not opened again as a Device just to ask.
    identity: tuple[str, tuple[int, int, int]] | None = None

    @classmethod
    def acquire(cls, hp: Any, identity: tuple[str, tuple[int, int, int]]) -> Any:
        with cls.lock:
            if cls.vdevice is None:
                cls.identity = identity
                params = hp.VDevice.create_params()
                params.scheduling_algorithm = hp.HailoSchedulingAlgorithm.ROUND_ROBIN
                cls.vdevice = hp.VDevice(params)
            cls.users += 1
            return cls.vdevice

    @classmethod
    def release(cls) -> None:
        with cls.lock:
            cls.users -= 1
            if cls.users == 0 and cls.vdevice is not None:
                cls.vdevice.release()
                cls.vdevice, cls.identity = None, None


class HailoSession:
    """A configured HEF with the TFLite interpreter calls ``edge.runtime.Interpreter`` makes.
    Tensor indices: 0 is the input, 1-4 the SSD-style outputs (boxes, classes, scores,
    count). The bindings, the input buffer and the output arrays are made once at load;
    ``get_tensor`` returns copies of what the last ``invoke()`` filled."""

    def __init__(self, hp: Any, path: Path, identity: tuple[str, tuple[int, int, int]]) -> None:
        self._stack = contextlib.ExitStack()
        self._released = False
        vdevice = _Shared.acquire(hp, identity)
        self._stack.callback(_Shared.release)
        try:
            self._setup(hp, vdevice, path)
        except BaseException:
            self.close()
            raise

    def _setup(self, hp: Any, vdevice: Any, path: Path) -> None:
        try:
            hef = hp.HEF(str(path))
            model = vdevice.create_infer_model(str(path))
        except hp.HailoRTException as exc:
            raise ModelError(
                f"HailoRT {hp.__version__} cannot read {path} ({exc}): copy the HEF again, or "
                "compile it with the Dataflow Compiler release that matches this HailoRT."
            ) from exc
        inputs, outputs = hef.get_input_vstream_infos(), hef.get_output_vstream_infos()
        if len(inputs) != 1:
            raise ModelError(
                f"{path} has {len(inputs)} inputs; edge feeds HEFs one image input. Compile "
                "the model with the image as its only input."
            )
        info = inputs[0]
        shape = tuple(int(d) for d in info.shape)
        kind = info.format.type.name
        if kind != "UINT8" or len(shape) != 3 or shape[2] not in (1, 3):
            raise ModelError(
                f"{path}: input {info.name!r} is {kind} {list(shape)}; edge feeds HEFs uint8 "
                "NHWC images (height, width, 1 or 3 channels). Compile the model with a uint8 "
                "image input (the Dataflow Compiler's default) and its normalization inside."
            )
        orders = [o.format.order.name for o in outputs]
        if len(outputs) != 1 or orders[0] not in _NMS_ORDERS:
            listed = ", ".join(
                f"{o.name} ({order})" for o, order in zip(outputs, orders, strict=True)
            )
            raise ModelError(
                f"{path} has the outputs {listed}; edge decodes HEFs that end in HailoRT's NMS "
                "post-process (one HAILO_NMS_BY_CLASS output). Compile the detector with its "
                "NMS config (the Hailo Model Zoo's *_nms_config.json), as the hailo-models "
                "HEFs are."
            )
        nms = outputs[0].nms_shape
        self.classes, self.per_class = int(nms.number_of_classes), int(nms.max_bboxes_per_class)
        model.set_batch_size(1)
        model.input().set_format_type(info.format.type)
        self._out_name = outputs[0].name
        model.output(self._out_name).set_format_type(hp.FormatType.FLOAT32)
        try:
            configured = self._stack.enter_context(model.configure())
        except hp.HailoRTException as exc:
            raise ModelError(f"HailoRT cannot configure {path}: {exc}") from exc
        self._configured = configured
        self._input = np.zeros(shape, np.uint8)
        self._view = self._input.reshape(1, *shape)
        out_shape = tuple(model.output(self._out_name).shape)
        self._bindings = configured.create_bindings(
            output_buffers={self._out_name: np.empty(out_shape, np.float32)}
        )
        self._bindings.input().set_buffer(self._input)
        n = self.classes * self.per_class
        self._values = [
            np.zeros((1, n, 4), np.float32),
            np.zeros((1, n), np.float32),
            np.zeros((1, n), np.float32),
            np.zeros((1,), np.float32),
        ]
        self._details = [
            {"index": 0, "name": info.name, "shape": np.array((1, *shape), np.int32)},
            *(
                {"index": 1 + i, "name": f"{self._out_name}/{role}", "shape": np.array(v.shape)}
                for i, (role, v) in enumerate(
                    zip(("boxes", "classes", "scores", "count"), self._values, strict=True)
                )
            ),
        ]
        self._hailo_error = hp.HailoRTException

    def get_input_details(self) -> list[dict[str, Any]]:
        return [{**self._details[0], "dtype": np.uint8, "quantization": (0.0, 0)}]

    def get_output_details(self) -> list[dict[str, Any]]:
        return [{**d, "dtype": np.float32, "quantization": (0.0, 0)} for d in self._details[1:]]

    def tensor(self, index: int) -> Callable[[], np.ndarray]:
        """A function returning the writable [1,H,W,C] view of the bound input buffer."""
        self._input_only(index)
        return lambda: self._view

    def set_tensor(self, index: int, value: np.ndarray) -> None:
        """Copy ``value`` ([1,H,W,C] uint8) into the bound input buffer; ValueError for
        another shape or dtype."""
        self._input_only(index)
        if value.shape != self._view.shape or value.dtype != self._view.dtype:
            raise ValueError(
                f"cannot set input {index}: got {value.dtype} {list(value.shape)}, the HEF "
                f"takes uint8 {list(self._view.shape)}"
            )
        np.copyto(self._view, value)

    def get_tensor(self, index: int) -> np.ndarray:
        """A copy of the input, or of output ``index - 1`` of the last invoke (copies, as
        TFLite gives: the next invoke reuses the arrays while this frame may still be
        decoded on another thread)."""
        return (self._view if index == 0 else self._values[index - 1]).copy()

    def invoke(self) -> None:
        """Run the HEF on the bound input and unpack its per-class boxes. Raises RuntimeError,
        as TFLite does, when HailoRT fails or times out (RUN_TIMEOUT_MS)."""
        try:
            self._configured.run([self._bindings], RUN_TIMEOUT_MS)
            per_class = self._bindings.output(self._out_name).get_buffer()
        except self._hailo_error as exc:
            raise RuntimeError(f"HailoRT: {exc}") from exc
        boxes, classes, scores, count = self._values
        i = 0
        for class_id, found in enumerate(per_class):
            k = len(found)
            if k:
                rows = np.asarray(found, np.float32).reshape(k, _BBOX)
                boxes[0, i : i + k] = rows[:, :4]
                scores[0, i : i + k] = rows[:, 4]
                classes[0, i : i + k] = class_id
                i += k
        count[0] = i

    def close(self) -> None:
        """Release the configured model, and the device once no session uses it."""
        if not self._released:
            self._released = True
            self._stack.close()

    def _input_only(self, index: int) -> None:
        if index != 0:
            raise ValueError(f"tensor {index} is not the model's input (0)")


def load(path: Path, options: RuntimeOptions, verify: bool = True) -> Interpreter:
    """Load ``path`` on the Hailo device after the version and architecture checks (each an
    exit-78 error saying what to install or use). ``threads`` and the TFLite delegate settings
    do not apply; ``delegate`` must be the default. verify: run it once on a zero input."""
    from edge.runtime import LoadInfo, read_head
    from edge.runtime.backends import Backend

    read_head(path, 1, SUFFIX)
    if options.delegate not in ("xnnpack", "cpu") or options.library:
        raise DelegateError(
            f"{path.name} runs on the Hailo device; the TFLite delegate settings "
            f"(delegate {options.delegate}) do not apply to it: leave them at their defaults"
        )
    target, sdk = hef_target(path)
    hp = import_hailo_platform()
    library = str(hp.__version__)
    check_driver(library)
    t0 = time.perf_counter()
    try:
        arch, firmware = _Shared.identity or _identify(hp)
    except hp.HailoRTException as exc:
        raise _explain_open(exc, library) from exc
    check_firmware(library, firmware, arch)
    check_target(path, target, arch)
    try:
        raw = HailoSession(hp, path, (arch, firmware))
    except hp.HailoRTException as exc:
        raise _explain_open(exc, library) from exc
    try:
        if verify:
            raw.invoke()
    except RuntimeError as exc:
        raw.close()
        raise ModelError(f"{path} loads but does not run on the {arch}: {exc}") from exc
    init_ms = (time.perf_counter() - t0) * 1000
    info = LoadInfo("hailort", library, arch.lower(), 1, init_ms)
    log.info(
        "loaded %s (compiled for %s with SDK %s) on the %s with HailoRT %s in %.1f ms",
        path.name,
        shown(target),
        sdk or "?",
        arch,
        library,
        init_ms,
    )
    return HailoInterpreter(raw, Backend("hailort", library, hp), info, path)


def _identify(hp: Any) -> tuple[str, tuple[int, int, int]]:
    """(architecture, firmware version) of the first Hailo device, as `hailortcli fw-control
    identify` reports them."""
    ids = list(hp.Device.scan())
    if not ids:
        raise hp.HailoRTException("HailoRT found no device")
    with hp.Device(ids[0]) as device:
        board = device.control.identify()
    fw = board.firmware_version
    return str(board.device_architecture), (int(fw.major), int(fw.minor), int(fw.revision))


def probe() -> dict[str, object]:
    """What ``edge info`` lists for Hailo, never raising: whether HailoRT imports, its
    version, the chips found and the first problem met."""
    out: dict[str, object] = {
        "name": "hailo",
        "found": False,
        "version": "",
        "devices": [],
        "problem": "",
    }
    try:
        hp = import_hailo_platform()
        out["version"] = library = str(hp.__version__)
        check_driver(library)
        archs = []
        if _Shared.identity is not None:  # in use by a model here: not opened again
            archs.append(_Shared.identity[0])
        else:
            for device_id in hp.Device.scan():
                with hp.Device(device_id) as device:
                    archs.append(str(device.control.identify().device_architecture))
        out["devices"] = archs
        out["found"] = bool(archs)
        if not archs:
            out["problem"] = "HailoRT is installed but found no Hailo device"
    except Exception as exc:  # a probe reports, never raises
        out["problem"] = str(exc)
    return out


class HailoInterpreter(Interpreter):
    """An Interpreter whose ``close()`` releases the Hailo model (and device)."""

    def close(self) -> None:
        self._raw.close()
