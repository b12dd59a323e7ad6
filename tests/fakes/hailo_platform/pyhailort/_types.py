"""The fake HailoRT's data types, enums and exceptions (``pyhailort.py`` and ``pyhailort.cpp``
of HailoRT 4.23; see :mod:`.pyhailort` for the sources), and the simulation knobs' readers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum, IntEnum

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


def _env_version(name: str) -> tuple[int, int, int]:
    major, minor, revision = (int(p) for p in os.environ.get(name, VERSION).split("."))
    return major, minor, revision


def _open_driver() -> None:
    """What HailoRTDriver's constructor checks before any device is usable."""
    if ".".join(map(str, _env_version("HAILO_FAKE_DRIVER"))) != VERSION:
        raise _exception(76)


def _architecture() -> DeviceArchitectureTypes:
    return DeviceArchitectureTypes[os.environ.get("HAILO_FAKE_ARCH", "HAILO8L")]


def get_status_message(status_code: int) -> str:
    return _STATUS.get(status_code, "")


class HailoStreamInterface(Enum):
    PCIe = 0
    INTEGRATED = 3
