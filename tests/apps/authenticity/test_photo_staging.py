"""With photo files and KILN_STAGE_PHOTOS, a case's photos are written while the engine runs (from the request's checks
on, or once they are decoded): a stored case names complete files, and a case that fails after its photos were staged
leaves nothing behind."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kiln.errors import KilnError
from kiln.serve.store import open_store
from tests.apps.authenticity.test_api import _case_files, _form


@pytest.fixture(params=["checked", "decoded"])
async def photo_api(engine_dir: Path, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from kiln.apps.authenticity.routes import AuthenticityPlugin
    from kiln.config import Settings
    from kiln.serve.context import AppContext, DirectInference

    app = FastAPI()
    moment = request.param

    @app.exception_handler(KilnError)
    async def kiln_error(request: Request, exc: KilnError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    url = f"sqlite:///{tmp_path / 'kiln.db'}"
    ctx = AppContext(settings=Settings(home=tmp_path, db=url, stage_photos=moment),
                     inference=DirectInference.from_dirs({"authenticity": engine_dir}))
    ctx.state["store"] = store = open_store(url, photo_files=True)
    plugin = AuthenticityPlugin()
    app.include_router(plugin.router(ctx))
    await plugin.startup(ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        client.plugin = plugin  # type: ignore[attr-defined]
        client.moment = moment  # type: ignore[attr-defined]
        client.folder = tmp_path / "kiln.db.photos"  # type: ignore[attr-defined]
        yield client
    await plugin.shutdown(ctx)
    store.close()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


class _Staging(threading.Event):
    """Set once ``store.stage_photos`` has returned (its files written); ``digests``: what it was given."""

    digests: list[str] | None = None


def _spy_on_staging(store: Any, monkeypatch: pytest.MonkeyPatch) -> _Staging:
    written = _Staging()
    real = store.stage_photos

    def stage_photos(photos: list[bytes], sha256: list[str] | None = None) -> Any:
        written.digests = sha256
        try:
            return real(photos, sha256)
        finally:
            written.set()

    monkeypatch.setattr(store, "stage_photos", stage_photos)
    return written


async def test_a_stored_case_names_complete_photo_files(photo_api: Any, synth_data: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    written = _spy_on_staging(photo_api.plugin.service.store, monkeypatch)
    files, views, brand, model = _case_files(synth_data)
    response = await photo_api.post("/v1/authenticate", **_form(files, views, brand, model))
    assert written.is_set(), "the photos were staged, not written by the save"
    assert response.status_code == 200, response.text
    if photo_api.moment == "decoded":  # staged after decoding, with the decoder's digests (not hashed again)
        assert written.digests == [hashlib.sha256(data).hexdigest() for _, data in files]
    else:
        assert written.digests is None
    on_disk = _files(photo_api.folder)
    assert [p.suffix for p in on_disk] == [".pack"], "the case's photos in one pack, no .part left"
    assert on_disk[0].stat().st_size == sum(len(data) for _, data in files)
    case = response.json()
    for image, (_, data) in zip(case["images"], files, strict=True):
        assert (await photo_api.get(image["image_url"])).content == data


async def test_a_case_that_fails_after_staging_leaves_no_files(photo_api: Any, synth_data: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    service = photo_api.plugin.service
    written = _spy_on_staging(service.store, monkeypatch)

    async def engine_down(*args: Any, **kwargs: Any) -> Any:
        raise KilnError("the engine is down", status=503)

    monkeypatch.setattr(service.inference, "infer", engine_down)
    files, views, brand, model = _case_files(synth_data, nth=1)
    response = await photo_api.post("/v1/authenticate", **_form(files, views, brand, model))
    assert response.status_code == 503 and "engine is down" in response.json()["error"]
    assert await asyncio.to_thread(written.wait, 10), "the photos were staged"
    for _ in range(100):  # written: the discard runs right after, in the same thread
        if not _files(photo_api.folder):
            break
        await asyncio.sleep(0.02)
    assert _files(photo_api.folder) == []


def test_staged_photos_are_placed_by_the_save_or_discarded(tmp_path: Path) -> None:
    from tests.serve.store.test_photo_files import photo_case

    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    folder = tmp_path / "kiln.db.photos"
    photos = [b"\xff\xd8one", b"\xff\xd8two"]
    staged = store.stage_photos(photos)
    assert staged is not None and len(staged.refs) == 2
    assert list(staged.sha256) == [hashlib.sha256(d).hexdigest() for d in photos]
    assert [p.suffix for p in _files(folder)] == [".part"], "one pack, and nothing under its name before the save"
    assert store.save_case(photo_case("c1", photos), staged)
    assert [p.name for p in _files(folder)] == [f"{staged.pack}.pack"]
    assert [i.data for i in store.case_images_with_data("c1")] == photos
    # a case that is not saved: its staged photos are removed
    other = store.stage_photos([b"\xff\xd8three"])
    assert other is not None
    store.discard_photos(other)
    assert not [p for p in _files(folder) if p.suffix == ".part"]
    # staged photos that do not match the images are refused and removed
    mismatched = store.stage_photos([b"\xff\xd8four", b"\xff\xd8five"])
    assert mismatched is not None
    with pytest.raises(ValueError, match="not the case's 2 images"):
        store.save_case(photo_case("c2", [b"\xff\xd8five", b"\xff\xd8four"]), mismatched)  # another order
    with pytest.raises(ValueError, match="not the case's 1 images"):
        store.save_case(photo_case("c3", [b"\xff\xd8four"]), store.stage_photos([b"\xff\xd8four", b"\xff\xd8five"]))
    assert not [p for p in _files(folder) if p.suffix == ".part"]
    store.close()
    assert open_store("sqlite://", photo_files=True).stage_photos([b"x"]) is None, "in memory: photos stay in the rows"


async def test_a_case_whose_photo_does_not_decode_is_refused_and_leaves_no_files(
        photo_api: Any, synth_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.reliability.corpus import truncated_jpeg

    written = _spy_on_staging(photo_api.plugin.service.store, monkeypatch)
    files, views, brand, model = _case_files(synth_data, nth=2)
    files[1] = ("broken.jpg", truncated_jpeg())
    response = await photo_api.post("/v1/authenticate", **_form(files, views, brand, model))
    assert 400 <= response.status_code < 500 and "error" in response.json(), response.text
    if photo_api.moment == "decoded":
        assert not written.is_set(), "photos that did not decode were never written"
    else:
        assert await asyncio.to_thread(written.wait, 10), "checked: staged before the decode failed"
    for _ in range(100):
        if not _files(photo_api.folder):
            break
        await asyncio.sleep(0.02)
    assert _files(photo_api.folder) == []


async def test_a_case_cancelled_while_the_engine_runs_leaves_no_files(photo_api: Any, synth_data: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The client went away (the request's task is cancelled) after the photos were staged."""
    from kiln.apps.authenticity.pipeline import Upload

    service = photo_api.plugin.service
    written = _spy_on_staging(service.store, monkeypatch)
    engine_running = asyncio.Event()

    async def engine_hangs(*args: Any, **kwargs: Any) -> Any:
        engine_running.set()
        await asyncio.sleep(60)

    monkeypatch.setattr(service.inference, "infer", engine_hangs)
    files, views, brand, model = _case_files(synth_data, nth=3)
    uploads = [Upload(name, data, "image/jpeg") for name, data in files]
    task = asyncio.create_task(service.authenticate(uploads, views, brand, model))
    await asyncio.wait_for(engine_running.wait(), 10)
    assert await asyncio.to_thread(written.wait, 10), "the photos were staged before the engine ran"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if not _files(photo_api.folder):
            break
        await asyncio.sleep(0.02)
    assert _files(photo_api.folder) == []


def test_the_service_reads_the_old_switch(engine_dir: Path, tmp_path: Path) -> None:
    from kiln.apps.authenticity.pipeline import AuthenticityService
    from kiln.serve.context import DirectInference

    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    inference = DirectInference.from_dirs({"authenticity": engine_dir})
    assert AuthenticityService(inference, store).stage_photos == "off", "wired from the setting by its callers"
    assert AuthenticityService(inference, store, stage_photos=True).stage_photos == "checked"
    assert AuthenticityService(inference, store, stage_photos=False).stage_photos == "off"
    with pytest.raises(KilnError, match="'later' is not one of off, checked, decoded"):
        AuthenticityService(inference, store, stage_photos="later")  # type: ignore[arg-type]
    store.close()


def test_stage_photos_reads_the_old_switch_and_names_a_bad_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from kiln.config import Settings, get_settings

    monkeypatch.delenv("KILN_STAGE_PHOTOS", raising=False)
    assert Settings().stage_photos == "decoded", "the default: written once decoded (docs/benchmarks/gpu.md)"
    for raw, moment in [("1", "checked"), ("true", "checked"), ("T", "checked"), ("0", "off"), ("no", "off"),
                        ("decoded", "decoded"), (" Decoded ", "decoded"), ("off", "off")]:
        monkeypatch.setenv("KILN_STAGE_PHOTOS", raw)
        assert Settings().stage_photos == moment, raw
    monkeypatch.setenv("KILN_STAGE_PHOTOS", "later")
    get_settings.cache_clear()
    try:
        with pytest.raises(KilnError, match=r"KILN_STAGE_PHOTOS='later': .*'off', 'checked' or 'decoded'"):
            get_settings()
    finally:
        get_settings.cache_clear()
