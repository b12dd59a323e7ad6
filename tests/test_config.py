"""Configuration: validation with every problem and its path, defaults, overrides, the
generated reference, and `edge check-config` exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import Config, load, merge, reference, validate
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
    """The generated reference lists every key of every section."""
    from dataclasses import fields

    from edge.config import BudgetSettings, CameraSettings, ModelSettings, MqttConfig

    text = reference()
    for cls in (ModelSettings, CameraSettings, MqttConfig, BudgetSettings):
        for f in fields(cls):
            assert f"| `{f.name}` |" in text


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
