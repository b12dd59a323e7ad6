"""A camera-free source of moving coloured shapes, for demos, tests and benchmarks.

Frames come from :class:`edge.scene.MovingScene`, the drawing code of the bundled models' training
pictures (its layout and noise drawn without ``numpy.random``, which a daemon would otherwise load
for this stand-in alone). Frame ``n`` shows the scene at ``n / fps`` seconds (30 fps when
unpaced), which makes the content deterministic in (seed, frame number) whatever the machine's
speed.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from edge.frame import Frame
from edge.scene import MovingScene, Shape
from edge.sources.base import BaseSource, Options, Pacer, SourceSpec

log = logging.getLogger(__name__)

DEFAULT_SIZE = (640, 480)
NOMINAL_FPS = 30.0  # scene clock for unpaced runs


class SyntheticSource(BaseSource):
    """Moving shapes at ``spec.fps`` (deadline-paced) or, with ``fps=None``, as fast as drawn.

    options: ``seed`` (int, default 0), ``count`` (number of shapes, default 3). ``shapes`` holds
    the ground truth of the last frame (pixel coordinates before rotation/flip).
    """

    kind = "synthetic"
    OPTIONS: ClassVar[dict[str, type]] = {"seed": int, "count": int}

    @classmethod
    def lossless(cls, spec: SourceSpec) -> bool:
        """Unpaced frames (``fps=None``, for benchmarks) wait for inference; paced ones behave
        like a camera's."""
        return spec.fps is None

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        opts = Options(spec, self.OPTIONS)
        self.seed = opts.integer("seed", 0)
        self.count = opts.integer("count", 3)
        self.width, self.height = (
            (spec.width, spec.height)
            if spec.width is not None and spec.height is not None
            else DEFAULT_SIZE
        )
        self._pacer = Pacer(spec.fps) if spec.fps else None
        self._clock_fps = spec.fps or NOMINAL_FPS
        self._scene: MovingScene | None = None
        self.shapes: list[Shape] = []

    def _open(self) -> None:
        if self._scene is None:  # the background is random but fixed per seed: build it once
            self._scene = MovingScene(self.width, self.height, count=self.count, seed=self.seed)
        if self._pacer is not None:
            self._pacer.reset()
        log.info(
            "synthetic source %r: %dx%d, %s, seed %d, %d shapes",
            self.name,
            self.width,
            self.height,
            f"{self.spec.fps:g} fps" if self.spec.fps else "unpaced",
            self.seed,
            self.count,
        )

    def _read(self) -> Frame | None:
        assert self._scene is not None
        if self._pacer is not None and not self._wait(self._pacer.delay()):
            raise self._interrupted()
        n = self._seq
        image, self.shapes = self._scene.frame(n / self._clock_fps)
        return self._frame(image, index=n)

    def _release(self) -> None:
        """Nothing to release: the scene is kept so a reopen continues the same clip."""
