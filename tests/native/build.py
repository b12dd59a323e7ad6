"""Compiling the native test libraries with the system C compiler: the failing delegate
(failing_delegate.c) and a libedgetpu version stand-in (edgetpu_version.c).

Built at test time into a temporary directory: nothing compiled is kept in the repository.
Neither needs TFLite headers or libraries (see the comment at the top of each source).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("failing_delegate.c")
EDGETPU_SOURCE = Path(__file__).with_name("edgetpu_version.c")


def _compiler() -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError(
            "no C compiler (cc/gcc) found: these tests build native libraries; install "
            "one with `apt-get install gcc libc6-dev`"
        )
    return cc


def _build(cmd: list[str], source: Path) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building {source.name} failed:\n{done.stdout}{done.stderr}")


def compile_edgetpu_stub(out_dir: Path, version: str, tensorflow_commit: str = "") -> Path:
    """Build ``libedgetpu.so.1`` in ``out_dir`` (which it creates) whose ``edgetpu_version()``
    returns ``version`` and which embeds ``TENSORFLOW_COMMIT=tensorflow_commit`` when given.
    Raises RuntimeError as :func:`compile_failing_delegate` does."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / "libedgetpu.so.1"
    defines = [f"-DEDGETPU_VERSION={_c_string(version)}"]
    if tensorflow_commit:
        defines.append(f"-DTENSORFLOW_COMMIT={_c_string(tensorflow_commit)}")
    cmd = [_compiler(), "-std=c11", "-O2", "-Wall", "-shared", "-fPIC", "-fvisibility=hidden"]
    _build([*cmd, *defines, "-o", str(out), str(EDGETPU_SOURCE)], EDGETPU_SOURCE)
    return out


def _c_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compile_failing_delegate(out_dir: Path) -> Path:
    """Build ``libfailing_delegate.so`` in ``out_dir`` and return its path.

    Raises RuntimeError when no C compiler is installed (``apt-get install gcc libc6-dev``) or
    the build fails (with the compiler's output).
    """
    cc = _compiler()
    out = out_dir / "libfailing_delegate.so"
    cmd = [
        cc,
        "-std=c11",
        "-O2",
        "-Wall",
        "-Wextra",
        "-D_POSIX_C_SOURCE=199309L",  # nanosleep
        "-shared",
        "-fPIC",
        "-fvisibility=hidden",
        "-o",
        str(out),
        str(SOURCE),
    ]
    _build(cmd, SOURCE)
    return out
