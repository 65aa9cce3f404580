"""Training on a GPU: the photos resident on the device, the same steps as on the CPU (skipped without CUDA)."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from kiln.apps.authenticity.train import train

from .conftest import TINY_CONFIG


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (trains with --device cuda)")
def test_training_on_the_gpu(synth_data: Path, tmp_path: Path) -> None:
    result = train(synth_data, tmp_path / "auth.pt", replace(TINY_CONFIG, device="cuda", epochs=1, design_heads=True))
    assert result.checkpoint.is_file() and all(math.isfinite(h.loss) for h in result.history)
    state = torch.load(result.checkpoint, weights_only=True)["state_dict"]
    assert all(t.device.type == "cpu" for t in state.values())  # the checkpoint loads anywhere
