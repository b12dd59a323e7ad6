"""A stand-in for the few libcamera Python binding types picamera2 configurations carry.

Only what picamera2 configuration dictionaries hold: ``ColorSpace`` presets and ``Transform``.
"""

from __future__ import annotations


class ColorSpace:
    """A named colour space preset (the real class has primaries, transfer, encoding, range)."""

    def __init__(self, name: str, range_: str) -> None:
        self.name = name
        self.range = range_

    @staticmethod
    def Sycc() -> ColorSpace:
        return ColorSpace("sYCC", "Full")

    @staticmethod
    def Smpte170m() -> ColorSpace:
        return ColorSpace("SMPTE170M", "Limited")

    @staticmethod
    def Rec709() -> ColorSpace:
        return ColorSpace("Rec709", "Limited")

    @staticmethod
    def Raw() -> ColorSpace:
        return ColorSpace("RAW", "Full")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ColorSpace) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __repr__(self) -> str:
        return self.name


class Transform:
    """Sensor readout flips; picamera2 passes one in every configuration."""

    def __init__(self, hflip: int = 0, vflip: int = 0, transpose: int = 0) -> None:
        self.hflip = hflip
        self.vflip = vflip
        self.transpose = transpose

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Transform) and (other.hflip, other.vflip, other.transpose) == (
            self.hflip,
            self.vflip,
            self.transpose,
        )

    def __hash__(self) -> int:
        return hash((self.hflip, self.vflip, self.transpose))

    def __repr__(self) -> str:
        return f"<libcamera.Transform hflip={self.hflip} vflip={self.vflip}>"
