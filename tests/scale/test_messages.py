"""Job messages, webhook signatures and bulk catalogues (no services needed)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from kiln.errors import KilnError
from kiln.scale.messages import CaseJob, JobFile, JobResult, MalformedMessageError
from kiln.scale.webhooks import RetryPolicy, check_callback_url, sign, verify_signature


def test_case_job_round_trips_with_binary_photos() -> None:
    job = CaseJob("j1", ["logo", "stitching"], "aurelle", "celeste",
                  [JobFile("a.jpg", "image/jpeg", b"\xff\xd8" + bytes(range(256))), JobFile("b.png", "image/png", b"")],
                  priority="bulk", callback_url="https://example.com/h")
    back = CaseJob.decode(job.encode())
    assert back == job


@pytest.mark.parametrize("body", [b"", b"\x00\x00\x00\x05{}", b"\x00\x00\x00\x02{}" + b"extra", b"\x00\x00\x00\x08{\"v\": 9}"])
def test_malformed_job_bodies_are_named(body: bytes) -> None:
    with pytest.raises(MalformedMessageError):
        CaseJob.decode(body)


def test_truncated_photo_bytes_are_detected() -> None:
    body = CaseJob("j1", ["logo"], "b", "m", [JobFile("a.jpg", "image/jpeg", b"12345")]).encode()
    with pytest.raises(MalformedMessageError, match="bytes"):
        CaseJob.decode(body[:-2])


def test_result_round_trips() -> None:
    result = JobResult("j1", "failed", error="bad photo", error_status=400, attempts=2)
    assert JobResult.decode(result.encode()) == result
    with pytest.raises(MalformedMessageError):
        JobResult.decode(b"{\"unknown\": 1}")


def test_signature_verifies_only_with_the_secret_the_body_and_a_fresh_time() -> None:
    body = b'{"job_id":"j1"}'
    header = sign("s3cret", body)
    assert verify_signature("s3cret", body, header)
    assert not verify_signature("other", body, header)
    assert not verify_signature("s3cret", body + b" ", header)
    assert not verify_signature("s3cret", body, sign("s3cret", body, int(time.time()) - 3600))
    assert not verify_signature("s3cret", body, "garbage")


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(first_delay_s=0.5, max_delay_s=3.0)
    assert [policy.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


@pytest.mark.parametrize("url", ["ftp://x/y", "file:///etc/passwd", "https://", "http://x/" + "a" * 3000])
def test_callback_urls_must_be_http(url: str) -> None:
    with pytest.raises(KilnError, match="callback_url"):
        check_callback_url(url)


def test_csv_catalogue_groups_rows_into_cases_and_names_problems(tmp_path: Path) -> None:
    from kiln.scale.bulk import read_catalogue

    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"x")
    good = tmp_path / "cases.csv"
    good.write_text("case_id,brand,model,view,path\nc1,aurelle,celeste,logo,a.jpg\nc1,aurelle,celeste,stitching,b.jpg\n"
                    "c2,aurelle,celeste,logo,b.jpg\n")
    cases = read_catalogue(good)
    assert [(c.case_id, [v for v, _ in c.photos]) for c in cases] == [("c1", ["logo", "stitching"]), ("c2", ["logo"])]
    missing = tmp_path / "missing.csv"
    missing.write_text("case_id,brand,model,view,path\nc1,aurelle,celeste,logo,nope.jpg\n")
    with pytest.raises(KilnError, match=r"missing.csv:2: photo 'nope.jpg' does not exist"):
        read_catalogue(missing)
    columns = tmp_path / "columns.csv"
    columns.write_text("case_id,path\nc1,a.jpg\n")
    with pytest.raises(KilnError, match="missing columns"):
        read_catalogue(columns)
    with pytest.raises(KilnError, match="neither a CSV file nor a folder"):
        read_catalogue(tmp_path / "a.jpg")
