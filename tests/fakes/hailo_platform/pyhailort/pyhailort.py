"""HailoRT's Python API (``hailo_platform.pyhailort.pyhailort``) for machines without a Hailo
chip: the classes, signatures, enum names, shapes, context managers and exceptions edge uses,
as HailoRT 4.23 defines them (hailo-ai/hailort, branch hailo8):

- ``hailort/libhailort/bindings/python/platform/hailo_platform/pyhailort/pyhailort.py``:
  ``HEF``, ``VDevice`` (``create_params``, ``create_infer_model``, ``get_physical_devices``),
  ``Device`` (``scan``, ``control.identify()`` → ``BoardInformation``), ``InferModel``
  (``input``/``output`` streams, ``set_format_type``, ``set_batch_size``, ``configure``),
  ``ConfiguredInferModel`` (``create_bindings``, ``run``, ``run_async``,
  ``wait_for_async_ready``), ``Bindings.InferStream`` (``set_buffer``, ``get_buffer``),
  ``AsyncInferJob``, ``AsyncInferCompletionInfo``, the exception classes and
  ``ExceptionWrapper.create_exception_from_status`` messages.
- ``hailort/libhailort/bindings/python/src/pyhailort.cpp``: ``FormatType``, ``FormatOrder``,
  ``DeviceArchitecture``, ``VStreamInfo.shape`` per format order, ``NmsShape``, ``QuantInfo``.
- ``bindings_common.hpp`` ``get_pybind_shape`` and ``hailort_common.hpp``
  ``get_nms_by_class_host_shape_size``: an NMS-by-class output is a flat float32 buffer of
  ``classes * (1 + 5 * max_bboxes_per_class)`` values.
- ``libhailort/src/vdma/driver/hailort_driver.cpp``: a driver whose version differs from the
  library's fails every device open with ``HAILO_INVALID_DRIVER_VERSION`` (76);
  ``device_common/device.cpp``: firmware of another major.minor refuses non-critical
  controls (``HAILO_UNSUPPORTED_FW_VERSION``, 16); ``device_internal.cpp``
  ``check_hef_is_compatible``: configure refuses a HEF compiled for another chip (93).

The "chip" (:mod:`._device`) runs a real TFLite model on the bound input pixels and applies
HailoRT's YOLOv8 NMS post-process, so results come from real pixels. Simulation knobs are
environment variables, so a subprocess (``edge run``) sees them too: ``HAILO_FAKE_ARCH``
(``HAILO8L``), ``HAILO_FAKE_DRIVER`` and ``HAILO_FAKE_FIRMWARE`` (the library's version),
``HAILO_FAKE_DEVICES`` (1).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, Literal

import numpy

from . import _device

VERSION = "4.23.0"
BBOX_PARAMS = 5
_STATUS = {
    4: "HAILO_TIMEOUT",
    16: "HAILO_UNSUPPORTED_FW_VERSION",
    26: "HAILO_INVALID_HEF",
    61: "HAILO_NOT_FOUND",
    2: "HAILO_INVALID_ARGUMENT",
    74: "HAILO_OUT_OF_PHYSICAL_DEVICES",
    76: "HAILO_INVALID_DRIVER_VERSION",
    93: "HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE",
}


class HailoRTException(Exception):  # noqa: N818 (HailoRT names it so)
    pass


class HailoRTTimeout(HailoRTException):
    pass


class HailoRTInvalidArgumentException(HailoRTException):
    pass


class HailoRTNotFoundException(HailoRTException):
    pass


class HailoRTInvalidHEFException(HailoRTException):
    pass


class HailoRTHEFNotCompatibleWithDevice(HailoRTException):
    pass


class HailoRTStreamAbortedByUser(HailoRTException):
    pass


class HailoCommunicationClosedException(HailoRTException):
    pass


def _exception(code: int) -> HailoRTException:
    """ExceptionWrapper.create_exception_from_status for the statuses the fake raises."""
    name = _STATUS[code]
    if name == "HAILO_TIMEOUT":
        return HailoRTTimeout(
            "Received a timeout - hailort has failed because a timeout had occurred"
        )
    if name == "HAILO_INVALID_ARGUMENT":
        return HailoRTInvalidArgumentException(
            "Invalid argument. See hailort.log for more information"
        )
    if name == "HAILO_NOT_FOUND":
        return HailoRTNotFoundException("Item not found. See hailort.log for more information")
    if name == "HAILO_INVALID_HEF":
        return HailoRTInvalidHEFException("Invalid HEF. See hailort.log for more information")
    if name == "HAILO_HEF_NOT_COMPATIBLE_WITH_DEVICE":
        return HailoRTHEFNotCompatibleWithDevice(
            "HEF file is not compatible with device. See hailort.log for more information"
        )
    return HailoRTException(f"libhailort failed with error: {code} ({name})")


class FormatType(IntEnum):
    AUTO = 0
    UINT8 = 1
    UINT16 = 2
    FLOAT32 = 3


class FormatOrder(IntEnum):
    AUTO = 0
    NHWC = 1
    NHCW = 2
    FCR = 3
    F8CR = 4
    NHW = 5
    NC = 6
    BAYER_RGB = 7
    RGB888 = 11
    NCHW = 12
    HAILO_NMS_WITH_BYTE_MASK = 22
    HAILO_NMS_ON_CHIP = 23
    HAILO_NMS_BY_CLASS = 24
    HAILO_NMS_BY_SCORE = 25


class HailoSchedulingAlgorithm(IntEnum):
    NONE = 0
    ROUND_ROBIN = 1


class DeviceArchitectureTypes(IntEnum):
    HAILO8_A0 = 0
    HAILO8 = 1
    HAILO8L = 2
    HAILO15H = 3
    HAILO15L = 4
    HAILO15M = 5
    HAILO10H = 6

    def __str__(self) -> str:
        return self.name


@dataclass
class HailoFormat:
    type: FormatType
    order: FormatOrder
    flags: int = 0


@dataclass
class QuantInfo:
    qp_zp: float = 0.0
    qp_scale: float = 1.0
    limvals_min: float = 0.0
    limvals_max: float = 255.0


@dataclass
class NmsShape:
    number_of_classes: int
    max_bboxes_per_class: int
    max_accumulated_mask_size: int = 0


class VStreamInfo:
    """``VStreamInfo``: ``shape`` is (h, w, c), or (classes, 5, max boxes) for NMS by class."""

    def __init__(
        self, name: str, fmt: HailoFormat, shape: tuple[int, ...], nms: NmsShape | None
    ) -> None:
        self.name = name
        self.network_name = name.split("/", maxsplit=1)[0]
        self.format = fmt
        self.quant_info = QuantInfo()
        self._shape = shape
        self._nms = nms

    @property
    def shape(self) -> tuple[int, ...]:
        if self.format.order == FormatOrder.HAILO_NMS_BY_CLASS:
            assert self._nms is not None
            return (self._nms.number_of_classes, BBOX_PARAMS, self._nms.max_bboxes_per_class)
        return self._shape

    @property
    def nms_shape(self) -> NmsShape:
        if self._nms is None:
            raise HailoRTException("nms_shape is availale only on nms order vstreams")
        return self._nms

    def __repr__(self) -> str:
        return f'VStreamInfo("{self.name}")'


class HEF:
    """A HEF file: here the test stand-in :mod:`._device` reads (a HEF header, then the
    network's description)."""

    def __init__(self, hef_source: str | bytes) -> None:
        try:
            self._net = _device.Network.read(hef_source)
        except ValueError as exc:
            raise _exception(26) from exc
        self.path = hef_source if isinstance(hef_source, str) else None
        n = self._net
        self._inputs = [
            VStreamInfo(
                n.input_name,
                HailoFormat(FormatType[n.input_type], FormatOrder.NHWC),
                n.input_shape,
                None,
            )
        ]
        order = FormatOrder[n.output_order]
        self._outputs = [
            VStreamInfo(
                n.output_name,
                HailoFormat(FormatType.FLOAT32, order),
                (n.classes, BBOX_PARAMS, n.per_class),
                NmsShape(n.classes, n.per_class)
                if order == FormatOrder.HAILO_NMS_BY_CLASS
                else None,
            )
        ]

    def get_network_group_names(self) -> list[str]:
        return [self._net.group]

    def get_input_vstream_infos(self, name: str | None = None) -> list[VStreamInfo]:
        return list(self._inputs)

    def get_output_vstream_infos(self, name: str | None = None) -> list[VStreamInfo]:
        return list(self._outputs)


class HailoFirmwareVersion:
    def __init__(self, major: int, minor: int, revision: int) -> None:
        self.major, self.minor, self.revision = major, minor, revision

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.revision} (release,app)"


class BoardInformation:
    def __init__(self, arch: DeviceArchitectureTypes, firmware: HailoFirmwareVersion) -> None:
        self.device_architecture = arch
        self.firmware_version = firmware
        self.board_name = arch.name.replace("HAILO", "Hailo-")


def _env_version(name: str) -> tuple[int, int, int]:
    major, minor, revision = (int(p) for p in os.environ.get(name, VERSION).split("."))
    return major, minor, revision


def _open_driver() -> None:
    """What HailoRTDriver's constructor checks before any device is usable."""
    if ".".join(map(str, _env_version("HAILO_FAKE_DRIVER"))) != VERSION:
        raise _exception(76)


def _architecture() -> DeviceArchitectureTypes:
    return DeviceArchitectureTypes[os.environ.get("HAILO_FAKE_ARCH", "HAILO8L")]


class Control:
    def __init__(self, device_id: str) -> None:
        self._device_id = device_id

    def identify(self) -> BoardInformation:
        return BoardInformation(
            _architecture(), HailoFirmwareVersion(*_env_version("HAILO_FAKE_FIRMWARE"))
        )


class Device:
    """A physical device (for inference use VDevice)."""

    opened = 0  # Device objects made in this process (tests check the chip is not reopened)

    @classmethod
    def scan(cls) -> list[str]:
        return [
            f"0001:0{i + 1}:00.0" for i in range(int(os.environ.get("HAILO_FAKE_DEVICES", "1")))
        ]

    def __init__(self, device_id: str | None = None) -> None:
        self._device: str | None = None
        if device_id is None:
            ids = Device.scan()
            if not ids:
                raise HailoRTException("HailoRT device not found in the system")
            device_id = ids[0]
        _open_driver()
        Device.opened += 1
        self._device_id = device_id
        self._device = device_id
        self._control_object = Control(device_id)

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *args: object) -> Literal[False]:
        self.release()
        return False

    def release(self) -> None:
        self._device = None

    @property
    def device_id(self) -> str:
        return self._device_id

    @property
    def control(self) -> Control:
        return self._control_object


@dataclass
class VDeviceParams:
    device_count: int = 1
    scheduling_algorithm: HailoSchedulingAlgorithm = HailoSchedulingAlgorithm.ROUND_ROBIN
    group_id: str = "UNIQUE"
    multi_process_service: bool = False


class VDevice:
    """Hailo virtual device representation."""

    open_count = 0  # devices open now in this process (tests check releases)

    def __init__(
        self, params: VDeviceParams | None = None, *, device_ids: list[str] | None = None
    ) -> None:
        self._vdevice: bool | None = None
        self._params = params or VDevice.create_params()
        _open_driver()
        ids = device_ids or Device.scan()
        if not ids:
            raise _exception(74)
        self._ids = ids
        self._vdevice = True
        VDevice.open_count += 1

    def __enter__(self) -> VDevice:
        return self

    def release(self) -> None:
        if self._vdevice is not None:
            self._vdevice = None
            VDevice.open_count -= 1

    def __exit__(self, *args: object) -> Literal[False]:
        self.release()
        return False

    def __del__(self) -> None:
        self.release()

    @staticmethod
    def create_params() -> VDeviceParams:
        return VDeviceParams()

    def get_physical_devices_ids(self) -> list[str]:
        return list(self._ids)

    def get_physical_devices(self) -> list[Device]:
        return [Device(i) for i in self._ids]

    def create_infer_model(self, hef_source: str | bytes, name: str = "") -> InferModel:
        if self._vdevice is None:
            raise HailoRTException("VDevice was released")
        return InferModel(HEF(hef_source), hef_source)


class InferModel:
    """What to configure for inference: streams' formats, the batch size."""

    class InferStream:
        def __init__(self, info: VStreamInfo) -> None:
            self._info = info
            self._format = HailoFormat(info.format.type, info.format.order, info.format.flags)

        @property
        def name(self) -> str:
            return self._info.name

        @property
        def shape(self) -> list[int]:
            if self._format.order == FormatOrder.HAILO_NMS_BY_CLASS:
                nms = self._info.nms_shape
                return [nms.number_of_classes * (1 + BBOX_PARAMS * nms.max_bboxes_per_class)]
            return list(self._info.shape)

        @property
        def format(self) -> HailoFormat:
            return self._format

        def set_format_type(self, type: FormatType) -> None:
            self._format.type = FormatType(type)

        def set_format_order(self, order: FormatOrder) -> None:
            self._format.order = FormatOrder(order)

        @property
        def quant_infos(self) -> list[QuantInfo]:
            return [self._info.quant_info]

        @property
        def is_nms(self) -> bool:
            return self._format.order == FormatOrder.HAILO_NMS_BY_CLASS

    def __init__(self, hef: HEF, hef_path: str | bytes) -> None:
        self._hef = hef
        self._hef_path = hef_path
        self._inputs = [self.InferStream(i) for i in hef.get_input_vstream_infos()]
        self._outputs = [self.InferStream(o) for o in hef.get_output_vstream_infos()]
        self.batch_size = 0

    @property
    def hef(self) -> HEF:
        return self._hef

    def set_batch_size(self, batch_size: int) -> None:
        self.batch_size = batch_size

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self._outputs]

    @property
    def inputs(self) -> list[InferModel.InferStream]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[InferModel.InferStream]:
        return list(self._outputs)

    def input(self, name: str = "") -> InferModel.InferStream:
        return self._pick(self._inputs, name)

    def output(self, name: str = "") -> InferModel.InferStream:
        return self._pick(self._outputs, name)

    @staticmethod
    def _pick(streams: list[InferModel.InferStream], name: str) -> InferModel.InferStream:
        if name == "" and len(streams) == 1:
            return streams[0]
        for s in streams:
            if s.name == name:
                return s
        raise _exception(61)

    def configure(self) -> ConfiguredInferModel:
        """Checks the formats and the device (firmware, HEF target), as HailoRT's configure."""
        if _env_version("HAILO_FAKE_FIRMWARE")[:2] != tuple(int(p) for p in VERSION.split(".")[:2]):
            raise _exception(16)
        if not _device.runs_on(self._hef._net.target, _architecture().name):
            raise _exception(93)
        for o in self._outputs:
            if (
                o.format.order == FormatOrder.HAILO_NMS_BY_CLASS
                and o.format.type != FormatType.FLOAT32
            ):
                raise _exception(2)
        return ConfiguredInferModel(self)


class AsyncInferCompletionInfo:
    def __init__(self, exception: HailoRTException | None) -> None:
        self._exception = exception

    @property
    def exception(self) -> HailoRTException | None:
        return self._exception


class AsyncInferJob:
    def __init__(self, done: threading.Event) -> None:
        self._done = done

    def wait(self, timeout_ms: int) -> None:
        if not self._done.wait(timeout_ms / 1000):
            raise _exception(4)


class ConfiguredInferModel:
    """A configured model; use it inside a context manager."""

    class Bindings:
        class InferStream:
            def __init__(self, stream: InferModel.InferStream) -> None:
                self._stream = stream
                self._buffer: numpy.ndarray | None = None

            def set_buffer(self, buffer: numpy.ndarray) -> None:
                if not buffer.flags.c_contiguous:
                    raise HailoRTException("Buffer must be C_CONTIGUOUS")
                fmt = self._stream.format
                itemsize = (
                    4
                    if fmt.type == FormatType.FLOAT32
                    else 2
                    if fmt.type == FormatType.UINT16
                    else 1
                )
                if buffer.nbytes != int(numpy.prod(self._stream.shape)) * itemsize:
                    raise _exception(2)  # infer_model.cpp: the buffer must be one frame
                self._buffer = buffer

            def get_buffer(self, tf_format: bool | None = False) -> Any:
                """The buffer; for NMS by class (unless tf_format is None) a list with one
                (detections, 5) array per class (output_raw_buffer_to_nms_format_single_frame)."""
                buffer = self._buffer
                if tf_format is None or buffer is None or not self._stream.is_nms:
                    return buffer
                if tf_format:
                    raise HailoRTException("the fake implements the hailo NMS format only")
                classes = self._stream._info.nms_shape.number_of_classes
                out, offset = [], 0
                for _ in range(classes):
                    count = int(buffer[offset])
                    offset += 1
                    if count == 0:
                        out.append(numpy.empty([0, BBOX_PARAMS]))
                    else:
                        out.append(
                            buffer[offset : offset + BBOX_PARAMS * count].reshape(
                                count, BBOX_PARAMS
                            )
                        )
                        offset += BBOX_PARAMS * count
                return out

        def __init__(self, model: InferModel) -> None:
            self._model = model
            self._input_names = model.input_names
            self._output_names = model.output_names
            self._inputs = {s.name: self.InferStream(s) for s in model.inputs}
            self._outputs = {s.name: self.InferStream(s) for s in model.outputs}

        def input(self, name: str = "") -> ConfiguredInferModel.Bindings.InferStream:
            return self._pick(self._inputs, self._input_names, name)

        def output(self, name: str = "") -> ConfiguredInferModel.Bindings.InferStream:
            return self._pick(self._outputs, self._output_names, name)

        @staticmethod
        def _pick(
            streams: dict[str, ConfiguredInferModel.Bindings.InferStream],
            names: list[str],
            name: str,
        ) -> ConfiguredInferModel.Bindings.InferStream:
            if name == "" and len(names) == 1:
                name = names[0]
            if name not in streams:
                raise _exception(61)
            return streams[name]

        def get(self) -> ConfiguredInferModel.Bindings:
            return self

    runs = 0  # inferences run in this process (tests check the device was used)

    def __init__(self, model: InferModel) -> None:
        self._configured_infer_model: InferModel | None = model
        self._input_names = model.input_names
        self._output_names = model.output_names
        self._buffer_guards: deque[list[Any]] = deque()
        self._chip = _device.Chip(model.hef._net)
        self._lock = threading.Lock()

    def __enter__(self) -> ConfiguredInferModel:
        return self

    def __exit__(self, *args: object) -> None:
        self._configured_infer_model = None

    def create_bindings(
        self,
        input_buffers: dict[str, numpy.ndarray] | None = None,
        output_buffers: dict[str, numpy.ndarray] | None = None,
    ) -> ConfiguredInferModel.Bindings:
        model = self._live()
        bindings = self.Bindings(model)
        for name, buffer in (input_buffers or {}).items():
            bindings.input(name).set_buffer(buffer)
        for name, buffer in (output_buffers or {}).items():
            bindings.output(name).set_buffer(buffer)
        return bindings

    def wait_for_async_ready(self, timeout_ms: int = 1000, frames_count: int = 1) -> None:
        self._live()
        if frames_count > self.get_async_queue_size():
            raise _exception(4)

    def get_async_queue_size(self) -> int:
        return 2

    def run(self, bindings: list[ConfiguredInferModel.Bindings], timeout: int) -> None:
        self.run_async(bindings).wait(timeout)

    def run_async(
        self,
        bindings: list[ConfiguredInferModel.Bindings],
        callback: Callable[..., None] | None = None,
    ) -> AsyncInferJob:
        self._live()
        for b in bindings:
            for name in [*self._input_names, *self._output_names]:
                stream = b.input(name) if name in self._input_names else b.output(name)
                if stream.get_buffer(None) is None:
                    raise HailoRTException(f"no buffer set for {name}")  # HAILO_INVALID_OPERATION
        done = threading.Event()
        with self._lock:
            for b in bindings:
                src = b.input().get_buffer(None)
                dst = b.output().get_buffer(None)
                self._chip.infer(src, dst)
                ConfiguredInferModel.runs += 1
        if callback is not None:
            callback(completion_info=AsyncInferCompletionInfo(None))
        done.set()
        return AsyncInferJob(done)

    def shutdown(self) -> None:
        self._configured_infer_model = None

    def _live(self) -> InferModel:
        if self._configured_infer_model is None:
            raise HailoRTException("Invalid operation. See hailort.log for more information")
        return self._configured_infer_model


def get_status_message(status_code: int) -> str:
    return _STATUS.get(status_code, "")


class HailoStreamInterface(Enum):
    PCIe = 0
    INTEGRATED = 3
