"""The per-view model ``kiln:auth_multiview``: counterfeit logit, embedding and heatmap in one pass.

A timm backbone gives a feature map F (B×C×h×w). A linear classifier applied at every position (a
1×1 convolution) gives the heatmap: each cell's counterfeit log-odds contribution (a
class-activation map). The logit pools the heatmap with a smooth maximum (log-mean-exp with
sharpness ``r``): a flaw is usually local (one badly spaced letter, a few uneven stitches), and
averaging would dilute it over the whole photo; for an even heatmap the logit equals the mean.
So the heatmap says exactly where the logit came from. The embedding is a projection of the
average-pooled features, L2-normalised, used for wrong-view / out-of-distribution checks and
reference search.

Design heads (``heads`` > 1): most counterfeit signs are deviations from one brand's house style
(its typeface and letter spacing, stitch pitch and slant, date-code format, hardware finish, the
model's colours and proportions), so a serif word mark is right for one brand and wrong for
another. Besides the generic classifier (column 0) the model then has one classifier per
(brand, model) it was trained on (columns 1..); the case's claimed brand and model pick the
column. ``logit`` is B×heads and ``heatmap`` B×heads×h×w; with one head they keep their
single-head shapes (B×1 and B×h×w).
All three are plain tensor ops, so they export to ONNX and come out of the INT8 engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.engine.models import register_model
from kiln.engine.spec import Preprocessing

if TYPE_CHECKING:
    import torch

MODEL_NAME = "auth_multiview"
OUTPUT_NAMES = ("logit", "embedding", "heatmap")
DEFAULT_BACKBONE = "resnet10t"
DEFAULT_WIDTH = 0.5  # what `kiln auth train` uses; the registered model's own default is the plain backbone
DEFAULT_IMAGE_SIZE = 160
DEFAULT_EMBED_DIM = 128
POOL_SHARPNESS = 4.0
PREPROCESSING = Preprocessing(
    input_size=(3, DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE),
    mean=(0.485, 0.456, 0.406),
    std=(0.229, 0.224, 0.225),
    interpolation="bilinear",
    crop_pct=1.0,
    crop_mode="center",
)


MAX_HEADS = 257


def source_string(backbone: str, embed_dim: int = DEFAULT_EMBED_DIM, width: float = 1.0, heads: int = 1) -> str:
    """The ``kiln:`` source that rebuilds this model for ``kiln build``."""
    source = f"kiln:{MODEL_NAME}?backbone={backbone}&embed_dim={embed_dim}&width={float(width)}"
    return source + (f"&heads={int(heads)}" if heads != 1 else "")


def backbone_options(backbone: str, width: float) -> dict[str, Any]:
    """timm options that scale a ResNet backbone's channels (and its stem) by ``width``."""
    if width == 1.0:
        return {}
    if not backbone.startswith("resnet"):
        from kiln.errors import KilnError

        raise KilnError(f"width applies to ResNet backbones, not {backbone!r}", hint="drop the width option or use resnet10t")
    stem = 32 if backbone.endswith(("t", "d")) else 64  # the deep-stem variants start narrower
    return {
        "channels": tuple(max(8, round(c * width)) for c in (64, 128, 256, 512)),
        "stem_width": max(8, round(stem * width)),
    }


def _build(backbone: str, embed_dim: int, width: float = 1.0, heads: int = 1) -> torch.nn.Module:
    import timm
    import torch
    from torch import nn
    from torch.nn import functional as F

    class MultiViewAuthNet(nn.Module):
        """Backbone → (logit [B,H], embedding [B,D] unit-norm, heatmap [B,H,h,w]; [B,h,w] when H is 1)."""

        def __init__(self) -> None:
            super().__init__()
            try:
                net: Any = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="",
                                             **backbone_options(backbone, width))
            except RuntimeError as exc:
                from kiln.errors import KilnError

                raise KilnError(f"timm has no backbone {backbone!r}", hint="e.g. mobilenetv4_conv_small, resnet18, resnet10t") from exc
            with torch.no_grad():
                channels = int(net.forward_features(torch.zeros(1, 3, 64, 64)).shape[1])
            self.backbone: Any = net
            self.channels = channels
            self.heads = heads
            self.classifier = nn.Linear(channels, heads)
            self.projection = nn.Linear(channels, embed_dim)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            features = self.backbone.forward_features(x)
            weight = self.classifier.weight.view(self.heads, self.channels, 1, 1)
            heatmap = F.conv2d(features, weight, self.classifier.bias)  # B×H×h×w
            cells = heatmap.flatten(2)
            # log(mean(exp(r * h))) / r over the cells, computed stably around the maximum
            peak = cells.max(dim=2, keepdim=True).values
            logit = peak + torch.log(torch.exp(POOL_SHARPNESS * (cells - peak)).mean(dim=2, keepdim=True)) / POOL_SHARPNESS
            embedding = F.normalize(self.projection(features.mean(dim=(2, 3))), dim=1, eps=1e-6)
            if self.heads == 1:
                return logit[:, :, 0], embedding, heatmap[:, 0]
            return logit[:, :, 0], embedding, heatmap

    return MultiViewAuthNet()


@register_model(
    MODEL_NAME,
    output_names=OUTPUT_NAMES,
    preprocessing=PREPROCESSING,
    dynamic_hw=False,
    description="authentication: per-view counterfeit logit, embedding and class-activation heatmap",
)
def auth_multiview(backbone: str = DEFAULT_BACKBONE, embed_dim: int = DEFAULT_EMBED_DIM, width: float = 1.0,
                   heads: int = 1) -> torch.nn.Module:
    from kiln.errors import KilnError

    if not isinstance(heads, int) or not 1 <= heads <= MAX_HEADS:
        raise KilnError(f"heads={heads!r} must be an integer in 1..{MAX_HEADS} (the generic classifier plus one per design)")
    if not isinstance(embed_dim, int) or not 8 <= embed_dim <= 2048:
        raise KilnError(f"embed_dim={embed_dim!r} must be an integer in 8..2048")
    if not isinstance(width, (int, float)) or not 0.125 <= float(width) <= 2.0:
        raise KilnError(f"width={width!r} must be a number in 0.125..2")
    return _build(str(backbone), embed_dim, float(width), heads)
