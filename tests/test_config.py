"""Configuration: validation with every problem and its path, defaults, overrides, the
generated reference, and `edge check-config` exit codes."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from edge.choices import (
    DELEGATES,
    FALLBACKS,
    FLIPS,
    LOG_LEVELS,
    MQTT_PROTOCOLS,
    PUBLISH_POLICIES,
    RESIZE_MODES,
    ROTATIONS,
    RTSP_TRANSPORTS,
    RUNTIMES,
    TASKS,
)
from edge.config import (
    SECTIONS,
    BudgetSettings,
    CameraSettings,
    Config,
    ModelSettings,
    MqttConfig,
    default_device,
    load,
    merge,
    reference,
    settings,
    topic_name_problem,
    validate,
)
from edge.config.tracking import ZoneSettings
from edge.errors import EX_CONFIG, ConfigError

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """
device = "kitchen-pi"
[[cameras]]
source = "synthetic"
"""


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    """A few lines are enough: everything else has a sensible default."""
    p = tmp_path / "c.toml"
    p.write_text(MINIMAL)
    c = load(p)
    assert isinstance(c, Config)
    assert c.device == "kitchen-pi" and c.cameras[0].source == "synthetic"
    assert (c.mqtt.host, c.mqtt.port, c.mqtt.prefix, c.mqtt.qos) == ("localhost", 1883, "edge", 1)
    assert c.model.path == "shapes-detector"


def test_every_problem_reported_with_its_path() -> None:
    """Unknown keys, wrong types, out-of-range values and bad names are all listed at once."""
    data = {
        "devise": "typo",
        "device": "bad/name",
        "mqtt": {"prot": "5", "qos": 3, "port": "1883"},
        "model": {"threshold": 2.0},
        "cameras": [{"name": "a", "fps": -1}, {"name": "a", "source": "x", "rotate": 45}],
    }
    with pytest.raises(ConfigError) as err:
        validate(data, source="x.toml")
    problems = err.value.problems
    expected = [
        "devise: unknown key",
        "device: must be",
        "mqtt.prot: unknown key",
        "mqtt.qos: 3 is not one of",
        "mqtt.port: must be an integer",
        "model.threshold: must be at most",
        "cameras[0].source: required",
        "cameras[0].fps: must be at least",
        "cameras[1].rotate: 45",
        "cameras: name 'a' is used more than once",
    ]
    for e in expected:
        assert any(p.startswith(e) for p in problems), (e, problems)
    assert len(problems) == len(expected)
    assert "x.toml" in str(err.value)


@pytest.mark.parametrize(
    "name", ["a+b", "a#", "$SYS", "", "x" * 65, "a b", "caf\u00e9", "a\x00b", "a/b"]
)
def test_device_names_that_cannot_be_topic_levels(name: str) -> None:
    """Wildcards, '/', leading '$', NUL, spaces, non-ASCII, empty and over-long names fail."""
    with pytest.raises(ConfigError, match="device"):
        validate({"device": name or "\x00", "cameras": [{"source": "synthetic"}]})
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.name"):
        validate({"cameras": [{"source": "synthetic", "name": name}]})


def test_non_finite_numbers_rejected() -> None:
    """nan and inf are not accepted where a number is expected."""
    with pytest.raises(ConfigError, match="finite"):
        validate({"cameras": [{"source": "synthetic", "fps": float("nan")}]})


def test_overrides_apply_to_nested_keys() -> None:
    """Dotted overrides reach sections and list items, creating them when needed."""
    data = merge(
        {"mqtt": {"host": "a"}}, {"mqtt.port": 1999, "cameras.0.source": "x.mp4", "device": "d"}
    )
    c = validate(data)
    assert (c.mqtt.host, c.mqtt.port, c.cameras[0].source, c.device) == ("a", 1999, "x.mp4", "d")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    """A TOML syntax error says which file and where."""
    p = tmp_path / "bad.toml"
    p.write_text("[mqtt\nhost = 1")
    with pytest.raises(ConfigError, match=r"bad\.toml.*not valid TOML"):
        load(p)


def test_reference_documents_every_key() -> None:
    """The generated reference lists every key of every section (a camera's zones are their
    own table), and every section of the file."""
    from dataclasses import fields

    text = reference()
    tables = (ModelSettings, CameraSettings, MqttConfig, BudgetSettings, *SECTIONS.values())
    for cls in (*tables, ZoneSettings):
        for f in fields(cls):
            if f.name != "zones":
                assert f"| `{f.name}` |" in text
    for title in ("[[cameras.zones]]", "[tracking]", "[homeassistant]", *SECTIONS):
        assert title in text


def test_docs_reference_is_current() -> None:
    """docs/config.md is exactly what the schema generates (regenerate with
    `edge check-config --reference > docs/config.md`)."""
    assert (REPO / "docs" / "config.md").read_text() == reference() + "\n"


def test_example_config_is_valid() -> None:
    """The example configuration shipped for the service validates."""
    load(REPO / "systemd" / "config.example.toml")


def run_edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_exit_codes(tmp_path: Path) -> None:
    """check-config exits 0 for a valid file and 78 listing every problem for an invalid one,
    without a traceback."""
    good = tmp_path / "good.toml"
    good.write_text(MINIMAL)
    ok = run_edge("check-config", str(good))
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('device = "a/b"\n[mqtt]\nqos = 5\n')
    proc = run_edge("check-config", str(bad))
    assert proc.returncode == EX_CONFIG
    assert "device:" in proc.stderr and "mqtt.qos:" in proc.stderr
    assert "cameras:" in proc.stderr and "Traceback" not in proc.stderr
    missing = run_edge("check-config", str(tmp_path / "nope.toml"))
    assert missing.returncode == EX_CONFIG and "file not found" in missing.stderr


def test_keys_left_out_are_unset() -> None:
    """Optional keys default to None (unset), and the reference says so for each of them."""
    c = validate({"cameras": [{"source": "synthetic"}]})
    m, cam, mqtt = c.model, c.cameras[0], c.mqtt
    assert (m.task, m.threads, m.threshold, m.iou_threshold, m.top_k) == (None,) * 5
    assert (m.labels, m.resize, m.runtime, m.edgetpu_device) == (None,) * 4
    assert (cam.fps, cam.width, cam.height, cam.flip, cam.model, cam.rtsp_transport) == (None,) * 6
    assert (mqtt.client_id, mqtt.username, mqtt.password_file, mqtt.tls_ca) == (None,) * 4
    assert c.state_dir is None and c.device == default_device()
    assert c.camera_model(cam) == m.path == "shapes-detector"
    text = reference()
    for cls in (Config, ModelSettings, CameraSettings, MqttConfig, BudgetSettings):
        for s in settings(cls):
            if s.optional or s.computed:
                row = next(line for line in text.splitlines() if line.startswith(f"| `{s.name}` |"))
                assert "| unset |" in row and "unset" in s.help.lower(), row


def test_old_spellings_of_unset_load_as_unset_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An empty string, 0 or a negative threshold, as older files wrote "unset", is read as
    unset (a file written for an older version still loads) and logged as a warning."""
    old = {
        "device": "",
        "state_dir": "",
        "model": {
            "task": "",
            "threads": 0,
            "threshold": -1.0,
            "iou_threshold": 0.0,
            "max_detections": 0,
            "top_k": 0,
            "labels": [],
            "segmentation_threshold": -0.5,
            "resize": "",
            "runtime": "",
            "edgetpu_device": "",
        },
        "mqtt": {"client_id": "", "username": "", "tls_ca": ""},
        "cameras": [{"source": "synthetic", "fps": 0, "width": 0, "height": 0, "flip": ""}],
    }
    with caplog.at_level(logging.WARNING, logger="edge.config"):
        c = validate(old, source="old.toml")
    assert c == validate({"cameras": [{"source": "synthetic"}]}, source="old.toml")
    notes = [r.getMessage() for r in caplog.records]
    assert len(notes) == 20 and all(n.startswith("old.toml: ") for n in notes)
    assert "old.toml: model.threads = 0 is the old spelling of unset" in notes[3]
    assert all("leave the key out instead" in n for n in notes)


def test_new_ranges_refuse_what_unset_does_not_cover() -> None:
    """Values other than the old spellings of unset are held to the ranges and choices, and
    the problem of an optional key says it can be left out instead."""
    with pytest.raises(ConfigError) as err:
        validate(
            {
                "model": {"threshold": -2.0, "task": "segment", "iou_threshold": 1.5},
                "cameras": [{"source": "synthetic", "fps": -1, "rotate": 45}],
            }
        )
    assert list(err.value.problems) == [
        "model.task: 'segment' is not one of 'classification', 'detection', 'segmentation', "
        "'raw'; or leave the key out (unset)",
        "model.threshold: must be at least 0, got -2.0; or leave the key out (unset)",
        "model.iou_threshold: must be at most 1, got 1.5",
        "cameras[0].fps: must be at least 0, got -1.0; or leave the key out (unset)",
        "cameras[0].rotate: 45 is not one of 0, 90, 180, 270",
    ]


def test_choices_come_from_the_shared_names() -> None:
    """Every named choice of the schema is the one definition in edge.choices."""
    by_name = {s.name: s.choices for cls in SECTIONS.values() for s in settings(cls)}
    assert by_name["task"] == TASKS and by_name["resize"] == RESIZE_MODES
    assert by_name["delegate"] == DELEGATES and by_name["edgetpu_fallback"] == FALLBACKS
    assert by_name["runtime"] == RUNTIMES and by_name["publish"] == PUBLISH_POLICIES
    assert by_name["protocol"] == MQTT_PROTOCOLS
    camera = {s.name: s.choices for s in settings(CameraSettings)}
    assert camera["flip"] == FLIPS and camera["rotate"] == ROTATIONS
    assert camera["rtsp_transport"] == RTSP_TRANSPORTS
    assert {s.name: s.choices for s in settings(Config)}["log_level"] == LOG_LEVELS


def test_unknown_key_hint_is_deterministic() -> None:
    """The "did you mean" hint names the same key on every run: the first declared key sharing
    the first three letters, else the closest name."""
    for _ in range(3):
        with pytest.raises(ConfigError) as err:
            validate(
                {
                    "mqtt": {"reconect_s": 1, "hots": "x"},
                    "model": {"treshold": 0.5},
                    "cameras": [{"source": "synthetic", "xyz": 1}],
                }
            )
        assert list(err.value.problems) == [
            "model.treshold: unknown key (did you mean 'threshold'?)",
            "mqtt.reconect_s: unknown key (did you mean 'reconnect_min_s'?)",
            "mqtt.hots: unknown key (did you mean 'host'?)",
            "cameras[0].xyz: unknown key",
        ]


def test_a_none_override_unsets_the_key() -> None:
    """A None override removes the key (back to unset); `--fps 0` on the command line does
    that to the file's camera 0 rate."""
    from edge.cli import build_parser
    from edge.commands.options import pipeline_overrides

    data = {"cameras": [{"source": "synthetic", "fps": 15}]}
    assert validate(merge(data, {"cameras.0.fps": None})).cameras[0].fps is None
    args = build_parser().parse_args(["run", "--source", "synthetic", "--fps", "0"])
    assert validate(merge(data, pipeline_overrides(args))).cameras[0].fps is None
    args = build_parser().parse_args(["run", "--source", "synthetic", "--fps", "5"])
    assert validate(merge(data, pipeline_overrides(args))).cameras[0].fps == 5.0


@pytest.mark.parametrize(
    "name", ["cam-1", "a.b_c", "caméra", "café", "a b", "-x", "$SYS", "a+b", "x" * 64, "x" * 65]
)
def test_one_rule_for_topic_levels(name: str) -> None:
    """The configuration, the MQTT settings and the command line accept exactly the same device
    and camera names."""
    from edge.sinks.mqtt_settings import validate_topic_part

    accepted = topic_name_problem(name) is None
    try:
        validate_topic_part(name, "device")
    except ConfigError:
        assert not accepted
    else:
        assert accepted
    try:
        validate({"device": name, "cameras": [{"source": "synthetic", "name": name}]})
    except ConfigError as exc:
        assert not accepted and len(exc.problems) == 2
    else:
        assert accepted
