"""Reading a configuration: parse the TOML file, apply dotted-key overrides, validate.

Validation does no I/O beyond reading the file, rejects unknown keys, and reports every
problem at once with its path (``cameras[1].fps: must be at least 0``). Values older files
wrote for "unset" are accepted as unset and logged as warnings.
"""

from __future__ import annotations

import difflib
import logging
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.config.fields import check_value, settings
from edge.config.mqtt import MqttConfig
from edge.config.sections import SECTIONS, CameraSettings, Config
from edge.config.tracking import ZoneSettings
from edge.errors import ConfigError

log = logging.getLogger(__name__)


def _section(
    cls: type,
    data: Any,
    path: str,
    problems: list[str],
    notes: list[str],
    *,
    strict: bool = True,
) -> dict[str, Any]:
    """Validated keyword arguments for ``cls`` from a TOML table; keys left out (or given as
    a legacy "unset") are absent, so the dataclass default applies. strict: unknown keys are
    problems (the top level checks its own, as it also holds the tables)."""
    if not isinstance(data, dict):
        problems.append(f"{path}: must be a table")
        data = {}
    declared = settings(cls)
    if strict:
        names = [s.name for s in declared]  # declaration order: the hint is deterministic
        for name in data:
            if name not in names:
                close = [n for n in names if n.startswith(name[:3])] or difflib.get_close_matches(
                    name, names, n=1
                )
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                problems.append(f"{path}.{name}: unknown key{hint}")
    out = {}
    for s in declared:
        where = f"{path}.{s.name}" if path else s.name
        if s.name in data:
            value = check_value(s, data[s.name], where, problems, notes)
            if value is not None:
                out[s.name] = value
        elif s.required:
            problems.append(f"{where}: required")
    return out


def validate(data: Mapping[str, Any], source: str = "") -> Config:
    """Validate parsed TOML; raises ConfigError listing every problem."""
    problems: list[str] = []
    notes: list[str] = []
    top_keys = [s.name for s in settings(Config)]
    known = {*top_keys, *SECTIONS, "cameras"}
    for name in data:
        if name not in known:
            problems.append(f"{name}: unknown key (known: {', '.join(sorted(known))})")
    top = _section(Config, dict(data), "", problems, notes, strict=False)
    sections = {
        name: _build(cls, _section(cls, data.get(name, {}), name, problems, notes))
        for name, cls in SECTIONS.items()
    }
    cams_raw = data.get("cameras", [])
    if not isinstance(cams_raw, list) or not cams_raw:
        problems.append("cameras: add at least one [[cameras]] table with a source")
        cams_raw = []
    cameras = []
    for i, table in enumerate(cams_raw):
        raw = {k: v for k, v in table.items() if k != "zones"} if isinstance(table, dict) else table
        zones_raw = table.get("zones", []) if isinstance(table, dict) else []
        kwargs = _section(CameraSettings, raw, f"cameras[{i}]", problems, notes)
        kwargs["zones"] = _zones(zones_raw, f"cameras[{i}].zones", problems, notes)
        # A camera without a source was reported as such; it still takes part in the checks
        # across cameras (its name), and the placeholder never leaves this function.
        cameras.append(CameraSettings(**{"source": "", **kwargs}))
    _cross_checks(cameras, sections["mqtt"], problems)
    _library_checks(sections["model"], problems)
    if problems:
        raise ConfigError(problems, source=source or None)
    for note in notes:
        log.warning("%s%s", f"{source}: " if source else "", note)
    return Config(**top, **sections, cameras=tuple(cameras), source=source)


def _build(cls: type, kwargs: dict[str, Any]) -> Any:
    """``cls(**kwargs)``; a section that checks itself on construction and refuses is built
    with its defaults instead, its problems having been reported by ``_section`` already."""
    try:
        return cls(**kwargs)
    except ConfigError:
        return cls()


def _zones(data: Any, path: str, problems: list[str], notes: list[str]) -> tuple[ZoneSettings, ...]:
    """A camera's ``[[cameras.zones]]`` tables; a zone with a problem is reported and left out."""
    if not isinstance(data, list):
        problems.append(f"{path}: must be a list of tables ([[cameras.zones]])")
        return ()
    out = []
    for j, raw in enumerate(data):
        before = len(problems)
        kwargs = _section(ZoneSettings, raw, f"{path}[{j}]", problems, notes)
        if len(problems) == before:
            out.append(ZoneSettings(**kwargs))
    names = [z.name for z in out]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"{path}: zone name {n!r} is used more than once; names must be unique")
    return tuple(out)


def _cross_checks(cameras: list[CameraSettings], mqtt: Any, problems: list[str]) -> None:
    """What no single key can check: bounds between keys, unique camera names."""
    for i, c in enumerate(cameras):
        _network_checks(i, c, problems)
        if c.reconnect_min_s > c.reconnect_max_s:
            problems.append(
                f"cameras[{i}].reconnect_min_s: {c.reconnect_min_s:g} is above reconnect_max_s "
                f"({c.reconnect_max_s:g}); lower it or raise reconnect_max_s"
            )
    names = [c.name for c in cameras]
    for n in sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"cameras: name {n!r} is used more than once; names must be unique")
    assert isinstance(mqtt, MqttConfig)
    if mqtt.reconnect_min_s > mqtt.reconnect_max_s:
        problems.append(
            f"mqtt.reconnect_min_s: {mqtt.reconnect_min_s} is larger than mqtt.reconnect_max_s "
            f"({mqtt.reconnect_max_s})"
        )
    if mqtt.ram_window > mqtt.ram_max_rows:
        problems.append(
            f"mqtt.ram_window: {mqtt.ram_window} is larger than mqtt.ram_max_rows "
            f"({mqtt.ram_max_rows})"
        )


def _network_checks(i: int, c: CameraSettings, problems: list[str]) -> None:
    """An AI Camera (source imx500) runs the network it is given, on the sensor: it needs one,
    no host model, and no rotation or mirroring (the network sees the sensor's own image)."""
    imx500 = c.source.strip().lower() == "imx500"
    where = f"cameras[{i}]"
    if not imx500:
        if c.network is not None:
            problems.append(
                f'{where}.network: only an AI Camera (source = "imx500") runs a network; '
                'remove it, or set source = "imx500"'
            )
        return
    if c.network is None:
        problems.append(
            f"{where}.network: source imx500 needs the network (.rpk) to run on the sensor, "
            "e.g. /usr/share/imx500-models/imx500_network_ssd_mobilenetv2_fpnlite_320x320_pp"
            ".rpk (sudo apt install imx500-all)"
        )
    elif not c.network.lower().endswith(".rpk"):
        problems.append(
            f"{where}.network: {c.network!r} is not an .rpk file; the AI Camera runs "
            "networks packaged for the IMX500 (imx500-package makes them)"
        )
    if c.model is not None:
        problems.append(
            f"{where}.model: an AI Camera runs its network on the sensor, not a host model; "
            "remove model (network is this camera's model)"
        )
    if c.rotate or c.flip is not None:
        problems.append(
            f"{where}.rotate/flip: not available with source imx500 (the network's boxes "
            "refer to the sensor's image); mount the camera upright or leave them unset"
        )


def _library_checks(model: Any, problems: list[str]) -> None:
    """The delegate name external and delegate_library go together."""
    external = "external" in model.delegate
    if external and not model.delegate_library:
        problems.append(
            "model.delegate: external needs model.delegate_library (the delegate's shared "
            "library); set it or leave external out"
        )
    elif model.delegate_library and not external:
        problems.append(
            "model.delegate_library: set, but model.delegate does not name external, so it "
            'would never be used; add "external" to model.delegate or leave the key out'
        )


def read_toml(path: str | Path) -> dict[str, Any]:
    """Parse a TOML file; raises ConfigError naming the file and the problem."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(
            f"file not found: {p}. Create it (see systemd/config.example.toml) "
            "or pass another with --config",
            source=str(p),
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {p}: {exc}", source=str(p)) from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(p)) from exc


def load(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Read (when ``path`` is given), apply dotted-key ``overrides`` and validate."""
    data = read_toml(path) if path is not None else {}
    if overrides:
        data = merge(data, overrides)
    return validate(data, source=str(path) if path is not None else "")


def merge(data: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Apply dotted-key overrides (``mqtt.host``, ``cameras.0.source``) to parsed TOML; a
    None value removes the key (what TOML cannot say: back to unset)."""
    out: dict[str, Any] = {
        k: (
            dict(v)
            if isinstance(v, dict)
            else [dict(c) for c in v]
            if k == "cameras" and isinstance(v, list)
            else v
        )
        for k, v in data.items()
    }
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            nxt_is_index = parts[i + 1].isdigit()
            if isinstance(node, list):
                idx = int(part)
                while len(node) <= idx:
                    node.append({})
                node = node[idx]
                continue
            if part not in node:
                node[part] = [] if nxt_is_index else {}
            node = node[part]
        last = parts[-1]
        if isinstance(node, list):
            idx = int(last)
            while len(node) <= idx:
                node.append({})
            node[idx] = value
        elif value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return out
