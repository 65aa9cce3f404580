"""Case photos as files beside a SQLite database (opt-in: ``KILN_PHOTO_FILES=1``;
docs/benchmarks/store.md has what it does and does not change).

SQLite has one writer at a time across every process of a server. A case carries ~1 MB of photos,
and copying them into the write-ahead log inside the transaction held that lock for most of a
save, so the other processes' saves queued behind it (``benchmarks/store_writes.py``). Written
here, outside any transaction, the photos leave the database a small row each
(``CaseImageRecord.photo_file``).

- A case's photos go into one **pack** file, back to back, synced once: each photo's row names
  ``PACK:OFFSET:LENGTH``. One sync per case instead of one per photo: the sync (a flush of the
  disk's cache) was most of a save, ~0.5–1.5 ms each on the VM's disk here
  (``benchmarks/photo_writes.py`` measures the two layouts). Rows written before packs name a
  file of one photo, its SHA-256 (64 hex digits); they read as before.
- The pack is complete before the rows that name it commit (written to a temporary name, then
  renamed), so a committed case never points at a partial photo. A save whose transaction fails
  (an error, or a case id that is already stored) removes its pack; only a process that dies
  between writing a pack and committing leaves one (or a ``.part``) that no row names, and
  ``sweep`` (``kiln store sweep-photos``) removes those once they are older than any save can take.
- The pack's data is synced before its rename; the rename itself is not (the directory is not
  synced: one more disk flush per save), so after a power cut a surviving row may name a pack that
  is still under its temporary name, and reading falls back to that name (its bytes are checked
  like any others). The database itself syncs at its checkpoints (``synchronous=NORMAL`` in WAL
  mode: a power cut may lose the last saves whole). Reading checks each photo's bytes against the
  SHA-256 in its row (or in its single file's name): a damaged or missing file is an error, never a
  photo silently different from the one uploaded.
- Rows that name a pack need this version to be read (older versions refuse the reference):
  the layout is forward-only.
- A case's photos can be written ahead, while the engine looks at them (``stage``: synced under a
  temporary name), and put in place by the save (``place``: a rename); a case that fails before its
  save removes its staged pack (``discard``), so failed requests leave nothing behind.
- The folder is ``DATABASE.photos`` next to the database file; back the two up together. Cases
  are never deleted through the API, so packs that rows name are never removed.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from kiln.errors import KilnError

_NAME = re.compile(r"^[0-9a-f]{64}$")  # a file of one photo, named by its SHA-256 (before packs)
_PACK = re.compile(r"^[0-9a-f]{32}$")
_REF = re.compile(r"^([0-9a-f]{32}):([0-9]{1,12}):([0-9]{1,12})$")  # PACK:OFFSET:LENGTH
_PARTIAL = re.compile(r"^\.([0-9a-f]{32})\.part$")
_PACK_FILE = re.compile(r"^([0-9a-f]{32})\.pack$")


def file_name(ref: str) -> str:
    """The name of the file a row's reference reads from: its pack, or its one-photo file."""
    match = _REF.match(ref)
    return match.group(1) if match else ref


MIN_SWEEP_AGE_S = 600.0  # a request that stages its photos must reach its save within this


@dataclass
class Sweep:
    """What ``PhotoFiles.sweep`` found: files no row names, old enough to go (removed unless a dry
    run), how many were too recent to judge (a save may be writing them), and those it could not remove."""

    unreferenced: list[Path] = field(default_factory=list)
    bytes: int = 0
    recent: int = 0
    kept: int = 0
    removed: bool = False
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StagedPhotos:
    """A case's photos written and synced as one pack under a temporary name (``partial``), not yet
    at its place; ``refs`` are what the rows will name, ``sha256`` the photos' digests, in order."""

    pack: str
    refs: tuple[str, ...]
    sha256: tuple[str, ...]
    partial: Path


class PhotoFiles:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def beside(cls, database: Path) -> PhotoFiles:
        return cls(database.with_name(database.name + ".photos"))

    def path(self, name: str) -> Path:
        """The file of a one-photo name (64 hex digits) or of a pack (32 hex digits)."""
        if _NAME.match(name):
            return self.root / name[:2] / name
        if _PACK.match(name):
            return self.root / name[:2] / f"{name}.pack"
        raise KilnError(f"{name!r} is not a photo file name (64 or 32 lowercase hex digits)", status=500)

    def partial(self, pack: str) -> Path:
        """A pack's temporary name, while it is staged (or after a power cut lost its rename)."""
        return self.path(pack).with_name(f".{pack}.part")

    def put(self, photos: Sequence[bytes]) -> list[str]:
        """Stores a case's photos as one pack and returns each one's reference, in order."""
        return self.place(self.stage(photos))

    def stage(self, photos: Sequence[bytes], sha256: Sequence[str] | None = None) -> StagedPhotos:
        """Writes and syncs ``photos`` back to back under a temporary name; ``place`` puts the pack
        where its name says, ``discard`` removes it. ``sha256``: the photos' digests where the caller
        has them (its rows hold them, and reading checks the bytes against the rows), else computed."""
        if sha256 is not None and len(sha256) != len(photos):
            raise ValueError(f"{len(sha256)} digests for {len(photos)} photos")
        pack = uuid.uuid4().hex
        target = self.path(pack)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = self.partial(pack)
        refs: list[str] = []
        digests: list[str] = []
        offset = 0
        try:
            with open(partial, "wb") as handle:
                for data in photos:
                    handle.write(data)
                    refs.append(f"{pack}:{offset}:{len(data)}")
                    digests.append(hashlib.sha256(data).hexdigest() if sha256 is None else sha256[len(refs) - 1])
                    offset += len(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return StagedPhotos(pack, tuple(refs), tuple(digests), partial)

    def place(self, staged: StagedPhotos) -> list[str]:
        """Renames a staged pack into place (a rename: the bytes were synced by ``stage``)."""
        target = self.path(staged.pack)
        try:
            os.replace(staged.partial, target)
            os.utime(target)  # its age now counts from here, just before its rows commit (``sweep``)
        except BaseException:
            staged.partial.unlink(missing_ok=True)
            raise
        return list(staged.refs)

    def discard(self, staged: StagedPhotos) -> None:
        """Removes a staged pack that was not placed."""
        staged.partial.unlink(missing_ok=True)

    def remove(self, staged: StagedPhotos) -> None:
        """Removes a placed pack whose rows did not commit (nothing names it)."""
        self.path(staged.pack).unlink(missing_ok=True)
        staged.partial.unlink(missing_ok=True)

    def get(self, ref: str, sha256: str | None = None) -> bytes:
        """A photo's bytes from its reference, checked against its SHA-256 (the row's, for a pack)."""
        match = _REF.match(ref)
        if match is None:
            path, expected = self.path(ref), ref  # a one-photo file: its name is its digest
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise self._missing(ref) from None
        else:
            pack, offset, length = match.group(1), int(match.group(2)), int(match.group(3))
            if sha256 is None:
                raise KilnError(f"photo {ref} is in a pack and needs its SHA-256 to be read", status=500)
            path, expected = self.path(pack), sha256
            try:
                data = self._read(path, offset, length)
            except FileNotFoundError:
                try:  # its rename was lost (a power cut after the commit): the synced bytes are still there
                    data = self._read(self.partial(pack), offset, length)
                except FileNotFoundError:
                    raise self._missing(ref) from None
        if hashlib.sha256(data).hexdigest() != expected:
            raise KilnError(f"photo file {ref} in {self.root} is damaged (its bytes no longer match their SHA-256)",
                            status=500, hint="restore it from the backup of the photos folder")
        return data

    def _files(self) -> Iterator[tuple[str, Path, os.stat_result]]:
        """Every photo file under the root with the name rows use for it (pack, or one-photo digest)
        and its status; a ``.part`` answers to its pack's name (a reader falls back to it). Links are
        never followed out of this folder."""
        if not self.root.is_dir():
            return
        with os.scandir(self.root) as folders:
            for folder in sorted(folders, key=lambda e: e.name):
                if len(folder.name) != 2 or not folder.is_dir(follow_symlinks=False):
                    continue
                with os.scandir(folder.path) as entries:
                    for entry in sorted(entries, key=lambda e: e.name):
                        match = _PACK_FILE.match(entry.name) or _PARTIAL.match(entry.name)
                        name = match.group(1) if match else entry.name if _NAME.match(entry.name) else None
                        if name is None or not entry.is_file(follow_symlinks=False):
                            continue
                        try:
                            status = entry.stat(follow_symlinks=False)
                        except FileNotFoundError:  # removed meanwhile (a discard, another sweep)
                            continue
                        yield name, Path(entry.path), status

    def sweep(self, referenced: Collection[str], older_than_s: float, *, now: float, dry_run: bool = False) -> Sweep:
        """Removes the files that no name in ``referenced`` (``file_name`` of every row's reference)
        points at and that were last written more than ``older_than_s`` ago, where ``referenced`` was
        read after the time ``now``. A save writes (or stages) its pack, renames it into place, which
        renews its time, and then commits its rows; so a file older than the cutoff that no row
        named at ``now`` belongs to a save that died, as long as no request takes ``older_than_s``
        from staging to its save. Older kiln versions, which wrote one file per photo and reused a
        file that already existed, must not be writing to the store meanwhile."""
        if older_than_s < MIN_SWEEP_AGE_S:
            raise KilnError(f"--older-than {older_than_s:g} s is too short: a save in progress could lose its photos",
                            hint=f"keep at least {MIN_SWEEP_AGE_S:g} s (the default is an hour)")
        cutoff = now - older_than_s
        found = Sweep()
        for name, path, status in self._files():
            if name in referenced:
                found.kept += 1
            elif status.st_mtime >= cutoff:
                found.recent += 1
            else:
                found.unreferenced.append(path)
                found.bytes += status.st_size
        if not dry_run:
            for path in found.unreferenced:
                try:
                    path.unlink(missing_ok=True)
                except OSError as exc:  # one file that cannot go does not stop the rest
                    found.failed.append(f"{path}: {exc.strerror or exc}")
            found.removed = True
        return found

    @staticmethod
    def _read(path: Path, offset: int, length: int) -> bytes:
        with open(path, "rb") as handle:
            handle.seek(offset)
            return handle.read(length)

    def _missing(self, ref: str) -> KilnError:
        return KilnError(f"photo file {ref} is missing from {self.root}", status=500,
                         hint="restore the photos folder that was backed up with the database")
