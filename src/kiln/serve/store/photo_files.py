"""Case photos as files beside a SQLite database, named by the SHA-256 of their bytes (opt-in:
``KILN_PHOTO_FILES=1``; docs/benchmarks/store.md has what it does and does not change).

SQLite has one writer at a time across every process of a server. A case carries ~1 MB of photos,
and copying them into the write-ahead log inside the transaction held that lock for most of a
save, so the other processes' saves queued behind it (``benchmarks/store_writes.py``). Written
here, outside any transaction and in parallel, the photos leave the database a small row each
(``CaseImageRecord.photo_file``).

- The file is complete before the row that names it commits (written to a temporary name, then
  renamed), so a committed case never points at a partial photo; a save that fails after its
  files were written leaves them unreferenced (they are reused when the same bytes come again).
- Names are the SHA-256 computed here from the bytes, so two photos never share a file unless
  they are the same bytes.
- Each file's data is synced to disk before its rename (about 0.5 ms per photo on the VM's disk
  here), so a row that survives a power cut names a complete file; the database itself syncs at
  its checkpoints (``synchronous=NORMAL`` in WAL mode: a power cut may lose the last saves whole).
  Reading checks the bytes against their name: a damaged or missing file is an error, never a
  photo silently different from the one uploaded.
- A case's photos can be written ahead, while the engine looks at them (``stage``: synced under a
  temporary name), and put in place by the save (``place``: a rename); a case that fails before its
  save removes its staged files (``discard``), so failed requests leave nothing behind.
- The folder is ``DATABASE.photos`` next to the database file; back the two up together. Cases
  are never deleted through the API, so files are never removed.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import KilnError

_NAME = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class StagedPhoto:
    """A photo written and synced under a temporary name (``partial``; None: the same bytes were
    already stored), not yet under its ``name``."""

    name: str
    partial: Path | None


class PhotoFiles:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def beside(cls, database: Path) -> PhotoFiles:
        return cls(database.with_name(database.name + ".photos"))

    def path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise KilnError(f"{name!r} is not a photo file name (64 lowercase hex digits)", status=500)
        return self.root / name[:2] / name

    def put(self, data: bytes) -> str:
        """Stores ``data`` (once per distinct content) and returns its name."""
        return self.place(self.stage(data))

    def stage(self, data: bytes) -> StagedPhoto:
        """Writes and syncs ``data`` under a temporary name of its own; ``place`` puts it where its
        name says, ``discard`` removes it. Nothing under a photo's name changes until ``place``."""
        name = hashlib.sha256(data).hexdigest()
        target = self.path(name)
        try:
            if target.stat().st_size == len(data):
                return StagedPhoto(name, None)  # the same bytes are already there
        except FileNotFoundError:
            pass
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{name}.{uuid.uuid4().hex}.part")
        try:
            with open(partial, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return StagedPhoto(name, partial)

    def place(self, staged: StagedPhoto) -> str:
        """Renames a staged photo into place (a rename: the bytes were synced by ``stage``)."""
        if staged.partial is not None:
            try:
                os.replace(staged.partial, self.path(staged.name))
            except BaseException:
                staged.partial.unlink(missing_ok=True)
                raise
        return staged.name

    @staticmethod
    def discard(staged: StagedPhoto) -> None:
        """Removes a staged photo that was not placed (a no-op once it was)."""
        if staged.partial is not None:
            staged.partial.unlink(missing_ok=True)

    def get(self, name: str) -> bytes:
        try:
            data = self.path(name).read_bytes()
        except FileNotFoundError:
            raise KilnError(f"photo file {name} is missing from {self.root}", status=500,
                            hint="restore the photos folder that was backed up with the database") from None
        if hashlib.sha256(data).hexdigest() != name:
            raise KilnError(f"photo file {name} in {self.root} is damaged (its bytes no longer match their SHA-256)",
                            status=500, hint="restore it from the backup of the photos folder")
        return data
