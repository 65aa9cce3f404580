"""Property-based fuzzing of the whole HTTP API from its OpenAPI document (schemathesis): zero 5xx.

Every operation of ``/openapi.json`` gets schema-conforming (positive) and schema-violating (negative)
requests, a bounded number each, so the run stays under a minute; ``KILN_FUZZ_EXAMPLES`` and
``KILN_FUZZ_BUDGET_S`` raise the count for a longer local run.
"""

from __future__ import annotations

import os

import pytest

from .conftest import Server


def test_openapi_fuzzing_finds_no_server_errors(server: Server) -> None:
    pytest.importorskip("schemathesis")
    from .fuzzing import describe, fuzz

    result = fuzz(server.url, int(os.environ.get("KILN_FUZZ_EXAMPLES", "15")), float(os.environ.get("KILN_FUZZ_BUDGET_S", "55")))
    print("\n" + describe(result))
    assert result.operations >= 20
    assert result.requests >= result.operations
    assert not result.failures, "\n\n".join(result.failures[:10])
    with server.client() as client:
        assert client.get("/v2/health/ready").status_code == 200
