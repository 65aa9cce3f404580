"""Case photos as files beside a SQLite database: written before the row, read back whole, never mixed up."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from kiln.errors import KilnError
from kiln.serve.store import CaseImageRecord, CaseRecord, Store, open_store
from kiln.serve.store.database import make_engine
from kiln.serve.store.photo_files import PhotoFiles


def photo_case(case_id: str, photos: list[bytes]) -> CaseRecord:
    """A case whose photos are ``photos``, each row with its real SHA-256 (what reading checks)."""
    case = CaseRecord(id=case_id, brand="aurelle", model="celeste", verdict="authentic", confidence=0.9, engine="auth@1",
                      result={"case_id": case_id})
    case.images = [
        CaseImageRecord(position=i, view="logo", sha256=hashlib.sha256(data).hexdigest(), content_type="image/jpeg",
                        width=10, height=10, quality={"ok": True}, score=0.1, heatmap=[[0.0]], data=data)
        for i, data in enumerate(photos)
    ]
    return case


def _packs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_cases_photos_go_to_one_pack_and_come_back(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    photos = [b"\xff\xd8first photo", b"\xff\xd8second photo", b"\xff\xd8first photo"]  # the third repeats the first
    case = photo_case("c1", photos)
    assert store.save_case(case)
    assert [i.data for i in case.images] == photos  # the caller's records keep their bytes
    folder = tmp_path / "kiln.db.photos"
    files = _packs(folder)
    assert [p.suffix for p in files] == [".pack"] and files[0].read_bytes() == b"".join(photos)
    with store.session() as session:  # the rows hold references into the pack, not bytes
        rows = session.scalars(select(CaseImageRecord).where(CaseImageRecord.case_id == "c1")
                               .order_by(CaseImageRecord.position)).all()
        offsets = [0, len(photos[0]), len(photos[0]) + len(photos[1])]
        assert [r.photo_file for r in rows] == [f"{files[0].stem}:{o}:{len(d)}" for o, d in zip(offsets, photos, strict=True)]
        assert all(r.data == b"" for r in rows)
    assert store.case_image("c1", 1).data == photos[1]
    assert [i.data for i in store.case_images_with_data("c1")] == photos
    assert store.save_case(photo_case("c2", [b"\xff\xd8another"]))
    assert len(_packs(folder)) == 2, "one pack per case"
    store.close()


def test_rows_with_bytes_inside_still_read(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kiln.db'}"
    inside = Store(make_engine(url), photo_files=False)
    inside.create_schema()
    assert inside.save_case(photo_case("old", [b"kept in the row"]))
    inside.close()
    assert not (tmp_path / "kiln.db.photos").exists()
    store = open_store(url, photo_files=True)
    assert store.case_image("old", 0).data == b"kept in the row"
    assert store.save_case(photo_case("new", [b"kept in a file"]))
    assert [i.data for i in store.case_images_with_data("new")] == [b"kept in a file"]
    store.close()


def test_rows_naming_a_file_of_one_photo_still_read(tmp_path: Path) -> None:
    """Before packs, each photo was a file named by its SHA-256; those rows read as before."""
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    data = b"\xff\xd8a photo of 2026-12-05"
    name = hashlib.sha256(data).hexdigest()
    path = PhotoFiles.beside(tmp_path / "kiln.db").path(name)
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    case = photo_case("before", [data])
    case.images[0].photo_file, case.images[0].data = name, b""  # as a save before packs left it
    assert store.save_case(case)
    assert store.case_image("before", 0).data == data
    path.write_bytes(b"changed")
    with pytest.raises(KilnError, match=f"photo file {name} .* is damaged"):
        store.case_image("before", 0)
    store.close()


def test_a_missing_photo_file_is_named(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    assert store.save_case(photo_case("c1", [b"soon gone"]))
    (pack,) = _packs(tmp_path / "kiln.db.photos")
    pack.unlink()
    with pytest.raises(KilnError, match=f"photo file {pack.stem}:0:9 is missing"):
        store.case_image("c1", 0)
    store.close()


def test_file_names_are_checked(tmp_path: Path) -> None:
    files = PhotoFiles(tmp_path)
    for bad in ("../../etc/passwd", "ab" * 20):
        with pytest.raises(KilnError, match="not a photo file name"):
            files.path(bad)
    refs = files.put([b"x", b"yz"])
    assert [files.get(ref, hashlib.sha256(d).hexdigest()) for ref, d in zip(refs, [b"x", b"yz"], strict=True)] == [b"x", b"yz"]
    with pytest.raises(KilnError, match="needs its SHA-256"):
        files.get(refs[0])
    with pytest.raises(KilnError, match="is damaged"):
        files.get(refs[1], hashlib.sha256(b"x").hexdigest())  # another photo's digest
    known = hashlib.sha256(b"z").hexdigest()
    staged = files.stage([b"z"], [known])  # the caller's digests are taken as they are
    assert staged.sha256 == (known,) and files.get(files.place(staged)[0], known) == b"z"
    with pytest.raises(ValueError, match="2 digests for 1 photos"):
        files.stage([b"z"], [known, known])


def test_a_duplicate_case_leaves_the_first_untouched_and_no_pack_behind(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    assert store.save_case(photo_case("c1", [b"original"]))
    assert not store.save_case(photo_case("c1", [b"a second attempt"]))
    assert store.case_image("c1", 0).data == b"original"
    assert [p.read_bytes() for p in _packs(tmp_path / "kiln.db.photos")] == [b"original"]
    store.close()


def test_a_save_that_does_not_commit_removes_its_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    from contextlib import contextmanager

    from sqlalchemy.exc import OperationalError

    case = photo_case("c1", [b"first", b"second"])

    placed: list[list[Path]] = []

    @contextmanager
    def locked() -> Iterator[None]:  # the transaction fails after the pack was placed
        placed.append(_packs(tmp_path / "kiln.db.photos"))
        raise OperationalError("INSERT", {}, Exception("database is locked"))
        yield

    monkeypatch.setattr(store, "session", locked)
    with pytest.raises(OperationalError, match="database is locked"):
        store.save_case(case)
    monkeypatch.undo()
    assert len(placed) == 1 and [p.suffix for p in placed[0]] == [".pack"], "the pack was in place when the transaction began"
    assert _packs(tmp_path / "kiln.db.photos") == []
    assert [i.data for i in case.images] == [b"first", b"second"] and all(i.photo_file is None for i in case.images)
    store.close()


def test_a_failure_after_the_commit_keeps_the_pack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    assert store.checkpointer is not None

    def broken_nudge() -> None:
        raise RuntimeError("the checkpointer is gone")

    monkeypatch.setattr(store.checkpointer, "nudge", broken_nudge)  # runs after the commit
    with pytest.raises(RuntimeError, match="checkpointer is gone"):
        store.save_case(photo_case("c1", [b"committed"]))
    monkeypatch.undo()
    assert store.case_image("c1", 0).data == b"committed", "the committed rows still name their pack"
    store.close()


def test_a_pack_whose_rename_was_lost_still_reads(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    assert store.save_case(photo_case("c1", [b"one", b"two"]))
    (pack,) = _packs(tmp_path / "kiln.db.photos")
    pack.rename(pack.with_name(f".{pack.stem}.part"))  # as after a power cut that kept the rows, not the rename
    assert [i.data for i in store.case_images_with_data("c1")] == [b"one", b"two"]
    store.close()


def test_in_memory_databases_keep_photos_inside() -> None:
    store = open_store("sqlite://", photo_files=True)
    assert store.photos is None and not store.photo_files
    assert store.save_case(photo_case("c1", [b"in memory"]))
    assert store.case_image("c1", 0).data == b"in memory"
    store.close()


def test_a_damaged_photo_file_is_named(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    assert store.save_case(photo_case("c1", [b"original bytes"]))
    (pack,) = _packs(tmp_path / "kiln.db.photos")
    pack.write_bytes(b"")  # e.g. truncated by a crash
    with pytest.raises(KilnError, match=f"photo file {pack.stem}:0:14 .* is damaged"):
        store.case_images_with_data("c1")
    store.close()


def test_a_failed_photo_write_leaves_the_callers_records_as_they_were(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kiln.serve.store.photo_files as photo_files

    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    case = photo_case("c1", [b"first", b"second"])
    real_fsync = photo_files.os.fsync

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(photo_files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        store.save_case(case)
    assert [i.data for i in case.images] == [b"first", b"second"] and all(i.photo_file is None for i in case.images)
    assert _packs(tmp_path / "kiln.db.photos") == [], "the partial pack is removed"
    monkeypatch.setattr(photo_files.os, "fsync", real_fsync)
    assert store.save_case(case)  # a retry with the same records stores them once, as files
    assert [i.data for i in store.case_images_with_data("c1")] == [b"first", b"second"]
    store.close()


def test_photos_stay_in_the_database_unless_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kiln.config import get_settings

    monkeypatch.delenv("KILN_PHOTO_FILES", raising=False)
    get_settings.cache_clear()
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}")
    assert not store.photo_files and store.save_case(photo_case("c1", [b"inside"]))
    assert not (tmp_path / "kiln.db.photos").exists()
    store.close()
    monkeypatch.setenv("KILN_PHOTO_FILES", "1")
    get_settings.cache_clear()
    try:
        store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}")
        assert store.photo_files and store.save_case(photo_case("c2", [b"beside"]))
        assert (tmp_path / "kiln.db.photos").is_dir() and store.case_image("c2", 0).data == b"beside"
        store.close()
    finally:
        get_settings.cache_clear()
