"""``kiln keys``: API keys for the server (create, list, revoke), stored hashed in its database."""

from __future__ import annotations

import json
from typing import Annotated

import typer

keys_app = typer.Typer(name="keys", help="API keys: create, list and revoke (stored hashed in the server's database).",
                       no_args_is_help=True)

_DB = typer.Option("--db", help="SQLAlchemy URL of the server's database (default: KILN_DB or KILN_HOME/kiln.db)")


def _keystore(db: str | None):  # type: ignore[no-untyped-def]
    from kiln.config import get_settings
    from kiln.security.keys import KeyStore
    from kiln.serve.store import open_store

    return KeyStore(open_store(db or get_settings().database_url()), cache_ttl_s=0)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="who or what the key is for, e.g. 'shop-frontend'")],
    scopes: Annotated[str, typer.Option("--scopes", help="comma-separated: infer, authenticate, packaging, admin")] = "infer",
    tenant: Annotated[str | None, typer.Option("--tenant", help="whose cases the key sees (default: its own id); keys may share one")] = None,
    rate: Annotated[float | None, typer.Option("--rate", help="requests per second for this key (0: unlimited; default: the server's)")] = None,
    db: Annotated[str | None, _DB] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Create a key and print its token (shown only once)."""
    from kiln.cli.console import console, err_console

    info, token = _keystore(db).create(name, scopes, tenant=tenant, rate_per_s=rate)
    if as_json:
        print(json.dumps({**info.as_dict(), "token": token}))
        return
    console.print(token, highlight=False, soft_wrap=True)
    err_console.print(f"key {info.id} ({info.name}) scopes {', '.join(sorted(info.scopes))}, tenant {info.tenant}. "
                      "Store the token now: only its hash is kept. Send it as 'Authorization: Bearer <token>'.",
                      highlight=False)


@keys_app.command("list")
def list_keys(
    db: Annotated[str | None, _DB] = None,
    all_keys: Annotated[bool, typer.Option("--all", help="include revoked keys")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List keys (ids, names, scopes, tenants; never the secrets)."""
    from rich.table import Table

    from kiln.cli.console import console

    keys = _keystore(db).list(include_revoked=all_keys)
    if as_json:
        print(json.dumps([k.as_dict() for k in keys]))
        return
    table = Table()
    for column in ("id", "name", "scopes", "tenant", "rate/s", "created", "revoked"):
        table.add_column(column, no_wrap=column in ("id", "tenant"))
    for k in keys:
        table.add_row(k.id, k.name, ",".join(sorted(k.scopes)), k.tenant, "default" if k.rate_per_s is None else f"{k.rate_per_s:g}",
                      k.created_at.strftime("%Y-%m-%d %H:%M"), k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "")
    console.print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="the key's id (kiln keys list)")],
    db: Annotated[str | None, _DB] = None,
) -> None:
    """Revoke a key: servers refuse it within their key cache time (5 s by default)."""
    from kiln.cli.console import console

    info = _keystore(db).revoke(key_id)
    console.print(f"revoked key {info.id} ({info.name})", highlight=False)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
