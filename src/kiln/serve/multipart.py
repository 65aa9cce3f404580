"""A fast path for the common multipart/form-data body: the whole body in memory, split with ``bytes.find``.

Starlette's parser (python-multipart) calls back into Python for every chunk and header byte; for an
authentication case (six photos, ~2 MB) that is ~1.2 ms of one core per request on the 2-core machine
(benchmarks/multipart_parse.py). Browsers, curl and HTTP client libraries all send the same simple shape: no
preamble, CRLF line ends, ``Content-Disposition: form-data; name="…"[; filename="…"]`` and an optional
``Content-Type`` per part. ``parse_form_data`` handles exactly that shape and returns None for anything else
(quoted-pair escapes, ``filename*``, other part headers, text that is not UTF-8, a missing closing delimiter, …),
so the caller falls back to the general parser, which also produces the error messages for malformed bodies.
"""

from __future__ import annotations

from dataclasses import dataclass

_HEADERS_END = b"\r\n\r\n"


@dataclass(frozen=True)
class FormPart:
    """One part: a file when ``filename`` is not None (then ``data`` is its bytes), else a text field."""

    name: str
    data: bytes
    filename: str | None = None
    content_type: str = ""

    @property
    def text(self) -> str:
        return self.data.decode("utf-8")


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a ``multipart/form-data`` content type, or None (no boundary, or one needing unquoting)."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            if not value or len(value) > 70 or not value.isascii() or any(c in value for c in '"\\\r\n'):
                return None
            return value.encode("ascii")
    return None


def _disposition(value: str) -> tuple[str, str | None] | None:
    """(name, filename or None) of ``form-data; name="a"[; filename="b"]``; None for anything else."""
    kind, *params = value.split(";")
    if kind.strip().lower() != "form-data":
        return None
    found: dict[str, str] = {}
    for param in params:
        key, eq, quoted = param.strip().partition("=")
        key = key.lower()
        if not eq or key not in ("name", "filename") or key in found:
            return None
        if len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"' or any(c in quoted[1:-1] for c in '"\\'):
            return None
        found[key] = quoted[1:-1]
    if not found.get("name") or found.get("filename") == "":
        return None
    return found["name"], found.get("filename")


def _part(chunk: memoryview) -> FormPart | None:
    raw = bytes(chunk[: min(len(chunk), 8192)])
    end = raw.find(_HEADERS_END)
    if end < 0:
        return None
    try:
        lines = raw[:end].decode("utf-8").split("\r\n")
    except UnicodeDecodeError:
        return None
    disposition: tuple[str, str | None] | None = None
    content_type = ""
    for line in lines:
        key, colon, value = line.partition(":")
        key = key.strip().lower()
        if not colon or "\n" in line or "\r" in line:
            return None
        if key == "content-disposition" and disposition is None:
            disposition = _disposition(value.strip())
            if disposition is None:
                return None
        elif key == "content-type" and not content_type:
            content_type = value.strip()
        else:
            return None
    if disposition is None:
        return None
    name, filename = disposition
    data = bytes(chunk[end + len(_HEADERS_END):])
    if filename is None:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return FormPart(name, data, filename, content_type)


def parse_form_data(body: bytes, boundary: bytes, max_parts: int) -> list[FormPart] | None:
    """The parts of ``body`` in order, or None when the body is not of the simple shape this parser takes (or has
    more than ``max_parts`` parts): the caller then parses it with the general parser."""
    first = b"--" + boundary + b"\r\n"
    delimiter = b"\r\n--" + boundary
    if not body.startswith(first):
        return None
    view = memoryview(body)
    parts: list[FormPart] = []
    start = len(first)
    while True:
        end = body.find(delimiter, start)
        if end < 0 or len(parts) >= max_parts:
            return None
        part = _part(view[start:end])
        if part is None:
            return None
        parts.append(part)
        after = end + len(delimiter)
        tail = body[after:after + 2]
        if tail == b"--":
            return parts if body[after + 2:] in (b"", b"\r\n") else None
        if tail != b"\r\n":
            return None
        start = after + 2
