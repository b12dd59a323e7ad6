"""`edge preview`: the page in a real headless Chromium, annotated MJPEG frames with the detected
boxes drawn, encoding only while watched and at a capped rate, snapshots, the terminal view,
and clean stops."""

from __future__ import annotations

import base64
import io
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from broker import Broker, Subscriber

from edge import config as cfg
from edge.annotate import colour_for
from edge.engine import Engine
from edge.preview.frames import render
from edge.preview.session import PreviewSession
from edge.preview.terminal import TerminalView, format_lines
from edge.runtime import RuntimeOptions

REPO = Path(__file__).resolve().parent.parent
CLIP = REPO / "samples" / "shapes.mp4"
MODEL = "shapes-detector"
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class PreviewProcess:
    """`python -m edge preview` in a child process; ``url`` is read from its first line."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.err_path = tmp / f"preview-{time.monotonic_ns()}.err"
        self._err = self.err_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "preview", "--port", "0", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline()
        assert first.startswith("edge preview: http://"), first + self.stderr()
        self.url = first.split()[2]

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> tuple[int, str]:
        """SIGINT (Ctrl-C), then the exit code and the rest of stdout."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=timeout)
        self._err.close()
        return self.proc.returncode, out

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self._err.close()


@pytest.fixture(scope="module")
def clip_preview() -> Iterator[PreviewProcess]:
    """The sample clip, looping at its own 10 fps, through the bundled detector."""
    with tempfile.TemporaryDirectory() as tmp:
        p = PreviewProcess(
            Path(tmp), "--source", str(CLIP), "--loop", "--model", MODEL, "--duration", "120"
        )
        try:
            yield p
        finally:
            p.kill()


class ChromeDriver:
    """chromedriver driven over its W3C HTTP API with urllib (no selenium)."""

    def __init__(self, profile: Path) -> None:
        binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
        if not binary or not driver:
            pytest.fail("the preview test needs Chromium: apt-get install chromium chromium-driver")
        self.base = f"http://127.0.0.1:{free_port()}"
        self.proc = subprocess.Popen(
            [driver, f"--port={self.base.rsplit(':', 1)[1]}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def ready() -> bool:
            try:
                return bool(self.call("GET", "/status")["ready"])
            except OSError:
                return False

        wait_until(ready, 20, "chromedriver to listen")
        options = {"binary": binary, "args": [*CHROME_FLAGS, f"--user-data-dir={profile}"]}
        caps = {
            "browserName": "chrome",
            # An MJPEG <img> never finishes loading: do not wait for the load event.
            "pageLoadStrategy": "eager",
            "goog:chromeOptions": options,
        }
        session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})
        self.session = f"/session/{session['sessionId']}"

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["value"]

    def run(self, script: str) -> Any:
        return self.call("POST", f"{self.session}/execute/sync", {"script": script, "args": []})

    def close(self) -> None:
        try:
            self.call("DELETE", self.session)
        finally:
            self.proc.terminate()
            self.proc.wait(10)


def read_parts(url: str, count: int, seconds: float = 30) -> list[tuple[dict[str, str], bytes]]:
    """The first ``count`` parts (headers, body) of a multipart/x-mixed-replace stream."""
    parts: list[tuple[dict[str, str], bytes]] = []
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=edgeframe"
        deadline = time.monotonic() + seconds
        while len(parts) < count and time.monotonic() < deadline:
            assert r.readline() == b"--edgeframe\r\n"
            headers = {}
            while (line := r.readline().decode().strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = r.read(int(headers["content-length"]))
            assert r.read(2) == b"\r\n"
            parts.append((headers, body))
    return parts


def clip_frames(indices: set[int]) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(CLIP))
    frames: dict[int, np.ndarray] = {}
    i = 0
    while len(frames) < len(indices):
        ok, image = cap.read()
        assert ok, f"clip ended before frame {i}"
        if i in indices:
            frames[i] = image
        i += 1
    cap.release()
    return frames


def edge_points(box: tuple[float, ...], w: int, h: int) -> list[tuple[int, int]]:
    """Points on the left, right and bottom sides of a box (the top holds the label)."""
    x0, y0, x1, y1 = (round(box[0] * w), round(box[1] * h), round(box[2] * w), round(box[3] * h))
    pts = []
    for t in np.linspace(0.3, 0.9, 12):
        y = round(y0 + t * (y1 - y0))
        pts += [(x0, y), (x1, y)]
    for t in np.linspace(0.1, 0.9, 12):
        pts.append((round(x0 + t * (x1 - x0)), y1))
    return [(min(max(x, 1), w - 2), min(max(y, 1), h - 2)) for x, y in pts]


def colour_share(image: np.ndarray, points: list[tuple[int, int]], bgr: tuple[int, ...]) -> float:
    """Share of points whose 3×3 neighbourhood holds a pixel within 60 of ``bgr`` (JPEG blurs
    thin coloured lines into their surroundings)."""
    target = np.array(bgr, np.int32)
    hits = 0
    for x, y in points:
        patch = image[y - 1 : y + 2, x - 1 : x + 2].astype(np.int32).reshape(-1, 3)
        hits += int(np.abs(patch - target).max(axis=1).min() <= 60)
    return hits / len(points)


def test_page_in_headless_chromium_shows_the_stream_and_live_figures(
    clip_preview: PreviewProcess, tmp_path: Path
) -> None:
    """Chromium loads the page, the MJPEG <img> shows 640×480 frames, the figures fill in from
    /stats.json (fps, results, detected labels), and the screenshot is a real PNG of the
    viewport's size whose stream area shows the clip's coloured shapes."""
    chrome = ChromeDriver(tmp_path / "profile")
    try:
        chrome.call("POST", f"{chrome.session}/window/rect", {"width": 1200, "height": 800})
        chrome.call("POST", f"{chrome.session}/url", {"url": clip_preview.url})
        state = """
            const img = document.querySelector("img");
            const fig = k => document.querySelector(`[data-figure=${k}]`).textContent;
            const r = img.getBoundingClientRect();
            return {w: img.naturalWidth, h: img.naturalHeight, fps: fig("fps_out"),
                    results: fig("inferred"), viewers: fig("viewers"),
                    labels: [...document.querySelectorAll(".labels li")].map(l => l.textContent),
                    state: document.getElementById("state").textContent,
                    rect: [r.left, r.top, r.width, r.height],
                    view: [innerWidth, innerHeight, devicePixelRatio]};
        """
        seen: dict[str, Any] = {}

        def live() -> bool:
            seen.update(chrome.run(state))
            return bool(
                seen["w"]
                and seen["state"] == "live"
                and seen["fps"] not in ("–", "0.0")
                and seen["labels"]
                and seen["viewers"] not in ("–", "0")
            )

        wait_until(live, 20, "the page to show the stream and its figures")
        assert (seen["w"], seen["h"]) == (640, 480)
        assert int(seen["results"]) > 0 and float(seen["fps"]) > 3
        assert any(lab.split()[0] in ("circle", "square", "triangle") for lab in seen["labels"])
        png = base64.b64decode(chrome.call("GET", f"{chrome.session}/screenshot"))
    finally:
        chrome.close()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    shot = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert shot is not None
    vw, vh, dpr = seen["view"]
    assert shot.shape[:2] == (round(vh * dpr), round(vw * dpr))
    assert float(shot.std()) > 20, "the screenshot is blank"
    x, y, w, h = (round(v * dpr) for v in seen["rect"])
    stream = shot[y : y + h, x : x + w]
    assert stream.shape[:2] == (h, w) and min(h, w) > 100
    hsv = cv2.cvtColor(stream, cv2.COLOR_BGR2HSV)
    saturated = float((hsv[..., 1] > 150).mean())
    assert saturated > 0.02, "the stream area does not show the coloured shapes"


def boxes_cross(a: tuple[float, ...], b: tuple[float, ...], pad: float = 0.01) -> bool:
    """Whether two normalized boxes (grown by ``pad`` for the label tags) overlap."""
    return not (a[2] + pad < b[0] or b[2] + pad < a[0] or a[3] + pad < b[1] or b[3] + pad < a[1])


def test_stream_frames_carry_the_detected_boxes(clip_preview: PreviewProcess) -> None:
    """At least 3 stream parts decode to 640×480 JPEGs, and the sides of every box the detector
    finds on the same clip frame are drawn in that class's colour, unlike the raw frame."""
    parts = read_parts(clip_preview.url + "stream.mjpg?camera=camera", 20)
    assert len(parts) >= 3
    frames = clip_frames({int(h["x-frame-index"]) for h, _ in parts})
    engine = Engine.load(MODEL, RuntimeOptions())
    checked = 0
    for headers, body in parts:
        assert headers["content-type"] == "image/jpeg"
        shown = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert shown is not None and shown.shape == (480, 640, 3)
        raw = frames[int(headers["x-frame-index"])]
        shares = []
        dets = engine.infer(raw).detections
        for d in dets:
            pts = edge_points(d.box, 640, 480)
            colour = colour_for(d.class_id)
            # Overlapping boxes paint over each other's sides (and their labels cover them):
            # only boxes that cross no other are checked, against a per-box floor, a per-frame
            # mean, and the raw frame's share as a control (a red shape is close to red ink).
            if any(o is not d and boxes_cross(d.box, o.box) for o in dets):
                continue
            drawn = colour_share(shown, pts, colour)
            assert drawn >= 0.5 and drawn - colour_share(raw, pts, colour) >= 0.3, (headers, d)
            shares.append(drawn)
            checked += 1
        assert not shares or float(np.mean(shares)) >= 0.8, (headers, shares)
    assert checked >= 3, "too few separate detections to check"


def test_unknown_paths_and_cameras_are_404(clip_preview: PreviewProcess) -> None:
    """A wrong path or camera name answers 404 with a hint; /snapshot.jpg is a JPEG."""
    for path, hint in (("nope", "try /"), ("stream.mjpg?camera=other", "cameras: camera")):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(clip_preview.url + path, timeout=10)
        assert err.value.code == 404 and hint in err.value.read().decode()
    with urllib.request.urlopen(clip_preview.url + "snapshot.jpg", timeout=10) as r:
        assert r.headers["Content-Type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (480, 640, 3)


def test_ctrl_c_stops_cleanly_with_a_summary(tmp_path: Path) -> None:
    """SIGINT ends the preview with exit 0 and a one-line summary per camera; without a
    terminal stdout has no ANSI escapes; a non-loopback host gets the unauthenticated warning."""
    p = PreviewProcess(
        tmp_path, "--source", "synthetic", "--model", "shapes-classifier", "--host", "0.0.0.0"
    )
    try:
        wait_until(
            lambda: (
                get_json(p.url.replace("0.0.0.0", "127.0.0.1") + "stats.json")["cameras"]["camera"][
                    "inferred"
                ]
                > 0
            ),
            20,
            "a first result",
        )
        code, out = p.stop()
    finally:
        p.kill()
    assert code == 0, p.stderr()
    assert "\x1b" not in out
    assert "edge preview: camera:" in out and "results" in out and "e2e p50" in out
    assert "WITHOUT authentication" in p.stderr()


def test_snapshot_writes_one_annotated_frame_and_exits(tmp_path: Path) -> None:
    """--snapshot writes the first inferred frame of the clip, annotated (it differs from the
    raw frame where boxes are drawn), and exits 0 without serving."""
    snap = tmp_path / "snap.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
            "preview",
            "--source",
            str(CLIP),
            "--model",
            MODEL,
            "--snapshot",
            str(snap),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {snap}" in proc.stdout and "http://" not in proc.stdout
    image = cv2.imread(str(snap))
    raw = clip_frames({0})[0]
    assert image is not None and image.shape == raw.shape
    changed = np.abs(image.astype(np.int16) - raw).max(axis=2) > 40
    assert 0.005 < float(changed.mean()) < 0.5


def short_clip(path: Path, count: int = 5) -> Path:
    """The first ``count`` frames of the sample clip as an mp4 of its own."""
    frames = clip_frames(set(range(count)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (640, 480))
    for i in range(count):
        writer.write(frames[i])
    writer.release()
    return path


@pytest.mark.parametrize("kind", ["photo", "video"])
def test_the_page_stays_up_with_the_last_frame_after_a_finite_source_ends(
    tmp_path: Path, kind: str
) -> None:
    """A photo or a short video without --loop: after the source has ended the page keeps
    serving its last annotated frame (snapshot and stream) until --duration, then exits 0."""
    if kind == "photo":
        source = tmp_path / "photo.png"
        cv2.imwrite(str(source), clip_frames({0})[0])
    else:
        source = short_clip(tmp_path / "short.mp4")
    started = time.monotonic()
    p = PreviewProcess(tmp_path, "--source", str(source), "--model", MODEL, "--duration", "5")
    try:

        def ended_and_inferred() -> bool:
            # The source can end while its last frame is still in invoke(): wait for both.
            cam = get_json(p.url + "stats.json")["cameras"]["camera"]
            return bool(cam["source_state"] == "ended" and cam["inferred"] >= 1)

        wait_until(ended_and_inferred, 20, "the end of the source and its frame inferred")
        time.sleep(0.3)  # nothing more may be inferred after the end
        cam = get_json(p.url + "stats.json")["cameras"]["camera"]
        assert cam["inferred"] == 1 if kind == "photo" else 1 <= cam["inferred"] <= 5
        assert p.proc.poll() is None, "the preview exited when its source ended"
        with urllib.request.urlopen(p.url + "snapshot.jpg", timeout=10) as r:
            snap = cv2.imdecode(np.frombuffer(r.read(), np.uint8), cv2.IMREAD_COLOR)
        assert snap is not None and snap.shape == (480, 640, 3)
        ((headers, body),) = read_parts(p.url + "stream.mjpg", 1, seconds=10)
        assert int(headers["content-length"]) == len(body) > 1000
        out, _ = p.proc.communicate(timeout=20)
    finally:
        p.kill()
    assert p.proc.returncode == 0, p.stderr()
    assert time.monotonic() - started >= 5
    assert (
        "every source has ended; the page shows the last frame until Ctrl-C or the end of "
        "--duration 5 s" in out
    )


def test_snapshot_of_a_camera_that_cannot_open_fails_within_its_timeout(tmp_path: Path) -> None:
    """--snapshot on a stream that refuses connections exits 1 after --snapshot-timeout with
    the camera's state and why it cannot open, instead of retrying forever."""
    snap = tmp_path / "snap.jpg"
    port = free_port()
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            *("-m", "edge", "preview", "--model", MODEL),
            *("--source", f"rtsp://127.0.0.1:{port}/live", "--snapshot", str(snap)),
            *("--snapshot-timeout", "2"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert time.monotonic() - started < 15
    assert (
        f"--snapshot: no frame within 2 s; camera 'camera' is reconnecting: stream "
        f"rtsp://127.0.0.1:{port}/live: connection refused by 127.0.0.1:{port}" in proc.stderr
    )
    assert "allow longer with --snapshot-timeout" in proc.stderr and not snap.exists()


def test_encoding_happens_only_while_watched_and_at_the_capped_rate() -> None:
    """With no stream client nothing is encoded while results flow; a client receives frames
    at no more than --preview-fps although inference runs faster; after it leaves, encoding
    stops again."""
    config = cfg.load(None, {"cameras.0.source": "synthetic", "model.path": "shapes-classifier"})
    session = PreviewSession(config, port=0, preview_fps=4.0, out=io.StringIO())
    runner = threading.Thread(target=session.run, kwargs={"duration": 60})
    runner.start()
    try:
        wait_until(lambda: session.server is not None and session.pipeline is not None, 20, "start")
        assert session.server is not None
        url = session.server.url

        def stats() -> dict[str, Any]:
            s: dict[str, Any] = get_json(url + "stats.json")
            return s

        wait_until(lambda: stats()["cameras"]["camera"]["inferred"] >= 20, 20, "results")
        assert stats()["preview"]["encoded"] == 0
        t0 = time.monotonic()
        parts = read_parts(url + "stream.mjpg", 8)
        elapsed = time.monotonic() - t0
        fps_out = stats()["cameras"]["camera"]["fps_out"]
        assert fps_out > 15, "inference must outpace the cap for this test to mean anything"
        # 8 frames at ≤ 4 fps take ≥ 1.75 s (the first may come at once).
        assert elapsed >= 7 / 4 * 0.9, f"{len(parts)} frames in {elapsed:.2f} s"
        wait_until(lambda: stats()["preview"]["clients"] == {}, 10, "the client to be counted out")
        encoded = stats()["preview"]["encoded"]
        inferred = stats()["cameras"]["camera"]["inferred"]
        wait_until(lambda: stats()["cameras"]["camera"]["inferred"] >= inferred + 20, 20, "more")
        assert stats()["preview"]["encoded"] == encoded
    finally:
        session.stop.set()
        runner.join(20)
    assert not runner.is_alive() and session.exit_code == 0


def test_terminal_view_redraws_in_place(clip_preview: PreviewProcess) -> None:
    """The terminal view renders the live figures and labels of /stats.json, and each redraw
    moves the cursor back over the previous one (ANSI), clearing lines instead of scrolling."""
    wait_until(
        lambda: "latest" in get_json(clip_preview.url + "stats.json")["cameras"]["camera"],
        20,
        "a result",
    )
    stats = get_json(clip_preview.url + "stats.json")
    lines = format_lines(stats, clip_preview.url)
    assert clip_preview.url in lines[0] and "fps out" in lines[2]
    assert lines[3].startswith("camera") and lines[4].strip().startswith("frame ")
    assert any(k in lines[4] for k in ("circle", "square", "triangle"))
    out = io.StringIO()
    view = TerminalView(out, clip_preview.url)
    view.draw(stats)
    first = out.getvalue()
    view.draw(stats)
    view.close()
    second = out.getvalue()[len(first) :]
    assert "\x1b[A" not in first and f"\x1b[{len(lines)}A" not in first
    assert second.startswith(f"\r\x1b[{len(lines)}A") and second.count("\x1b[2K") == len(lines)
    assert second.endswith("\x1b[J\x1b[?25h")


def test_mqtt_publishes_what_the_daemon_would(tmp_path: Path, broker: Broker) -> None:
    """With --mqtt the preview also publishes each result to the broker in the daemon's
    format (device, camera, seq from 1, the preview's own frames), and still serves."""
    conf = tmp_path / "config.toml"
    conf.write_text(
        f'device = "pv"\nstate_dir = "{tmp_path / "state"}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
        '[[cameras]]\nname = "desk"\nsource = "synthetic"\n'
    )
    sub = Subscriber(broker, "edge/pv/#")
    p = PreviewProcess(tmp_path, "--config", str(conf), "--model", "shapes-classifier", "--mqtt")
    try:
        assert sub.wait_for_count(5, 20, "/desk/result"), p.stderr()
        stats = get_json(p.url + "stats.json")
        code, _ = p.stop()
    finally:
        p.kill()
        sub.close()
    assert code == 0, p.stderr()
    results = [json.loads(b) for b in sub.payloads("/desk/result")]
    assert [r["seq"] for r in results[:5]] == [1, 2, 3, 4, 5]
    assert all(r["device"] == "pv" and r["camera"] == "desk" for r in results)
    assert results[0]["model"]["name"] == "shapes-classifier"
    assert stats["cameras"]["desk"]["inferred"] >= 5


def test_the_annotated_frame_shows_zones_and_track_ids() -> None:
    """With a zone configured, the preview's annotated frame outlines the zone and tags each
    tracked object's box with its ``#id`` in the track's colour, under the box."""
    zone = [[0.05, 0.05], [0.95, 0.05], [0.95, 0.95], [0.05, 0.95]]
    config = cfg.validate(
        {
            "cameras": [
                {"source": str(CLIP), "loop": True, "zones": [{"name": "all", "points": zone}]}
            ]
        }
    )
    session = PreviewSession(config, port=0, out=io.StringIO())
    runner = threading.Thread(target=session.run, kwargs={"duration": 60})
    runner.start()
    try:
        wait_until(
            lambda: (
                (item := session.latest.get("camera")) is not None
                and item.tracked is not None
                and any(t.box[3] < 0.85 for t in item.tracked.tracks)
            ),
            20,
            "a tracked object with room for its tag under it",
        )
        item = session.latest.get("camera")
        assert item is not None and item.tracked is not None
        image = cv2.imdecode(np.frombuffer(render(item, 95), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        h, w = image.shape[:2]
        # The zone's top edge, away from the objects: a white line.
        row = image[round(0.05 * h), round(0.3 * w) : round(0.7 * w)]
        assert (row.min(axis=1) > 200).mean() > 0.8
        track = next(t for t in item.tracked.tracks if t.box[3] < 0.85)
        x0, y1 = max(round(track.box[0] * w), 0), round(track.box[3] * h)
        tag = image[y1 + 3 : y1 + 30, x0 : x0 + 20].reshape(-1, 3).astype(int)
        near = np.abs(tag - np.array(colour_for(track.id))).max(axis=1) < 40
        assert near.mean() > 0.3, (track, near.mean())
    finally:
        session.stop.set()
        runner.join(20)
    assert not runner.is_alive() and session.exit_code == 0
