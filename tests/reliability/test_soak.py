"""``kiln bench soak`` end to end, shortened: probe, soak, 3× overload, recovery against the live server."""

from __future__ import annotations

import asyncio
import os

from kiln.serve.soak import SoakSettings, run_soak, verdict

from .conftest import Server


def test_short_soak_and_overload(server: Server) -> None:
    settings = SoakSettings(url=server.url, duration_s=6, probe_s=1.5, calibration_s=1.5, overload_s=3, recovery_s=3, levels=(1, 4), pid=os.getpid(), calibration_steps=1)
    lines: list[str] = []
    result = asyncio.run(run_soak(settings, report=lines.append))
    assert result["max_throughput_rps"] > 0
    assert {"infer_binary", "infer_json", "authenticate", "list_cases", "packaging_styles"} <= set(result["mix"])
    soak, over, recovery = result["soak"], result["overload"], result["recovery"]
    assert soak["requests"] > 0 and soak["p99_first_ms"] is not None and soak["rss_start_mb"] > 0
    assert soak["timeline"] and sum(row["requests"] for row in soak["timeline"]) == soak["requests"]
    assert {"server_cpu_pct", "loadgen_cpu_pct", "others_cpu_pct"} <= set(soak)
    # every new connection is counted once, in the bucket of the request that opened it
    assert soak["connections_opened"] == sum(row["connections_opened"] for row in soak["timeline"])
    # the soak holds 80 % of the calibrated maximum, which is the rate of the clean check
    clean = [step for step in result["calibration"] if step["clean"]]
    if clean:
        assert abs(clean[-1]["rate"] - result["max_throughput_rps"]) < 0.01
        assert abs(soak["rate"] - 0.8 * result["max_throughput_rps"]) < 0.01
    for phase in (soak, over, recovery):  # when the refusals of a phase happened: its first and last, within the phase
        at = phase["errors_at_s"]
        assert (at is None) == (phase["errors"] == 0)
        assert at is None or 0 <= at[0] <= at[1] <= phase["duration_s"]
    assert "accepted_inference_over_timeout_from_send" in over and all("clean" in step for step in result["calibration"])
    for phase in (soak, over, recovery):  # under any load: answers or fast refusals, never a server error
        bad = {code: n for code, n in phase["statuses"].items() if code not in ("200", "429", "503", "504")}
        assert not bad, (phase["phase"], phase["statuses"])
    assert over["requests"] > 0 and over["other_failures"] == 0
    assert recovery["requests"] > 0
    assert any(line.startswith("soak:") for line in lines)
    assert not [p for p in verdict(result) if "answers other than" in p]  # latencies are measured, not asserted
    with server.client() as client:
        assert client.get("/v2/health/ready").status_code == 200


def test_a_bucket_without_requests_is_a_row_of_its_own() -> None:
    from kiln.serve.soak import PhaseResult, Sample, timeline

    samples = [Sample(at=t, call="infer_binary", status=200, latency_ms=5.0, service_ms=4.0) for t in (0.5, 1.5, 4.2)]
    rows = timeline(PhaseResult("soak", 10.0, 5.0, samples), 1.0, [])
    assert [row["from_s"] for row in rows] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert [row["requests"] for row in rows] == [1, 1, 0, 0, 1]
    assert rows[2]["p99_ms"] is None and rows[2]["errors"] == 0
    # the phase lasted longer than its schedule (waiting for the last answers): no row after the last request
    assert len(timeline(PhaseResult("soak", 10.0, 7.3, samples), 1.0, [])) == 5
