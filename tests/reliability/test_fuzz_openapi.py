"""Property-based fuzzing of the whole HTTP API from its OpenAPI document (schemathesis): zero 5xx.

Every operation of ``/openapi.json`` gets schema-conforming (positive) and schema-violating (negative)
requests, a bounded number each, so the run stays under a minute; ``KILN_FUZZ_EXAMPLES`` raises the
count for a longer local run. The numbers of requests and of 5xx answers are printed for
docs/reliability.md.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import pytest

from .conftest import Server

EXAMPLES = int(os.environ.get("KILN_FUZZ_EXAMPLES", "6"))  # per operation and mode
BUDGET_S = float(os.environ.get("KILN_FUZZ_BUDGET_S", "55"))
# Operations whose valid requests do heavy work (a full recommendation, a PDF): fewer examples.
HEAVY = ("/v1/packaging/recommend", "/v1/authenticate", "/v1/references", "report.pdf")


def test_openapi_fuzzing_finds_no_server_errors(server: Server) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, Phase, given, settings
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [op.label for op in operations]
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            if time.monotonic() - started > BUDGET_S:
                break
            count = max(1, EXAMPLES // 3) if any(h in operation.path for h in HEAVY) else EXAMPLES

            @settings(max_examples=count, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any, operation: Any = operation) -> None:
                response = case.call(base_url=server.url, timeout=60)
                statuses[response.status_code] += 1
                if response.status_code >= 500:
                    failures.append(f"{operation.label} → {response.status_code} {response.text[:200]}\n{case.as_curl_command()}")

            run()
    total = sum(statuses.values())
    print(f"\nfuzzing: {len(operations)} operations, {total} requests in {time.monotonic() - started:.1f} s, "
          f"statuses {dict(sorted(statuses.items()))}, 5xx: {len(failures)}")
    assert total >= len(operations)
    assert not failures, "\n\n".join(failures[:10])
    with server.client() as client:
        assert client.get("/v2/health/ready").status_code == 200
