"""WAL checkpoints of a SQLite store run in a background thread, not in the commit that crosses the threshold."""

from __future__ import annotations

import gc
import os
import time
import uuid
from pathlib import Path

from sqlalchemy import select, text, update

from kiln.serve.store.database import BACKSTOP_PAGES, CaseQuery, Store, make_engine, open_store
from kiln.serve.store.models import CaseImageRecord, CaseRecord


def _case(photo_bytes: int = 150_000) -> CaseRecord:
    case_id = uuid.uuid4().hex
    case = CaseRecord(id=case_id, brand="aurelle", model="celeste", verdict="authentic", confidence=0.9, engine="auth@1",
                      result={"case_id": case_id})
    case.images = [
        CaseImageRecord(position=i, view="logo", sha256="ab" * 32, content_type="image/jpeg", width=1024, height=1024,
                        quality={"ok": True}, score=0.1, heatmap=[[0.5]], data=os.urandom(photo_bytes))
        for i in range(6)
    ]
    return case


def _wal_bytes(path: Path) -> int:
    wal = Path(str(path) + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def _autocheckpoint(store: Store) -> int:
    with store.engine.connect() as connection:
        return int(connection.execute(text("PRAGMA wal_autocheckpoint")).scalar_one())


def test_the_log_is_checkpointed_and_restarted_in_the_background(tmp_path: Path) -> None:
    path = tmp_path / "kiln.db"
    store = open_store(f"sqlite:///{path}")
    assert store.checkpointer is not None and store.checkpointer.running_here
    assert _autocheckpoint(store) == BACKSTOP_PAGES, "commits checkpoint themselves only past the 64 MB backstop"
    for _ in range(40):  # 36 MB of photos, spaced as requests are
        store.save_case(_case())
        time.sleep(0.02)
    deadline = time.monotonic() + 5
    while store.checkpointer.checkpoints < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.checkpointer.checkpoints >= 20
    # the log restarts after each checkpointed commit: it stays near one case's size, not 36 MB
    assert _wal_bytes(path) < 8 << 20, _wal_bytes(path)
    assert store.list_cases(CaseQuery(limit=100)).total == 40
    store.close()
    assert _wal_bytes(path) == 0, "close checkpoints and truncates the log"
    again = open_store(f"sqlite:///{path}")  # every case and photo is in the database file
    page = again.list_cases(CaseQuery(limit=100))
    assert page.total == 40
    assert all(len(image.data) == 150_000 for image in again.case_images_with_data(page.cases[0].id))
    again.close()


def test_sqlites_own_checkpoints_without_the_background_thread(tmp_path: Path) -> None:
    store = Store(make_engine(f"sqlite:///{tmp_path / 'kiln.db'}"), background_checkpoints=False)
    store.create_schema()
    assert store.checkpointer is None and _autocheckpoint(store) == 1000
    store.close()


def test_memory_databases_have_no_checkpointer() -> None:
    store = open_store("sqlite://")
    assert store.checkpointer is None
    store.close()


def test_a_store_dropped_without_close_stops_its_thread(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}")
    checkpointer = store.checkpointer
    assert checkpointer is not None
    del store
    gc.collect()
    deadline = time.monotonic() + 3
    while checkpointer.running_here and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not checkpointer.running_here


def test_every_kind_of_write_nudges_the_checkpointer_and_reads_do_not(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}")
    assert store.checkpointer is not None
    nudges: list[int] = []
    store.checkpointer.nudge = lambda: nudges.append(1)  # type: ignore[method-assign]
    store.save_case(_case(10))  # ORM insert
    assert len(nudges) == 1
    with store.session() as session:  # a read
        session.scalars(select(CaseRecord.id)).all()
    assert len(nudges) == 1
    with store.session() as session:  # a Core-style update through the session
        session.execute(update(CaseRecord).values(verdict="counterfeit"))
    assert len(nudges) == 2
    store.close()


def test_a_closed_store_does_not_restart_its_thread(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}")
    checkpointer = store.checkpointer
    assert checkpointer is not None
    store.close()
    checkpointer.start()
    assert not checkpointer.running_here
