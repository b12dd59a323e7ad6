"""A real Home Assistant core for the discovery tests: started from ``.venv-ha`` (made by
scripts/ha_venv) on a free loopback port with a temporary configuration directory, onboarded
through its REST API (which returns the first user's token), and given an MQTT integration
pointed at a test broker through the config-flow API, as a person would in its UI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from broker import free_port

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("EDGE_HA_VENV", ROOT / ".venv-ha"))
VERSION = "2024.3.3"  # scripts/ha_venv builds this one

_CONFIG = """\
homeassistant:
  name: edge-test
  unit_system: metric
  time_zone: UTC
  latitude: 0
  longitude: 0
  elevation: 0
http:
  server_host: 127.0.0.1
  server_port: {port}
api:
config:
onboarding:
logger:
  default: warning
"""

# Read by the venv's own Python: the test environment has no websocket client.
_WS_CLIENT = """
import asyncio, json, sys
import aiohttp

async def main(url, token, commands):
    async with aiohttp.ClientSession() as s, s.ws_connect(url) as ws:
        await ws.receive_json()
        await ws.send_json({"type": "auth", "access_token": token})
        assert (await ws.receive_json())["type"] == "auth_ok"
        out = []
        for i, command in enumerate(commands, 1):
            await ws.send_json({"id": i, "type": command})
            out.append((await ws.receive_json())["result"])
        print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
"""


class HomeAssistant:
    """One ``hass`` process; ``start()`` returns once its MQTT integration is connected."""

    def __init__(self, workdir: Path, broker_host: str, broker_port: int) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.broker = (broker_host, broker_port)
        self.log_path = self.dir / "hass.log"
        self.token = ""
        self.start_s = 0.0  # process start to HTTP answering
        self.setup_s = 0.0  # onboarding, token and MQTT config flow
        self._proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing() -> str | None:
        """Why Home Assistant cannot be started here, or None."""
        hass = VENV / "bin" / "hass"
        if not hass.exists() or not (VENV / f"edge-ha-{VERSION}").exists():
            return f"no Home Assistant {VERSION} in {VENV}: build it with scripts/ha_venv"
        return None

    def start(self, timeout: float = 90.0) -> None:
        (self.dir / "configuration.yaml").write_text(_CONFIG.format(port=self.port))
        t0 = time.monotonic()
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [str(VENV / "bin" / "hass"), "-c", str(self.dir), "--skip-pip", "--log-no-color"],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait(self._answers, timeout, "Home Assistant's HTTP API")
        self.start_s = time.monotonic() - t0
        t1 = time.monotonic()
        client = f"{self.url}/"
        user = {"client_id": client, "name": "Test", "username": "test", "language": "en"}
        code = self.call("POST", "/api/onboarding/users", {**user, "password": "test-pass"})
        token = self.call(
            "POST",
            "/auth/token",
            form={
                "grant_type": "authorization_code",
                "code": code["auth_code"],
                "client_id": client,
            },
        )
        self.token = token["access_token"]
        flow = self.call("POST", "/api/config/config_entries/flow", {"handler": "mqtt"})
        host, port = self.broker
        entry = self.call(
            "POST",
            f"/api/config/config_entries/flow/{flow['flow_id']}",
            {"broker": host, "port": port},
        )
        if entry.get("type") != "create_entry" or entry["result"]["state"] != "loaded":
            raise RuntimeError(f"the MQTT integration was not set up: {entry}")
        self.setup_s = time.monotonic() - t1

    def _answers(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise RuntimeError(f"hass exited with {self._proc.returncode}; see {self.log_path}")
        try:
            self.call("GET", "/api/onboarding", auth=False)
            return True
        except (urllib.error.URLError, ConnectionError):
            return False

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        form: dict[str, str] | None = None,
        auth: bool = True,
        raw: bool = False,
    ) -> Any:
        """One REST call; the decoded JSON answer (bytes with ``raw``)."""
        headers = {"Authorization": f"Bearer {self.token}"} if auth and self.token else {}
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            content = resp.read()
        return content if raw else json.loads(content or b"null")

    def states(self) -> dict[str, dict[str, Any]]:
        """Every entity's state object by entity id."""
        return {s["entity_id"]: s for s in self.call("GET", "/api/states")}

    def by_name(self) -> dict[str, dict[str, Any]]:
        """The MQTT entities' state objects by friendly name."""
        return {
            s["attributes"].get("friendly_name", ""): s
            for s in self.states().values()
            if s["entity_id"].split(".")[0]
            in {"binary_sensor", "sensor", "image", "event", "switch"}
        }

    def registry(self, *commands: str) -> list[Any]:
        """Results of websocket commands such as ``config/device_registry/list``."""
        ws = self.url.replace("http://", "ws://") + "/api/websocket"
        out = subprocess.run(
            [str(VENV / "bin" / "python"), "-c", _WS_CLIENT, ws, self.token, *commands],
            check=True,
            capture_output=True,
            timeout=30,
        )
        result: list[Any] = json.loads(out.stdout)
        return result

    def log_problems(self) -> list[str]:
        """WARNING and ERROR lines of Home Assistant's log, less the two that every start on
        this set-up writes (pip skipped on purpose; Python 3.11 deprecated from 2024.4)."""
        expected = ("Skipping pip installation", "Support for the running Python version")
        return [
            line
            for line in self.log_path.read_text(errors="replace").splitlines()
            if (" WARNING " in line or " ERROR " in line) and not any(e in line for e in expected)
        ]

    @staticmethod
    def wait(check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout} s for {what}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is None or self._proc.poll() is not None:
            return
        os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=10)
