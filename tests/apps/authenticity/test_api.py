"""The HTTP API on a bare FastAPI app: cases, reports, heatmaps, jobs, references and every input error."""

from __future__ import annotations

import asyncio
import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kiln.apps.authenticity.views import VIEWS


def _case_files(data: Path, label: str = "authentic", nth: int = 0) -> tuple[list[tuple[str, bytes]], list[str], str, str]:
    rows = [r for r in csv.DictReader((data / "cases.csv").open()) if r["label"] == label and not r["twin_of"]]
    case_id = sorted({r["case_id"] for r in rows})[nth]
    photos = [r for r in rows if r["case_id"] == case_id]
    files = [(Path(r["path"]).name, (data / r["path"]).read_bytes()) for r in photos]
    return files, [r["view"] for r in photos], photos[0]["brand"], photos[0]["model"]


def _form(files: list[tuple[str, bytes]], views: list[str] | None, brand: str | None = "aurelle",
          model: str | None = "celeste", content_type: str = "image/jpeg") -> dict[str, Any]:
    data: dict[str, Any] = {}
    if views is not None:
        data["views"] = views
    if brand is not None:
        data["brand"] = brand
    if model is not None:
        data["model"] = model
    return {"files": [("images", (name, payload, content_type)) for name, payload in files], "data": data}


def _jpeg(size: tuple[int, int] = (320, 320), mode: str = "RGB", fmt: str = "JPEG", **save: Any) -> bytes:
    rng = np.random.default_rng(0)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4, "L": 1}[mode]
    array = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    image = Image.fromarray(array[..., 0] if channels == 1 else array, mode=mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()


async def test_authenticate_returns_a_complete_case(api: Any, synth_data: Path) -> None:
    files, views, brand, model = _case_files(synth_data)
    response = await api.post("/v1/authenticate", **_form(files, views, brand, model))
    assert response.status_code == 200, response.text
    case = response.json()
    assert case["verdict"] in ("authentic", "counterfeit", "inconclusive")
    assert 0.0 <= case["confidence"] <= 1.0
    assert [img["view"] for img in case["images"]] == views
    for img in case["images"]:
        assert set(img["quality"]) >= {"ok", "reasons"}
        assert len(img["sha256"]) == 64
        assert img["score"] is None or 0.0 <= img["score"] <= 1.0
    assert case["reasons"], "a verdict always says why"
    # Every URL in the response works.
    stored = (await api.get(case["json_url"])).json()
    assert stored["case_id"] == case["case_id"] and stored["verdict"] == case["verdict"]
    first = case["images"][0]
    photo = await api.get(first["image_url"])
    assert photo.status_code == 200 and photo.content == files[0][1]
    heat = await api.get(first["heatmap_url"])
    assert heat.status_code == 200 and heat.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(heat.content)).mode == "RGBA"
    overlay = await api.get(first["overlay_url"])
    assert overlay.status_code == 200 and overlay.content[:2] == b"\xff\xd8"
    html = await api.get(case["report_url"])
    assert html.status_code == 200 and case["case_id"] in html.text and "data:image/jpeg;base64," in html.text
    assert "http://" not in html.text and "https://" not in html.text, "the report needs no external assets"
    assert "synthetic" in html.text.lower()
    pdf = await api.get(case["pdf_url"])
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    again = await api.get(case["pdf_url"])
    assert again.content == pdf.content, "reports are rendered once and then served from the store"


async def test_the_hashes_in_the_certificate_are_the_uploaded_files(api: Any, synth_data: Path) -> None:
    import hashlib

    files, views, brand, model = _case_files(synth_data, "counterfeit")
    case = (await api.post("/v1/authenticate", **_form(files, views, brand, model))).json()
    pdf = (await api.get(case["pdf_url"])).content
    for (_, payload), image in zip(files, case["images"], strict=True):
        digest = hashlib.sha256(payload).hexdigest()
        assert image["sha256"] == digest
        assert digest.encode() in pdf, "the PDF's metadata lists every photo's SHA-256 in machine-readable form"
    assert case["case_id"].encode() in pdf


async def test_async_mode_returns_a_job_that_completes(api: Any, synth_data: Path) -> None:
    files, views, brand, model = _case_files(synth_data, nth=1)
    response = await api.post("/v1/authenticate?mode=async", **_form(files, views, brand, model))
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running", "done")
    await api.plugin.jobs.drain()
    done = (await api.get(job["status_url"])).json()
    assert done["status"] == "done" and done["case_id"] == job["job_id"]
    case = (await api.get(done["case_url"])).json()
    assert case["case_id"] == job["job_id"]


async def test_async_job_with_undecodable_photo_fails_with_its_reason(api: Any, synth_data: Path) -> None:
    files, views, brand, model = _case_files(synth_data, nth=2)
    truncated = files[0][1][: len(files[0][1]) // 3]
    files[0] = ("broken.jpg", truncated)
    response = await api.post("/v1/authenticate?mode=async", **_form(files, views, brand, model))
    if response.status_code == 202:
        await api.plugin.jobs.drain()
        job = (await api.get(response.json()["status_url"])).json()
        assert job["status"] == "failed" and "broken.jpg" in job["error"] and job["error_status"] == 400
    else:  # the header already showed the damage
        assert response.status_code == 400 and "broken.jpg" in response.json()["error"]


async def test_list_cases_filters_by_verdict_brand_and_date(api: Any, synth_data: Path) -> None:
    for nth in range(2):
        files, views, brand, model = _case_files(synth_data, nth=nth)
        assert (await api.post("/v1/authenticate", **_form(files, views, brand, model))).status_code == 200
    listing = (await api.get("/v1/cases?limit=1")).json()
    assert listing["total"] == 2 and len(listing["cases"]) == 1 and listing["limit"] == 1
    verdicts = {c["verdict"] for c in (await api.get("/v1/cases")).json()["cases"]}
    for verdict in verdicts:
        only = (await api.get(f"/v1/cases?verdict={verdict}")).json()
        assert only["cases"] and all(c["verdict"] == verdict for c in only["cases"])
    assert (await api.get("/v1/cases?brand=nobody")).json()["total"] == 0
    assert (await api.get("/v1/cases?since=2000-01-01&until=2000-01-02")).json()["total"] == 0
    assert (await api.get("/v1/cases?verdict=maybe")).status_code == 422


async def test_references_are_registered_and_shown_with_similarities(api: Any, synth_data: Path) -> None:
    files, views, brand, model = _case_files(synth_data, nth=3)
    reference_files, reference_views, _, _ = _case_files(synth_data, nth=4)
    # Register the other authentic case as references of the first case's brand/model.
    response = await api.post("/v1/references", **_form(reference_files, reference_views, brand, model))
    if response.status_code == 422:  # the tiny test model may reject a photo: then nothing is registered
        assert "nothing was registered" in response.json()["error"]
        assert (await api.get("/v1/references")).json()["references"] == []
        return
    assert response.status_code == 201, response.text
    registered = response.json()["references"]
    assert [r["view"] for r in registered] == reference_views
    listed = (await api.get(f"/v1/references?brand={brand}")).json()["references"]
    assert {r["reference_id"] for r in listed} == {r["reference_id"] for r in registered}
    preview = await api.get(registered[0]["image_url"])
    assert preview.status_code == 200 and preview.content[:2] == b"\xff\xd8"
    case = (await api.post("/v1/authenticate", **_form(files, views, brand.upper(), model))).json()
    usable = {img["index"] for img in case["images"] if img["quality"]["ok"]}
    assert {r["photo_index"] for r in case["references"]} == usable
    for ref in case["references"]:
        assert -1.0 <= ref["similarity"] <= 1.0001
        assert ref["view"] == views[ref["photo_index"]]
    html = (await api.get(case["report_url"])).text
    assert ("reference 0." in html or "reference 1." in html) == bool(case["references"])
    assert (await api.delete(f"/v1/references/{registered[0]['reference_id']}")).status_code == 204
    assert (await api.get(registered[0]["image_url"])).status_code == 404


async def test_info_describes_views_limits_and_engine(api: Any) -> None:
    info = (await api.get("/v1/authenticity/info")).json()
    assert [v["name"] for v in info["views"]] == list(VIEWS)
    assert info["max_photos"] == 6 and info["engine"]["trained_on_synthetic_data"] is True
    assert "/v1/authenticate" in (await api.get("/openapi.json")).json()["paths"]


@pytest.mark.parametrize(
    ("build", "status", "needle"),
    [
        (lambda f, v: _form([], []), 400, "no photos"),
        (lambda f, v: {"content": b"", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 400, "no photos"),
        (lambda f, v: {"content": b""}, 400, "no photos"),
        (lambda f, v: {"content": b"{}", "headers": {"content-type": "application/json"}}, 415, "multipart"),
        (lambda f, v: _form(f + f[:1], v + v[:1]), 400, "at most 6"),
        (lambda f, v: _form(f, v[:-1]), 400, "6 photos but 5 views"),
        (lambda f, v: _form(f, ["logo", "stitching", "hardware", "date_code", "lining", "sole"]), 400, "unknown view 'sole'"),
        (lambda f, v: _form(f, v, brand=None), 400, "brand is required"),
        (lambda f, v: _form(f, v, model="x" * 300), 400, "at most 128"),
        (lambda f, v: _form([("notes.txt", b"hello, not a photo")], ["logo"]), 415, "notes.txt"),
        (lambda f, v: _form([("anim.gif", _jpeg(fmt="GIF"))], ["logo"]), 415, "GIF images are not accepted"),
        (lambda f, v: _form([("tiny.jpg", _jpeg((20, 20)))], ["logo"]), 400, "too small"),
        (lambda f, v: _form([("empty.jpg", b"")], ["logo"]), 400, "empty.jpg"),
    ],
)
async def test_bad_input_is_a_4xx_naming_the_problem(api: Any, synth_data: Path, build: Any, status: int, needle: str) -> None:
    files, views, _, _ = _case_files(synth_data)
    response = await api.post("/v1/authenticate", **build(files, views))
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]


async def test_size_and_pixel_limits(engine_dir: Path, tmp_path: Path, synth_data: Path) -> None:
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from kiln.apps.authenticity.pipeline import UploadLimits
    from kiln.apps.authenticity.routes import AuthenticityPlugin
    from kiln.config import Settings
    from kiln.errors import KilnError
    from kiln.serve.context import AppContext, DirectInference

    app = FastAPI()

    @app.exception_handler(KilnError)
    async def kiln_error(request: Request, exc: KilnError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    ctx = AppContext(settings=Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'k.db'}"),
                     inference=DirectInference.from_dirs({"authenticity": engine_dir}))
    plugin = AuthenticityPlugin(limits=UploadLimits(max_file_bytes=50_000, max_pixels=200 * 200))
    app.include_router(plugin.router(ctx))
    await plugin.startup(ctx)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        big = _jpeg((300, 300), quality=100)
        assert len(big) > 50_000
        r = await client.post("/v1/authenticate", **_form([("big.jpg", big)], ["logo"]))
        assert r.status_code == 413 and "big.jpg" in r.json()["error"] and "50000" in r.json()["error"]
        many = _jpeg((250, 250), quality=30)
        r = await client.post("/v1/authenticate", **_form([("wide.jpg", many)], ["logo"]))
        assert r.status_code == 413 and "62500 pixels" in r.json()["error"]
        r = await client.post("/v1/authenticate", content=b"{}", headers={"content-type": "application/json"})
        assert r.status_code == 415 and "multipart" in r.json()["error"]
        r = await client.post("/v1/authenticate", content=b"x", headers={"content-type": "multipart/form-data; boundary=x",
                                                                         "content-length": str(10**9)})
        assert r.status_code == 413
    await plugin.shutdown(ctx)


@pytest.mark.parametrize("mode", ["RGBA", "L", "CMYK"])
async def test_png_webp_and_odd_colour_modes_are_converted(api: Any, mode: str) -> None:
    fmt = {"RGBA": "PNG", "L": "WEBP", "CMYK": "JPEG"}[mode]
    photo = _jpeg((256, 256), mode=mode, fmt=fmt)
    response = await api.post("/v1/authenticate", **_form([(f"x.{fmt.lower()}", photo)], ["lining"]))
    assert response.status_code == 200, response.text
    assert response.json()["images"][0]["width"] == 256


async def test_sixteen_bit_and_exif_rotated_photos(api: Any) -> None:
    wide = np.linspace(0, 65535, 300 * 260, dtype=np.uint16).reshape(260, 300)
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="PNG")
    response = await api.post("/v1/authenticate", **_form([("deep.png", buffer.getvalue())], ["lining"]))
    assert response.status_code == 200, response.text
    rotated = Image.fromarray(np.zeros((240, 320, 3), np.uint8))
    exif = rotated.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buffer = io.BytesIO()
    rotated.save(buffer, format="JPEG", exif=exif.tobytes())
    response = await api.post("/v1/authenticate", **_form([("turned.jpg", buffer.getvalue())], ["lining"]))
    image = response.json()["images"][0]
    assert (image["width"], image["height"]) == (240, 320)


async def test_unknown_ids_are_404(api: Any) -> None:
    for url in ("/v1/cases/nope", "/v1/cases/nope/report.html", "/v1/cases/nope/report.pdf", "/v1/cases/nope/images/0",
                "/v1/cases/nope/images/0/heatmap.png", "/v1/jobs/nope", "/v1/references/nope/image"):
        response = await api.get(url)
        assert response.status_code == 404, url
        assert "not found" in response.json()["error"]


async def test_concurrent_cases_all_complete(api: Any, synth_data: Path) -> None:
    files, views, brand, model = _case_files(synth_data)
    responses = await asyncio.gather(*(api.post("/v1/authenticate", **_form(files, views, brand, model)) for _ in range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert len({r.json()["case_id"] for r in responses}) == 4
