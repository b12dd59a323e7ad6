"""Compiling a quantized model for the Coral Edge TPU with ``edgetpu_compiler``, when it is
installed, and reading from its log how many operations run on the TPU.

The compiler exists only for x86_64 Debian/Ubuntu (Coral's apt repository); when it is missing
the report says so and how to get it, and nothing claims a TPU mapping that was not measured.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
MAPPED = "Mapped to Edge TPU"
HOW_TO_GET = (
    "edgetpu_compiler is not installed, so the model was not compiled for the Coral Edge TPU. "
    "It runs on x86_64 Debian/Ubuntu only: add Coral's apt repository and "
    "`sudo apt-get install edgetpu-compiler` (see https://coral.ai/docs/edgetpu/compiler/), "
    "then run `edgetpu_compiler -s -o OUT_DIR model.tflite`."
)
TIMEOUT_S = 600.0

_OP_ROW = re.compile(r"^\s*([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")
_FIELD = re.compile(r"^\s*([A-Za-z][A-Za-z \-]+?):\s*(.+?)\s*$")


@dataclass(frozen=True, slots=True)
class OpRow:
    """One row of the compiler's operation table: op type, how many, and where they run."""

    op: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        return self.status == MAPPED


@dataclass(frozen=True, slots=True)
class EdgeTpuReport:
    """Outcome of an Edge TPU compile. ops_total: operations in the model (the compiler's own
    count); ops_mapped: those that run on the TPU; rows: the operation table."""

    compiled: bool
    message: str
    model_file: str = ""
    compiler_version: str = ""
    ops_total: int = 0
    ops_mapped: int = 0
    subgraphs: int = 0
    rows: tuple[OpRow, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "compiled": self.compiled,
            "message": self.message,
            "model_file": self.model_file,
            "compiler_version": self.compiler_version,
            "ops_total": self.ops_total,
            "ops_mapped": self.ops_mapped,
            "subgraphs": self.subgraphs,
            "ops": [{"op": r.op, "count": r.count, "status": r.status} for r in self.rows],
        }


def parse_log(text: str) -> tuple[dict[str, str], tuple[OpRow, ...]]:
    """(summary fields, operation table) from ``edgetpu_compiler -s`` output or its .log file.

    Summary lines look like ``Total number of operations: 72``; the table follows a header
    ``Operator  Count  Status``. Unknown lines are ignored, so newer compilers that add lines
    still parse.
    """
    fields: dict[str, str] = {}
    rows: list[OpRow] = []
    in_table = False
    for line in text.splitlines():
        if re.match(r"^\s*Operator\s+Count\s+Status\s*$", line):
            in_table = True
            continue
        if in_table:
            m = _OP_ROW.match(line)
            if m:
                rows.append(OpRow(m.group(1), int(m.group(2)), m.group(3)))
                continue
        m = _FIELD.match(line)
        if m:
            fields[m.group(1).strip()] = m.group(2)
        elif line.startswith("Edge TPU Compiler version"):
            fields["version"] = line.rsplit(" ", 1)[-1]
    return fields, tuple(rows)


def compile_model(model: Path, out_dir: Path, compiler: str | None = None) -> EdgeTpuReport:
    """Compile ``model`` into ``out_dir`` (``<stem>_edgetpu.tflite`` and ``.log``).

    compiler: the executable (default: ``edgetpu_compiler`` from PATH). Never raises for a
    missing or failing compiler: the report says what happened.
    """
    exe = compiler or shutil.which(COMPILER)
    if not exe:
        return EdgeTpuReport(False, HOW_TO_GET)
    try:
        proc = subprocess.run(
            [exe, "-s", "-o", str(out_dir), str(model)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return EdgeTpuReport(False, f"{COMPILER} could not run: {exc}")
    text = proc.stdout + "\n" + proc.stderr
    fields, rows = parse_log(text)
    log_file = out_dir / f"{model.stem}_edgetpu.log"
    if not rows and log_file.is_file():
        _, rows = parse_log(log_file.read_text(encoding="utf-8", errors="replace"))
    compiled = out_dir / f"{model.stem}_edgetpu.tflite"
    if proc.returncode != 0 or not compiled.is_file():
        tail = " ".join(text.strip().splitlines()[-3:])
        return EdgeTpuReport(
            False,
            f"{COMPILER} failed (exit {proc.returncode}): {tail}",
            compiler_version=fields.get("version", ""),
            rows=rows,
        )
    total = _int(fields.get("Total number of operations")) or sum(r.count for r in rows)
    mapped = sum(r.count for r in rows if r.mapped)
    return EdgeTpuReport(
        True,
        f"{mapped} of {total} operations run on the Edge TPU",
        model_file=compiled.name,
        compiler_version=fields.get("version", ""),
        ops_total=total,
        ops_mapped=mapped,
        subgraphs=_int(fields.get("Number of Edge TPU subgraphs")),
        rows=rows,
    )


def _int(text: str | None) -> int:
    try:
        return int(str(text).split()[0])
    except (ValueError, IndexError):
        return 0
