"""The store on SQLite (always) and PostgreSQL (KILN_TEST_POSTGRES_URL, default: this machine's `test` database)."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.exc import InvalidRequestError

from kiln.errors import KilnError, NotFoundError
from kiln.serve.store import CaseImageRecord, CaseQuery, CaseRecord, ReferenceRecord, Store, open_store

POSTGRES_URL = os.environ.get("KILN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _reachable(url: str) -> bool:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    try:
        with socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'sub' / 'kiln.db'}")
    else:
        if not _reachable(POSTGRES_URL):
            pytest.skip(f"PostgreSQL at {POSTGRES_URL} is unreachable (start it, or set KILN_TEST_POSTGRES_URL)")
        s = open_store(POSTGRES_URL)
        from sqlalchemy import text

        from kiln.serve.store import Base

        Base.metadata.drop_all(s.engine)
        with s.engine.begin() as connection:  # forget the migration stamp too, so the schema is rebuilt
            connection.execute(text("DROP TABLE IF EXISTS alembic_version"))
        s.create_schema()
    yield s
    s.close()


def _case(case_id: str, verdict: str = "authentic", brand: str = "aurelle", when: datetime | None = None) -> CaseRecord:
    case = CaseRecord(
        id=case_id, brand=brand, model="celeste", verdict=verdict, confidence=0.97, engine="auth@1",
        result={"case_id": case_id, "verdict": verdict}, created_at=when or datetime.now(UTC),
    )
    case.images = [
        CaseImageRecord(position=i, view=view, sha256="ab" * 32, content_type="image/jpeg", width=100, height=80,
                        quality={"ok": True, "reasons": []}, score=0.1 * i, heatmap=[[0.0, 1.0], [2.0, 3.0]],
                        data=bytes([i]) * 10)
        for i, view in enumerate(("logo", "stitching"))
    ]
    return case


def test_sqlite_file_uses_wal_and_creates_its_folder(tmp_path: Path) -> None:
    s = open_store(f"sqlite:///{tmp_path / 'a' / 'b' / 'kiln.db'}")
    with s.engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert (tmp_path / "a" / "b" / "kiln.db").is_file()
    s.close()


def test_case_round_trip_with_images(store: Store) -> None:
    assert store.save_case(_case("c1"))
    case = store.get_case("c1")
    assert case.verdict == "authentic" and case.result["case_id"] == "c1"
    assert [img.view for img in case.images] == ["logo", "stitching"]
    assert case.images[1].heatmap == [[0.0, 1.0], [2.0, 3.0]]
    image = store.case_image("c1", 1)
    assert image.data == bytes([1]) * 10
    with pytest.raises(NotFoundError, match="no photo 5"):
        store.case_image("c1", 5)
    with pytest.raises(NotFoundError, match="case 'nope' not found"):
        store.get_case("nope")


def test_saving_a_case_twice_stores_it_once(store: Store) -> None:
    assert store.save_case(_case("same"))
    assert not store.save_case(_case("same"))
    cases, total, _ = store.list_cases(CaseQuery())
    assert total == 1 and len(store.get_case("same").images) == 2
    with pytest.raises(InvalidRequestError):  # a list holds summaries: its cases come without their photo rows
        _ = cases[0].images


def test_a_saved_case_gets_the_column_defaults_it_did_not_set(store: Store) -> None:
    case = CaseRecord(id="bare", brand="aurelle", model="celeste", verdict="inconclusive", confidence=0.5, result={})
    case.images = [CaseImageRecord(position=0, view="logo", sha256="cd" * 32, content_type="image/png", width=64,
                                   height=64, quality={"ok": False, "reasons": ["blur"]}, heatmap=[], data=b"png")]
    before = datetime.now(UTC) - timedelta(seconds=5)
    assert store.save_case(case)
    stored = store.get_case("bare")
    assert stored.app == "authenticity" and stored.engine == "" and stored.tenant is None
    created = stored.created_at if stored.created_at.tzinfo else stored.created_at.replace(tzinfo=UTC)
    assert before <= created <= datetime.now(UTC) + timedelta(seconds=5)
    (image,) = stored.images
    assert image.score is None and image.photo_file is None and image.quality == {"ok": False, "reasons": ["blur"]}
    assert store.case_image("bare", 0).data == b"png"


def test_list_cases_filters_and_pages(store: Store) -> None:
    now = datetime.now(UTC)
    for i in range(7):
        verdict = "counterfeit" if i % 2 else "authentic"
        store.save_case(_case(f"c{i}", verdict, "aurelle" if i < 5 else "ormond", now - timedelta(days=i)))
    page, total, _ = store.list_cases(CaseQuery(limit=3))
    assert total == 7 and [c.id for c in page] == ["c0", "c1", "c2"]
    page, total, _ = store.list_cases(CaseQuery(limit=3, offset=6))
    assert total == 7 and [c.id for c in page] == ["c6"]
    page, total, _ = store.list_cases(CaseQuery(verdict="counterfeit"))
    assert total == 3 and {c.id for c in page} == {"c1", "c3", "c5"}
    page, total, _ = store.list_cases(CaseQuery(brand="ormond"))
    assert {c.id for c in page} == {"c5", "c6"}
    page, total, _ = store.list_cases(CaseQuery(since=now - timedelta(days=2, hours=1)))
    assert {c.id for c in page} == {"c0", "c1", "c2"}


def test_case_count_stops_at_the_count_limit(store: Store) -> None:
    now = datetime.now(UTC)
    for i in range(5):
        store.save_case(_case(f"c{i}", when=now - timedelta(minutes=i)))
    assert store.list_cases(CaseQuery(limit=2, count_limit=5))[1:] == (5, False)  # exactly the limit: not capped
    page, total, capped = store.list_cases(CaseQuery(limit=2, count_limit=3))
    assert [c.id for c in page] == ["c0", "c1"] and total == 3 and capped
    assert store.list_cases(CaseQuery(brand="ormond", count_limit=3))[1:] == (0, False)


def test_a_filtered_case_page_is_read_through_its_composite_index(tmp_path: Path) -> None:
    """SQLite's plan for a brand/verdict/tenant page walks (column, created_at): no sort of every match."""
    s = open_store(f"sqlite:///{tmp_path / 'kiln.db'}")
    try:
        with s.engine.connect() as connection:
            for column in ("brand", "verdict", "tenant"):
                plan = " ".join(str(row[-1]) for row in connection.execute(text(
                    f"EXPLAIN QUERY PLAN SELECT id FROM cases WHERE {column} = 'x' ORDER BY created_at DESC LIMIT 5")))
                assert f"ix_cases_{column}_created_at" in plan and "TEMP B-TREE" not in plan, plan
    finally:
        s.close()


def test_reports_are_stored_lazily(store: Store) -> None:
    store.save_case(_case("r1"))
    assert store.get_report("r1", "html") is None
    store.set_report("r1", "html", "<html>ok</html>")
    store.set_report("r1", "pdf", b"%PDF-1.4")
    assert store.get_report("r1", "html") == "<html>ok</html>"
    assert store.get_report("r1", "pdf") == b"%PDF-1.4"
    with pytest.raises(NotFoundError):
        store.get_report("missing", "pdf")


def test_references_by_embedding_space_and_item(store: Store) -> None:
    vector = np.arange(4, dtype=np.float32)
    store.add_references([
        ReferenceRecord(id=f"ref{i}", brand="aurelle", model="celeste", view=view, sha256="00" * 32,
                        embedding_space=space, embedding=vector.tobytes(), preview=b"jpeg", note="")
        for i, (view, space) in enumerate([("logo", "m1"), ("logo", "m1"), ("lining", "m1"), ("logo", "m2")])
    ])
    found = store.list_references(embedding_space="m1", brand="aurelle", model="celeste", view="logo")
    assert [r.id for r in found] == ["ref0", "ref1"]
    assert np.array_equal(np.frombuffer(found[0].embedding, np.float32), vector)
    assert store.reference_preview("ref3") == b"jpeg"
    store.delete_reference("ref3")
    assert [r.id for r in store.list_references(embedding_space="m2")] == []
    with pytest.raises(NotFoundError):
        store.delete_reference("ref3")


def test_job_lifecycle(store: Store) -> None:
    store.create_job("j1", "authenticate")
    assert store.get_job("j1").status == "queued"
    store.update_job("j1", "running")
    job = store.update_job("j1", "done", case_id="c9")
    assert job.status == "done" and job.case_id == "c9" and job.attempts == 1
    store.create_job("j2", "authenticate")
    job = store.update_job("j2", "failed", error="photo 1: not an image", error_status=415)
    assert job.error == "photo 1: not an image" and job.error_status == 415
    with pytest.raises(NotFoundError):
        store.get_job("nope")
    with pytest.raises(ValueError):
        store.update_job("j1", "exploded")


def test_concurrent_writers_from_threads(store: Store) -> None:
    errors: list[BaseException] = []

    def write(start: int) -> None:
        try:
            for i in range(start, start + 10):
                store.save_case(_case(f"t{i}"))
        except BaseException as exc:  # collected and re-raised by the test
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n * 10,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.list_cases(CaseQuery(limit=100))[1] == 40


def test_bad_url_is_a_clear_error() -> None:
    with pytest.raises(KilnError, match="cannot use database URL"):
        open_store("nosuchdb://x")


def test_unreachable_postgres_is_unavailable() -> None:
    from kiln.errors import UnavailableError

    with pytest.raises((UnavailableError, KilnError)) as info:
        open_store("postgresql+psycopg://kiln:secret@127.0.0.1:1/none?connect_timeout=2")
    assert "secret" not in str(info.value)
