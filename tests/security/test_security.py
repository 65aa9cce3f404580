"""The security building blocks without a server: keys, scopes, rate limits, signed links, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from kiln.errors import KilnError, NotFoundError
from kiln.security.hashing import hash_secret, parse_token
from kiln.security.keys import KeyStore
from kiln.security.ratelimit import RateLimiter
from kiln.security.scopes import allows, grpc_scope, parse_scopes, required_scope
from kiln.security.signing import UrlSigner
from kiln.serve.store import open_store


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(open_store(f"sqlite:///{tmp_path / 'kiln.db'}"), cache_ttl_s=0)


def test_keys_verify_until_revoked_and_only_hashes_are_stored(keys: KeyStore, tmp_path: Path) -> None:
    info, token = keys.create("shop", "infer,authenticate", rate_per_s=3)
    key_id, secret = parse_token(token) or ("", "")
    assert key_id == info.id and info.tenant == info.id and info.scopes == {"infer", "authenticate"}
    verified = keys.verify(token)
    assert verified is not None and verified.id == info.id and verified.rate_per_s == 3
    assert keys.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None  # wrong secret
    assert keys.verify("kiln_000000000000_" + secret) is None  # unknown id
    assert keys.verify("Bearer " + token) is None
    stored = (tmp_path / "kiln.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("kiln.db-*"))
    assert secret.encode() not in stored and hash_secret(secret).encode() in stored
    keys.revoke(info.id)
    assert keys.verify(token) is None
    assert [k.id for k in keys.list()] == [info.id] and keys.list(include_revoked=False) == []
    with pytest.raises(NotFoundError):
        keys.revoke("nope")


def test_keys_sharing_a_tenant(keys: KeyStore) -> None:
    a, _ = keys.create("frontend", "authenticate", tenant="acme")
    b, _ = keys.create("backoffice", "authenticate,admin", tenant="acme")
    assert a.tenant == b.tenant == "acme"
    for bad in ({"scopes": "root"}, {"scopes": ""}, {"scopes": "infer", "tenant": "a b/c"}, {"scopes": "infer", "rate_per_s": -1}):
        with pytest.raises(KilnError):
            keys.create("x", **bad)  # type: ignore[arg-type]


def test_scopes_of_routes() -> None:
    assert required_scope("GET", "/v2/health/ready") is None
    assert required_scope("GET", "/openapi.json") is None
    assert required_scope("GET", "/index.html") is None
    assert required_scope("POST", "/v2/models/m/infer") == "infer"
    assert required_scope("GET", "/v2") == "infer"
    assert required_scope("POST", "/v2/repository/index") == "admin"
    assert required_scope("GET", "/metrics") == "admin"
    assert required_scope("POST", "/v1/authenticate") == "authenticate"
    assert required_scope("GET", "/v1/references") == "authenticate"
    assert required_scope("POST", "/v1/references") == "admin"
    assert required_scope("POST", "/v1/packaging/recommend") == "packaging"
    assert required_scope("GET", "/v1/other-app/x") == "any"
    assert grpc_scope("/inference.GRPCInferenceService/ServerLive") is None
    assert grpc_scope("/inference.GRPCInferenceService/ModelInfer") == "infer"
    assert allows(frozenset({"admin"}), "packaging") and not allows(frozenset({"infer"}), "packaging")
    assert parse_scopes(" Infer , admin") == {"infer", "admin"}


def test_token_bucket_allows_bursts_then_says_how_long_to_wait() -> None:
    now = [100.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.acquire("k", rate=2, burst=3) for _ in range(3)] == [0, 0, 0]
    wait = limiter.acquire("k", rate=2, burst=3)
    assert wait == pytest.approx(0.5)
    assert limiter.acquire("other", rate=2, burst=3) == 0  # per key
    now[0] += 0.5
    assert limiter.acquire("k", rate=2, burst=3) == 0
    assert limiter.acquire("k", rate=0, burst=0) == 0  # 0: unlimited


def test_signed_links_cover_path_and_expiry(tmp_path: Path) -> None:
    signer = UrlSigner.from_home(tmp_path, None)
    assert (tmp_path / "secret.key").stat().st_mode & 0o777 == 0o600
    url, expires = signer.sign("/v1/cases/abc/report.html", 3600, now=1000)
    path, query = url.split("?")
    params = dict(p.split("=") for p in query.split("&"))
    assert expires == 4600 and params["expires"] == "4600"
    assert signer.verify(path, params["expires"], params["sig"], now=2000) is None
    assert "expired" in (signer.verify(path, params["expires"], params["sig"], now=5000) or "")
    assert "signature" in (signer.verify(path.replace("abc", "abd"), params["expires"], params["sig"], now=2000) or "")
    assert "signature" in (signer.verify(path, "9999", params["sig"], now=2000) or "")
    assert UrlSigner.from_home(tmp_path, None).verify(path, params["expires"], params["sig"], now=2000) is None  # same secret file
    assert UrlSigner(b"another secret value!").verify(path, params["expires"], params["sig"], now=2000) is not None
    with pytest.raises(KilnError):
        signer.sign("/x", 10**9)


def test_keys_cli(tmp_path: Path) -> None:
    from kiln.cli import app

    runner = CliRunner()
    db = f"sqlite:///{tmp_path / 'k.db'}"
    created = runner.invoke(app, ["keys", "create", "shop", "--scopes", "infer,packaging", "--db", db, "--json"])
    assert created.exit_code == 0, created.output
    info = json.loads(created.stdout)
    assert info["token"].startswith("kiln_") and info["scopes"] == ["infer", "packaging"]
    listed = json.loads(runner.invoke(app, ["keys", "list", "--db", db, "--json"]).stdout)
    assert [k["id"] for k in listed] == [info["id"]] and "token" not in listed[0]
    assert runner.invoke(app, ["keys", "revoke", info["id"], "--db", db]).exit_code == 0
    assert json.loads(runner.invoke(app, ["keys", "list", "--db", db, "--json"]).stdout) == []
    bad = runner.invoke(app, ["keys", "create", "x", "--scopes", "root", "--db", db])
    assert bad.exit_code != 0


def test_permanent_signed_links_cover_the_path_and_never_pass_as_expiring(tmp_path: Path) -> None:
    signer = UrlSigner.from_home(tmp_path)
    path = "/v1/cases/abc/certificate"
    link = signer.sign_permanent(path)
    assert link.startswith(path + "?sig=") and "expires" not in link
    sig = parse_qs(urlsplit(link).query)["sig"][0]
    assert signer.verify_permanent(path, sig) is None
    assert "signature" in (signer.verify_permanent(path.replace("abc", "abd"), sig) or "")
    assert "signature" in (UrlSigner(b"another secret value!").verify_permanent(path, sig) or "")
    # an expiring signature of the same path is not a permanent one, nor the other way round
    expiring, expires = signer.sign(path, 3600)
    expiring_sig = parse_qs(urlsplit(expiring).query)["sig"][0]
    assert signer.verify_permanent(path, expiring_sig) is not None
    assert signer.verify(path, str(expires), sig) is not None
