"""Faults: an engine instance that raises or hangs, a corrupted engine file, kill -9 during store writes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from kiln.serve.app import create_app, server_state
from kiln.serve.state import ServerState

from .conftest import add_model

BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}]}


@pytest.fixture
async def faulty(tmp_path: Path, engines: Any) -> AsyncIterator[tuple[httpx.AsyncClient, ServerState]]:
    repo = tmp_path / "repo"
    add_model(repo, "long", engines.long, {"max_queue_delay_us": 0, "instances": 1, "timeout_s": 1.0, "hang_timeout_s": 0.5})
    corrupted = add_model(repo, "corrupted", engines.long)
    data = bytearray((corrupted / "model.opt.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the middle of the weights
    (corrupted / "model.opt.onnx").write_bytes(bytes(data))
    torn = add_model(repo, "torn", engines.long)
    (torn / "manifest.json").write_text((torn / "manifest.json").read_text()[:100])
    state = server_state(repo)
    app = create_app(state, access_log=False)
    async with app.router.lifespan_context(app):
        await state.wait_ready()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kiln") as client:
            yield client, state


def _instance_runner(state: ServerState, model: str) -> Any:
    served = state.repository.get(model)
    assert served.batcher is not None
    return served.batcher.instances[0].runner


async def test_engine_that_raises_fails_only_its_batch(faulty: Any) -> None:
    client, state = faulty
    runner = _instance_runner(state, "long")
    original = runner.infer
    calls = {"n": 0}

    def flaky(inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return original(inputs, check=check)

    runner.infer = flaky
    failed = await client.post("/v2/models/long/infer", json=BODY)
    assert failed.status_code == 500
    assert "illegal memory access" in failed.json()["error"]
    ok = await client.post("/v2/models/long/infer", json=BODY)
    assert ok.status_code == 200 and ok.json()["outputs"][0]["data"] == [3, 6, 9]
    assert (await client.get("/v2/models/long/ready")).status_code == 200


async def test_engine_that_hangs_times_out_and_is_replaced(faulty: Any) -> None:
    client, state = faulty
    runner = _instance_runner(state, "long")
    release = threading.Event()
    original = runner.infer

    def stuck(inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
        release.wait(20)
        return original(inputs, check=check)

    runner.infer = stuck
    try:
        hung = await client.post("/v2/models/long/infer", json=BODY)
        assert hung.status_code == 504, hung.text
        assert "timeout" in hung.json()["error"] or "deadline" in hung.json()["error"] or "within" in hung.json()["error"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the watchdog replaces the stuck instance with a fresh runner
            response = await client.post("/v2/models/long/infer", json=BODY)
            if response.status_code == 200:
                break
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [3, 6, 9]
        assert (await client.get("/v2/models/long/ready")).status_code == 200
        metrics = (await client.get("/metrics")).text
        assert any(line.startswith("kiln_instance_replacements_total") and not line.endswith(" 0.0")
                   for line in metrics.splitlines()), "the replacement is counted"
    finally:
        release.set()


async def test_corrupted_engine_files_are_refused_at_load_with_a_clear_message(faulty: Any) -> None:
    client, _ = faulty
    index = {row["name"]: row for row in (await client.post("/v2/repository/index")).json()}
    assert index["long"]["state"] == "READY"
    assert index["corrupted"]["state"] == "UNAVAILABLE"
    assert "model.opt.onnx is corrupted" in index["corrupted"]["reason"] and "sha256" in index["corrupted"]["reason"]
    assert index["torn"]["state"] == "UNAVAILABLE" and "manifest" in index["torn"]["reason"]
    response = await client.post("/v2/models/corrupted/infer", json=BODY)
    assert response.status_code == 503 and "corrupted" in response.json()["error"]
    assert (await client.get("/v2/health/ready")).status_code == 200  # the healthy model is served


WRITER = r"""
import hashlib, sys, uuid
from kiln.serve.store import CaseImageRecord, CaseRecord, open_store
store = open_store(sys.argv[1])
n = 0
while True:
    case_id = uuid.uuid4().hex
    images = []
    for position in range(3):
        data = hashlib.sha256(f"{case_id}{position}".encode()).digest() * 512  # 16 KiB
        images.append(CaseImageRecord(position=position, view="logo", sha256=hashlib.sha256(data).hexdigest(),
                                      content_type="image/jpeg", width=64, height=64, quality={}, score=0.5,
                                      heatmap=[[0.0]], data=data))
    record = CaseRecord(id=case_id, brand="Acme", model="Tote", verdict="authentic", confidence=0.9,
                        result={"case_id": case_id, "images": 3}, tenant="t")
    record.images = images
    store.save_case(record)
    n += 1
    print(n, flush=True)
"""


def test_sqlite_store_survives_kill_9_during_writes(tmp_path: Path) -> None:
    import hashlib

    from kiln.serve.store import open_store

    db = tmp_path / "kiln.db"
    url = f"sqlite:///{db}"
    open_store(url).close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    killed_after: list[int] = []
    for round_, target in enumerate((5, 40, 15)):
        writer = subprocess.Popen([sys.executable, "-c", WRITER, url], stdout=subprocess.PIPE, text=True, env=env)
        assert writer.stdout is not None
        written = 0
        deadline = time.monotonic() + 120
        while written < target and time.monotonic() < deadline:
            line = writer.stdout.readline()
            if not line:
                break
            written = int(line)
        time.sleep(0.003 * round_)  # land the kill at different points of a write
        writer.send_signal(signal.SIGKILL)
        writer.wait(30)
        assert writer.returncode == -signal.SIGKILL
        killed_after.append(written)
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = open_store(url)
    with sqlite3.connect(db) as conn:
        ids = [row[0] for row in conn.execute("SELECT id FROM cases")]
    assert len(ids) >= sum(killed_after), (len(ids), killed_after)  # every acknowledged case is there
    for case_id in ids:  # ... and complete: a case is stored whole or not at all
        case = store.get_case(case_id)
        assert case.result == {"case_id": case_id, "images": 3}
        images = store.case_images_with_data(case_id)
        assert [i.position for i in images] == [0, 1, 2]
        for image in images:
            assert hashlib.sha256(image.data).hexdigest() == image.sha256
    store.close()
    print(json.dumps({"kills": len(killed_after), "cases": len(ids), "acknowledged_before_kill": killed_after}))
