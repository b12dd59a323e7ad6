"""A test double of picamera2 for machines without a Raspberry Pi camera.

Put the ``tests/fakes`` folder first on ``sys.path`` and ``import picamera2`` finds this package
(and the ``libcamera`` stand-in next to it). It exposes the names edge uses, with the real
signatures; see ``picamera2.picamera2`` for the simulation knobs (``Picamera2.fake_*``).
"""

from __future__ import annotations

from concurrent.futures import TimeoutError

from .job import CancelledError, Job
from .picamera2 import Picamera2
from .request import CompletedRequest

__all__ = ["CancelledError", "CompletedRequest", "Job", "Picamera2", "TimeoutError"]
