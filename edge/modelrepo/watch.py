"""The daemon's side of a repository: choosing the version to start with
(:func:`open_model`), and the ``models-watch`` thread that polls every repository and makes a
newer version ready to swap in.

A new version is taken up in steps, each visible in its state: ``waiting`` until its files
(names, sizes, modification times) are the same at two polls in a row, so a half-copied file
is never loaded; then the checks that need no runtime (the TFLite structure check, the
manifest's ``sha256``); ``loading`` while it is loaded and run once in a child process
(:mod:`edge.modelrepo.probe`), then loaded here and warmed up with one inference; then it is
*ready*, and the daemon's main thread swaps it into the running pipeline between two frames
(:meth:`edge.pipeline.Pipeline.swap`). A version that fails any step is ``failed`` with its
reason, logged once, and tried again only when its files change.

Thread affinity: the watcher thread writes the states of the versions it polls; the main
thread sets what serves (:meth:`Repository.served`); anyone may read :meth:`Repository.status`.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.engine import Engine, Overrides
from edge.errors import EdgeError, ModelError
from edge.modelrepo.scan import (
    AVAILABLE,
    FAILED,
    LOADING,
    SERVING,
    WAITING,
    Fingerprint,
    VersionStatus,
    candidates,
    fingerprint,
    is_repository,
    no_valid_version,
    problem,
    repository_name,
    version_dirs,
    version_spec,
)
from edge.runtime import RuntimeOptions

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Entry:
    fingerprint: Fingerprint
    state: str
    reason: str = ""


def _fields(e: _Entry) -> tuple[Fingerprint, str, str]:
    return e.fingerprint, e.state, e.reason


class Repository:
    """One repository as the daemon follows it: each version's state and what serves.

    ref: the model reference as the configuration gives it (the pipeline's key). pinned: the
    only version to serve (``[model] version``), or None for the highest valid one.
    """

    def __init__(self, ref: str, pinned: int | None = None) -> None:
        self.ref = ref
        self.path = Path(ref)
        self.name = repository_name(self.path)
        self.pinned = pinned
        self._lock = threading.Lock()
        self._entries: dict[int, _Entry] = {}
        self.serving: int | None = None
        self.serving_engine: Engine | None = None

    def repinned(self, pinned: int | None) -> Repository:
        """A copy following ``pinned`` (for a reload, which must change nothing until it is
        accepted). A version being loaded meanwhile is looked at again in the copy: the
        outcome of that load is recorded in this one."""
        copy = Repository(self.ref, pinned)
        with self._lock:
            copy._entries = {
                n: _Entry((), WAITING) if e.state == LOADING else _Entry(*_fields(e))
                for n, e in self._entries.items()
            }
        copy.serving, copy.serving_engine = self.serving, self.serving_engine
        return copy

    def record(self, number: int, fp: Fingerprint, state: str, reason: str = "") -> None:
        with self._lock:
            self._entries[number] = _Entry(fp, state, reason)
        if state == FAILED:
            log.warning("model %s: version %d failed: %s", self.name, number, reason)

    def entry(self, number: int) -> _Entry | None:
        with self._lock:
            return self._entries.get(number)

    def forget(self, present: set[int]) -> None:
        """Drop the versions no longer in the folder (the serving one stays: it is loaded)."""
        with self._lock:
            keep = present | ({self.serving} if self.serving is not None else set())
            for n in set(self._entries) - keep:
                del self._entries[n]

    def served(self, number: int, engine: Engine) -> None:
        """``number`` serves now (main thread, once it is swapped in)."""
        with self._lock:
            old = self._entries.get(self.serving) if self.serving is not None else None
            if old is not None and old.state == SERVING:
                old.state = AVAILABLE
            entry = self._entries.setdefault(number, _Entry((), SERVING))
            entry.state, entry.reason = SERVING, ""
            self.serving, self.serving_engine = number, engine

    def target(self) -> int | None:
        """The version to move to: the pinned one, or the highest available above the serving
        one."""
        with self._lock:
            ready = [n for n, e in self._entries.items() if e.state == AVAILABLE]
        if self.pinned is not None:
            return self.pinned if self.pinned in ready and self.pinned != self.serving else None
        above = [n for n in ready if self.serving is None or n > self.serving]
        return max(above, default=None)

    def status(self) -> list[VersionStatus]:
        """Every version, lowest first."""
        with self._lock:
            return [VersionStatus(n, e.state, e.reason) for n, e in sorted(self._entries.items())]

    def degraded(self) -> list[str]:
        """The failed versions the daemon would otherwise serve, one sentence each."""
        return [
            f"model {self.name}: version {s.number} failed, version {self.serving} keeps "
            f"serving: {s.reason}"
            for s in self.status()
            if s.state == FAILED
            and (
                s.number == self.pinned or (self.pinned is None and s.number > (self.serving or 0))
            )
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "repository": str(self.path),
            "serving": None if self.serving is None else str(self.serving),
            "pinned": self.pinned,
            "versions": [s.as_json() for s in self.status()],
        }


def open_model(
    ref: str, options: RuntimeOptions, overrides: Overrides, pinned: int | None = None
) -> tuple[Engine, Repository | None]:
    """Load ``ref`` for the daemon: a repository's version as :func:`choose` picks it, any
    other reference as :meth:`Engine.load` does. Raises ModelError listing every version's
    reason when a repository has nothing to serve."""
    path = Path(ref)
    if not is_repository(path):
        if pinned is not None:
            raise ModelError(
                f"[model] version = {pinned} pins a version, but {ref} is not a repository of "
                "numbered versions (folders 1/, 2/, ... each holding a model). Point [model] "
                "path at the repository or remove [model] version."
            )
        return Engine.load(ref, options, overrides), None
    engine, repo, failed = choose(ref, options, overrides, pinned)
    if engine is None:
        raise no_valid_version(path, pinned, failed)
    return engine, repo


def choose(
    ref: str, options: RuntimeOptions, overrides: Overrides, pinned: int | None = None
) -> tuple[Engine | None, Repository, list[VersionStatus]]:
    """The start of a repository: its highest version (or ``pinned``) that passes every check,
    a child process's load and inference included, loaded here (None when none passes); the
    repository with every version's state; the versions tried that failed. Versions below the
    chosen one get only the checks that need no runtime."""
    path = Path(ref)
    repo = Repository(ref, pinned)
    dirs = version_dirs(path)
    failed: list[VersionStatus] = []
    engine: Engine | None = None
    wanted = set(candidates(path, pinned))
    for number in sorted(dirs, reverse=True):
        d, fp = dirs[number], fingerprint(dirs[number])
        if engine is not None or number not in wanted:
            why = problem(d)
            repo.record(number, fp, FAILED if why else AVAILABLE, why or "")
            continue
        from edge.modelrepo import probe  # subprocess: imported once a repository is used

        why = problem(d) or probe.verify(d, options, overrides)
        if why is None:
            try:
                engine = Engine.load(version_spec(path, number), options, overrides)
            except EdgeError as exc:
                why = str(exc)
        if why is not None:
            failed.append(VersionStatus(number, FAILED, why))
            repo.record(number, fp, FAILED, why)
        else:
            assert engine is not None
            repo.record(number, fp, SERVING)
            repo.served(number, engine)
    return engine, repo, failed


@dataclass(frozen=True, slots=True)
class Candidate:
    """A version made ready by the watcher: verified, loaded and warmed up with ``options`` and
    ``overrides``; the main thread swaps it in (or closes it)."""

    ref: str
    number: int
    engine: Engine
    options: RuntimeOptions
    overrides: Overrides


class RepositoryWatcher(threading.Thread):
    """``models-watch``: polls every repository each ``poll_s`` seconds and readies at most one
    candidate per repository at a time (:meth:`take_ready`, main thread)."""

    def __init__(self, poll_s: float) -> None:
        super().__init__(name="models-watch", daemon=True)
        self.poll_s = poll_s
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._repos: dict[str, Repository] = {}
        self._options = RuntimeOptions()
        self._overrides = Overrides()
        self._ready: dict[str, Candidate] = {}

    def configure(
        self,
        repos: dict[str, Repository],
        options: RuntimeOptions,
        overrides: Overrides,
        poll_s: float,
    ) -> None:
        """Follow ``repos`` from now on, loading with ``options`` and ``overrides`` (main
        thread, at start and after each accepted reload)."""
        with self._lock:
            self._repos = dict(repos)
            self._options, self._overrides, self.poll_s = options, overrides, poll_s
            stale = [c for ref, c in self._ready.items() if ref not in repos]
            self._ready = {ref: c for ref, c in self._ready.items() if ref in repos}
        for c in stale:
            c.engine.close()

    def take_ready(self) -> list[Candidate]:
        with self._lock:
            ready, self._ready = list(self._ready.values()), {}
        return ready

    def close(self) -> None:
        self.stop_event.set()
        if self.ident is not None:
            self.join(self.poll_s + 5.0)  # a verification child is killed on stop
        for c in self.take_ready():
            c.engine.close()

    def run(self) -> None:
        # Not niced like the verification child: the threads an interpreter starts (XNNPACK's
        # pool, a failover chain's invoke thread) are created here and would inherit it.
        while not self.stop_event.wait(self.poll_s):
            with self._lock:
                repos = list(self._repos.values())
            for repo in repos:
                try:
                    self.poll(repo)
                except Exception:
                    log.exception("watching the model repository %s failed", repo.path)

    def poll(self, repo: Repository) -> None:
        """One look at ``repo``: new and changed versions wait, versions unchanged since the
        last poll are checked, and the one to move to is made ready."""
        dirs = version_dirs(repo.path)
        for number, d in dirs.items():
            if number == repo.serving:
                continue
            fp, entry = fingerprint(d), repo.entry(number)
            if entry is None or entry.fingerprint != fp:
                repo.record(number, fp, WAITING)
            elif entry.state == WAITING:
                why = problem(d)
                repo.record(number, fp, FAILED if why else AVAILABLE, why or "")
        repo.forget(set(dirs))
        with self._lock:
            if repo.ref in self._ready:
                return
            options, overrides = self._options, self._overrides
        target = repo.target()
        if target is not None and not self.stop_event.is_set():
            self._prepare(repo, target, dirs[target], options, overrides)

    def _prepare(
        self,
        repo: Repository,
        number: int,
        d: Path,
        options: RuntimeOptions,
        overrides: Overrides,
    ) -> None:
        fp = fingerprint(d)
        repo.record(number, fp, LOADING)
        log.info("model %s: verifying version %d in a child process", repo.name, number)
        from edge.modelrepo import probe

        why = probe.verify(d, options, overrides, stop=self.stop_event)
        if self.stop_event.is_set():
            return
        engine: Engine | None = None
        if why is None:
            try:
                engine = Engine.load(version_spec(repo.path, number), options, overrides)
                why = _input_change(engine, repo.serving_engine, repo.serving)
                if why is None:
                    pre = engine.preprocessor
                    engine.infer(np.zeros((pre.height, pre.width, 3), np.uint8))  # warm-up
            except EdgeError as exc:
                why = str(exc)
        if fingerprint(d) != fp:  # changed while it was checked: start again
            repo.record(number, fingerprint(d), WAITING)
            if engine is not None:
                engine.close()
            return
        if why is not None or engine is None:
            if engine is not None:
                engine.close()
            repo.record(number, fp, FAILED, why or "did not load")
            return
        log.info("model %s: version %d verified, loaded and warmed up", repo.name, number)
        with self._lock:
            self._ready[repo.ref] = Candidate(repo.ref, number, engine, options, overrides)


def _input_change(new: Engine, serving: Engine | None, serving_number: int | None) -> str | None:
    """Why ``new`` cannot be swapped in for ``serving`` while the cameras run: the capture
    threads preprocess frames for the serving model's input, so the input (shape, type,
    quantization) and the preprocessing must stay the same."""
    if serving is None:
        return None
    a, b = serving.preprocessor, new.preprocessor
    old_in = (a.spec.shape, a.spec.dtype, a.spec.scale, a.spec.zero_point, a.config)
    new_in = (b.spec.shape, b.spec.dtype, b.spec.scale, b.spec.zero_point, b.config)
    if old_in == new_in:
        return None
    return (
        f"its input ({b.spec.shape} {b.spec.dtype}, preprocessing {b.config}) differs from "
        f"version {serving_number}'s ({a.spec.shape} {a.spec.dtype}, preprocessing {a.config}), "
        "which cannot change while the cameras run; restart the daemon to serve it"
    )
