"""Frame sources: one contract suite run on every registry entry, then each backend's specifics."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
from fakes.activate import fake_picamera2
from rpk_files import write_rpk

from edge.decode import header_size
from edge.errors import ConfigError, InputError, SourceError
from edge.frame import Frame
from edge.scene import MovingScene, SceneRandom, background
from edge.sources import REGISTRY, Source, SourceSpec, open_source, parse_source
from edge.sources.base import Pacer
from edge.sources.images import ImagesSource
from edge.sources.opencv import OpenCVSource, _redact
from edge.sources.synthetic import SyntheticSource

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "samples" / "shapes.mp4"


@pytest.fixture
def picam() -> Iterator[ModuleType]:
    """The picamera2 test double on sys.path for this test."""
    with fake_picamera2() as module:
        yield module


def write_images(folder: Path, n: int = 4, size: tuple[int, int] = (160, 120)) -> list[Path]:
    """``n`` real PNG files of a moving scene, named so their sorted order is their index."""
    folder.mkdir(parents=True, exist_ok=True)
    scene = MovingScene(*size, count=2, seed=1)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:03d}.png"
        assert cv2.imwrite(str(path), scene.frame(i / 5)[0])
        paths.append(path)
    return paths


def write_clip(path: Path, frames: int = 6, fps: float = 20.0) -> Path:
    """A small real video file (mp4v) of a moving scene."""
    scene = MovingScene(160, 120, count=2, seed=2)
    writer = cv2.VideoWriter(
        str(path), cv2.CAP_FFMPEG, cv2.VideoWriter.fourcc(*"mp4v"), fps, (160, 120)
    )
    assert writer.isOpened()
    for i in range(frames):
        writer.write(scene.frame(i / fps)[0])
    writer.release()
    return path


# -- the contract, for every backend that can run here ------------------------------------------

SpecFactory = Callable[[Path], SourceSpec]
CASES: dict[str, SpecFactory] = {
    "opencv": lambda tmp: SourceSpec(kind="opencv", target=str(CLIP), name="cam"),
    "images": lambda tmp: SourceSpec(
        kind="images", target=str(write_images(tmp / "imgs")[0].parent), name="cam"
    ),
    "synthetic": lambda tmp: SourceSpec(
        kind="synthetic", name="cam", width=160, height=120, options={"seed": 4}
    ),
    "picamera2": lambda tmp: SourceSpec(kind="picamera2", name="cam", fps=60.0),
    "imx500": lambda tmp: SourceSpec(
        kind="imx500", target=str(write_rpk(tmp / "net.rpk")), name="cam", fps=60.0
    ),
}
# Backends that refuse rotation and mirroring (the AI Camera's boxes refer to its sensor's
# image); test_imx500_source.py checks the refusal.
UNORIENTED = {"imx500"}


@contextmanager
def _maker(kind: str, tmp_path: Path) -> Iterator[Callable[..., Source]]:
    """Builds sources of one registry kind (with field overrides) and closes them afterwards."""
    with ExitStack() as stack:
        if kind in ("picamera2", "imx500"):
            # A still scene makes the fake camera's frames comparable pixel for pixel.
            module = stack.enter_context(fake_picamera2())
            module.Picamera2.fake_speed = 0.0
        if kind == "imx500":
            # The sensor's network is not run here (no fake_model): frames carry no tensor.
            stack.enter_context(_attribute(module.Picamera2, "fake_model", "imx500"))
            stack.enter_context(_attribute(module.Picamera2, "fake_sensors", {}))
            from picamera2.devices import imx500

            stack.enter_context(_attribute(imx500.IMX500, "fake_first_tensor", 10**9))

        def build(**changes: object) -> Source:
            spec = replace(CASES[kind](tmp_path), **changes)  # type: ignore[arg-type]
            source = open_source(spec)
            stack.callback(source.close)
            return source

        yield build


@pytest.fixture(params=sorted(CASES))
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Source]]:
    """Every registry kind."""
    with _maker(request.param, tmp_path) as build:
        yield build


@pytest.fixture(params=sorted(set(CASES) - UNORIENTED))
def make_oriented(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., Source]]:
    """Every registry kind that rotates and mirrors frames."""
    with _maker(request.param, tmp_path) as build:
        yield build


@contextmanager
def _attribute(obj: object, name: str, value: object) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def read_n(source: Source, n: int) -> list[Frame]:
    frames = []
    for _ in range(n):
        frame = source.read()
        assert frame is not None
        frames.append(frame)
    return frames


def test_cases_cover_the_registry() -> None:
    """Every registered backend is run through the contract suite."""
    assert set(CASES) == set(REGISTRY)


def test_open_read_close(make: Callable[..., Source]) -> None:
    """A source delivers BGR uint8 frames stamped with its name and consecutive seq numbers."""
    source = make()
    source.open()
    frames = read_n(source, 3)
    assert [f.seq for f in frames] == [0, 1, 2]
    for f in frames:
        assert f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3
        assert f.source == "cam"
        assert f.height > 0 and f.width > 0
    source.close()


def test_seq_keeps_increasing_across_reopen(make: Callable[..., Source]) -> None:
    """seq is strictly increasing across close and reopen of the same source object."""
    source = make()
    source.open()
    first = read_n(source, 2)
    source.close()
    source.open()
    second = read_n(source, 2)
    seqs = [f.seq for f in first + second]
    assert seqs == sorted(set(seqs)) and seqs[0] == 0


def test_timestamps_are_monotonic_and_current(make: Callable[..., Source]) -> None:
    """ts_mono never goes backwards and lies in the last second; ts_wall matches the clock."""
    source = make()
    source.open()
    frames = read_n(source, 4)
    now_mono, now_wall = time.monotonic(), time.time()
    monos = [f.ts_mono for f in frames]
    assert monos == sorted(monos)
    assert all(now_mono - 1.0 < t <= now_mono for t in monos)
    assert all(abs((now_wall - f.ts_wall) - (now_mono - f.ts_mono)) < 0.05 for f in frames)


@pytest.mark.parametrize("rotate", [90, 270])
def test_rotation_swaps_width_and_height(make_oriented: Callable[..., Source], rotate: int) -> None:
    """A 90° or 270° rotation delivers frames with width and height swapped."""
    plain = make_oriented()
    plain.open()
    frame = read_n(plain, 1)[0]
    turned = make_oriented(rotate=rotate, flip="h")
    turned.open()
    rotated = read_n(turned, 1)[0]
    assert rotated.image.shape == (frame.width, frame.height, 3)


@pytest.mark.parametrize(
    ("rotate", "flip", "expect"),
    [
        (90, None, lambda im: cv2.rotate(im, cv2.ROTATE_90_CLOCKWISE)),
        (180, "h", lambda im: cv2.rotate(im[:, ::-1], cv2.ROTATE_180)),
        (0, "v", lambda im: im[::-1]),
        (270, "hv", lambda im: cv2.rotate(im[::-1, ::-1], cv2.ROTATE_90_COUNTERCLOCKWISE)),
    ],
)
def test_orientation_is_flip_then_clockwise_rotation(
    make_oriented: Callable[..., Source],
    rotate: int,
    flip: str | None,
    expect: Callable[[np.ndarray], np.ndarray],
) -> None:
    """Frames are mirrored first, then rotated clockwise, pixel for pixel."""
    plain = make_oriented()
    plain.open()
    turned = make_oriented(rotate=rotate, flip=flip)
    turned.open()
    a, b = read_n(plain, 2), read_n(turned, 2)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(y.image, expect(x.image))


def test_close_is_idempotent_and_read_after_close_fails(make: Callable[..., Source]) -> None:
    """close() before open, twice, and after reading is harmless; read() after it raises."""
    source = make()
    source.close()
    source.open()
    read_n(source, 1)
    source.close()
    source.close()
    with pytest.raises(SourceError, match="not open"):
        source.read()


# -- parse_source and SourceSpec ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "target"),
    [
        ("path/to/video.mp4", "opencv", "path/to/video.mp4"),
        ("/dev/video0", "opencv", "/dev/video0"),
        ("0", "opencv", "0"),
        ("rtsp://user:pw@cam.local/stream", "opencv", "rtsp://user:pw@cam.local/stream"),
        ("http://cam.local/mjpg", "opencv", "http://cam.local/mjpg"),
        ("picamera2", "picamera2", ""),
        ("synthetic", "synthetic", ""),
        ("folder/", "images", "folder/"),
        ("imgs/*.jpg", "images", "imgs/*.jpg"),
        ("photo.PNG", "images", "photo.PNG"),
    ],
)
def test_parse_source_picks_the_kind(text: str, kind: str, target: str) -> None:
    """Each command-line form maps to the backend that can read it."""
    spec = parse_source(text, name="door")
    assert (spec.kind, spec.target, spec.name) == (kind, target, "door")


def test_parse_source_special_forms(tmp_path: Path) -> None:
    """An existing folder needs no slash; synthetic is paced; picamera2:N picks camera N."""
    assert parse_source(str(tmp_path)).kind == "images"
    assert parse_source("synthetic").fps == 30.0
    assert parse_source("picamera2:1").options == {"camera_num": 1}
    with pytest.raises(ConfigError, match="camera number"):
        parse_source("picamera2:front")
    with pytest.raises(ConfigError, match="empty"):
        parse_source("  ")


def test_spec_reports_every_problem_at_once() -> None:
    """SourceSpec validation names each bad field with its path."""
    with pytest.raises(ConfigError) as info:
        SourceSpec(kind="opencv", target="x.mp4", fps=-1, rotate=45, flip="x", width=640)  # type: ignore[arg-type]
    text = str(info.value)
    for key in ("source.fps", "source.rotate", "source.flip", "source.width/height"):
        assert key in text
    assert len(info.value.problems) == 4


def test_spec_options_are_frozen_and_checked() -> None:
    """Options cannot be changed after construction; backends reject unknown or mistyped ones."""
    spec = SourceSpec(kind="synthetic", options={"seed": 1})
    with pytest.raises(TypeError):
        spec.options["seed"] = 2  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"options\.colour: unknown"):
        open_source(replace(spec, options={"colour": "red"}))
    with pytest.raises(ConfigError, match=r"options\.seed"):
        open_source(replace(spec, options={"seed": True}))


def test_pacer_keeps_every_frame_of_a_camera_at_the_same_rate() -> None:
    """A jittery camera at the target rate loses no frames; one at 3x the rate keeps a third."""
    clock = [0.0]
    pacer = Pacer(10.0, clock=lambda: clock[0])
    kept = 0
    for i in range(50):
        clock[0] = i * 0.1 + (0.004 if i % 2 else -0.004)
        kept += pacer.due()
    assert kept == 50
    pacer = Pacer(10.0, clock=lambda: clock[0])
    kept = 0
    for i in range(150):  # 5 s of frames
        clock[0] = 10 + i / 30
        kept += pacer.due()
    assert kept in (50, 51)  # the last frame is within half a period of the 51st slot


# -- opencv -------------------------------------------------------------------------------------


def test_opencv_missing_file_is_an_input_error(tmp_path: Path) -> None:
    """A missing video file raises InputError naming the file."""
    missing = tmp_path / "nope.mp4"
    source = OpenCVSource(SourceSpec(kind="opencv", target=str(missing)))
    with pytest.raises(InputError, match=r"nope\.mp4.*does not exist"):
        source.open()


def test_opencv_undecodable_file_is_an_input_error(tmp_path: Path) -> None:
    """A file that is not a video raises InputError with what to do."""
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video\n")
    with pytest.raises(InputError, match="cannot decode video file"):
        OpenCVSource(SourceSpec(kind="opencv", target=str(bogus))).open()


def test_opencv_file_reads_every_frame_then_ends() -> None:
    """The sample clip gives 120 frames indexed from the file, its fps, then end of stream."""
    source = OpenCVSource(SourceSpec(kind="opencv", target=str(CLIP)))
    source.open()
    assert source.file_fps == 10.0
    indices = []
    while (frame := source.read()) is not None:
        assert frame.path == str(CLIP)
        indices.append(frame.index)
    assert indices == list(range(120))
    assert source.read() is None
    source.close()


def test_opencv_sample_clip_matches_its_ground_truth() -> None:
    """At each truth box centre of the sample clip the decoded pixel has the shape's colour."""
    import json

    from edge.scene import COLOURS

    truth = json.loads((ROOT / "samples" / "shapes.json").read_text())
    source = OpenCVSource(SourceSpec(kind="opencv", target=str(CLIP)))
    source.open()
    checked = 0
    for entry in truth["frames"][:30:7]:
        while (frame := source.read()) is not None and frame.index < entry["index"]:
            pass
        assert frame is not None and frame.index == entry["index"]
        centres = []
        for obj in entry["objects"]:
            x0, y0, x1, y1 = obj["box"]
            centres.append(((x0 + x1) / 2 * frame.width, (y0 + y1) / 2 * frame.height, obj))
        for cx, cy, obj in centres:
            # Skip centres covered by another shape's box: the top shape may hide them.
            if any(
                o is not obj
                and o["box"][0] * 640 <= cx <= o["box"][2] * 640
                and o["box"][1] * 480 <= cy <= o["box"][3] * 480
                for _, _, o in centres
            ):
                continue
            pixel = frame.image[int(cy) + 3, int(cx)].astype(int)  # a triangle's centroid is low
            assert np.abs(pixel - COLOURS[obj["colour"]]).max() < 40, (entry["index"], obj)
            checked += 1
    source.close()
    assert checked >= 8


def test_opencv_loop_restarts_the_file(tmp_path: Path) -> None:
    """With loop, reading past the end restarts at file frame 0 while seq keeps counting."""
    clip = write_clip(tmp_path / "c.mp4", frames=4)
    source = OpenCVSource(SourceSpec(kind="opencv", target=str(clip), loop=True))
    source.open()
    frames = read_n(source, 10)
    assert [f.index for f in frames] == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert [f.seq for f in frames] == list(range(10))
    source.close()


def test_opencv_fps_throttles_a_file(tmp_path: Path) -> None:
    """With fps set, a file is delivered no faster than that rate, frame by frame."""
    clip = write_clip(tmp_path / "c.mp4", frames=6)
    source = OpenCVSource(SourceSpec(kind="opencv", target=str(clip), fps=25.0))
    source.open()
    start = time.monotonic()
    frames = read_n(source, 6)
    assert time.monotonic() - start >= 5 / 25 - 0.01
    assert [f.index for f in frames] == list(range(6))
    source.close()


def test_opencv_realtime_skips_frames_when_the_reader_is_late(tmp_path: Path) -> None:
    """In realtime mode a reader that falls behind gets the frame due now, not the next one."""
    clip = write_clip(tmp_path / "c.mp4", frames=20, fps=20.0)
    source = OpenCVSource(SourceSpec(kind="opencv", target=str(clip), realtime=True))
    source.open()
    start = time.monotonic()
    assert read_n(source, 1)[0].index == 0
    second = read_n(source, 1)[0]
    assert second.index == 1 and second.ts_mono - start >= 1 / 20 - 0.01  # paced, not early
    time.sleep(0.3)  # a slow consumer: about 6 file frames pass meanwhile
    late = read_n(source, 1)[0]
    assert late.index >= 6
    source.close()


def test_opencv_missing_camera_is_a_source_error() -> None:
    """A camera device that does not exist raises a retryable SourceError with what to check."""
    source = OpenCVSource(SourceSpec(kind="opencv", target="/dev/video97"))
    with pytest.raises(SourceError, match="v4l2-ctl --list-devices"):
        source.open()


def test_opencv_unreachable_stream_is_a_source_error() -> None:
    """A stream that refuses connections raises SourceError saying so, without its password."""
    spec = SourceSpec(
        kind="opencv", target="rtsp://admin:secret@127.0.0.1:9/live", read_timeout_s=2.0
    )
    with pytest.raises(SourceError) as info:
        OpenCVSource(spec).open()
    assert "secret" not in str(info.value) and "admin:***@127.0.0.1:9" in str(info.value)
    assert "connection refused by 127.0.0.1:9" in str(info.value)


def test_spec_checks_stream_settings() -> None:
    """read_timeout_s must be positive and rtsp_transport tcp, udp or unset."""
    with pytest.raises(ConfigError) as info:
        SourceSpec(kind="opencv", target="rtsp://h/x", read_timeout_s=0, rtsp_transport="http")  # type: ignore[arg-type]
    assert len(info.value.problems) == 2
    assert SourceSpec(kind="opencv", target="rtsp://h/x", rtsp_transport="udp").read_timeout_s == 5


def test_redact_leaves_urls_without_credentials_alone() -> None:
    """Only the password part of a URL is hidden."""
    assert _redact("rtsp://cam/x") == "rtsp://cam/x"
    assert _redact("http://u:p@h/a@b") == "http://u:***@h/a@b"
    assert _redact("clip@2x.mp4") == "clip@2x.mp4"


# -- images -------------------------------------------------------------------------------------


def test_images_skips_and_counts_unreadable_files(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A corrupt or empty image is logged and skipped; the others are delivered in order."""
    paths = write_images(tmp_path, n=3)
    (tmp_path / "img_000b.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    (tmp_path / "img_001b.png").write_bytes(paths[0].read_bytes()[:60])  # truncated
    (tmp_path / "img_002b.png").write_bytes(b"")
    source = ImagesSource(SourceSpec(kind="images", target=str(tmp_path)))
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    assert [Path(f.path or "").name for f in frames] == [p.name for p in paths]
    assert [f.index for f in frames] == [0, 2, 4]  # position in the sorted list of 6 files
    assert source.skipped == 3
    assert caplog.text.count("skipping") == 3


def test_images_refuses_oversized_images(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An image above the pixel cap is skipped with a message giving its size and the cap."""
    write_images(tmp_path, n=2, size=(160, 120))
    cv2.imwrite(str(tmp_path / "big.jpg"), np.zeros((200, 300, 3), np.uint8))
    spec = SourceSpec(kind="images", target=str(tmp_path), options={"max_pixels": 160 * 120})
    source = ImagesSource(spec)
    source.open()
    while source.read() is not None:
        pass
    assert source.skipped == 1
    assert "300x200 pixels; the limit is 19200 pixels" in caplog.text


def test_header_size_reads_common_formats() -> None:
    """PNG, JPEG and BMP headers give the image size without decoding."""
    image = np.zeros((37, 53, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp"):
        ok, data = cv2.imencode(ext, image)
        assert ok and header_size(data.tobytes()) == (53, 37), ext
    assert header_size(b"GIF89a....") is None


def test_images_glob_single_file_and_loop(tmp_path: Path) -> None:
    """A glob selects matching files; a single file is one frame; loop repeats the list."""
    paths = write_images(tmp_path, n=3)
    (tmp_path / "other.txt").write_text("x")
    glob_src = ImagesSource(SourceSpec(kind="images", target=str(tmp_path / "img_*.png")))
    glob_src.open()
    assert len(glob_src.paths) == 3
    single = ImagesSource(SourceSpec(kind="images", target=str(paths[1])))
    single.open()
    assert read_n(single, 1)[0].path == str(paths[1])
    assert single.read() is None
    looped = ImagesSource(SourceSpec(kind="images", target=str(tmp_path), loop=True))
    looped.open()
    assert [f.index for f in read_n(looped, 5)] == [0, 1, 2, 0, 1]


@pytest.mark.parametrize("target", ["missing_dir/", "missing/*.jpg", "missing.png", "empty"])
def test_images_nothing_to_read_is_an_input_error(tmp_path: Path, target: str) -> None:
    """A missing path, a glob matching nothing or a folder without images raises InputError."""
    (tmp_path / "empty").mkdir()
    source = ImagesSource(SourceSpec(kind="images", target=str(tmp_path / target)))
    with pytest.raises(InputError, match=r"check|expected"):
        source.open()


# -- synthetic ----------------------------------------------------------------------------------


def test_synthetic_is_deterministic_in_seed() -> None:
    """Same seed, same frames; another seed, other frames; truth describes the last frame."""

    def frames(seed: int) -> list[np.ndarray]:
        source = SyntheticSource(
            SourceSpec(kind="synthetic", width=160, height=120, options={"seed": seed})
        )
        source.open()
        out = [f.image for f in read_n(source, 3)]
        assert len(source.shapes) == 3
        return out

    a, b, c = frames(5), frames(5), frames(6)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[2])  # the shapes move


def test_synthetic_paces_to_fps_and_runs_unpaced_without() -> None:
    """fps paces frames by deadline; without fps frames come as fast as they are drawn."""
    paced = SyntheticSource(SourceSpec(kind="synthetic", fps=50.0, width=64, height=48))
    paced.open()
    start = time.monotonic()
    read_n(paced, 11)
    assert time.monotonic() - start >= 10 / 50 - 0.01
    fast = SyntheticSource(SourceSpec(kind="synthetic", width=64, height=48))
    fast.open()
    start = time.monotonic()
    read_n(fast, 50)
    assert time.monotonic() - start < 10 / 50


def test_background_drawn_in_bands_is_the_whole_image_draw() -> None:
    """With numpy's Generator, background() gives the image one whole-image draw gives (as the
    training images of the bundled models were drawn) and leaves the generator in the same
    state."""
    for seed, (w, h) in enumerate([(640, 480), (1920, 1080), (7, 5)]):
        rng, ref = np.random.default_rng(seed), np.random.default_rng(seed)
        base = ref.uniform(60, 140)
        gx = np.linspace(0, ref.uniform(-40, 40), w, dtype=np.float32)
        gy = np.linspace(0, ref.uniform(-40, 40), h, dtype=np.float32)
        img = np.repeat((base + gy[:, None] + gx[None, :])[:, :, None], 3, axis=2)
        img += np.asarray(ref.normal(0, 6, size=img.shape), dtype=np.float32)
        assert np.array_equal(background(rng, w, h), np.clip(img, 0, 255).astype(np.uint8))
        assert rng.uniform() == ref.uniform()


def test_scene_noise_is_normal_and_repeats_with_its_seed() -> None:
    """SceneRandom's noise (the synthetic camera's, without numpy.random) has the asked mean
    and spread, 68 % of it within one sigma, any shape, and the same values for the same seed."""
    a = SceneRandom(1).normal(3.0, 6.0, (480, 640, 3))
    assert a.shape == (480, 640, 3) and a.dtype == np.float32
    assert abs(float(a.mean()) - 3.0) < 0.05 and abs(float(a.std()) - 6.0) < 0.05
    assert abs(float(np.mean(np.abs(a - 3.0) < 6.0)) - 0.6827) < 0.005
    assert np.array_equal(a, SceneRandom(1).normal(3.0, 6.0, (480, 640, 3)))
    assert not np.array_equal(a, SceneRandom(2).normal(3.0, 6.0, (480, 640, 3)))
    assert SceneRandom(0).normal(0.0, 1.0, (5, 7, 3)).shape == (5, 7, 3)  # an odd count


def test_close_from_another_thread_interrupts_a_paced_read() -> None:
    """A read waiting for its deadline raises SourceError as soon as another thread closes."""
    source = SyntheticSource(SourceSpec(kind="synthetic", fps=0.5, width=64, height=48))
    source.open()
    read_n(source, 1)  # the next frame is due in 2 s
    outcome: list[BaseException] = []
    started = threading.Event()

    def reader() -> None:
        started.set()
        try:
            source.read()
        except SourceError as exc:
            outcome.append(exc)

    t = threading.Thread(target=reader)
    t.start()
    started.wait()
    begin = time.monotonic()
    source.close()
    t.join(1.0)
    assert not t.is_alive() and time.monotonic() - begin < 0.5
    assert outcome and "closed" in str(outcome[0])


def test_from_camera_builds_the_spec_of_a_configured_camera() -> None:
    """A [[cameras]] table becomes a spec: its fields carried over, an unset fps unpaced for
    synthetic (the command line's synthetic is paced at 30), lores only where the camera
    scales frames itself."""
    from edge.config import validate
    from edge.sources import from_camera

    def cam(**table: object) -> SourceSpec:
        config = validate({"cameras": [{"name": "door", **table}]})
        return from_camera(config.cameras[0], lores=(96, 96))

    synthetic = cam(source="synthetic", width=64, height=48, rotate=90, flip="h")
    assert (synthetic.kind, synthetic.name, synthetic.fps, synthetic.lores) == (
        "synthetic",
        "door",
        None,
        None,
    )
    assert (synthetic.width, synthetic.height, synthetic.rotate, synthetic.flip) == (
        64,
        48,
        90,
        "h",
    )
    assert parse_source("synthetic").fps == 30.0
    assert cam(source="picamera2", fps=15).lores == (96, 96)
    stream = cam(source="rtsp://h/x", rtsp_transport="udp", read_timeout_s=2.5, fps=5)
    assert (stream.rtsp_transport, stream.read_timeout_s, stream.fps, stream.lores) == (
        "udp",
        2.5,
        5.0,
        None,
    )
    video = cam(source="clip.mp4", loop=True, realtime=False)
    assert (video.kind, video.target, video.loop, video.realtime) == (
        "opencv",
        "clip.mp4",
        True,
        False,
    )


def test_each_backend_says_whether_it_is_lossless() -> None:
    """Files read faster than real time and unpaced synthetic frames wait for inference;
    cameras, streams, realtime files and paced synthetic frames drop instead."""
    from edge.sources import lossless

    waits = [
        SourceSpec(kind="synthetic"),
        SourceSpec(kind="opencv", target="clip.mp4"),
        SourceSpec(kind="images", target="imgs/"),
    ]
    drops = [
        SourceSpec(kind="synthetic", fps=10.0),
        SourceSpec(kind="opencv", target="clip.mp4", realtime=True),
        SourceSpec(kind="images", target="imgs/", realtime=True),
        SourceSpec(kind="opencv", target="0"),
        SourceSpec(kind="opencv", target="/dev/video0"),
        SourceSpec(kind="opencv", target="rtsp://h/x"),
        SourceSpec(kind="picamera2"),
    ]
    assert [lossless(s) for s in waits] == [True] * len(waits)
    assert [lossless(s) for s in drops] == [False] * len(drops)


def test_missing_names_file_sources_that_do_not_exist(tmp_path: Path) -> None:
    """Video files, image folders and globs that are not there are named with what to check;
    existing ones, cameras and streams (only known once opened) are not."""
    from edge.sources import missing

    write_images(tmp_path / "imgs", n=1)
    clip = write_clip(tmp_path / "c.mp4")
    gone = tmp_path / "gone.mp4"
    assert missing(SourceSpec(kind="opencv", target=str(gone))) == (
        f"video file {str(gone)!r} does not exist; check the path"
    )
    pattern = str(tmp_path / "*.png")
    assert missing(SourceSpec(kind="images", target=pattern)) == (
        f"no file matches {pattern!r}; check the pattern"
    )
    folder = str(tmp_path / "nope")
    assert missing(SourceSpec(kind="images", target=folder)) == (
        f"{folder!r} does not exist; check the path"
    )
    present = [
        SourceSpec(kind="opencv", target=str(clip)),
        SourceSpec(kind="images", target=str(tmp_path / "imgs")),
        SourceSpec(kind="images", target=str(tmp_path / "imgs" / "*.png")),
        SourceSpec(kind="opencv", target="/dev/video9"),
        SourceSpec(kind="opencv", target="rtsp://h/x"),
        SourceSpec(kind="synthetic"),
        SourceSpec(kind="picamera2"),
    ]
    assert [missing(s) for s in present] == [None] * len(present)
