"""Keeps each bundled model's section of ``models/README.md`` in step with what its script
measured: a script replaces the text between its own begin/end markers and leaves the rest."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "models" / "README.md"


def update_section(name: str, text: str, readme: Path = README) -> None:
    """Replace (or append) the section of model ``name`` with ``text`` (Markdown)."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    block = f"{begin}\n{text.strip()}\n{end}"
    current = readme.read_text(encoding="utf-8") if readme.exists() else "# Bundled models\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        _, tail = rest.split(end, 1)
        current = head + block + tail
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    readme.write_text(current, encoding="utf-8")


def size_text(n: int) -> str:
    """``12.3 KiB`` / ``3.45 MiB``."""
    return f"{n / (1 << 20):.2f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"
