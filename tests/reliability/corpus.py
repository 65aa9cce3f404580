"""A corpus of hostile inputs for every entry point of ``kiln serve --apps authenticity,packaging``.

Each ``BadInput`` is one HTTP request that a client could send by mistake or malice; the server must
answer it with a 4xx JSON error (``{"error": ...}``) and keep serving. The images and bodies are built
here, byte by byte, so the corpus needs no files and is the same on every machine.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

AUTH = "/v1/authenticate"
PACK = "/v1/packaging"


@dataclass
class BadInput:
    """One request: ``method path`` with httpx keyword arguments; ``statuses`` are the acceptable answers."""

    id: str
    category: str
    method: str
    path: str
    make: Callable[[], dict[str, Any]] = field(default=lambda: {})
    statuses: tuple[int, ...] = ()  # empty: any 4xx


# --- images --------------------------------------------------------------------------------------
def photo(size: int = 96, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(size)
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    """A PNG whose header claims width×height 8-bit grey pixels, with a few KB of compressed zeros."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (width + 1) * 16, 9)  # the first rows; a decoder would expand far more
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def jpeg_bomb() -> bytes:
    """A valid JPEG header that claims 65000×65000 pixels (SOF0 patched), followed by a tiny scan."""
    data = bytearray(photo(64))
    index = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, index + 5, 65000, 65000)
    return bytes(data)


def truncated_jpeg() -> bytes:
    data = photo(256)
    return data[: len(data) // 3]


def corrupted_jpeg() -> bytes:
    """Random bytes over the JPEG's tables (quantisation, Huffman, frame header); the magic bytes stay."""
    data = bytearray(photo(256))
    rng = np.random.default_rng(1)
    data[20:300] = rng.integers(0, 255, 280, dtype=np.uint8).tobytes()
    return bytes(data)


def truncated_png() -> bytes:
    data = photo(128, "PNG")
    return data[: len(data) // 2]


def html_polyglot() -> bytes:
    """JPEG magic bytes followed by an HTML page with a script: not a decodable image."""
    return b"\xff\xd8\xff\xe0<html><script>alert(document.cookie)</script></html>"


def gif_script_polyglot() -> bytes:
    """A GIF header that is also a JavaScript statement (the classic GIFAR/GIF-JS polyglot)."""
    return b"GIF89a/*\x01\x00\x01\x00\x00\x00\x00*/=1;alert(1)//;"


def pdf_as_jpeg() -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def svg_image() -> bytes:
    return b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="100" height="100"/></svg>'


def tiff_image() -> bytes:
    return photo(96, "TIFF")


def gif_image() -> bytes:
    return photo(96, "GIF")


def tiny_png() -> bytes:
    return photo(8, "PNG")


def _case_files(data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg", count: int = 1) -> dict[str, Any]:
    return {
        "files": [("images", (f"{i}-{name}", data, content_type)) for i in range(count)],
        "data": {"views": ",".join(["logo", "stitching", "hardware", "date_code", "lining", "overall", "logo", "logo"][:count]),
                 "brand": "Acme", "model": "Tote"},
    }


def _pack_file(data: bytes, name: str = "ref.jpg", content_type: str = "image/jpeg") -> dict[str, Any]:
    return {"files": {"file": (name, data, content_type)}}


# --- OIP ---------------------------------------------------------------------------------------
def _oip(inputs: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"json": {"inputs": inputs, **extra}}


def _long(data: Any = (1, 2, 3), shape: Any = (1, 3), datatype: str = "INT64", **extra: Any) -> dict[str, Any]:
    return {"name": "x", "shape": list(shape) if isinstance(shape, tuple) else shape, "datatype": datatype,
            "data": list(data) if isinstance(data, tuple) else data, **extra}


def _binary(header: dict[str, Any], raw: bytes, declared: int | str | None = None) -> dict[str, Any]:
    head = json.dumps(header).encode()
    length = str(len(head)) if declared is None else str(declared)
    return {"content": head + raw, "headers": {"Inference-Header-Content-Length": length,
                                                "Content-Type": "application/octet-stream"}}


def _image_binary(values: np.ndarray) -> dict[str, Any]:
    raw = values.astype(np.float32).tobytes()
    header = {"inputs": [{"name": "input", "shape": list(values.shape), "datatype": "FP32",
                          "parameters": {"binary_data_size": len(raw)}}]}
    return _binary(header, raw)


def _nan_image(value: float) -> dict[str, Any]:
    x = np.zeros((1, 3, 32, 32), np.float32)
    x[0, 1, 2, 3] = value
    return _image_binary(x)


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _raw(body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": body, "headers": {"Content-Type": content_type}}


INFER = "/v2/models/long/infer"
IMAGE = "/v2/models/image/infer"
BIG = 70 << 20  # over every default body limit (64 MiB OIP, 91 MiB cases need many files)


def corpus() -> list[BadInput]:
    b: list[BadInput] = []

    def add(id: str, category: str, method: str, path: str, make: Callable[[], dict[str, Any]], *statuses: int) -> None:
        b.append(BadInput(id, category, method, path, make, tuple(statuses)))

    # OIP JSON
    add("oip-not-json", "invalid JSON", "POST", INFER, lambda: _raw(b"{inputs: nope"), 400)
    add("oip-invalid-utf8", "invalid UTF-8", "POST", INFER, lambda: _raw(b'{"inputs": [{"name": "\xff\xfe"}]}'), 400)
    add("oip-deep-nesting", "deeply nested JSON", "POST", INFER, lambda: _raw(_nested(100_000)), 400)
    add("oip-deep-nesting-data", "deeply nested JSON", "POST", INFER,
        lambda: _raw(b'{"inputs":[{"name":"x","shape":[1,3],"datatype":"INT64","data":' + _nested(5000) + b"}]}"), 400)
    add("oip-top-level-array", "wrong JSON type", "POST", INFER, lambda: {"json": [1, 2, 3]}, 400)
    add("oip-top-level-string", "wrong JSON type", "POST", INFER, lambda: {"json": "inputs"}, 400)
    add("oip-empty-body", "wrong JSON type", "POST", INFER, lambda: _raw(b""), 400)
    add("oip-huge-json", "huge JSON", "POST", "/v2/models/half/infer",
        lambda: _raw(b'{"inputs":[' + b'{"name":"x"},' * 2000 + b'{}]}'), 413)
    add("oip-declared-huge", "huge JSON", "POST", INFER, lambda: {"content": b"x" * BIG}, 413)
    add("oip-nan-literal", "NaN/Inf tensors", "POST", "/v2/models/half/infer",
        lambda: _raw(b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP16","data":[NaN,1,2,3]}]}'), 400)
    add("oip-inf-number", "NaN/Inf tensors", "POST", "/v2/models/half/infer",
        lambda: _raw(b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP16","data":[1e400,1,2,3]}]}'), 400)
    add("oip-fp16-overflow", "NaN/Inf tensors", "POST", "/v2/models/half/infer",
        lambda: _oip([{"name": "x", "shape": [1, 4], "datatype": "FP16", "data": [1e6, 1, 2, 3]}]), 400)
    add("oip-nan-binary", "NaN/Inf tensors", "POST", IMAGE, lambda: _nan_image(float("nan")), 400)
    add("oip-inf-binary", "NaN/Inf tensors", "POST", IMAGE, lambda: _nan_image(float("-inf")), 400)
    add("oip-bad-datatype", "bad tensor", "POST", INFER, lambda: _oip([_long(datatype="INT128")]), 400)
    add("oip-bf16-json", "bad tensor", "POST", INFER, lambda: _oip([_long(datatype="BF16")]), 400)
    add("oip-negative-shape", "bad tensor", "POST", INFER, lambda: _oip([_long(shape=(-1, 3))]), 400)
    add("oip-float-shape", "bad tensor", "POST", INFER, lambda: _oip([_long(shape=[1.5, 3])]), 400)
    add("oip-string-shape", "bad tensor", "POST", INFER, lambda: _oip([_long(shape="1,3")]), 400)
    add("oip-overflow-shape", "bad tensor", "POST", INFER, lambda: _oip([_long(shape=(2**62, 2**62, 2**62))]), 413)
    add("oip-huge-int-shape", "bad tensor", "POST", INFER, lambda: _raw(b'{"inputs":[{"name":"x","shape":[1' + b"0" * 400 + b',3],"datatype":"INT64","data":[1,2,3]}]}'), 400, 413)
    add("oip-zero-batch", "bad tensor", "POST", INFER, lambda: _oip([_long(data=(), shape=(0, 3))]), 400)
    add("oip-data-mismatch", "bad tensor", "POST", INFER, lambda: _oip([_long(data=(1, 2))]), 400)
    add("oip-ragged-data", "bad tensor", "POST", INFER, lambda: _oip([_long(data=[[1, 2], 3])]), 400)
    add("oip-data-object", "bad tensor", "POST", INFER, lambda: _oip([_long(data={"a": 1})]), 400)
    add("oip-int-overflow", "bad tensor", "POST", INFER, lambda: _oip([_long(data=(2**70, 1, 2))]), 400)
    add("oip-null-values", "bad tensor", "POST", INFER, lambda: _oip([_long(data=(None, 1, 2))]), 400)
    add("oip-duplicate-input", "bad tensor", "POST", INFER, lambda: _oip([_long(), _long()]), 400)
    add("oip-input-not-object", "bad tensor", "POST", INFER, lambda: _oip(["x"]), 400)
    add("oip-long-name", "long strings", "POST", INFER, lambda: _oip([_long(name="x" * 100_000)]), 400)
    add("oip-long-model-name", "long strings", "POST", "/v2/models/" + "m" * 4000 + "/infer", lambda: _oip([_long()]), 404, 414)
    add("oip-bytes-invalid-utf8", "invalid UTF-8", "POST", "/v2/models/text/infer",
        lambda: _binary({"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "parameters": {"binary_data_size": 10}}]},
                        struct.pack("<I", 1) + b"\xff" + struct.pack("<I", 1) + b"\xfe"), 400)
    add("oip-bad-priority", "bad parameters", "POST", INFER, lambda: _oip([_long()], parameters={"priority": "high"}), 400)
    add("oip-bad-timeout", "bad parameters", "POST", INFER, lambda: _oip([_long()], parameters={"timeout": -5}), 400)
    add("oip-parameters-list", "bad parameters", "POST", INFER, lambda: _oip([_long()], parameters=[1]), 400)
    add("oip-outputs-not-list", "bad parameters", "POST", INFER, lambda: _oip([_long()], outputs="y"), 400)
    add("oip-unknown-output", "bad parameters", "POST", INFER, lambda: _oip([_long()], outputs=[{"name": "zz"}]), 400)
    add("oip-version-text", "bad query/path", "POST", "/v2/models/long/versions/abc/infer", lambda: _oip([_long()]), 404)
    add("oip-version-huge", "bad query/path", "POST", "/v2/models/long/versions/" + "9" * 40 + "/infer", lambda: _oip([_long()]), 404)
    add("oip-unknown-model", "bad query/path", "POST", "/v2/models/nope/infer", lambda: _oip([_long()]), 404)
    add("oip-compressed", "wrong content types", "POST", INFER,
        lambda: {"content": zlib.compress(b"{}"), "headers": {"Content-Encoding": "deflate"}}, 415)
    add("oip-multipart", "wrong content types", "POST", INFER, lambda: {"files": {"f": ("a.json", b"{}", "application/json")}}, 400)
    add("repo-index-bad", "invalid JSON", "POST", "/v2/repository/index", lambda: _raw(b"[[["), 400)
    add("repo-index-huge", "huge JSON", "POST", "/v2/repository/index", lambda: _raw(b" " * (1 << 17)), 413)
    # OIP binary extension
    raw3 = np.arange(3, dtype=np.int64).tobytes()
    head3 = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "parameters": {"binary_data_size": 24}}]}
    add("bin-short", "wrong binary lengths", "POST", INFER, lambda: _binary(head3, raw3[:20]), 400)
    add("bin-long", "wrong binary lengths", "POST", INFER, lambda: _binary(head3, raw3 + b"\0" * 8), 400)
    add("bin-header-past-end", "wrong binary lengths", "POST", INFER, lambda: _binary(head3, raw3, declared=10_000), 400)
    add("bin-header-negative", "wrong binary lengths", "POST", INFER, lambda: _binary(head3, raw3, declared=-4), 400)
    add("bin-header-text", "wrong binary lengths", "POST", INFER, lambda: _binary(head3, raw3, declared="ten"), 400)
    add("bin-header-short", "wrong binary lengths", "POST", INFER, lambda: _binary(head3, raw3, declared=5), 400)
    add("bin-size-mismatch", "wrong binary lengths", "POST", INFER, lambda: _binary(
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "parameters": {"binary_data_size": 16}}]}, raw3[:16]), 400)
    add("bin-size-negative", "wrong binary lengths", "POST", INFER, lambda: _binary(
        {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "parameters": {"binary_data_size": -24}}]}, raw3), 400)
    add("bin-bytes-prefix-lies", "wrong binary lengths", "POST", "/v2/models/text/infer", lambda: _binary(
        {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "BYTES", "parameters": {"binary_data_size": 8}}]},
        struct.pack("<I", 1_000_000) + b"abcd"), 400)
    # authentication: multipart uploads
    add("auth-truncated-jpeg", "truncated/corrupted images", "POST", AUTH, lambda: _case_files(truncated_jpeg()))
    add("auth-corrupted-jpeg", "truncated/corrupted images", "POST", AUTH, lambda: _case_files(corrupted_jpeg()))
    add("auth-truncated-png", "truncated/corrupted images", "POST", AUTH, lambda: _case_files(truncated_png(), "a.png", "image/png"))
    add("auth-empty-file", "truncated/corrupted images", "POST", AUTH, lambda: _case_files(b""))
    add("auth-random-bytes", "truncated/corrupted images", "POST", AUTH, lambda: _case_files(np.random.default_rng(2).bytes(5000)))
    add("auth-png-bomb", "decompression bombs", "POST", AUTH, lambda: _case_files(png_bomb(), "a.png", "image/png"), 413, 415)
    add("auth-jpeg-bomb", "decompression bombs", "POST", AUTH, lambda: _case_files(jpeg_bomb()), 413, 415)
    add("auth-html-polyglot", "polyglots", "POST", AUTH, lambda: _case_files(html_polyglot()), 415)
    add("auth-gif-js-polyglot", "polyglots", "POST", AUTH, lambda: _case_files(gif_script_polyglot(), "a.gif", "image/gif"), 415)
    add("auth-pdf-as-jpeg", "polyglots", "POST", AUTH, lambda: _case_files(pdf_as_jpeg()), 415)
    add("auth-svg", "wrong content types", "POST", AUTH, lambda: _case_files(svg_image(), "a.svg", "image/svg+xml"), 415)
    add("auth-tiff", "wrong content types", "POST", AUTH, lambda: _case_files(tiff_image(), "a.tif", "image/tiff"), 415)
    add("auth-gif", "wrong content types", "POST", AUTH, lambda: _case_files(gif_image(), "a.gif", "image/gif"), 415)
    add("auth-json-body", "wrong content types", "POST", AUTH, lambda: {"json": {"images": []}}, 415)
    add("auth-text-body", "wrong content types", "POST", AUTH, lambda: _raw(b"hello", "text/plain"), 415)
    add("auth-no-boundary", "wrong content types", "POST", AUTH, lambda: _raw(b"--x\r\n", "multipart/form-data"), 400)
    add("auth-garbled-multipart", "wrong content types", "POST", AUTH,
        lambda: _raw(b"--b\r\nContent-Disposition: form-data; name=\"images\"; filename=\"a\"\r\n\r\nabc", "multipart/form-data; boundary=b"), 400)
    add("auth-too-small", "truncated/corrupted images", "POST", AUTH, lambda: _case_files(tiny_png(), "a.png", "image/png"), 400)
    add("auth-too-many-files", "too many files", "POST", AUTH, lambda: _case_files(photo(), count=8), 400, 413)
    add("auth-too-many-fields", "too many files", "POST", AUTH,
        lambda: {"files": [("images", ("a.jpg", photo(), "image/jpeg"))], "data": {f"f{i}": "x" for i in range(40)}}, 400)
    add("auth-wrong-file-field", "bad form", "POST", AUTH, lambda: {"files": {"photo": ("a.jpg", photo(), "image/jpeg")}}, 400)
    add("auth-images-as-text", "bad form", "POST", AUTH, lambda: {"data": {"images": "x", "views": "logo", "brand": "a", "model": "b"}}, 400)
    add("auth-no-files", "bad form", "POST", AUTH, lambda: {"data": {"views": "logo", "brand": "a", "model": "b"}, "files": {}}, 400, 415)
    add("auth-views-mismatch", "bad form", "POST", AUTH,
        lambda: {**_case_files(photo()), "data": {"views": "logo,stitching", "brand": "a", "model": "b"}}, 400)
    add("auth-unknown-view", "bad form", "POST", AUTH,
        lambda: {**_case_files(photo()), "data": {"views": "selfie", "brand": "a", "model": "b"}}, 400)
    add("auth-long-brand", "long strings", "POST", AUTH,
        lambda: {**_case_files(photo()), "data": {"views": "logo", "brand": "b" * 100_000, "model": "m"}}, 400)
    add("auth-long-filename", "long strings", "POST", AUTH, lambda: _case_files(truncated_jpeg(), name="n" * 20_000 + ".jpg"))
    add("auth-invalid-utf8-field", "invalid UTF-8", "POST", AUTH, lambda: _raw(
        b"--b\r\nContent-Disposition: form-data; name=\"brand\"\r\n\r\n\xff\xfe\xfd\r\n--b--\r\n", "multipart/form-data; boundary=b"), 400)
    add("auth-bad-mode", "bad query/path", "POST", AUTH + "?mode=later", lambda: _case_files(photo()), 422)
    add("refs-truncated", "truncated/corrupted images", "POST", "/v1/references", lambda: _case_files(truncated_jpeg()))
    add("refs-bomb", "decompression bombs", "POST", "/v1/references", lambda: _case_files(png_bomb(), "a.png", "image/png"), 413, 415)
    # authentication: query parameters and paths
    for query in ("limit=-1", "limit=abc", "limit=100000", "offset=-3", "offset=" + "9" * 30, "since=yesterday",
                  "until=2024-13-45", "verdict=maybe", "brand=" + "b" * 5000, "limit=1e3", "since=" + "1" * 300):
        add(f"cases-{query[:20]}", "bad query/path", "GET", "/v1/cases?" + query, lambda: {}, 422)
    add("case-unknown", "bad query/path", "GET", "/v1/cases/nope", lambda: {}, 404)
    add("case-long-id", "long strings", "GET", "/v1/cases/" + "c" * 5000, lambda: {}, 404, 414)
    add("case-report-unknown", "bad query/path", "GET", "/v1/cases/nope/report.html", lambda: {}, 404)
    add("case-pdf-unknown", "bad query/path", "GET", "/v1/cases/nope/report.pdf", lambda: {}, 404)
    add("case-image-huge-index", "bad query/path", "GET", "/v1/cases/nope/images/" + "9" * 30, lambda: {}, 404, 422)
    add("case-image-negative", "bad query/path", "GET", "/v1/cases/nope/images/-1", lambda: {}, 404, 422)
    add("case-heatmap-text-index", "bad query/path", "GET", "/v1/cases/nope/images/x/heatmap.png", lambda: {}, 422)
    add("job-unknown", "bad query/path", "GET", "/v1/jobs/" + "j" * 300, lambda: {}, 404)
    add("refs-long-query", "long strings", "GET", "/v1/references?brand=" + "b" * 1000, lambda: {}, 422)
    add("ref-delete-unknown", "bad query/path", "DELETE", "/v1/references/nope", lambda: {}, 404)
    # packaging: briefs
    brief = PACK + "/recommend"
    add("brief-not-json", "invalid JSON", "POST", brief, lambda: _raw(b"{product: tea"), 400)
    add("brief-invalid-utf8", "invalid UTF-8", "POST", brief, lambda: _raw(b'{"product": "\xff\xfe tea"}'), 400, 422)
    add("brief-deep-nesting", "deeply nested JSON", "POST", brief, lambda: _raw(_nested(100_000)), 400, 422)
    add("brief-deep-object", "deeply nested JSON", "POST", brief, lambda: _raw(b'{"a":' * 50_000 + b"1" + b"}" * 50_000), 400, 422)
    add("brief-huge", "huge JSON", "POST", brief, lambda: _raw(b'{"product": "' + b"t" * BIG + b'"}'), 413, 422)
    add("brief-long-product", "long strings", "POST", brief, lambda: {"json": {"product": "t" * 10_000}}, 422)
    add("brief-long-keywords", "long strings", "POST", brief, lambda: {"json": {"product": "tea", "keywords": ["k" * 100] * 100}}, 422)
    add("brief-wrong-types", "wrong JSON type", "POST", brief, lambda: {"json": {"product": 5, "claims": "x"}}, 422)
    add("brief-array", "wrong JSON type", "POST", brief, lambda: {"json": [1, 2]}, 422)
    add("brief-nan", "NaN/Inf tensors", "POST", brief, lambda: _raw(b'{"product": NaN}'), 400, 422)
    add("brief-bad-colour", "bad form", "POST", brief, lambda: {"json": {"product": "tea", "brand_colors": [{"hex": "#zzzzzz"}]}}, 422)
    add("brief-too-many-colours", "too many files", "POST", brief,
        lambda: {"json": {"product": "tea", "brand_colors": [{"hex": "#112233"}] * 50}}, 422)
    add("brief-bad-data-url", "truncated/corrupted images", "POST", brief,
        lambda: {"json": {"product": "tea", "reference_images": ["data:image/png;base64,!!!notbase64"]}}, 400, 422)
    add("brief-data-url-bomb", "decompression bombs", "POST", brief, lambda: {"json": {"product": "tea", "reference_images": [
        "data:image/png;base64," + __import__("base64").b64encode(png_bomb()).decode()]}}, 413, 415, 422)
    add("brief-too-many-refs", "too many files", "POST", brief,
        lambda: {"json": {"product": "tea", "reference_images": ["data:image/png;base64,AAAA"] * 10}}, 422)
    add("brief-text-plain", "wrong content types", "POST", brief, lambda: _raw(b'{"product": "tea"}', "text/plain"), 400, 415, 422)
    # packaging: uploads and lookups
    images = PACK + "/images"
    add("pack-truncated", "truncated/corrupted images", "POST", images, lambda: _pack_file(truncated_jpeg()))
    add("pack-corrupted", "truncated/corrupted images", "POST", images, lambda: _pack_file(corrupted_jpeg()))
    add("pack-bomb", "decompression bombs", "POST", images, lambda: _pack_file(png_bomb(), "a.png", "image/png"), 413, 415)
    add("pack-jpeg-bomb", "decompression bombs", "POST", images, lambda: _pack_file(jpeg_bomb()), 413, 415)
    add("pack-polyglot", "polyglots", "POST", images, lambda: _pack_file(html_polyglot()))
    add("pack-pdf", "polyglots", "POST", images, lambda: _pack_file(pdf_as_jpeg(), "a.pdf", "application/pdf"))
    add("pack-empty", "truncated/corrupted images", "POST", images, lambda: _pack_file(b""))
    add("pack-no-file", "bad form", "POST", images, lambda: {"data": {"x": "y"}}, 422, 400)
    add("pack-json", "wrong content types", "POST", images, lambda: {"json": {"file": "x"}}, 422, 400, 415)
    add("pack-too-many-files", "too many files", "POST", images,
        lambda: {"files": [("file", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(2000)]}, 400, 413, 422)
    add("pack-huge", "huge JSON", "POST", images, lambda: _pack_file(b"\xff\xd8" + b"\0" * (30 << 20)), 413)
    add("pack-result-unknown", "bad query/path", "GET", PACK + "/results/" + "0" * 32, lambda: {}, 404)
    add("pack-result-bad-key", "bad query/path", "GET", PACK + "/results/../../etc/passwd", lambda: {}, 404)
    add("pack-asset-bad", "bad query/path", "GET", PACK + "/results/" + "0" * 32 + "/directions/" + "9" * 30 + "/mockup.png", lambda: {}, 404, 422)
    add("pack-asset-text-index", "bad query/path", "GET", PACK + "/results/" + "0" * 32 + "/directions/x/mockup.png", lambda: {}, 422)
    # the rest of the HTTP surface
    add("unknown-route", "bad query/path", "GET", "/v2/nothing/here", lambda: {}, 404)
    add("wrong-method", "bad query/path", "DELETE", "/v2/models/long/infer", lambda: {}, 405)
    add("model-meta-unknown", "bad query/path", "GET", "/v2/models/" + "%00" * 10, lambda: {}, 404)
    return b
