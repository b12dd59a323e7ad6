"""The fake HailoRT's inference classes: ``InferModel``, ``ConfiguredInferModel`` and its
``Bindings``, ``AsyncInferJob``, ``AsyncInferCompletionInfo`` (``pyhailort.py`` of HailoRT 4.23,
``infer_model_api.cpp``, ``bindings_common.hpp``; see :mod:`.pyhailort`)."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy

from . import _device
from ._types import (
    BBOX_PARAMS,
    HEF,
    VERSION,
    FormatOrder,
    FormatType,
    HailoFormat,
    HailoRTException,
    QuantInfo,
    VStreamInfo,
    _architecture,
    _env_version,
    _exception,
)


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
