"""The AI Camera helpers of the picamera2 test double, the names of picamera2's
``picamera2/devices/imx500/__init__.py`` that edge uses."""

from .imx500 import IMX500, NetworkIntrinsics

__all__ = ["IMX500", "NetworkIntrinsics"]
