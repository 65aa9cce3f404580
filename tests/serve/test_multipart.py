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
        b"--B\r\nContent-Disposition: form-data; name=\"images\";\x0b filename=\"a.jpg\"\r\n\r\n1\r\n--B--\r\n",
        b"--B\r\nContent-Disposition: form-data; name=\"a\"\xe2\x80\xa8\r\n\r\n1\r\n--B--\r\n",  # U+2028
        b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg \r\n\r\n1\r\n--B--\r\n",
        b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.jpg\"\r\nContent-Type:\r\nContent-Type: a/b\r\n\r\n1\r\n--B--\r\n",
        b"--B\r\n Content-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n--B--\r\n",  # space before the name
        b"--B\r\nContent-Disposition: form-data; name=\"f\"; filename=\"" + b"x" * 5000 + b"\"\r\n\r\n1\r\n--B--\r\n",
        b"--B\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n" + b"t" * (1024 * 1024 + 1) + b"\r\n--B--\r\n",
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
        ("multipart/form-data;boundary=a-b_c", b"a-b_c"),
        ('multipart/form-data; boundary="abc"', None),  # quoted, a charset, other spellings: the general parser
        ("multipart/form-data; charset=utf-8; boundary=abc", None),
        ("Multipart/Form-Data; boundary=abc", None),
        ("multipart/form-data; boundary=a b", None),
        ("multipart/form-data", None),
        ("multipart/mixed; boundary=abc", None),
        ('multipart/form-data; boundary="a\\"b"', None),
        ("multipart/form-data; boundary=" + "x" * 71, None),
    ],
)
def test_boundary_of(content_type: str, boundary: bytes | None) -> None:
    assert boundary_of(content_type) == boundary


_ATOMS = [b" ", b"\t", b";", b'"', b"\\", b"=", b"\r", b"\n", b"\x0b", b"\x1f", b"\x85", b"\xa0", "\u2028".encode(),
          "é".encode(), b"\xff", b":", b"-", b"filename*", b'name="z"', b"; ", b"\x00", "\u212a".encode()]


def _mutated(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.randint(1, 3)):
        pos = rng.randint(0, len(data))
        op = rng.random()
        if op < 0.6:
            data = data[:pos] + rng.choice(_ATOMS) + data[pos:]
        elif op < 0.8:
            data = data[:pos] + data[pos + 1:]
        else:
            data = data[:pos] + data[pos:pos + 1].swapcase() + data[pos + 1:]
    return data


def test_mutated_bodies_parse_the_same_as_with_starlette_or_fall_back() -> None:
    rng = random.Random(11)
    accepted = 0
    for trial in range(1500):
        headers = [
            [b'Content-Disposition: form-data; name="f%d"; filename="a%d.jpg"' % (i, i), b"Content-Type: image/jpeg"]
            if rng.random() < 0.5 else [b'Content-Disposition: form-data; name="t%d"' % i]
            for i in range(rng.randint(1, 3))
        ]
        part = rng.choice(headers)
        line = rng.randrange(len(part) + 1)
        if line == len(part):
            part.append(rng.choice([b"Content-Type: image/png", b"X-A: b", b"content-type:", b"Content-Type : x"]))
        else:
            part[line] = _mutated(rng, part[line])
        content_type = "multipart/form-data; boundary=Bq0"
        if rng.random() < 0.15:
            content_type = _mutated(rng, content_type.encode()).decode("latin-1")
        body = b"".join(b"--Bq0\r\n" + b"\r\n".join(h) + b"\r\n\r\n" + rng.choice([b"", b"x\r\n--B", "Hermès".encode()])
                        + b"\r\n" for h in headers) + b"--Bq0--" + rng.choice([b"\r\n", b"", b"  "])
        if rng.random() < 0.1:
            body = _mutated(rng, body)
        boundary = boundary_of(content_type)
        fast = parse_form_data(body, boundary, max_parts=100) if boundary is not None else None
        if fast is None:
            continue
        accepted += 1
        got = [(p.name, p.filename, p.data, p.content_type if p.filename is not None else "") for p in fast]
        assert got == _starlette(body, content_type), (trial, body, content_type)
    assert accepted > 50  # the fast path still takes the bodies that stayed plain (92 of the 1,500 with this seed)
