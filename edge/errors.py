"""The one exception hierarchy of edge, and the exit codes the CLI and daemon map it to.

Third-party exceptions are wrapped where they cross into edge (``raise ModelError(...) from exc``)
so callers catch one family. Every message names what was wrong and what to do next::

    EdgeError                      exit 1   anything edge raises on purpose
    ├── ConfigError                exit 78  a setting is invalid (EX_CONFIG); carries every problem
    ├── ModelError                 exit 78  a model file, labels or manifest cannot be used
    │   └── DelegateError          exit 78  an accelerator delegate (Edge TPU) cannot be loaded
    ├── RuntimeUnavailableError    exit 78  a package the command needs is not installed
    ├── InputError                 exit 66  an input file (image, video) cannot be read (EX_NOINPUT)
    ├── QualityError               exit 65  a result failed its quality gate: ``edge quantize``
    │                                       wrote an int8 model that disagrees with the float
    │                                       one by more than --max-drop (EX_DATAERR)
    ├── SourceError                exit 1   a camera or stream failed; the daemon retries these
    └── SinkError                  exit 1   a result sink (MQTT, outbox) failed

78 is in ``RestartPreventExitStatus=`` of the systemd unit: restarting cannot fix a bad setting.
Besides these: 2 (EX_USAGE) a command line argparse or a command refused; 130 (EX_INTERRUPTED)
stopped by Ctrl-C.
"""

from __future__ import annotations

from collections.abc import Sequence

EX_OK = 0
EX_SOFTWARE = 1
EX_USAGE = 2
EX_QUALITY = 65  # sysexits' EX_DATAERR: the data given (images, normalization) gave a bad result
EX_NOINPUT = 66
EX_CONFIG = 78
EX_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class EdgeError(Exception):
    """Base of every error edge raises on purpose; ``exit_code`` is what the CLI exits with."""

    exit_code = EX_SOFTWARE


class ConfigError(EdgeError):
    """Settings are invalid; ``problems`` lists each as ``"path.to.key: what is wrong"``."""

    exit_code = EX_CONFIG

    def __init__(self, problems: str | Sequence[str], *, source: str | None = None) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        self.source = source
        head = f"invalid configuration in {source}" if source else "invalid configuration"
        if len(self.problems) == 1:
            super().__init__(f"{head}: {self.problems[0]}")
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            super().__init__(f"{head} ({len(self.problems)} problems):\n{lines}")


class ModelError(EdgeError):
    """A model cannot be used: missing, not TFLite, truncated, unsupported ops or shapes."""

    exit_code = EX_CONFIG


class DelegateError(ModelError):
    """An accelerator delegate could not be loaded and the fallback policy says to fail."""


class RuntimeUnavailableError(EdgeError):
    """A package this command needs is not installed (a TFLite runtime, or TensorFlow for
    ``edge quantize``); the message names what to install."""

    exit_code = EX_CONFIG


class InputError(EdgeError):
    """An input file (image or video) does not exist or cannot be decoded."""

    exit_code = EX_NOINPUT


class QualityError(EdgeError):
    """A result was produced but fails its quality gate (``edge quantize --max-drop``); the
    message says what was measured and what to check."""

    exit_code = EX_QUALITY


class SourceError(EdgeError):
    """A frame source failed to open or stopped delivering; the daemon reopens it with backoff."""


class SinkError(EdgeError):
    """A result sink failed (broker settings, outbox storage)."""
