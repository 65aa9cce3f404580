"""The packaging app's kiln models (entry point ``kiln.models``: ``packaging``).

- ``minilm_encoder``: the brief encoder, all-MiniLM-L6-v2 + mean pooling + L2 normalisation;
  inputs ``input_ids``/``attention_mask`` [batch, sequence], output ``embedding`` [batch, 384].
- ``style_scorer``: the main-image style score, an MLP over ``stylescore.FEATURES`` image
  statistics; input ``features`` [batch, 34], output ``probabilities`` [batch, styles]. Its weights
  come from a checkpoint that ``engines.build_engines`` trains.
"""

from __future__ import annotations

import torch
from torch import nn

from kiln.apps.packaging.encoder import MODEL_NAME as ENCODER_NAME
from kiln.apps.packaging.encoder import load_minilm
from kiln.engine.inputs import InputSpec
from kiln.engine.models import register_model

SCORER_NAME = "style_scorer"
_STYLE_COUNT = 14  # len(styles.taxonomy()); checked when the checkpoint is trained
_FEATURE_COUNT = 34  # len(stylescore.FEATURE_NAMES)


@register_model(
    ENCODER_NAME,
    output_names=("embedding",),
    inputs=(
        InputSpec(name="input_ids", dtype="int64", dims=["batch", "sequence"], low=1000, high=30000),
        InputSpec(name="attention_mask", dtype="int64", dims=["batch", "sequence"], low=1, high=2),
    ),
    example_sizes={"sequence": 16},
    description="all-MiniLM-L6-v2 sentence encoder (mean pooling, L2-normalised), for packaging briefs",
)
def minilm_encoder() -> nn.Module:
    return load_minilm()


class StyleScorer(nn.Module):
    """Standardise → 2 hidden layers → softmax over styles."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, features: int = _FEATURE_COUNT, classes: int = _STYLE_COUNT, hidden: int = 64) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("std", torch.ones(features))
        self.net = nn.Sequential(
            nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes)
        )

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.std)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features).softmax(-1)


@register_model(
    SCORER_NAME,
    output_names=("probabilities",),
    inputs=(InputSpec(name="features", dtype="float32", dims=["batch", _FEATURE_COUNT]),),
    description="packaging main-image style score (MLP on colour/texture statistics)",
)
def style_scorer() -> nn.Module:
    return StyleScorer()
