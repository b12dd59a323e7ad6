"""Online inference over MQTT in the real daemon (`python -m edge run`, bundled shapes-detector,
a real mosquitto, the scenes of tests/data/shapes): three daemons of one shared-subscription
group answer 300 requests exactly once each, at least two of them answering, every answer equal
to `edge infer`'s JSON for that image; the 3.1.1 envelope, error answers (undecodable, too
large, unsupported type, unknown model, busy), expired requests dropped and counted, the stats,
and `edge request` printing what `edge infer` prints."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from broker import Broker, Subscriber, wait_for
from faultkit import DEVICE, DaemonProc, config_text
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.commands.infer import one_shot_engine, result_json
from edge.decode import read_image
from edge.engine import Overrides
from edge.errors import EX_CONFIG
from edge.runtime import RuntimeOptions

REPO = Path(__file__).resolve().parent.parent
SHAPES = REPO / "tests" / "data" / "shapes"
SCENES = [SHAPES / n for n in ("scene_0.jpg", "scene_1.jpg", "scene_2.png", "scene_3.jpg")]


def _without_timings(body: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(body)
    doc.pop("timings_ms", None)
    return doc


@pytest.fixture(scope="module")
def expected() -> dict[str, dict[str, Any]]:
    """`edge infer`'s JSON for each scene (its own function, in-process), without timings."""
    engine = one_shot_engine("shapes-detector", RuntimeOptions(), Overrides())
    try:
        return {
            p.name: _without_timings(result_json(engine, read_image(p), p.name)) for p in SCENES
        }
    finally:
        engine.close()


class Requester:
    """An MQTT 5 (or 3.1.1) client that publishes requests and records every message on the
    reply topic, duplicates included: (correlation, device, payload)."""

    def __init__(self, broker: Broker, v5: bool = True) -> None:
        self.v5 = v5
        self.reply = f"test/reply/{'v5' if v5 else 'v3'}"
        self.answers: list[tuple[bytes, str, bytes]] = []
        self._cond = threading.Condition()
        subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        )
        self.client.on_connect = lambda c, *_a: c.subscribe(self.reply, qos=1)
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        if self.v5:
            user = dict(getattr(msg.properties, "UserProperty", None) or [])
            cid = bytes(getattr(msg.properties, "CorrelationData", b""))
            entry = (cid, str(user.get("device")), payload)
        else:
            doc = json.loads(payload)
            entry = (str(doc["correlation"]).encode(), str(doc["device"]), payload)
        with self._cond:
            self.answers.append(entry)
            self._cond.notify_all()

    def send(self, topic: str, image: bytes, cid: str, **extra: Any) -> None:
        """One MQTT 5 request: the image, Response Topic, Correlation Data, ``extra``
        properties (ContentType, MessageExpiryInterval, UserProperty)."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = self.reply
        props.CorrelationData = cid.encode()
        for k, v in extra.items():
            setattr(props, k, v)
        self.client.publish(topic, image, qos=1, properties=props)

    def send_envelope(self, topic: str, envelope: dict[str, Any]) -> None:
        self.client.publish(topic, json.dumps({"response_topic": self.reply, **envelope}), qos=1)

    def wait(self, n: int, timeout: float = 30.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.answers) >= n, timeout)

    def count(self) -> int:
        with self._cond:
            return len(self.answers)

    def by_cid(self) -> dict[bytes, list[tuple[str, bytes]]]:
        out: dict[bytes, list[tuple[str, bytes]]] = {}
        with self._cond:
            for cid, device, payload in self.answers:
                out.setdefault(cid, []).append((device, payload))
        return out

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _config(
    broker: Broker, tmp: Path, device: str, mqtt: dict[str, Any] | None = None, **online: Any
) -> str:
    text = config_text(broker, tmp / f"state-{device}", mqtt=mqtt).replace(
        f'device = "{DEVICE}"', f'device = "{device}"'
    )
    lines = ["[online]", "enabled = true"] + [f"{k} = {json.dumps(v)}" for k, v in online.items()]
    return text + "\n".join(lines) + "\n"


def _start(
    broker: Broker,
    tmp: Path,
    daemons: list[DaemonProc],
    device: str,
    mqtt: dict[str, Any] | None = None,
    **online: Any,
) -> DaemonProc:
    d = DaemonProc(tmp, _config(broker, tmp, device, mqtt, **online), name=f"{device}.toml")
    daemons.append(d)
    return d


def _wait_online(broker: Broker, devices: list[str]) -> Subscriber:
    """A subscriber on every device's topics once each is connected and its stats show the
    online server (so its request subscriptions are in place)."""
    sub = Subscriber(broker, "edge/+/stats", client_id="online-stats")
    assert sub.wait_until(
        lambda ms: all(
            any(m.topic == f"edge/{d}/stats" and b'"online"' in m.payload for m in ms)
            for d in devices
        ),
        60,
    ), "a daemon did not start answering"
    return sub


def _stats(sub: Subscriber, device: str) -> dict[str, Any]:
    payloads = sub.payloads(f"edge/{device}/stats")
    return dict(json.loads(payloads[-1])["online"]) if payloads else {}


def test_three_daemons_of_one_group_answer_300_requests_exactly_once(
    broker: Broker, tmp_path: Path, daemons: list[DaemonProc], expected: dict[str, Any]
) -> None:
    """300 requests on the fleet topic, at most 8 outstanding: each answered exactly once, by
    at least two daemons, each answer equal to edge infer's for its image; the stats agree."""
    devices = ["d0", "d1", "d2"]
    for dev in devices:
        _start(broker, tmp_path, daemons, dev, group="g", queue_size=8)
    stats = _wait_online(broker, devices)
    images = {p.name: p.read_bytes() for p in SCENES}
    names = [SCENES[i % len(SCENES)].name for i in range(300)]
    req = Requester(broker)
    try:
        for i, name in enumerate(names):
            assert req.wait(i - 7, 30), f"stuck at request {i}"  # at most 8 outstanding
            req.send(
                "edge/fleet/g/infer",
                images[name],
                str(i),
                ContentType="image/png" if name.endswith(".png") else "image/jpeg",
                UserProperty=[("source", name)],
            )
        assert req.wait(300, 60), f"only {req.count()} answers"
        time.sleep(1.0)  # room for a duplicate to arrive
        got = req.by_cid()
    finally:
        req.close()
    assert sorted(got) == sorted(str(i).encode() for i in range(300))
    assert all(len(v) == 1 for v in got.values()), "a request was answered twice"
    answered_by = Counter(v[0][0] for v in got.values())
    assert set(answered_by) <= set(devices) and len(answered_by) >= 2, answered_by
    for cid, [(_device, body)] in got.items():
        assert _without_timings(body) == expected[names[int(cid)]], cid
    assert wait_for(lambda: sum(_stats(stats, d).get("answered", 0) for d in devices) == 300, 10)
    for d in devices:
        s = _stats(stats, d)
        assert s["answered"] == answered_by[d] and s["errors"] == {} and s["expired"] == 0
        assert s["latency_ms"]["p99"] > 0
    stats.close()
    for proc in daemons:
        assert proc.stop() == 0


def test_envelope_errors_busy_and_expiry_on_one_daemon(
    broker: Broker, tmp_path: Path, daemons: list[DaemonProc], expected: dict[str, Any]
) -> None:
    """The 3.1.1 envelope gets the result inside its envelope; bad, oversized, mistyped and
    misaddressed requests get their error reason; a full queue answers busy; requests expired
    at arrival or when their turn comes are not answered and are counted."""
    _start(broker, tmp_path, daemons, "solo", queue_size=2, max_image_bytes=100_000)
    stats = _wait_online(broker, ["solo"])
    topic = "edge/solo/infer"
    scene = SCENES[0]
    env = Requester(broker, v5=False)
    v5 = Requester(broker)
    try:
        env.send_envelope(
            topic,
            {
                "image": base64.b64encode(scene.read_bytes()).decode(),
                "correlation": "ok",
                "source": scene.name,
            },
        )
        env.send_envelope(
            topic,
            {
                "image": base64.b64encode((SHAPES / "corrupt.jpg").read_bytes()).decode(),
                "correlation": "bad",
            },
        )
        env.send_envelope(
            topic,
            {
                "image": base64.b64encode(scene.read_bytes()).decode(),
                "correlation": "late",
                "expires_at": time.time() - 1,
            },
        )
        assert env.wait(2, 20)
        time.sleep(1.0)
        got = env.by_cid()
        assert sorted(got) == [b"bad", b"ok"], got
        ok = json.loads(got[b"ok"][0][1])
        assert ok["device"] == "solo" and ok["correlation"] == "ok"
        ok["result"].pop("timings_ms")
        assert ok["result"] == expected[scene.name]
        assert json.loads(got[b"bad"][0][1])["error"] == "undecodable"

        big = cv2.imencode(
            ".png", np.random.default_rng(0).integers(0, 255, (300, 300, 3), np.uint8)
        )[1].tobytes()
        assert len(big) > 100_000
        v5.send(topic, big, "big", ContentType="image/png")
        v5.send(topic, scene.read_bytes(), "text", ContentType="text/plain")
        v5.send(topic, scene.read_bytes(), "model", UserProperty=[("model", "no-such-model")])
        assert v5.wait(3, 20)
        reasons = {cid: json.loads(a[0][1]) for cid, a in v5.by_cid().items()}
        assert reasons[b"big"]["error"] == "too_large"
        assert reasons[b"text"]["error"] == "unsupported_type"
        assert reasons[b"model"]["error"] == "unknown_model"
        assert all(r["device"] == "solo" for r in reasons.values())

        assert wait_for(lambda: sum(_stats(stats, "solo")["errors"].values()) == 4, 10)
        s = _stats(stats, "solo")
        assert s["answered"] == 1 and s["expired"] == 1
        assert s["errors"] == {
            "undecodable": 1,
            "too_large": 1,
            "unsupported_type": 1,
            "unknown_model": 1,
        }
    finally:
        env.close()
        v5.close()
        stats.close()
    for protocol in ("5", "3.1.1"):
        out = _edge_request(broker, "--model-on", "solo", "--protocol", protocol)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert [_without_timings(line.encode()) for line in lines] == [
            expected[p.name] for p in SCENES[:2]
        ]
    assert _nice_values(daemons[0].proc.pid).count(10) == 1, "the online worker is not niced"
    # A reload hands the worker the new model's engine: answers as edge infer's for that model.
    daemons[0].rewrite(
        _config(
            broker,
            tmp_path,
            "solo",
            queue_size=2,
            max_image_bytes=100_000,
            model="shapes-classifier",
        )
    )
    assert daemons[0].wait_log("configuration reloaded")
    out = _edge_request(broker, "--model-on", "solo")
    assert out.returncode == 0, out.stderr
    classifier = one_shot_engine("shapes-classifier", RuntimeOptions(), Overrides())
    try:
        want = [
            _without_timings(result_json(classifier, read_image(p), p.name)) for p in SCENES[:2]
        ]
    finally:
        classifier.close()
    assert [_without_timings(line.encode()) for line in out.stdout.splitlines()] == want
    assert want[0]["model"]["name"] == "shapes-classifier"
    assert daemons[0].stop() == 0
    late = _edge_request(broker, "--model-on", "solo", "--timeout", "1")
    assert late.returncode == 66 and late.stdout == ""
    assert "no answer for scene_0.jpg on time" in late.stderr


def _nice_values(pid: int) -> list[int]:
    """The nice value of every thread of process ``pid`` (Linux /proc)."""
    values = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        fields = stat.read_text().rsplit(")", 1)[1].split()
        values.append(int(fields[16]))  # field 19 of proc(5), counted after "pid (comm)"
    return values


def _edge_request(broker: Broker, *args: str) -> subprocess.CompletedProcess[str]:
    """`edge request` on the first two scenes, run from their folder (so ``source`` is the
    file name, as in ``expected``)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "edge",
            "request",
            "--broker",
            f"{broker.host}:{broker.port}",
            *args,
            SCENES[0].name,
            SCENES[1].name,
        ],
        check=False,
        cwd=SHAPES,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_a_full_queue_answers_busy_and_requests_expired_at_their_turn_are_dropped(
    broker: Broker, tmp_path: Path, daemons: list[DaemonProc]
) -> None:
    """Behind a slow request (a 6000x6000 gradient PNG: 136 KB that decode for about 0.45 s),
    two requests with a 10 ms ttl expire before their turn and are never answered; with the
    queue (2) full, the rest are answered busy at once; the stats count both. The others are
    sent 0.15 s after the slow one: small, it is parsed and taken by the worker well before,
    also on a loaded machine (a 2.5 MB noise JPEG sent 0.05 s ahead once had not been, and
    the queue held it and the first ttl request)."""
    _start(broker, tmp_path, daemons, "solo", queue_size=2, max_image_bytes=8_000_000)
    stats = _wait_online(broker, ["solo"])
    topic = "edge/solo/infer"
    ramp = np.arange(6000, dtype=np.uint16)
    gradient = ((ramp[:, None] + ramp[None, :]) % 256).astype(np.uint8)
    slow = cv2.imencode(".png", cv2.merge([gradient] * 3))[1].tobytes()
    scene = base64.b64encode(SCENES[0].read_bytes()).decode()
    req = Requester(broker, v5=False)
    try:
        req.send_envelope(topic, {"image": base64.b64encode(slow).decode(), "correlation": "slow"})
        time.sleep(0.15)  # the worker has taken it and is decoding it
        for cid in ("ttl-1", "ttl-2"):
            req.send_envelope(topic, {"image": scene, "correlation": cid, "ttl_s": 0.01})
        for cid in ("more-1", "more-2", "more-3"):
            req.send_envelope(topic, {"image": scene, "correlation": cid})
        assert wait_for(lambda: _stats(stats, "solo").get("received") == 6, 15)
        assert req.wait(4, 30)  # the slow answer and three busy ones
        # The ttl requests had their turn (after the slow one) once the stats count them.
        assert wait_for(lambda: _stats(stats, "solo").get("expired") == 2, 15)
        got = req.by_cid()
    finally:
        req.close()
    assert all(len(v) == 1 for v in got.values())
    answers = {cid.decode(): json.loads(v[0][1]) for cid, v in got.items()}
    assert "result" in answers["slow"]
    assert "ttl-1" not in answers and "ttl-2" not in answers
    assert [answers[c]["error"] for c in ("more-1", "more-2", "more-3")] == ["busy"] * 3
    s = _stats(stats, "solo")
    stats.close()
    assert s["expired"] == 2 and s["errors"] == {"busy": 3} and s["answered"] == 1
    assert daemons[0].stop() == 0


def test_an_mqtt5_message_expiry_that_passes_in_the_queue_drops_the_request(
    broker: Broker, tmp_path: Path, daemons: list[DaemonProc]
) -> None:
    """Behind about 2.4 s of slow requests (12 PNGs of 4000x4000: about 0.2 s each to decode),
    two MQTT 5 requests with a Message Expiry Interval of 1 s are dropped when their turn
    comes, one without expiry is answered; the slow ones are answered. The slow images are
    small (a gradient PNG, 67 KB) so the broker hands every request over at once: with
    megabytes each, the expiring ones could wait and expire in the broker, which edge cannot
    count."""
    _start(broker, tmp_path, daemons, "solo", queue_size=16, max_image_bytes=20_000_000)
    stats = _wait_online(broker, ["solo"])
    ramp = np.arange(4000, dtype=np.uint16)
    gradient = ((ramp[:, None] + ramp[None, :]) % 256).astype(np.uint8)
    slow = cv2.imencode(".png", cv2.merge([gradient] * 3))[1].tobytes()
    scene = SCENES[0].read_bytes()
    req = Requester(broker)
    try:
        t0 = time.monotonic()
        for i in range(12):
            req.send("edge/solo/infer", slow, f"slow-{i}", ContentType="image/png")
        for cid in ("exp-1", "exp-2"):
            req.send("edge/solo/infer", scene, cid, MessageExpiryInterval=1)
        req.send("edge/solo/infer", scene, "keep")
        assert req.wait(13, 60)
        took = time.monotonic() - t0
        assert wait_for(lambda: _stats(stats, "solo").get("expired") == 2, 10)
        got = req.by_cid()
    finally:
        req.close()
        stats.close()
    assert took > 1.5, f"the slow requests took only {took:.2f} s: the test proves nothing"
    assert sorted(got) == sorted([f"slow-{i}".encode() for i in range(12)] + [b"keep"])
    assert daemons[0].stop() == 0


def test_a_daemon_on_mqtt_3_1_1_answers_envelopes_on_the_fleet_topic(
    broker: Broker, tmp_path: Path, daemons: list[DaemonProc], expected: dict[str, Any]
) -> None:
    """With mqtt.protocol 3.1.1 the daemon takes the group's shared subscription and answers
    envelopes; an MQTT 5 request reaches it without its properties, so it is not answered and
    counts as unanswerable."""
    _start(broker, tmp_path, daemons, "old", mqtt={"protocol": "3.1.1"}, group="g")
    stats = _wait_online(broker, ["old"])
    env = Requester(broker, v5=False)
    v5 = Requester(broker)
    scene = SCENES[1]
    try:
        v5.send("edge/fleet/g/infer", scene.read_bytes(), "v5")
        env.send_envelope(
            "edge/fleet/g/infer",
            {
                "image": base64.b64encode(scene.read_bytes()).decode(),
                "correlation": "e",
                "source": scene.name,
            },
        )
        assert env.wait(1, 20)
        assert wait_for(lambda: _stats(stats, "old").get("unanswerable") == 1, 10)
        time.sleep(0.5)
        assert v5.count() == 0
        [(device, payload)] = env.by_cid()[b"e"]
    finally:
        env.close()
        v5.close()
        stats.close()
    doc = json.loads(payload)
    assert device == "old" and doc["device"] == "old"
    doc["result"].pop("timings_ms")
    assert doc["result"] == expected[scene.name]
    assert daemons[0].stop() == 0


@pytest.mark.parametrize(
    ("online", "message"),
    [
        ({"model": "no-such-model"}, "no model named 'no-such-model'"),
        ({"group": "a/b"}, "online.group"),
    ],
)
def test_check_config_refuses_the_online_settings_run_refuses(
    broker: Broker, tmp_path: Path, online: dict[str, Any], message: str
) -> None:
    """An [online] model that does not load, or a group that is not a topic level: both
    `edge check-config` and `edge run` exit 78 saying what is wrong."""
    path = tmp_path / "bad.toml"
    path.write_text(_config(broker, tmp_path, "solo", **online))
    for command in (["check-config", str(path)], ["run", "--config", str(path)]):
        proc = subprocess.run(
            [sys.executable, "-m", "edge", *command],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=REPO,
        )
        assert proc.returncode == EX_CONFIG, (command, proc.stderr)
        assert message in proc.stderr, proc.stderr
