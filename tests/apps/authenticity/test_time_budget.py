"""``TrainConfig.time_budget_s``: as many epochs as fit, with the learning-rate schedule re-planned for them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from kiln.apps.authenticity.train import epochs_within, one_cycle, train
from kiln.errors import KilnError

from .conftest import TINY_CONFIG


def test_epochs_within_keeps_what_fits_at_least_one_at_most_the_plan() -> None:
    assert epochs_within(100.0, 9.0, 25) == 11
    assert epochs_within(100.0, 3.0, 25) == 25
    assert epochs_within(5.0, 9.0, 25) == 1


def _lrs(schedule: object, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        optimizer.step()
        schedule.step()  # type: ignore[attr-defined]
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_a_replanned_schedule_ends_where_a_schedule_of_that_length_ends() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    first = one_cycle(optimizer, 3e-3, 10 * 20)  # planned for 10 epochs of 20 steps
    _lrs(first, optimizer, 20)  # one epoch ran
    replanned = one_cycle(optimizer, 3e-3, 3 * 20, done=20)  # only 3 fit
    tail = _lrs(replanned, optimizer, 3 * 20 - 20 - 1)

    reference_param = torch.nn.Parameter(torch.zeros(1))
    reference_optimizer = torch.optim.AdamW([reference_param], lr=1e-3)
    reference = _lrs(one_cycle(reference_optimizer, 3e-3, 3 * 20), reference_optimizer, 3 * 20 - 1)
    assert tail == pytest.approx(reference[20:])
    assert tail[-1] < 3e-3 / 1000, "the re-planned run must anneal to the end of its schedule"


def test_training_stops_at_the_epochs_that_fit_the_budget(synth_data: Path, tmp_path: Path) -> None:
    short = dataclasses.replace(TINY_CONFIG, epochs=4, time_budget_s=1e-3)  # the first epoch alone is over it
    assert len(train(synth_data, tmp_path / "short.pt", short).history) == 1
    roomy = dataclasses.replace(TINY_CONFIG, epochs=3, time_budget_s=1e6)
    assert len(train(synth_data, tmp_path / "roomy.pt", roomy).history) == 3
    with pytest.raises(KilnError, match="--time-budget"):
        train(synth_data, tmp_path / "bad.pt", dataclasses.replace(TINY_CONFIG, time_budget_s=0.0))
