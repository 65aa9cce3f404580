"""Keeps docs/benchmarks/authenticity.md in sections, so each benchmark script rewrites only its own."""

from __future__ import annotations

from pathlib import Path

HEADER = """# Authentication app: benchmarks

Written by `benchmarks/authenticity.py` (speed over HTTP) and `benchmarks/authenticity_accuracy.py`
(accuracy on held-out synthetic data, INT8 vs FP32, real photographs). Every figure below was
measured by those scripts; rerun them to refresh a section.
"""


def replace_section(doc: Path, name: str, text: str) -> None:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    current = doc.read_text(encoding="utf-8") if doc.is_file() else HEADER
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        _, tail = rest.split(end, 1)
        updated = head + block + tail
    else:
        updated = current.rstrip() + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(updated, encoding="utf-8")
