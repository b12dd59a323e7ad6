"""Open everything a configuration names, the way ``edge run`` would, without running it.

``edge check-config`` uses this so that it refuses whatever the daemon would refuse: every model
is loaded (labels decoded, manifest read, delegate tried), the MQTT password, CA, client
certificate and key are read, the metrics library is found when ``[metrics]`` asks for it, the
state directory is checked, file sources exist, and the tracking plan (zones, which cameras are
tracked) and the discovery ids are worked out. The daemon's reload uses the same steps to build
a new configuration completely before touching the running one. Configuration validation
itself (``edge.config``) stays free of I/O.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from edge import metrics
from edge.config import Config
from edge.engine import Engine, Overrides
from edge.errors import ConfigError, EdgeError, InputError
from edge.modelrepo import open_model, pinned_version
from edge.runtime import RuntimeOptions
from edge.sinks.mqtt_settings import MqttSettings, check_files
from edge.sinks.tracks import TrackedCamera, plan
from edge.sources import from_camera, missing


@dataclass(frozen=True, slots=True)
class Checked:
    """What a check opened: the sink settings, one loaded engine per model reference, the
    tracked cameras (zones built) by name, and the online requests' own engine (None when
    ``[online]`` is off)."""

    mqtt: MqttSettings
    engines: dict[str, Engine]
    tracked: dict[str, TrackedCamera]
    online: Engine | None = None


def check(config: Config, load: Callable[[str], Engine] | None = None) -> Checked:
    """Open what ``config`` names; raises the error ``edge run`` would meet first (ConfigError
    or ModelError: exit 78; InputError: exit 66), with every problem of the same kind listed.

    load: how to get an engine for a model reference (the daemon passes one that reuses
    unchanged engines and follows repositories); default: as the daemon loads at start (a
    repository's version verified in a child process first)."""
    problems: list[str] = []
    absent: list[str] = []  # file sources that do not exist: InputError, exit 66
    settings: MqttSettings | None = None
    try:
        settings = MqttSettings.from_config(config)
        check_files(settings)
    except ConfigError as exc:
        problems.extend(exc.problems)
    problem = metrics.problem(config.metrics)
    if problem:
        problems.append(problem)
    state = config.state_path()
    problem = _state_dir_problem(state)
    if problem:
        problems.append(f"state_dir: {problem}")
    for i, cam in enumerate(config.cameras):
        try:
            gone = missing(from_camera(cam))
        except ConfigError as exc:
            problems.extend(f"cameras[{i}].{p}" for p in exc.problems)
        else:
            if gone is not None:
                absent.append(f"cameras[{i}].source: {gone}")
    engines: dict[str, Engine] = {}
    first_model_error: EdgeError | None = None
    options, post = (
        RuntimeOptions.from_settings(config.model),
        Overrides.from_settings(config.model),
    )
    loader = load or (lambda ref: open_model(ref, options, post, pinned_version(config, ref))[0])
    for cam in config.cameras:
        ref = config.camera_model(cam)
        if ref in engines:
            continue
        try:
            engines[ref] = loader(ref)
        except EdgeError as exc:
            if first_model_error is None:
                first_model_error = exc
            problems.append(f"model {ref!r}: {exc}")
    online: Engine | None = None
    if config.online.enabled:
        from edge.commands.infer import one_shot_engine

        ref = config.online_model()
        try:
            # An interpreter of its own with one thread: see edge.online.server.
            online = one_shot_engine(ref, replace(options, threads=1), post)
        except EdgeError as exc:
            first_model_error = first_model_error or exc
            problems.append(f"online.model {ref!r}: {exc}")
    tracked: dict[str, TrackedCamera] = {}
    if first_model_error is None:
        try:
            tracked = plan(config, engines)
            if config.homeassistant.enabled:
                from edge.homeassistant import discovery_messages
                from edge.sinks.discovery import device_spec

                discovery_messages(config.homeassistant, device_spec(config, engines, tracked))
        except ConfigError as exc:
            problems.extend(exc.problems)
    if (problems or absent) and online is not None:
        online.close()
    if problems:
        if first_model_error is not None and len(problems) == 1:
            raise first_model_error
        raise ConfigError(problems, source=config.source or None)
    if absent:
        raise InputError("; ".join(absent))
    assert settings is not None
    return Checked(settings, engines, tracked, online)


def _state_dir_problem(state: Path) -> str | None:
    """Why the outbox cannot live in ``state`` (it is created when missing), or None."""
    probe = state
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory; set state_dir to a writable directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return (
            f"{probe} is not writable by this user, so the outbox {state} cannot be created; "
            "set state_dir to a writable directory (systemd: StateDirectory=)"
        )
    return None
