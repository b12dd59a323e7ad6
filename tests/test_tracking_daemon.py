"""Tracking in the real daemon (`python -m edge run`) with the bundled shapes-detector and a
real mosquitto: the zone clip (scripts/make_zone_clip.py) gives one new and one end per object,
zone entry and exit, state counts equal to the clip's truth at every second; events survive a
20 s broker outage in order; the detection switch pauses results within one frame period; and
`edge check-config` refuses the zone and label problems `edge run` would."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from broker import Broker, Received, Subscriber, wait_for
from faultkit import DaemonProc
from paho.mqtt.enums import CallbackAPIVersion

from edge.errors import EX_CONFIG

REPO = Path(__file__).resolve().parent.parent
EVENT_SCHEMA = json.loads((REPO / "edge" / "schema" / "event.schema.json").read_text())
STATE_SCHEMA = json.loads((REPO / "edge" / "schema" / "state.schema.json").read_text())
DEVICE = "yardpi"
BASE = f"edge/{DEVICE}"
LABELS = ("circle", "square", "triangle")
INFLIGHT = 16


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The zone clip (seed 0, 10 fps, 11.4 s) and its truth."""
    out = tmp_path_factory.mktemp("clip") / "zones.mp4"
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "make_zone_clip.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out, json.loads(out.with_suffix(".json").read_text())


def config(broker: Broker, tmp: Path, clip: Path, truth: dict[str, Any], **camera: Any) -> str:
    zone = truth["zone"]
    extra = "".join(f"{k} = {json.dumps(v)}\n" for k, v in camera.items())
    return (
        f'device = "{DEVICE}"\nstate_dir = "{tmp / "state"}"\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nstats_interval = 1\n'
        f"inflight = {INFLIGHT}\nreconnect_min_s = 0.2\nreconnect_max_s = 1\n"
        "[tracking]\nmin_hits = 3\nmax_age_s = 0.5\n"
        f'[[cameras]]\nname = "yard"\nsource = "{clip}"\n{extra}'
        f'[[cameras.zones]]\nname = "{zone["name"]}"\npoints = {json.dumps(zone["points"])}\n'
        f"min_dwell_s = {zone['min_dwell_s']}\n"
    )


def events(messages: list[Received]) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages if m.topic.endswith("/events")]


def final_stats(messages: list[Received]) -> dict[str, Any] | None:
    for m in reversed(messages):
        if m.topic.endswith("/stats"):
            stats: dict[str, Any] = json.loads(m.payload)
            if stats.get("final"):
                return stats
    return None


def by_track(log: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    out: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in log:
        out[e["id"]].append(e)
    return out


def test_zone_clip_gives_true_events_and_state_every_second(
    broker: Broker,
    tmp_path: Path,
    daemons: list[DaemonProc],
    clip: tuple[Path, dict[str, Any]],
) -> None:
    """On the zone clip, paced like a camera: each object gets one new and one end under one
    id with its true label, an update entering and one leaving the zone per visit, every
    event and state valid against its schema, and the retained state, as it stood when each
    whole second's result arrived, equal to the clip's truth."""
    path, truth = clip
    sub = Subscriber(broker, f"{BASE}/#", client_id="tracking-clip")
    d = DaemonProc(tmp_path, config(broker, tmp_path, path, truth))
    daemons.append(d)
    assert d.wait(60) == 0, d.log()
    assert sub.wait_until(lambda ms: final_stats(ms) is not None, 10), d.log()
    messages = list(sub.messages)
    sub.close()

    log = events(messages)
    for e in log:
        jsonschema.validate(e, EVENT_SCHEMA)
    assert [e["seq"] for e in log] == list(range(1, len(log) + 1)), "\n".join(
        [f"{m.topic[-12:]} {m.payload[:150]!r}" for m in messages if not m.topic.endswith("result")]
    )
    tracks = by_track(log)
    assert len(tracks) == len(truth["objects"]), [(e["type"], e["id"]) for e in log]
    # Tracks in order of their first sighting are the objects in order of entering.
    ordered = sorted(tracks.values(), key=lambda es: es[0]["first_seen"])
    zone = truth["zone"]["name"]
    for track, obj in zip(
        ordered, sorted(truth["objects"], key=lambda o: o["enters"]), strict=True
    ):
        kinds = [e["type"] for e in track]
        assert kinds[0] == "new" and kinds[-1] == "end", kinds
        assert kinds.count("new") == 1 and kinds.count("end") == 1, kinds
        assert track[-1]["label"] == obj["label"]
        changes = []
        zones: list[str] = track[0]["zones"]
        for e in track[1:]:
            if e["zones"] != zones:
                changes.append((e["type"], e["zones"]))
                zones = e["zones"]
        visits = len(obj["zone_visits"])
        assert changes == [("update", [zone]), ("update", [])] * visits, (obj, changes)

    state: dict[str, Any] | None = None
    checked = 0
    fps = round(truth["fps"])
    for m in messages:
        if m.topic == f"{BASE}/yard/state":
            state = json.loads(m.payload)
            jsonschema.validate(state, STATE_SCHEMA)
        elif m.topic == f"{BASE}/yard/result":
            index = json.loads(m.payload)["frame"]["index"]
            if index % fps:
                continue
            counts = dict.fromkeys(LABELS, 0)
            in_zone = dict.fromkeys(LABELS, 0)
            for o in truth["frames"][index]["objects"]:
                counts[o["label"]] += 1
                in_zone[o["label"]] += o["in_zone"]
            assert state == {**counts, "zones": {zone: in_zone}}, (index / fps, state)
            checked += 1
    assert checked == len(truth["frames"]) // fps + 1
    retained = [m for m in messages if m.topic == f"{BASE}/yard/state"]
    assert json.loads(retained[-1].payload) == {
        **dict.fromkeys(LABELS, 0),
        "zones": {zone: dict.fromkeys(LABELS, 0)},
    }


def test_events_survive_a_20s_broker_outage_in_order(
    broker: Broker,
    tmp_path: Path,
    daemons: list[DaemonProc],
    clip: tuple[Path, dict[str, Any]],
) -> None:
    """The zone clip on a loop; the broker is down for 20 s in the middle. A persistent QoS 1
    subscriber still receives every event the daemon made: no seq gap, first arrivals in seq
    order, duplicates within the in-flight window, and each track's events new → end."""
    path, truth = clip
    sub = Subscriber(broker, f"{BASE}/yard/events", client_id="tracking-outage")
    d = DaemonProc(tmp_path, config(broker, tmp_path, path, truth, loop=True))
    daemons.append(d)
    assert sub.wait_until(lambda ms: len(ms) >= 6, 30), d.log()
    broker.stop()
    time.sleep(20)  # the outage under test
    broker.restart()
    received = len(sub.messages)
    assert sub.wait_until(lambda ms: len(ms) > received, 30), d.log()
    time.sleep(3)  # a few more events after the backlog
    assert d.stop() == 0, d.log()
    stats = Subscriber(broker, f"{BASE}/stats", client_id="tracking-outage-stats")
    assert stats.wait_until(lambda ms: final_stats(ms) is not None, 10), d.log()
    final = final_stats(stats.messages)
    stats.close()
    assert final is not None
    n = final["tracking"]["events"]
    assert final["mqtt"]["lost_at_shutdown"] == 0 and final["mqtt"]["pending_disk"] == 0
    assert sub.wait_until(lambda ms: len({json.loads(m.payload)["seq"] for m in ms}) >= n, 30)
    log = events(sub.messages)
    sub.close()
    seqs = [e["seq"] for e in log]
    first: dict[int, dict[str, Any]] = {}
    for e in log:
        first.setdefault(e["seq"], e)
    assert list(first) == list(range(1, n + 1)), (
        f"gaps: {sorted(set(range(1, n + 1)) - set(first))}"
    )
    duplicates = len(seqs) - n
    assert duplicates <= INFLIGHT, duplicates
    assert n >= 3 * len(truth["objects"]), n  # three passes of the clip at least
    for track in by_track(list(first.values())).values():
        kinds = [e["type"] for e in track]
        assert kinds[0] == "new" and kinds[-1] == "end" and kinds.count("end") == 1, kinds
    print(f"outage: {n} events, {duplicates} duplicates, {received} before the broker returned")


class Commander:
    """A plain MQTT client that sends commands and waits for each acknowledgement."""

    def __init__(self, broker: Broker) -> None:
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="commander")
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, camera: str, payload: str) -> float:
        """Publish ``payload`` on the camera's detect/set; returns time.time() once acked."""
        info = self.client.publish(f"{BASE}/{camera}/detect/set", payload, qos=1)
        info.wait_for_publish(5)
        return time.time()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def captured(m: Received) -> float:
    stamp = json.loads(m.payload)["captured_at"].replace("Z", "+00:00")
    return datetime.fromisoformat(stamp).timestamp()


def test_the_detection_switch_pauses_within_one_frame_period(
    broker: Broker,
    tmp_path: Path,
    daemons: list[DaemonProc],
    clip: tuple[Path, dict[str, Any]],
) -> None:
    """OFF (any case) on detect/set stops results: none captured later than one frame period
    after the command was acknowledged; detect/state says OFF (retained), stats count
    skipped_paused, unknown cameras and payloads are ignored with a warning, ON resumes, and
    a restart keeps the camera off."""
    path, truth = clip
    period = 1 / truth["fps"]
    sub = Subscriber(broker, f"{BASE}/#", client_id="tracking-switch")
    cfg = config(broker, tmp_path, path, truth, loop=True)
    d = DaemonProc(tmp_path, cfg)
    daemons.append(d)
    state = f"{BASE}/yard/detect/state"
    assert sub.wait_until(lambda ms: any(m.topic == state for m in ms), 30), d.log()
    assert sub.wait_for_count(20, 30, "/result"), d.log()
    cmd = Commander(broker)
    cmd.send("garage", "OFF")
    cmd.send("yard", "sideways")
    cmd.send("yard", "sideways")
    sent = cmd.send("yard", "off")
    assert sub.wait_until(lambda ms: ms[-1].topic == state and ms[-1].payload == b"OFF", 5)
    time.sleep(1.5)  # results that could still come
    results = [m for m in sub.messages if m.topic.endswith("/result")]
    late = [captured(m) - sent for m in results if captured(m) > sent]
    assert all(gap <= period for gap in late), late
    print(f"switch: last result captured {max(late, default=0.0) * 1000:.0f} ms after OFF")
    count = len(results)
    assert sub.wait_until(
        lambda ms: any(
            m.topic.endswith("/stats")
            and json.loads(m.payload)["cameras"]["yard"]["skipped_paused"] > 5
            for m in ms
        ),
        5,
    )
    assert sum(m.topic.endswith("/result") for m in sub.messages) == count
    log = d.log()
    assert log.count("ignored 'sideways'") == 1 and "ignored 'OFF' on" in log
    cmd.send("yard", "On")
    assert sub.wait_until(lambda ms: ms[-1].topic == state and ms[-1].payload == b"ON", 5)
    assert sub.wait_until(lambda ms: sum(m.topic.endswith("/result") for m in ms) > count, 5)
    cmd.send("yard", "OFF")
    assert sub.wait_until(lambda ms: ms[-1].topic == state and ms[-1].payload == b"OFF", 5)
    assert d.stop() == 0, d.log()
    sub.close()
    cmd.close()

    later = Subscriber(broker, f"{BASE}/#", client_id="tracking-switch-2")
    again = DaemonProc(tmp_path, cfg)
    daemons.append(again)
    assert wait_for(lambda: "running: device" in again.log(), 30), again.log()
    time.sleep(2)
    assert again.stop() == 0, again.log()
    mine = [m for m in later.messages if m.topic == state and not m.retain]
    assert mine and mine[-1].payload == b"OFF", later.messages[-5:]
    assert not [m for m in later.messages if m.topic.endswith("/result")]
    later.close()


def check_config(tmp: Path, text: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp / "check.toml"
    cfg.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "edge", "check-config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )


def test_check_config_refuses_what_run_refuses(tmp_path: Path) -> None:
    """Bad polygons, zone names used twice, zones where nothing is tracked, tracking forced on
    a classifier and a model label named `zones` exit 78 naming each problem, from
    check-config as from run; a good zone passes."""
    square = "[[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]"
    good = f'[[cameras]]\nsource = "synthetic"\n[[cameras.zones]]\nname = "a"\npoints = {square}\n'
    assert check_config(tmp_path, good).returncode == 0
    bad = (
        '[[cameras]]\nname = "one"\nsource = "synthetic"\n'
        '[[cameras.zones]]\nname = "a"\npoints = [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]\n'
        '[[cameras.zones]]\nname = "b"\npoints = [[0.1, 0.1], [0.2, 2.0], [0.3, 0.1]]\n'
        f'[[cameras.zones]]\nname = "c"\npoints = {square}\n'
        f'[[cameras.zones]]\nname = "c"\npoints = {square}\n'
    )
    out = check_config(tmp_path, bad)
    assert out.returncode == EX_CONFIG, out
    assert "cameras[0].zones[0].points: edges 0-1 and 2-3 cross" in out.stderr
    assert "cameras[0].zones[1].points: corner 1 [0.2, 2.0] is outside the frame" in out.stderr
    assert "cameras[0].zones: zone name 'c' is used more than once" in out.stderr

    classifier = '[tracking]\nenabled = true\n[[cameras]]\nsource = "synthetic"\n'
    classifier += 'model = "shapes-classifier"\n'
    out = check_config(tmp_path, classifier)
    assert out.returncode == EX_CONFIG and "only detections can be tracked" in out.stderr, out
    zones_off = good.replace("[[cameras]]", "[tracking]\nenabled = false\n[[cameras]]")
    out = check_config(tmp_path, zones_off)
    assert out.returncode == EX_CONFIG and "zones need tracking" in out.stderr, out

    model = tmp_path / "zoned-detector"
    shutil.copytree(REPO / "models" / "shapes-detector", model)
    (model / "labels.txt").write_text("circle\nzones\ntriangle\n")
    labelled = f'[[cameras]]\nsource = "synthetic"\nmodel = "{model}"\n'
    out = check_config(tmp_path, labelled)
    assert out.returncode == EX_CONFIG and "has a label named 'zones'" in out.stderr, out
    filtered = labelled.replace("[[cameras]]", '[model]\nlabels = ["circle"]\n[[cameras]]')
    assert check_config(tmp_path, filtered).returncode == 0
