"""``kiln demo --prepare`` with the tiny sizes, and the HTTP side of the pages (no browser needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from kiln.demo.layout import SAMPLES_INDEX
from kiln.demo.prepare import SIZES, Prepared, prepare, sizes_named
from kiln.errors import KilnError
from tests.web.conftest import SRC, Server


def test_tiny_demo_builds_a_servable_repository(tiny_demo: Prepared) -> None:
    for model in ("authenticity", "brief_encoder", "style_scorer"):
        assert (tiny_demo.repo / model / "1" / "manifest.json").is_file(), model
    index = json.loads((tiny_demo.samples / SAMPLES_INDEX).read_text(encoding="utf-8"))
    labels = {case["label"] for case in index["cases"]}
    assert labels == {"authentic", "counterfeit"}
    for case in index["cases"]:
        assert case["synthetic"] is True
        assert len(case["photos"]) == 6
        assert all((tiny_demo.samples / case["id"] / p["file"]).is_file() for p in case["photos"])
    from kiln.serve.store import open_store

    store = open_store(f"sqlite:///{tiny_demo.home / 'kiln.db'}")
    assert store.list_references(), "demo references were registered in the store the server uses"


def test_second_prepare_reuses_everything_and_redoes_what_is_missing(tiny_demo: Prepared) -> None:
    again = prepare(tiny_demo.home, SIZES["tiny"])
    assert again.repo == tiny_demo.repo
    assert again.reused_everything, [s for s in again.steps if not s.reused]
    shutil.rmtree(tiny_demo.samples)
    third = prepare(tiny_demo.home, SIZES["tiny"])
    redone = [s.name for s in third.steps if not s.reused]
    assert redone == ["sample cases"]
    assert (tiny_demo.samples / SAMPLES_INDEX).is_file()


def test_cli_prepare_prints_the_repository_last(tiny_demo: Prepared) -> None:
    env = {**os.environ, "KILN_HOME": str(tiny_demo.home), "KILN_DEMO_SIZE": "tiny",
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.pop("KILN_DB", None)
    done = subprocess.run([sys.executable, "-m", "kiln", "demo", "--prepare"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(tiny_demo.repo.resolve())
    assert "reused" in done.stderr


def test_unknown_size_is_refused() -> None:
    with pytest.raises(KilnError, match="unknown demo size"):
        sizes_named("huge")


def test_default_apps_follow_the_repository(tmp_path: Path) -> None:
    from kiln.cli.serve import default_apps

    assert default_apps(tmp_path, pages=True) == ["web"]
    (tmp_path / "authenticity").mkdir()
    assert default_apps(tmp_path, pages=False) == ["authenticity"]
    (tmp_path / "brief_encoder").mkdir()
    (tmp_path / "style_scorer").mkdir()
    assert default_apps(tmp_path, pages=True) == ["authenticity", "packaging", "web"]


def test_declared_app_models_match_the_plugins() -> None:
    from kiln.serve.plugins import KNOWN_APP_MODELS, KNOWN_APPS, load_plugin

    assert set(KNOWN_APP_MODELS) == set(KNOWN_APPS)
    for name, models in KNOWN_APP_MODELS.items():
        assert tuple(load_plugin(name).required_models()) == models, name


def test_choosing_apps_for_a_repository_imports_no_app(tmp_path: Path) -> None:
    """A server of ONNX models alone never loads torch (the packaging app's models need it)."""
    (tmp_path / "image").mkdir()
    code = ("import sys; from pathlib import Path; from kiln.cli.serve import default_apps; "
            f"print(default_apps(Path({str(tmp_path)!r}), pages=True)); "
            "print(sorted(m for m in ('torch', 'kiln.apps.packaging', 'kiln.apps.authenticity') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.splitlines() == ["['web']", "[]"], done.stdout + done.stderr


def test_pages_are_served_without_suffix(server: Server) -> None:
    for path, heading in (("/", "kiln"), ("/authenticate", "Authenticate"), ("/cases", "Cases"), ("/packaging", "Packaging"),
                          ("/ops", "Operations")):
        response = httpx.get(server.url + path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert "<h1>" in response.text and heading in response.text
    assert httpx.get(server.url + "/assets/kiln.css").status_code == 200
    assert httpx.get(server.url + "/no-such-page").status_code == 404


def test_sample_routes(server: Server) -> None:
    samples = httpx.get(server.url + "/v1/web/samples").json()
    case = samples["cases"][0]
    photo = httpx.get(server.url + case["photos"][0]["url"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"
    assert "synthetic" in samples["note"]
    for bad in ("/v1/web/samples/..%2F..%2Fkiln.db/x.jpg", "/v1/web/samples/authentic-1/missing.jpg", "/v1/web/samples/authentic-1/logo.png"):
        response = httpx.get(server.url + bad)
        assert response.status_code == 404, bad
        assert "error" in response.json()


def test_engine_summary_route(server: Server) -> None:
    engine = httpx.get(server.url + "/v1/web/engines/authenticity").json()
    assert engine["precision"] == SIZES["tiny"].precision
    assert engine["backend"] == "onnxruntime"
    assert engine["hardware"]["cores"] >= 1
    missing = httpx.get(server.url + "/v1/web/engines/nothing")
    assert missing.status_code == 404 and "nothing" in missing.json()["error"]
