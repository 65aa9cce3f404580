"""A fast path for the common multipart/form-data body: the whole body in memory, split with ``bytes.find``.

Starlette's parser (python-multipart) calls back into Python for every chunk and header; reading an authentication
case (six photos, ~2 MB) this way is ~1.2x faster at p50 on the 2-core machine (benchmarks/multipart_parse.py).
HTTP client libraries, curl and browsers send one plain shape: no preamble, CRLF line ends,
``Content-Disposition: form-data; name="…"[; filename="…"]`` and an optional ``Content-Type`` per part, printable
ASCII headers, a request content type without a charset. ``parse_form_data`` takes exactly that shape (within
python-multipart's header-line and text-part limits) and returns None for anything else (quoting, escapes,
``filename*``, other headers or whitespace, non-ASCII file names, text that is not UTF-8, a missing closing
delimiter, ...), so the caller falls back to the general parser, which also words the errors for malformed bodies.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_HEADERS_END = b"\r\n\r\n"
# exactly what httpx, requests, curl and browsers send; any other spelling (a charset, quoting, more parameters,
# other whitespace) is left to the general parser, whose reading of it may differ
_CONTENT_TYPE = re.compile(r"multipart/form-data; ?boundary=([0-9A-Za-z'()+_,\-./:=?]{1,70})")
_DISPOSITION = re.compile(rb'form-data; name="([^"\\;\x00-\x1f\x7f]+)"(?:; filename="([^"\\;\x00-\x1f\x7f]+)")?')
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
# python-multipart's limits: a longer header line or text part is an error there, so not parsed here
_MAX_HEADER_LINE = 4096
_MAX_TEXT_PART = 1024 * 1024


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
    """The boundary of ``multipart/form-data; boundary=…`` spelled the plain way, or None."""
    match = _CONTENT_TYPE.fullmatch(content_type)
    return match.group(1).encode("ascii") if match else None


def _part(chunk: memoryview) -> FormPart | None:
    raw = bytes(chunk[: min(len(chunk), 8192)])
    end = raw.find(_HEADERS_END)
    if end < 0:
        return None
    disposition: re.Match[bytes] | None = None
    content_type: bytes | None = None
    for line in raw[:end].split(b"\r\n"):
        key, colon, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if (not colon or len(line) > _MAX_HEADER_LINE or not _PRINTABLE.fullmatch(line)
                or value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t")):
            return None
        key = key.lower()
        if key == b"content-disposition" and disposition is None:
            disposition = _DISPOSITION.fullmatch(value)
            if disposition is None:
                return None
        elif key == b"content-type" and content_type is None and value:
            content_type = value
        else:
            return None
    if disposition is None:
        return None
    name = disposition.group(1).decode("ascii")
    filename = disposition.group(2).decode("ascii") if disposition.group(2) is not None else None
    data = bytes(chunk[end + len(_HEADERS_END):])
    if filename is None:
        if len(data) > _MAX_TEXT_PART:
            return None
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return None
    return FormPart(name, data, filename, content_type.decode("ascii") if content_type else "")


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
