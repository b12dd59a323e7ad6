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

The data types and exceptions live in :mod:`._types`, the inference classes in :mod:`._infer`
(to keep modules small); this module, the one HailoRT's package imports from, re-exports
them. The "chip" (:mod:`._device`) runs a real TFLite model on the bound input pixels and applies
HailoRT's YOLOv8 NMS post-process, so results come from real pixels. Simulation knobs are
environment variables, so a subprocess (``edge run``) sees them too: ``HAILO_FAKE_ARCH``
(``HAILO8L``), ``HAILO_FAKE_DRIVER`` and ``HAILO_FAKE_FIRMWARE`` (the library's version),
``HAILO_FAKE_DEVICES`` (1).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from ._infer import AsyncInferCompletionInfo, AsyncInferJob, ConfiguredInferModel, InferModel
from ._types import (
    BBOX_PARAMS,
    HEF,
    VERSION,
    DeviceArchitectureTypes,
    FormatOrder,
    FormatType,
    HailoCommunicationClosedException,
    HailoFormat,
    HailoRTException,
    HailoRTHEFNotCompatibleWithDevice,
    HailoRTInvalidArgumentException,
    HailoRTInvalidHEFException,
    HailoRTNotFoundException,
    HailoRTStreamAbortedByUser,
    HailoRTTimeout,
    HailoSchedulingAlgorithm,
    HailoStreamInterface,
    NmsShape,
    QuantInfo,
    VStreamInfo,
    _architecture,
    _env_version,
    _exception,
    _open_driver,
    get_status_message,
)

__all__ = [
    "BBOX_PARAMS",
    "HEF",
    "VERSION",
    "AsyncInferCompletionInfo",
    "AsyncInferJob",
    "BoardInformation",
    "ConfiguredInferModel",
    "Control",
    "Device",
    "DeviceArchitectureTypes",
    "FormatOrder",
    "FormatType",
    "HailoCommunicationClosedException",
    "HailoFirmwareVersion",
    "HailoFormat",
    "HailoRTException",
    "HailoRTHEFNotCompatibleWithDevice",
    "HailoRTInvalidArgumentException",
    "HailoRTInvalidHEFException",
    "HailoRTNotFoundException",
    "HailoRTStreamAbortedByUser",
    "HailoRTTimeout",
    "HailoSchedulingAlgorithm",
    "HailoStreamInterface",
    "InferModel",
    "NmsShape",
    "QuantInfo",
    "VDevice",
    "VDeviceParams",
    "VStreamInfo",
    "get_status_message",
]


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
