"""Sweeping photo files that no case names (a process that died between writing a pack and its commit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiln.errors import KilnError
from kiln.serve.store import open_store
from kiln.serve.store.photo_files import file_name

from .test_photo_files import photo_case


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _store_with_leftovers(tmp_path: Path) -> tuple[object, dict[str, Path]]:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    assert store.save_case(photo_case("saved", [b"\xff\xd8saved one", b"\xff\xd8saved two"]))
    assert store.save_case(photo_case("lost-rename", [b"\xff\xd8committed, rename lost"]))
    assert store.photos is not None
    packs = sorted((tmp_path / "kiln.db.photos").rglob("*.pack"), key=lambda p: p.stat().st_mtime)
    saved, committed = packs
    # a power cut lost this committed pack's rename: it is still under its temporary name, and reads from there
    lost = committed.with_name(f".{committed.stem}.part")
    committed.rename(lost)
    placed = store.photos.put([b"placeholder"])  # a process died after placing this pack, before its rows committed
    files = {
        "saved": saved, "lost-rename": lost,
        "orphan-pack": store.photos.path(file_name(placed[0])),
        "orphan-part": store.photos.stage([b"\xff\xd8died while staged"]).partial,
        "fresh-part": store.photos.stage([b"\xff\xd8a save in progress"]).partial,
    }
    for name, path in files.items():
        if name != "fresh-part":
            _age(path, 7200)
    return store, files


def test_the_sweep_removes_old_unreferenced_files_and_nothing_a_case_reads(tmp_path: Path) -> None:
    store, files = _store_with_leftovers(tmp_path)
    dry = store.sweep_photo_files(3600, dry_run=True)  # type: ignore[attr-defined]
    assert sorted(dry.unreferenced) == sorted([files["orphan-pack"], files["orphan-part"]])
    assert not dry.removed and all(p.exists() for p in files.values()), "a dry run removes nothing"
    found = store.sweep_photo_files(3600)  # type: ignore[attr-defined]
    assert found.removed and sorted(found.unreferenced) == sorted(dry.unreferenced)
    assert found.bytes == len(b"placeholder") + len(b"\xff\xd8died while staged")
    assert found.kept == 2 and found.recent == 1
    assert not files["orphan-pack"].exists() and not files["orphan-part"].exists()
    assert files["fresh-part"].exists(), "a file younger than the cutoff may belong to a save in progress"
    assert [i.data for i in store.case_images_with_data("saved")] == [b"\xff\xd8saved one", b"\xff\xd8saved two"]  # type: ignore[attr-defined]
    assert store.case_image("lost-rename", 0).data == b"\xff\xd8committed, rename lost"  # type: ignore[attr-defined]
    again = store.sweep_photo_files(3600)  # type: ignore[attr-defined]
    assert again.unreferenced == [] and again.kept == 2
    store.close()  # type: ignore[attr-defined]


def test_a_sweep_that_could_catch_a_save_in_progress_is_refused(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    with pytest.raises(KilnError, match="too short"):
        store.sweep_photo_files(5)
    store.close()
    memory = open_store("sqlite://", photo_files=True)
    with pytest.raises(KilnError, match="inside the database"):
        memory.sweep_photo_files()
    memory.close()


def _kiln(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kiln", *args], capture_output=True, text=True, timeout=120)


def test_the_command_reports_and_removes_and_names_bad_arguments(tmp_path: Path) -> None:
    store, files = _store_with_leftovers(tmp_path)
    store.close()  # type: ignore[attr-defined]
    url = f"sqlite:///{tmp_path / 'kiln.db'}"
    dry = _kiln("store", "sweep-photos", "--db", url, "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["removed"] is False and len(report["unreferenced"]) == 2 and report["kept"] == 2
    done = _kiln("store", "sweep-photos", "--db", url)
    assert done.returncode == 0 and "removed 2 unreferenced photo file(s)" in done.stdout
    assert not files["orphan-part"].exists() and files["lost-rename"].exists()
    short = _kiln("store", "sweep-photos", "--db", url, "--older-than", "1")
    assert short.returncode != 0 and "too short" in short.stderr + short.stdout and "Traceback" not in short.stderr
    missing = _kiln("store", "sweep-photos", "--db", f"sqlite:///{tmp_path / 'nothing.db'}")
    assert missing.returncode != 0 and "no database file" in missing.stderr + missing.stdout
    assert not (tmp_path / "nothing.db").exists(), "a sweep must not create a database"


def test_a_pack_staged_long_ago_is_young_once_placed_and_links_are_not_followed(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'kiln.db'}", photo_files=True)
    assert store.photos is not None
    staged = store.photos.stage([b"\xff\xd8staged before a long engine call"])
    _age(staged.partial, 7200)
    placed = store.photos.path(file_name(store.photos.place(staged)[0]))  # its save is about to commit the rows
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "ab").mkdir(parents=True)
    outside = elsewhere / "ab" / ("0" * 32 + ".pack")
    outside.write_bytes(b"not this store's")
    _age(outside, 7200)
    (tmp_path / "kiln.db.photos" / "cd").symlink_to(elsewhere / "ab", target_is_directory=True)
    found = store.sweep_photo_files(3600)
    assert found.unreferenced == [] and found.recent == 1
    assert placed.exists() and outside.exists()
    store.close()
