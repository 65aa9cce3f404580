"""API keys, scopes, tenants, rate limits, signed report links and security headers on a live server."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest

from kiln.security.keys import KeyStore
from kiln.security.signing import UrlSigner
from kiln.serve.process import ServeOptions, access_control
from kiln.serve.store import open_store

from .conftest import Server, run_server
from .corpus import photo

INFER_BODY = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}]}


class Keys:
    def __init__(self, home: Path) -> None:
        self.store = KeyStore(open_store(f"sqlite:///{home / 'kiln.db'}"), cache_ttl_s=0)
        self.tokens: dict[str, str] = {}
        self.ids: dict[str, str] = {}

    def make(self, name: str, scopes: str, **extra: Any) -> str:
        info, token = self.store.create(name, scopes, **extra)
        self.tokens[name], self.ids[name] = token, info.id
        return token


@pytest.fixture(scope="module")
def secured(full_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Keys]]:
    home = tmp_path_factory.mktemp("secured-home")
    with run_server(full_repo, home, auth="on", key_cache_ttl_s=0) as live:
        keys = Keys(home)
        keys.make("alice", "authenticate")
        keys.make("bob", "authenticate,infer")
        keys.make("admin", "admin")
        keys.make("model-only", "infer")
        keys.make("slow", "infer", rate_per_s=0.5)
        yield live, keys


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _case(client: httpx.Client, token: str) -> str:
    files = [("images", ("logo.jpg", photo(96), "image/jpeg"))]
    response = client.post("/v1/authenticate", files=files, data={"views": "logo", "brand": "Acme", "model": "Tote"},
                           headers=_auth(token))
    assert response.status_code == 200, response.text
    return str(response.json()["case_id"])


def test_keys_are_required_by_default_off_loopback() -> None:
    assert access_control(ServeOptions(repo=Path("."), host="0.0.0.0")).required
    assert access_control(ServeOptions(repo=Path("."), host="192.0.2.10")).required
    assert not access_control(ServeOptions(repo=Path("."), host="127.0.0.1")).required
    assert access_control(ServeOptions(repo=Path("."), host="127.0.0.1", auth="on")).required


def test_requests_without_a_valid_key_are_refused(secured: tuple[Server, Keys]) -> None:
    server, keys = secured
    with server.client() as client:
        for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, _auth("kiln_000000000000_" + "a" * 43), _auth("nonsense")):
            response = client.post("/v2/models/long/infer", json=INFER_BODY, headers=headers)
            assert response.status_code == 401, response.text
            assert response.json()["error"]
            assert response.headers["www-authenticate"].startswith("Bearer")
        assert client.get("/v2/health/ready").status_code == 200  # probes stay public
        assert client.get("/openapi.json").status_code == 200
        response = client.post("/v2/models/long/infer", json=INFER_BODY, headers=_auth(keys.tokens["bob"]))
        assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [3, 6, 9]


def test_scopes_limit_what_a_key_may_call(secured: tuple[Server, Keys]) -> None:
    server, keys = secured
    with server.client() as client:
        model_only = _auth(keys.tokens["model-only"])
        assert client.post("/v2/models/long/infer", json=INFER_BODY, headers=model_only).status_code == 200
        for method, path in (("GET", "/v1/cases"), ("GET", "/metrics"), ("POST", "/v2/repository/index"),
                             ("GET", "/v1/packaging/styles")):
            response = client.request(method, path, headers=model_only)
            assert response.status_code == 403, (path, response.text)
            assert "lacks the" in response.json()["error"]
        alice = _auth(keys.tokens["alice"])
        assert client.post("/v2/models/long/infer", json=INFER_BODY, headers=alice).status_code == 403
        assert client.delete("/v1/references/nope", headers=alice).status_code == 403  # shared data: admin only
        admin = _auth(keys.tokens["admin"])
        assert client.get("/metrics", headers=admin).status_code == 200
        assert client.get("/v1/packaging/styles", headers=admin).status_code == 200


def test_cases_are_visible_only_to_their_tenant(secured: tuple[Server, Keys]) -> None:
    server, keys = secured
    with server.client() as client:
        case_id = _case(client, keys.tokens["alice"])
        alice, bob, admin = (_auth(keys.tokens[n]) for n in ("alice", "bob", "admin"))
        paths = [f"/v1/cases/{case_id}", f"/v1/cases/{case_id}/report.html", f"/v1/cases/{case_id}/images/0",
                 f"/v1/cases/{case_id}/images/0/heatmap.png"]
        for path in paths:
            assert client.get(path, headers=alice).status_code == 200, path
            refused = client.get(path, headers=bob)
            assert refused.status_code == 404, (path, refused.text)  # as if it did not exist
            assert client.get(path, headers=admin).status_code == 200, path
        assert client.post(f"/v1/cases/{case_id}/share", headers=bob).status_code == 404
        assert case_id in {c["case_id"] for c in client.get("/v1/cases", headers=alice).json()["cases"]}
        assert case_id not in {c["case_id"] for c in client.get("/v1/cases", headers=bob).json()["cases"]}
        # an asynchronous case: its job is the tenant's too
        files = [("images", ("logo.jpg", photo(96), "image/jpeg"))]
        job = client.post("/v1/authenticate?mode=async", files=files, data={"views": "logo", "brand": "Acme", "model": "Tote"},
                          headers=alice).json()
        assert client.get(f"/v1/jobs/{job['job_id']}", headers=bob).status_code == 404
        assert client.get(f"/v1/jobs/{job['job_id']}", headers=alice).status_code == 200


def test_signed_report_links_open_without_a_key_until_they_expire(secured: tuple[Server, Keys]) -> None:
    server, keys = secured
    with server.client() as client:
        case_id = _case(client, keys.tokens["alice"])
        assert client.get(f"/v1/cases/{case_id}/report.html").status_code == 401
        links = client.post(f"/v1/cases/{case_id}/share?expires_in=3600", headers=_auth(keys.tokens["alice"])).json()
        page = client.get(links["report_url"])
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert client.get(links["pdf_url"]).content.startswith(b"%PDF")
        tampered = links["report_url"].replace("sig=", "sig=A")
        assert client.get(tampered).status_code == 403
        other = _case(client, keys.tokens["bob"])
        assert client.get(links["report_url"].replace(case_id, other)).status_code == 403  # the path is signed
        longer = links["report_url"].split("expires=")[0] + f"expires={int(time.time()) + 10**6}&" + links["report_url"].split("&")[1]
        assert client.get(longer).status_code == 403  # so is the expiry
        signer = UrlSigner.from_home(server.home)
        expired, _ = signer.sign(f"/v1/cases/{case_id}/report.html", 60, now=time.time() - 3600)
        response = client.get(expired)
        assert response.status_code == 403 and "expired" in response.json()["error"]
        assert client.get(links["report_url"].replace("report.html", "images/0")).status_code == 401  # only reports


def test_pdf_certificate_links_to_a_permanent_public_verification_page(secured: tuple[Server, Keys]) -> None:
    server, keys = secured
    alice = _auth(keys.tokens["alice"])
    with server.client() as client:
        case_id = _case(client, keys.tokens["alice"])
        case = client.get(f"/v1/cases/{case_id}", headers=alice).json()
        assert client.get(f"/v1/cases/{case_id}/certificate").status_code == 401
        pdf = client.get(f"/v1/cases/{case_id}/report.pdf", headers=alice).content
        links = [m.decode("latin-1") for m in re.findall(rb"/URI \((.*?)\)", pdf)]
        assert len(links) == 1 and f"/v1/cases/{case_id}/certificate?sig=" in links[0] and "expires" not in links[0]
        page = client.get(links[0])  # whoever holds the PDF, without a key
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert case_id in page.text and case["verdict"].upper() in page.text
        assert all(image["sha256"] in page.text for image in case["images"])
        assert "data:image" not in page.text and "/images/" not in page.text  # hashes, never the photos
        document = client.get(links[0] + "&format=json").json()
        assert document["verdict"] == case["verdict"] and document["case_id"] == case_id
        assert [p["sha256"] for p in document["photos"]] == [i["sha256"] for i in case["images"]]
        assert client.get(f"/v1/cases/{case_id}/certificate?format=pdf", headers=alice).status_code == 422
        shared = client.post(f"/v1/cases/{case_id}/share", headers=alice).json()
        assert shared["certificate_url"].endswith(links[0].split("/v1/", 1)[1])
        sig = links[0].split("sig=", 1)[1]
        assert client.get(links[0].replace("sig=", "sig=A")).status_code == 403
        assert client.get(f"/v1/cases/{case_id}/report.html?sig={sig}").status_code == 403  # the path is signed
        other = _case(client, keys.tokens["bob"])
        assert client.get(links[0].replace(case_id, other)).status_code == 403
        as_expiring = f"/v1/cases/{case_id}/certificate?expires={int(time.time()) + 3600}&sig={sig}"
        assert client.get(as_expiring).status_code == 403  # a permanent signature is not an expiring one


def test_rate_limit_answers_429_with_retry_after(secured: tuple[Server, Keys]) -> None:
    server, keys = secured
    with server.client() as client:
        statuses = [client.post("/v2/models/long/infer", json=INFER_BODY, headers=_auth(keys.tokens["slow"])) for _ in range(4)]
        assert [r.status_code for r in statuses[:1]] == [200]
        limited = [r for r in statuses if r.status_code == 429]
        assert limited, [r.status_code for r in statuses]
        assert int(limited[0].headers["retry-after"]) >= 1
        assert "rate limit" in limited[0].json()["error"]
        # other keys are not affected
        assert client.post("/v2/models/long/infer", json=INFER_BODY, headers=_auth(keys.tokens["bob"])).status_code == 200


def test_revoked_key_stops_working(secured: tuple[Server, Keys]) -> None:
    server, keys = secured
    token = keys.make("temp", "infer")
    with server.client() as client:
        assert client.post("/v2/models/long/infer", json=INFER_BODY, headers=_auth(token)).status_code == 200
        keys.store.revoke(keys.ids["temp"])
        assert client.post("/v2/models/long/infer", json=INFER_BODY, headers=_auth(token)).status_code == 401
    assert not [k for k in keys.store.list(include_revoked=False) if k.id == keys.ids["temp"]]


def test_keys_are_stored_hashed(secured: tuple[Server, Keys]) -> None:
    _, keys = secured
    from kiln.security.hashing import hash_secret, parse_token

    database = Path(keys.store.store.engine.url.database or "")
    data = b"".join(p.read_bytes() for p in database.parent.glob(database.name + "*") if p.is_file())  # with the WAL file
    for token in keys.tokens.values():
        _, secret = parse_token(token) or ("", "")
        assert len(secret) == 43 and secret.encode() not in data
        assert hash_secret(secret).encode() in data


def test_grpc_needs_a_key_too(secured: tuple[Server, Keys]) -> None:
    from kiln.serve.protos import grpc_service_pb2 as pb

    server, keys = secured
    message = pb.ModelInferRequest(model_name="long")
    message.inputs.add(name="x", datatype="INT64", shape=[1, 3]).contents.int64_contents.extend([1, 2, 3])
    with grpc.insecure_channel(server.grpc) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)
        live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive", request_serializer=pb.ServerLiveRequest.SerializeToString,
                                   response_deserializer=pb.ServerLiveResponse.FromString)
        assert live(pb.ServerLiveRequest(), timeout=10).live
        with pytest.raises(grpc.RpcError) as info:
            infer(message, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            infer(message, timeout=10, metadata=[("authorization", f"Bearer {keys.tokens['alice']}")])
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        reply = infer(message, timeout=10, metadata=[("authorization", f"Bearer {keys.tokens['bob']}")])
        assert np.frombuffer(reply.raw_output_contents[0], np.int64).tolist() == [3, 6, 9]


def test_security_headers_on_every_response(secured: tuple[Server, Keys]) -> None:
    server, keys = secured
    with server.client() as client:
        case_id = _case(client, keys.tokens["alice"])
        responses = [client.get("/v2/health/live"), client.get("/v1/cases"),  # 401
                     client.get(f"/v1/cases/{case_id}/report.html", headers=_auth(keys.tokens["alice"])),
                     client.get("/v2/models/nope", headers=_auth(keys.tokens["bob"]))]
        for response in responses:
            csp = response.headers["content-security-policy"]
            assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
            assert "script-src 'self';" in csp  # no inline scripts on pages
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["x-frame-options"] == "DENY"
            assert response.headers["referrer-policy"] == "no-referrer"


def test_uploads_never_use_client_file_names_as_paths(server: Server, tmp_path: Path) -> None:
    """A photo named like a path is stored in the database only; no file of that name appears anywhere."""
    marker = f"kiln-evil-{uuid.uuid4().hex}"
    names = [f"../../../../../../tmp/{marker}.jpg", f"/tmp/{marker}-abs.jpg", f"..\\..\\{marker}-win.jpg"]
    with server.client() as client:
        for name in names:
            files = [("images", (name, photo(96), "image/jpeg"))]
            response = client.post("/v1/authenticate", files=files, data={"views": "logo", "brand": "Acme", "model": "Tote"})
            assert response.status_code == 200, response.text
            response = client.post("/v1/packaging/images", files={"file": (name, photo(96), "image/jpeg")})
            assert response.status_code == 200, response.text
    for root in (Path("/tmp"), server.home, server.repo, Path.cwd()):
        assert not [p for p in root.rglob(f"*{marker}*")], root
    # and the code: no route builds a path from an uploaded file's name
    src = Path(__file__).resolve().parents[2] / "src" / "kiln"
    for path in src.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ".filename" in line and ("Path(" in line or "open(" in line or "/ " in line):
                raise AssertionError(f"{path}:{number} derives a path from a client file name: {line.strip()}")
