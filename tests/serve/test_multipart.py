"""The multipart fast path against starlette's parser: same parts where it answers, None (fall back) otherwise."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from starlette.datastructures import UploadFile
from starlette.requests import Request

from kiln.serve.multipart import boundary_of, parse_form_data


def _starlette(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes, str]]:
    async def parse() -> list[tuple[str, str | None, bytes, str]]:
        sent = False

        async def receive() -> dict[str, object]:
            nonlocal sent
            chunk, sent = (b"" if sent else body), True
            return {"type": "http.request", "body": chunk, "more_body": False}

        scope = {"type": "http", "method": "POST", "headers": [(b"content-type", content_type.encode())]}
        form = await Request(scope, receive).form(max_files=100, max_fields=100)
        out = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                out.append((key, value.filename, await value.read(), value.content_type or ""))
            else:
                out.append((key, None, str(value).encode(), ""))
        await form.close()
        return out

    return asyncio.run(parse())


def _fast(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes, str]] | None:
    boundary = boundary_of(content_type)
    assert boundary is not None
    parts = parse_form_data(body, boundary, max_parts=100)
    return None if parts is None else [(p.name, p.filename, p.data, p.content_type) for p in parts]


def _httpx_body(files: list[tuple[str, tuple[str, bytes, str]]], data: dict[str, object]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://127.0.0.1/", files=files, data=data)
    return request.read(), request.headers["content-type"]


def test_bodies_that_http_clients_send_parse_the_same_as_with_starlette() -> None:
    rng = random.Random(7)
    for trial in range(40):
        files = [
            ("images", (f"photo {i}.jpg", rng.randbytes(rng.choice([0, 1, 100, 5000])) + b"\r\n--x\r\n", "image/jpeg"))
            for i in range(rng.randint(1, 6))
        ]
        data: dict[str, object] = {"brand": "Hermès 爱马仕", "model": f"m{trial}", "views": ["front", "back"][: rng.randint(0, 2)]}
        body, content_type = _httpx_body(files, data)
        want = _starlette(body, content_type)
        assert _fast(body, content_type) == want, trial


@pytest.mark.parametrize(
    "body",
    [
        b"preamble\r\n--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B--\r\n",  # preamble
        b"--B\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--B--\r\n",  # unquoted name
        b"--B\r\nContent-Disposition: form-data; name=\"a\\\"b\"\r\n\r\n1\r\n--B--\r\n",  # quoted-pair
        b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename*=UTF-8''x.jpg\r\n\r\n1\r\n--B--\r\n",
        b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"\"\r\n\r\n1\r\n--B--\r\n",  # empty file name
        b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Other: 1\r\n\r\n1\r\n--B--\r\n",  # other header
        b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n\xff\xfe\r\n--B--\r\n",  # text not UTF-8
        b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B\r\n",  # no closing delimiter
        b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B--trailing",
        b"--B\nContent-Disposition: form-data; name=\"a\"\n\n1\n--B--\n",  # LF line ends
        b"--B\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\n1\r\n--B--\r\n",
        b"--B\r\n\r\n1\r\n--B--\r\n",  # no Content-Disposition
        b"",
    ],
)
def test_other_shapes_are_left_to_the_general_parser(body: bytes) -> None:
    assert parse_form_data(body, b"B", max_parts=10) is None


def test_more_parts_than_allowed_fall_back() -> None:
    body, content_type = _httpx_body([("f", ("f.jpg", b"x", "image/jpeg"))], {"a": "1", "b": "2"})
    boundary = boundary_of(content_type)
    assert boundary is not None
    assert parse_form_data(body, boundary, max_parts=2) is None
    assert parse_form_data(body, boundary, max_parts=3) is not None


@pytest.mark.parametrize(
    ("content_type", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('Multipart/Form-Data; charset=utf-8; boundary="a b"', b"a b"),
        ("multipart/form-data", None),
        ("multipart/mixed; boundary=abc", None),
        ('multipart/form-data; boundary="a\\"b"', None),
        ("multipart/form-data; boundary=" + "x" * 71, None),
    ],
)
def test_boundary_of(content_type: str, boundary: bytes | None) -> None:
    assert boundary_of(content_type) == boundary
