"""``kiln store``: upkeep of the server's store (the photo files beside a SQLite database)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

store_app = typer.Typer(name="store", help="Upkeep of the server's store.", no_args_is_help=True)

_DB = typer.Option("--db", help="SQLAlchemy URL of the server's database (default: KILN_DB or KILN_HOME/kiln.db)")


@store_app.command("sweep-photos")
def sweep_photos(
    db: Annotated[str | None, _DB] = None,
    older_than: Annotated[float, typer.Option("--older-than", help="only files last written this many seconds ago or more (at least 600)")] = 3600.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="list what would go; remove nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Remove photo files that no case names (left by a server process that died mid-save).

    Safe while servers of this version run; not while older ones (one file per photo) write to the store."""
    from kiln.cli.console import console
    from kiln.config import get_settings
    from kiln.errors import KilnError
    from kiln.serve.store import open_store
    from kiln.serve.store.database import sqlite_file

    url = db or get_settings().database_url()
    database = sqlite_file(url)
    if database is not None and not database.is_file():  # opening it would create an empty one
        raise KilnError(f"there is no database file at {database}", hint="point --db at the server's database")
    store = open_store(url, create=False)
    try:
        found = store.sweep_photo_files(older_than, dry_run=dry_run)
    finally:
        store.close()
    if as_json:
        print(json.dumps({"unreferenced": [str(p) for p in found.unreferenced], "bytes": found.bytes,
                          "removed": found.removed, "kept": found.kept, "recent": found.recent, "failed": found.failed}))
    else:
        verb = "removed" if found.removed else "would remove"
        console.print(f"{verb} {len(found.unreferenced) - len(found.failed)} unreferenced photo file(s), "
                      f"{found.bytes / 1e6:.1f} MB; {found.kept} named by cases, {found.recent} too recent to judge",
                      highlight=False)
        for path in found.unreferenced if dry_run else []:
            console.print(f"  {path}", highlight=False)
    if found.failed:
        raise KilnError(f"{len(found.failed)} file(s) could not be removed: " + "; ".join(found.failed[:5]),
                        hint="check the photo folder's permissions")


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")
