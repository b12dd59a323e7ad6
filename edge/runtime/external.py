"""Loading an external TFLite delegate: a shared library with the plugin interface
(``tflite_plugin_create_delegate`` / ``tflite_plugin_destroy_delegate``), such as the Arm NN
delegate or a vendor's NPU delegate.

As with the Edge TPU, ``load_delegate`` fails in several ways depending on what is wrong (OSError
for a missing library, AttributeError for one without the plugin symbols, ValueError when the
plugin refuses its options); each becomes one DelegateError that says what to check.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from typing import Any

from edge.errors import DelegateError


def load(backend_module: Any, library: str, options: Sequence[tuple[str, str]]) -> Any:
    """Create the delegate of ``library`` (a path or a name the dynamic linker finds) with
    ``options`` (the plugin's own key/value settings). Raises DelegateError with the remedy."""
    try:
        # Probe the library and its symbols first: load_delegate on a library without them
        # raises AttributeError *and* prints an "Exception ignored in Delegate.__del__" traceback
        # from its half-built object.
        plugin = ctypes.CDLL(library)
        for symbol in ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate"):
            getattr(plugin, symbol)
        return backend_module.load_delegate(library, dict(options))
    except (ValueError, OSError, AttributeError, RuntimeError) as exc:
        detail = str(exc).strip() or type(exc).__name__
        raise DelegateError(
            f"the delegate library {library} could not be loaded: {detail}. Check the path, that "
            "the library exports tflite_plugin_create_delegate (the TFLite external delegate "
            "interface) and was built for this machine, and the options it was given."
        ) from exc
