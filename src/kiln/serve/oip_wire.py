"""``ModelInferRequest`` from the wire without copying its tensors.

A gRPC inference request is mostly its ``raw_input_contents`` (field 7: one length-delimited
``bytes`` entry per input, e.g. 1.2 MB for eight 224×224 RGB images). protobuf's parser copies
each entry into a new ``bytes`` object, and reading it back from the repeated field copies it
again; both copies run on the server's event loop. Here the top level of the message is scanned
for field 7, each entry is kept as a ``memoryview`` into the received bytes (``np.frombuffer``
then reads it in place), and only the remainder (names, shapes, parameters: a few hundred
bytes) goes through protobuf. Fields keep their order, so the remainder parses to exactly what
the whole message gives for every other field.

Anything the scanner does not expect (a group wire type, a length that runs past the end, an
over-long tag, more than ``MAX_FIELDS`` top-level fields) is left to protobuf's own parser, which
accepts what is valid and rejects what is not as before.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from kiln.serve.protos import grpc_service_pb2 as pb

RAW_INPUT_CONTENTS = 7  # ModelInferRequest.raw_input_contents
MAX_FIELDS = 4096  # top-level fields scanned in Python; a message with more goes to protobuf's C parser whole
MAX_TAG_BYTES = 5  # protobuf rejects longer tags; so does the scanner
_LENGTH_DELIMITED, _VARINT, _FIXED64, _FIXED32 = 2, 0, 1, 5


class _Unexpected(Exception):
    """The bytes are not what the scanner handles; protobuf decides."""


@dataclass(frozen=True)
class InferRequest:
    """A parsed ``ModelInferRequest``: every field in ``message`` except the raw tensors, which are
    views of the received bytes."""

    message: Any  # pb.ModelInferRequest without raw_input_contents
    raw_input_contents: list[memoryview] | Any  # or the message's own repeated field (fallback)
    parse_s: float = 0.0  # how long parsing took (the "parse" stage of the answer's server-timing)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise _Unexpected
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7


def _split(data: bytes) -> tuple[bytes, list[memoryview]]:
    """(every top-level field but raw_input_contents, as bytes; the raw entries as views)."""
    view = memoryview(data)
    rest: list[memoryview] = []
    raw: list[memoryview] = []
    at = kept_from = fields = 0
    end = len(data)
    while at < end:
        fields += 1
        if fields > MAX_FIELDS:  # real requests have tens; thousands of tiny fields must not stall the event loop
            raise _Unexpected
        field_start = at
        tag, at = _varint(data, at)
        if at - field_start > MAX_TAG_BYTES:
            raise _Unexpected
        wire = tag & 7
        if wire == _LENGTH_DELIMITED:
            length, at = _varint(data, at)
            if at + length > end:
                raise _Unexpected
            if tag >> 3 == RAW_INPUT_CONTENTS:
                rest.append(view[kept_from:field_start])
                raw.append(view[at : at + length])
                kept_from = at + length
            at += length
        elif wire == _VARINT:
            _, at = _varint(data, at)
        elif wire == _FIXED64:
            at += 8
        elif wire == _FIXED32:
            at += 4
        else:
            raise _Unexpected
    if at != end:
        raise _Unexpected
    rest.append(view[kept_from:end])
    return b"".join(rest), raw


def parse_infer_request(data: bytes) -> InferRequest:
    """The gRPC deserializer of ``ModelInfer``; raises protobuf's DecodeError for a malformed message."""
    started = time.perf_counter()
    try:
        rest, raw = _split(data)
    except _Unexpected:
        raw = []
    if not raw:  # nothing to spare from copying (or bytes for protobuf to judge)
        message = pb.ModelInferRequest.FromString(data)
        return InferRequest(message, message.raw_input_contents, time.perf_counter() - started)
    return InferRequest(pb.ModelInferRequest.FromString(rest), raw, time.perf_counter() - started)
