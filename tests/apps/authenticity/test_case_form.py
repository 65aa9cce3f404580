"""read_case_form: the fast multipart path and starlette's parser give the same case, and the same errors."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.requests import Request

from kiln.apps.authenticity.pipeline import UploadLimits
from kiln.apps.authenticity.routes import read_case_form
from kiln.errors import KilnError


def _read(body: bytes, content_type: str, limits: UploadLimits, declare_length: bool = True) -> object:
    async def run() -> object:
        sent = False

        async def receive() -> dict[str, object]:
            nonlocal sent
            chunk, sent = (b"" if sent else body), True
            return {"type": "http.request", "body": chunk, "more_body": False}

        headers = [(b"content-type", content_type.encode())]
        if declare_length:
            headers.append((b"content-length", str(len(body)).encode()))
        return await read_case_form(Request({"type": "http", "method": "POST", "headers": headers}, receive), limits)

    return asyncio.run(run())


def _case(files: list[tuple[str, tuple[str, bytes, str]]], data: dict[str, object]) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://127.0.0.1/", files=files, data=data)
    return request.read(), request.headers["content-type"]


def test_fast_and_general_parsers_read_the_same_case(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = UploadLimits()
    body, content_type = _case(
        [("images", (f"p{i}.jpg", bytes([i]) * 300, "image/jpeg")) for i in range(3)],
        {"views": ["front, back", "logo"], "brand": "Chanel", "model": "2.55"},
    )
    with monkeypatch.context() as patched:
        patched.setattr(Request, "form", lambda *a, **k: pytest.fail("the fast path called starlette's parser"))
        fast = _read(body, content_type, limits)  # declared length: the fast path
    general = _read(body, content_type, limits, declare_length=False)  # no length: starlette's parser
    unquoted = body.replace(b'name="brand"', b"name=brand")
    assert unquoted != body
    other = _read(unquoted, content_type, limits)  # a shape the fast path leaves to starlette's parser
    assert fast == general == other
    uploads, views, fields = fast  # type: ignore[misc]
    assert [u.name for u in uploads] == ["p0.jpg", "p1.jpg", "p2.jpg"] and uploads[2].data == bytes([2]) * 300
    assert views == ["front", "back", "logo"] and fields == {"brand": "Chanel", "model": "2.55"}


@pytest.mark.parametrize("declare_length", [True, False])
def test_field_mistakes_are_named_on_both_paths(declare_length: bool) -> None:
    limits = UploadLimits(max_file_bytes=100)
    body, content_type = _case([("photo", ("a.jpg", b"x", "image/jpeg"))], {})
    with pytest.raises(KilnError, match="unexpected file field 'photo'"):
        _read(body, content_type, limits, declare_length)
    body, content_type = _case([("f", ("a.jpg", b"x", "image/jpeg"))], {"images": "not a file"})
    with pytest.raises(KilnError, match="must hold files"):
        _read(body, content_type, limits, declare_length)
    # a file over the limit comes back cut at one byte over, for the request checks to refuse by size
    body, content_type = _case([("images", ("a.jpg", b"y" * 500, "image/jpeg"))], {})
    uploads, _, _ = _read(body, content_type, limits, declare_length)  # type: ignore[misc]
    assert len(uploads[0].data) == limits.max_file_bytes + 1


def test_too_many_files_is_refused_on_the_fast_path_too() -> None:
    limits = UploadLimits(max_photos=2)
    body, content_type = _case([("images", (f"p{i}.jpg", b"x", "image/jpeg")) for i in range(5)], {})
    with pytest.raises(KilnError, match="malformed multipart body"):
        _read(body, content_type, limits)


def test_bodies_over_the_fast_path_size_stream_through_starlette(monkeypatch: pytest.MonkeyPatch) -> None:
    import kiln.apps.authenticity.routes as routes

    body, content_type = _case([("images", ("a.jpg", b"z" * 2000, "image/jpeg"))], {"brand": "b"})
    calls: list[int] = []
    form = Request.form
    monkeypatch.setattr(Request, "form", lambda self, **k: (calls.append(1), form(self, **k))[1])
    monkeypatch.setattr(routes, "_FAST_PATH_MAX_BYTES", len(body) - 1)
    uploads, _, fields = _read(body, content_type, UploadLimits())  # type: ignore[misc]
    assert calls == [1] and len(uploads[0].data) == 2000 and fields == {"brand": "b"}
    monkeypatch.setattr(routes, "_FAST_PATH_MAX_BYTES", len(body))
    _read(body, content_type, UploadLimits())
    assert calls == [1]  # at the size: the fast path
