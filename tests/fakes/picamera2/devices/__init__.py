"""Device helpers of the picamera2 test double: the AI Camera's ``IMX500``, as picamera2's
``picamera2/devices/__init__.py`` exports it."""

from .imx500 import IMX500

__all__ = ["IMX500"]
