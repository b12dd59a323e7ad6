"""A test double of HailoRT's Python package ``hailo_platform`` (HailoRT 4.23, the version for
the Hailo-8/8L), for machines without a Hailo chip.

Put ``tests/fakes`` first on ``sys.path`` (:func:`fakes.activate.fake_hailo_platform`, or
PYTHONPATH for a subprocess) and ``import hailo_platform`` finds it. It exports the names the
real ``hailo_platform/__init__.py`` exports that edge uses, from the module of the same name
(``hailo_platform.pyhailort.pyhailort``); see that module for the sources it follows and the
simulation knobs.
"""

from __future__ import annotations

from .pyhailort.pyhailort import (
    HEF,
    AsyncInferJob,
    Device,
    FormatOrder,
    FormatType,
    HailoCommunicationClosedException,
    HailoRTException,
    HailoRTStreamAbortedByUser,
    HailoSchedulingAlgorithm,
    HailoStreamInterface,
    VDevice,
)

__version__ = "4.23.0"

__all__ = [
    "HEF",
    "AsyncInferJob",
    "Device",
    "FormatOrder",
    "FormatType",
    "HailoCommunicationClosedException",
    "HailoRTException",
    "HailoRTStreamAbortedByUser",
    "HailoSchedulingAlgorithm",
    "HailoStreamInterface",
    "VDevice",
]
