"""Versioned model repositories: a folder of numbered versions (``detector/1/``,
``detector/2/``, each a model directory as :mod:`edge.models` defines it), served by the daemon
at its highest valid version (or a pinned one) and swapped when a newer one arrives.

- :mod:`edge.modelrepo.scan`: the folder's versions and the checks that need no runtime
  (complete file, the TFLite structure check, ``sha256`` from the manifest);
- :mod:`edge.modelrepo.probe`: loading and running a version in a child process first, so a
  model that crashes the runtime kills the child, never the daemon;
- :mod:`edge.modelrepo.watch`: the daemon's ``models-watch`` thread, which polls the folders
  and makes new versions ready (verified, loaded, warmed up) for the main thread to swap in.

A daemon whose models are plain model directories or files imports none of them: this module
tells those apart first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from edge.models import MANIFEST

if TYPE_CHECKING:
    from edge.config import Config
    from edge.engine import Engine, Overrides
    from edge.modelrepo.watch import Repository
    from edge.runtime import RuntimeOptions


def pinned_version(config: Config, ref: str) -> int | None:
    """The version ``[model] version`` pins for model reference ``ref`` (it applies to
    ``[model] path``, not to a camera's own model)."""
    return config.model.version if ref == config.model.path else None


def open_model(
    ref: str, options: RuntimeOptions, overrides: Overrides, pinned: int | None = None
) -> tuple[Engine, Repository | None]:
    """Load ``ref`` for the daemon: a repository's version as
    :func:`edge.modelrepo.watch.choose` picks it, any other reference as :meth:`Engine.load`
    does (see :func:`edge.modelrepo.watch.open_model`, which this defers to for a directory
    without a manifest, the only kind that can be a repository, and for a pinned version)."""
    path = Path(ref)
    if pinned is not None or (path.is_dir() and not (path / MANIFEST).exists()):
        from edge.modelrepo.watch import open_model as open_maybe_repository

        return open_maybe_repository(ref, options, overrides, pinned)
    from edge.engine import Engine

    return Engine.load(ref, options, overrides), None
