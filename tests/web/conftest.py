"""A tiny demo (``kiln.demo.prepare`` with the ``tiny`` sizes), a real ``kiln serve`` on it, and
chromium driven by Playwright. Built once per session: the packaging engines dominate (≈ 1 min of CPU)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from kiln.demo.prepare import SIZES, Prepared, prepare

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    """Built in a fresh folder; KILN_TEST_DEMO_HOME names a folder to build in (or reuse) instead."""
    chosen = os.environ.get("KILN_TEST_DEMO_HOME")
    home = Path(chosen) if chosen else tmp_path_factory.mktemp("demo-home")
    return prepare(home, SIZES["tiny"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    url: str
    home: Path
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def server(tiny_demo: Prepared, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``kiln serve --repo`` on the demo repository (apps and pages chosen by default), until ready."""
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    env = {**os.environ, "KILN_HOME": str(tiny_demo.home), "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.pop("KILN_DB", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kiln", "serve", "--repo", str(tiny_demo.repo), "--http-port", str(port), "--grpc-port", "0",
             "--no-access-log", "--log-level", "warning"],
            env=env, stdout=out, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"kiln serve exited with {process.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"kiln serve did not become ready:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield Server(url, tiny_demo.home, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run the browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is missing: pip install -e '.[test]'")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class ConsoleLog:
    """Console errors and uncaught exceptions of a page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", lambda message: self.errors.append(f"{page.url}: {message.text}") if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(f"{page.url}: uncaught {error}"))


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=server.url)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.console = ConsoleLog(page)
    try:
        yield page
    finally:
        context.close()
