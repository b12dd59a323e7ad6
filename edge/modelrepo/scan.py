"""A repository's versions and the checks that need no runtime.

A repository is a directory that holds no model file and no manifest itself but numbered
sub-directories (decimal digits only: ``1``, ``2``, ``10``), each a model directory. A
version's manifest may give ``sha256``: the hex SHA-256 of its model file, checked before the
version is used. Nothing here loads an interpreter.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path

from edge.errors import EdgeError, ModelError
from edge.models import MANIFEST, ModelSpec, _model_files, _read_manifest, load_spec, resolve

# The states a version can be in, as the models topic and `edge models` show them.
WAITING = "waiting"  # seen, its files not yet unchanged across two polls
AVAILABLE = "available"  # passed the checks that need no runtime; not serving
LOADING = "loading"  # being verified in a child process, loaded and warmed up
SERVING = "serving"
FAILED = "failed"
STATES = (WAITING, AVAILABLE, LOADING, SERVING, FAILED)

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_CHUNK = 1 << 20

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True, slots=True)
class VersionStatus:
    """One version of a repository. number: its folder name as an integer. state: one of
    :data:`STATES`. reason: why it failed (empty otherwise)."""

    number: int
    state: str
    reason: str = ""

    def as_json(self) -> dict[str, object]:
        out: dict[str, object] = {"version": self.number, "state": self.state}
        if self.reason:
            out["reason"] = self.reason
        return out


def version_dirs(path: Path) -> dict[int, Path]:
    """Version number -> directory, for every numbered sub-directory of ``path``."""
    try:
        entries = list(path.iterdir())
    except OSError:
        return {}
    return {int(d.name): d for d in entries if d.name.isascii() and d.name.isdigit() and d.is_dir()}


def is_repository(path: Path) -> bool:
    """Whether ``path`` is a repository: a directory with numbered versions and no model or
    manifest of its own."""
    return (
        path.is_dir()
        and not (path / MANIFEST).exists()
        and not _model_files(path)
        and bool(version_dirs(path))
    )


def repository_name(path: Path) -> str:
    """The model name every version of the repository serves under: the folder's name (so
    that topics, stats and thread names stay the same across versions)."""
    return path.resolve().name


def fingerprint(directory: Path) -> Fingerprint:
    """(name, size, mtime in ns) of every file of a version: equal across two polls means
    nothing is still being copied into it."""
    out = []
    try:
        for f in sorted(directory.iterdir()):
            st = f.stat()
            out.append((f.name, st.st_size, st.st_mtime_ns))
    except OSError:
        return ()
    return tuple(out)


def problem(directory: Path) -> str | None:
    """Why the version in ``directory`` cannot be used, found without a runtime (the manifest,
    the model file's TFLite structure, its ``sha256``), or None."""
    from edge.runtime import check_file  # the runtime package imports numpy and the backends

    try:
        path, _ = resolve(directory)
        load_spec(directory)
        if path.suffix == ".tflite":
            check_file(path)
        expected = (_read_manifest(directory) or {}).get("sha256")
        if expected is not None:
            return _checksum_problem(path, expected)
    except EdgeError as exc:
        return str(exc)
    return None


def _checksum_problem(path: Path, expected: object) -> str | None:
    where = path.parent / MANIFEST
    if not isinstance(expected, str) or not _SHA256.fullmatch(expected):
        return f"{where}: sha256 must be 64 hex digits (the output of `sha256sum {path.name}`)"
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if digest.hexdigest() != expected.lower():
        return (
            f"{path} does not match the sha256 in {where} (it is {digest.hexdigest()}): the "
            "copy is incomplete or the file was changed; copy the version again"
        )
    return None


def version_spec(repository: Path, number: int) -> ModelSpec:
    """The spec of one version, named after the repository and versioned by its number."""
    spec = load_spec(repository / str(number))
    return replace(spec, name=repository_name(repository), version=str(number))


def newest_spec(repository: Path, pinned: int | None = None) -> ModelSpec:
    """The spec of the highest version (or ``pinned``) that passes :func:`problem`, for the
    commands that run a model once (``edge infer``, ``edge batch``). Raises ModelError listing
    every version's reason when none does."""
    reasons = []
    for number in candidates(repository, pinned):
        why = problem(repository / str(number))
        if why is None:
            return version_spec(repository, number)
        reasons.append(VersionStatus(number, FAILED, why))
    raise no_valid_version(repository, pinned, reasons)


def candidates(repository: Path, pinned: int | None) -> list[int]:
    """The versions to try, preferred first: ``pinned`` alone, or every version, highest
    first."""
    numbers = sorted(version_dirs(repository), reverse=True)
    return [n for n in numbers if pinned is None or n == pinned]


def no_valid_version(
    repository: Path, pinned: int | None, failed: list[VersionStatus]
) -> ModelError:
    """The error for a repository with nothing to serve, every version's reason listed."""
    if pinned is not None and not failed:
        present = ", ".join(map(str, sorted(version_dirs(repository)))) or "none"
        return ModelError(
            f"{repository}: the pinned version {pinned} is not there (versions present: "
            f"{present}). Copy version {pinned} into {repository / str(pinned)} or change "
            "[model] version."
        )
    listed = "; ".join(f"version {s.number}: {s.reason}" for s in failed) or "no version"
    advice = (
        f"Fix version {pinned} or remove [model] version to serve the highest valid one."
        if pinned is not None
        else "Fix or copy a version again."
    )
    return ModelError(f"{repository} has no version that can be served ({listed}). {advice}")
