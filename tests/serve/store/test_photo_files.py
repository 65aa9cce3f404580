"""Case photos as files beside a SQLite database: written before the row, read back whole, never mixed up."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select

from kiln.errors import KilnError
from kiln.serve.store import CaseImageRecord, CaseRecord, Store, open_store
from kiln.serve.store.database import make_engine
from kiln.serve.store.photo_files import PhotoFiles


def _case(case_id: str, photos: list[bytes]) -> CaseRecord:
    case = CaseRecord(id=case_id, brand="aurelle", model="celeste", verdict="authentic", confidence=0.9, engine="auth@1",
                      result={"case_id": case_id})
    case.images = [
        CaseImageRecord(position=i, view="logo", sha256=hashlib.sha256(data).hexdigest(), content_type="image/jpeg",
                        width=10, height=10, quality={"ok": True}, score=0.1, heatmap=[[0.0]], data=data)
        for i, data in enumerate(photos)
    ]
    return case


def test_photos_go_to_files_and_come_back(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    photos = [b"\xff\xd8first photo", b"\xff\xd8second photo", b"\xff\xd8first photo"]  # the third repeats the first
    case = _case("c1", photos)
    assert store.save_case(case)
    assert [i.data for i in case.images] == photos  # the caller's records keep their bytes
    folder = tmp_path / "kiln.db.photos"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert [p.name for p in files] == sorted({hashlib.sha256(d).hexdigest() for d in photos})  # one file per content
    with store.session() as session:  # the rows hold names, not bytes
        rows = session.scalars(select(CaseImageRecord).where(CaseImageRecord.case_id == "c1")).all()
        assert all(r.photo_file and len(r.photo_file) == 64 for r in rows)
        assert all(r.data == b"" for r in rows)
    assert store.case_image("c1", 1).data == photos[1]
    assert [i.data for i in store.case_images_with_data("c1")] == photos
    assert not list(folder.rglob("*.part"))
    store.close()


def test_rows_with_bytes_inside_still_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kiln.db'}"
    inside = Store(make_engine(url), photo_files=False)
    inside.create_schema()
    assert inside.save_case(_case("old", [b"kept in the row"]))
    inside.close()
    assert not (tmp_path / "kiln.db.photos").exists()
    store = open_store(url, photo_files=True)
    assert store.case_image("old", 0).data == b"kept in the row"
    assert store.save_case(_case("new", [b"kept in a file"]))
    assert [i.data for i in store.case_images_with_data("new")] == [b"kept in a file"]
    store.close()


def test_a_missing_photo_file_is_named(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    assert store.save_case(_case("c1", [b"soon gone"]))
    name = hashlib.sha256(b"soon gone").hexdigest()
    PhotoFiles.beside(tmp_path / "kiln.db").path(name).unlink()
    with pytest.raises(KilnError, match=f"photo file {name} is missing"):
        store.case_image("c1", 0)
    store.close()


def test_file_names_are_checked(tmp_path: Path) -> None:
    files = PhotoFiles(tmp_path)
    with pytest.raises(KilnError, match="not a photo file name"):
        files.path("../../etc/passwd")
    name = files.put(b"x")
    assert files.get(name) == b"x" and files.path(name).parent.name == name[:2]


def test_a_duplicate_case_leaves_the_first_untouched(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    assert store.save_case(_case("c1", [b"original"]))
    assert not store.save_case(_case("c1", [b"a second attempt"]))
    assert store.case_image("c1", 0).data == b"original"
    store.close()


def test_in_memory_databases_keep_photos_inside() -> None:
    store = open_store("sqlite://", photo_files=True)
    assert store.photos is None and not store.photo_files
    assert store.save_case(_case("c1", [b"in memory"]))
    assert store.case_image("c1", 0).data == b"in memory"
    store.close()


def test_a_damaged_photo_file_is_named(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    assert store.save_case(_case("c1", [b"original bytes"]))
    name = hashlib.sha256(b"original bytes").hexdigest()
    PhotoFiles.beside(tmp_path / "kiln.db").path(name).write_bytes(b"")  # e.g. truncated by a crash
    with pytest.raises(KilnError, match=f"photo file {name} .* is damaged"):
        store.case_images_with_data("c1")
    store.close()


def test_a_failed_photo_write_leaves_the_callers_records_as_they_were(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    case = _case("c1", [b"first", b"second"])
    calls = {"n": 0}
    real_put = PhotoFiles.put

    def failing_put(self: PhotoFiles, data: bytes) -> str:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_put(self, data)

    monkeypatch.setattr(PhotoFiles, "put", failing_put)
    with pytest.raises(OSError, match="No space"):
        store.save_case(case)
    assert [i.data for i in case.images] == [b"first", b"second"] and all(i.photo_file is None for i in case.images)
    monkeypatch.setattr(PhotoFiles, "put", real_put)
    assert store.save_case(case)  # a retry with the same records stores them once, as files
    assert [i.data for i in store.case_images_with_data("c1")] == [b"first", b"second"]
    store.close()


def test_photos_stay_in_the_database_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kiln.config import get_settings

    monkeypatch.delenv("KILN_PHOTO_FILES", raising=False)
    get_settings.cache_clear()
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}")
    assert not store.photo_files and store.save_case(_case("c1", [b"inside"]))
    assert not (tmp_path / "kiln.db.photos").exists()
    store.close()
    monkeypatch.setenv("KILN_PHOTO_FILES", "1")
    get_settings.cache_clear()
    try:
        store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}")
        assert store.photo_files and store.save_case(_case("c2", [b"beside"]))
        assert (tmp_path / "kiln.db.photos").is_dir() and store.case_image("c2", 0).data == b"beside"
        store.close()
    finally:
        get_settings.cache_clear()
