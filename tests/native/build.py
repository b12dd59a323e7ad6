"""Compiling the native test delegate (failing_delegate.c) with the system C compiler.

Built at test time into a temporary directory: nothing compiled is kept in the repository. The
delegate needs no TFLite headers or libraries (see the comment at the top of the source).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("failing_delegate.c")


def compile_failing_delegate(out_dir: Path) -> Path:
    """Build ``libfailing_delegate.so`` in ``out_dir`` and return its path.

    Raises RuntimeError when no C compiler is installed (``apt-get install gcc libc6-dev``) or
    the build fails (with the compiler's output).
    """
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError(
            "no C compiler (cc/gcc) found: the failover tests build a native delegate; install "
            "one with `apt-get install gcc libc6-dev`"
        )
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
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"building {SOURCE.name} failed:\n{done.stdout}{done.stderr}")
    return out
