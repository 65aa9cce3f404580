"""KILN_GIL_SWITCH_INTERVAL_US sets the switch interval of kiln's own server processes."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from kiln.config import Settings
from kiln.switch_interval import apply_switch_interval


@pytest.fixture(autouse=True)
def restore_interval() -> Iterator[None]:
    before = sys.getswitchinterval()
    yield
    sys.setswitchinterval(before)


def test_a_configured_interval_is_applied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_GIL_SWITCH_INTERVAL_US", "500")
    assert apply_switch_interval(Settings()) == pytest.approx(0.0005)
    assert sys.getswitchinterval() == pytest.approx(0.0005)


def test_unset_leaves_the_interval_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KILN_GIL_SWITCH_INTERVAL_US", raising=False)
    sys.setswitchinterval(0.004)
    assert apply_switch_interval(Settings()) == pytest.approx(0.004)


def test_an_interval_below_50_us_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KILN_GIL_SWITCH_INTERVAL_US", "10")
    with pytest.raises(ValidationError, match="gil_switch_interval_us"):
        Settings()
