"""The HTTP API: recommend, uploads, stored assets, and clear 4xx errors for bad input."""

from __future__ import annotations

import base64
import io
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from kiln.apps.packaging.engines import ENCODER_MODEL, SCORER_MODEL


def _jpeg(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).resize((width, height))
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def test_recommend_returns_directions_with_working_urls(client: TestClient) -> None:
    brief = {"product": "beverage", "keywords": "fresh, summer limited", "brand_colors": [{"hex": "#ff0000", "locked": True}],
             "panel": {"width_mm": 80, "height_mm": 120}, "count": 3, "seed": 1}
    response = client.post("/v1/packaging/recommend", json=brief)
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["directions"]) == 3
    direction = body["directions"][0]
    assert "#FF0000" in {c["hex"] for c in direction["palette"]["colours"] if c["locked"]}
    checks = {
        direction["mockup"]["png_url"]: b"\x89PNG",
        direction["mockup"]["pdf_url"]: b"%PDF",
        direction["fonts"]["preview_url"]: b"\x89PNG",
        direction["layout"]["heatmap_url"]: b"\x89PNG",
        direction["exports"]["ase_url"]: b"ASEF",
    }
    for url, magic in checks.items():
        asset = client.get(url)
        assert asset.status_code == 200 and asset.content.startswith(magic), url
    for url in (direction["mockup"]["svg_url"], direction["exports"]["svg_url"]):
        assert ET.fromstring(client.get(url).content).tag.endswith("svg")
    exported = json.loads(client.get(direction["exports"]["json_url"]).content)
    assert exported["colours"] == direction["palette"]["colours"]
    assert client.get(body["result_url"]).json() == body


def test_reference_image_upload_and_style_score(client: TestClient) -> None:
    upload = client.post("/v1/packaging/images", files={"file": ("shot.jpg", _jpeg(4000, 3000), "image/jpeg")})
    assert upload.status_code == 200, upload.text
    image = upload.json()
    assert (image["width"], image["height"]) == (4000, 3000)
    body = client.post("/v1/packaging/recommend", json={"keywords": "natural tea", "reference_images": [image["id"]]}).json()
    scores = body["directions"][0]["image_style_score"]
    assert scores is not None and abs(sum(scores.values()) - 1.0) < 0.02  # int8 softmax
    assert body["directions"][0]["layout"]["saliency_source"] == "reference image"
    assert body["directions"][0]["layout"]["metrics"]["unreadability"] is not None
    data_url = "data:image/jpeg;base64," + base64.b64encode(_jpeg(640, 480, 1)).decode()
    assert client.post("/v1/packaging/recommend", json={"keywords": "tea", "reference_images": [data_url]}).status_code == 200


def _bomb_png() -> bytes:
    """A valid PNG header claiming 100 000 x 100 000 pixels (never decoded)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"this is not an image", 400),
        (_jpeg(64, 64)[:200], 400),  # truncated JPEG
        (b"%PDF-1.4 polyglot", 400),
        (_bomb_png(), 413),
        (b"", 400),
    ],
)
def test_bad_uploads_get_clear_errors(client: TestClient, payload: bytes, status: int) -> None:
    response = client.post("/v1/packaging/images", files={"file": ("x.jpg", payload, "image/jpeg")})
    assert response.status_code == status, response.text
    assert "error" in response.json()


@pytest.mark.parametrize(
    "brief",
    [
        {"keywords": "fresh", "brand_colors": [{"hex": "#12345"}]},
        {"keywords": "fresh", "colour": "red"},
        {"keywords": "fresh", "brand_colors": [{"hex": "#000000", "locked": True}] * 5},
        {},
        {"keywords": "x" * 600},
        {"keywords": "fresh", "count": 0},
        {"keywords": "fresh", "panel": {"width_mm": 10, "height_mm": 100}},
        {"keywords": "fresh", "reference_images": ["http://example.com/a.jpg"]},
        {"keywords": "fresh\u0000"},
    ],
)
def test_invalid_briefs_are_refused(client: TestClient, brief: dict) -> None:
    response = client.post("/v1/packaging/recommend", json=brief)
    assert response.status_code == 422


def test_bad_references_and_unknown_ids(client: TestClient) -> None:
    missing = client.post("/v1/packaging/recommend", json={"keywords": "tea", "reference_images": ["img_" + "0" * 32]})
    assert missing.status_code == 404 and "upload it again" in missing.json()["error"]
    broken = client.post("/v1/packaging/recommend", json={"keywords": "tea", "reference_images": ["data:image/png;base64,@@@"]})
    assert broken.status_code == 400 and "base64" in broken.json()["error"]
    assert client.get("/v1/packaging/results/" + "f" * 32).status_code == 404
    assert client.get("/v1/packaging/results/nothex").status_code == 404
    body = client.post("/v1/packaging/recommend", json={"keywords": "tea", "count": 1}).json()
    assert client.get(f"{body['result_url']}/directions/5/mockup.png").status_code == 404
    assert client.get(f"{body['result_url']}/directions/0/secrets.txt").status_code == 404


def test_plugin_metadata_and_catalogues(client: TestClient) -> None:
    from kiln.apps.packaging.routes import plugin

    assert plugin.name == "packaging" and plugin.required_models() == [ENCODER_MODEL, SCORER_MODEL]
    styles = client.get("/v1/packaging/styles").json()
    assert len(styles) >= 12 and {"minimal", "luxury", "morandi", "guochao"} <= {s["id"] for s in styles}
    fonts = client.get("/v1/packaging/fonts").json()
    assert fonts and all(f["licence"] for f in fonts)


def test_engines_were_built_int8_and_checked(engines: tuple) -> None:
    _, report = engines
    by_model = {e.model: e for e in report.engines}
    encoder, scorer = by_model[ENCODER_MODEL], by_model[SCORER_MODEL]
    assert encoder.precision == "int8" and encoder.checks["cosine_mean"] >= 0.98
    assert scorer.checks["top1_agreement"] >= 0.98 or scorer.precision == "fp32"
    assert scorer.checks["holdout_accuracy_fp32"] >= 0.7
