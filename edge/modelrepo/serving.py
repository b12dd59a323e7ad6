"""What the daemon does with repositories: load through them when it builds a configuration,
swap in the versions its watcher made ready, and say what serves (the retained ``models``
topic, the degraded list). Kept out of :mod:`edge.daemon` so that the daemon only calls it.

Thread affinity: the main thread, except :class:`~edge.modelrepo.watch.RepositoryWatcher`'s
own thread.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from edge.engine import Engine, Overrides
from edge.modelrepo import open_model, pinned_version
from edge.runtime import RuntimeOptions

if TYPE_CHECKING:
    from edge.modelrepo.watch import Repository, RepositoryWatcher
    from edge.pipeline import Pipeline
    from edge.sinks.mqtt import MqttSink

log = logging.getLogger(__name__)

EngineKey = tuple[str, RuntimeOptions, Overrides]


__all__ = ["EngineKey", "Serving", "pinned_version"]


class Serving:
    """The daemon's repositories and their watcher (made, with the rest of
    :mod:`edge.modelrepo.watch`, when the first repository is followed)."""

    def __init__(self, poll_s: float) -> None:
        self.repos: dict[str, Repository] = {}
        self.watcher: RepositoryWatcher | None = None
        self._poll_s = poll_s
        self._sent: bytes | None = None

    def load(
        self,
        ref: str,
        options: RuntimeOptions,
        overrides: Overrides,
        pinned: int | None,
        current: Engine | None,
        repos: dict[str, Repository],
    ) -> Engine:
        """The engine for ``ref`` in a configuration being built: ``current`` (the one loaded
        with the same settings) when it still fits the pin, else loaded anew. The repository
        followed for ``ref``, if any, goes into ``repos`` (nothing running changes)."""
        repo = self.repos.get(ref)
        if current is not None and repo is not None and pinned in (None, repo.serving):
            repos[ref] = repo.repinned(pinned)
            return current
        if current is not None and repo is None and pinned is None:
            return current
        engine, new_repo = open_model(ref, options, overrides, pinned)
        if new_repo is not None:
            repos[ref] = new_repo
        return engine

    def follow(
        self,
        repos: dict[str, Repository],
        options: RuntimeOptions,
        overrides: Overrides,
        poll_s: float,
    ) -> None:
        """Watch ``repos`` from now on (at start and after each accepted reload)."""
        self.repos = repos
        if self.watcher is None:
            if not repos:
                return
            from edge.modelrepo.watch import RepositoryWatcher

            self.watcher = RepositoryWatcher(self._poll_s)
        self.watcher.configure(repos, options, overrides, poll_s)
        if repos and self.watcher.ident is None:
            self.watcher.start()

    def swap_ready(
        self, pipeline: Pipeline, engines: dict[EngineKey, Engine]
    ) -> list[tuple[str, Engine]]:
        """Swap every version the watcher made ready into ``pipeline`` (between two frames)
        and close the engine each replaces; ``engines``, the daemon's engines by key, follows.
        Returns the swapped (reference, new engine) pairs."""
        swapped: list[tuple[str, Engine]] = []
        if self.watcher is None:
            return swapped
        from edge.modelrepo.scan import WAITING

        for c in self.watcher.take_ready():
            repo = self.repos.get(c.ref)
            key = (c.ref, c.options, c.overrides)
            old = None
            if repo is not None and key in engines and c.ref in pipeline.engines:
                old = pipeline.swap(c.ref, c.engine)
            if repo is None or old is None:
                # Settings changed under it, or an invoke hung through the swap: look again.
                c.engine.close()
                if repo is not None:
                    repo.record(c.number, (), WAITING)
                continue
            engines[key] = c.engine
            was = repo.serving
            repo.served(c.number, c.engine)
            try:
                old.close()
            except Exception:
                log.exception("closing version %s of %s failed", was, repo.name)
            log.info("model %s: version %d serves now (was version %s)", repo.name, c.number, was)
            swapped.append((c.ref, c.engine))
        return swapped

    def degraded(self) -> list[str]:
        return [d for repo in self.repos.values() for d in repo.degraded()]

    def payload(self, pipeline: Pipeline, boot_id: str) -> dict[str, Any]:
        """The ``models`` topic: per model, what serves and every version's state."""
        models: dict[str, Any] = {}
        for ref, engine in pipeline.engines.items():
            repo = self.repos.get(ref)
            if repo is not None:
                models[engine.name] = repo.as_json()
            else:
                models[engine.name] = {
                    "repository": None,
                    "path": ref,
                    "serving": engine.spec.version,
                    "versions": [],
                }
        return {"boot_id": boot_id, "models": models}

    def publish(self, sink: MqttSink, topic: str, pipeline: Pipeline, boot_id: str) -> None:
        """Set the retained ``models`` topic whenever what it says changes."""
        data = json.dumps(self.payload(pipeline, boot_id), separators=(",", ":")).encode()
        if data != self._sent:
            self._sent = data
            sink.retain(topic, data)

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.close()
