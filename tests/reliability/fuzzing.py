"""Schemathesis over a live server's /openapi.json; used by the test and, for the docs, on its own:

    PYTHONPATH=src python -m tests.reliability.fuzzing http://127.0.0.1:PORT [examples per operation]
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# Operations whose valid requests do heavy work (a full recommendation, a case, a PDF): fewer examples.
HEAVY = ("/v1/packaging/recommend", "/v1/authenticate", "/v1/references", "report.pdf", "/share")


@dataclass
class FuzzResult:
    operations: int = 0
    requests: int = 0
    seconds: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    unsatisfiable: int = 0  # (operation, mode) pairs with nothing to generate


def fuzz(url: str, examples: int = 6, budget_s: float = 55.0, headers: dict[str, str] | None = None) -> FuzzResult:
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", headers=headers or {})
    result = FuzzResult()
    started = time.monotonic()
    operations = [r.ok() for r in schema.get_all_operations()]
    result.operations = len(operations)

    def runner(operation: Any, mode: GenerationMode, count: int) -> Any:
        @settings(max_examples=count, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = case.call(base_url=url, timeout=60, headers=headers or {})
            result.statuses[response.status_code] += 1
            if response.status_code >= 500:
                result.failures.append(f"{operation.label} → {response.status_code} {response.text[:200]}\n{case.as_curl_command()}")

        return run

    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in operations:
            if time.monotonic() - started > budget_s:
                break
            count = max(1, examples // 3) if any(h in operation.path for h in HEAVY) else examples
            try:
                runner(operation, mode, count)()
            except Unsatisfiable:  # nothing to violate (an operation without parameters or body)
                result.unsatisfiable += 1
    result.requests = sum(result.statuses.values())
    result.seconds = time.monotonic() - started
    return result


def describe(result: FuzzResult) -> str:
    return (f"fuzzing: {result.operations} operations, {result.requests} requests in {result.seconds:.1f} s, "
            f"statuses {dict(sorted(result.statuses.items()))}, 5xx: {len(result.failures)}")


if __name__ == "__main__":
    outcome = fuzz(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 6, float(sys.argv[3]) if len(sys.argv) > 3 else 55.0)
    print(describe(outcome))
    print("\n\n".join(outcome.failures[:20]))
