"""Per-model serving configuration: ``REPO/<model>/config.json`` (or ``config.yaml``).

Every field is optional; a model folder without a config file is served with the defaults and
the engine's own batch limit. Example::

    {
      "max_batch_size": 32,            # at most the engine's batch profile max (default: that max)
      "dynamic_batching": true,        # false: every request runs on its own
      "max_queue_delay_us": 1000,      # how long the oldest request waits for a fuller batch
      "preferred_batch_sizes": [8, 16],# dispatch at once when the queue holds this many items of one shape
                                       # (a size of 1 sends lone requests without waiting the delay)
      "max_queue_size": 256,           # queued requests; beyond it requests get 503 at once
      "timeout_s": 30,                 # default per-request timeout (504 past it)
      "instances": 2,                  # engine instances running batches concurrently
      "engine_options": {"threads": 1},# passed to the engine loader (e.g. onnxruntime threads;
                                       # "spin": the threads spin after each call instead of
                                       # sleeping: false by default for CPU engines served here,
                                       # which leaves the CPU to the event loop and other models)
      "version_policy": {"policy": "latest", "num_versions": 1},
      "limits": {"max_request_bytes": 67108864, "max_tensor_elements": 16777216},
      "warmup": true
    }
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from kiln.errors import KilnError, MissingDependencyError

CONFIG_NAMES = ("config.json", "config.yaml", "config.yml")


class VersionPolicy(BaseModel):
    """Which numbered version folders are served: the newest N, all, or a given list."""

    model_config = ConfigDict(extra="forbid")

    policy: Literal["latest", "all", "specific"] = "latest"
    num_versions: int = Field(default=1, ge=1)
    versions: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _specific_needs_versions(self) -> VersionPolicy:
        if self.policy == "specific" and not self.versions:
            raise ValueError("policy 'specific' needs a non-empty 'versions' list")
        return self

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.policy == "all":
            return ordered
        if self.policy == "latest":
            return ordered[-self.num_versions :]
        return sorted(set(self.versions))


class Limits(BaseModel):
    """What one request may carry (larger ones get 413)."""

    model_config = ConfigDict(extra="forbid")

    max_request_bytes: int = Field(default=64 << 20, ge=1024)
    max_tensor_elements: int = Field(default=16 << 20, ge=1)
    allow_non_finite: bool = Field(default=False, description="accept NaN/Inf in floating-point inputs")


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    max_batch_size: int | None = Field(default=None, ge=1)
    dynamic_batching: bool = True
    max_queue_delay_us: int = Field(default=1000, ge=0, le=10_000_000)
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    max_queue_size: int = Field(default=256, ge=1)
    timeout_s: float = Field(default=30.0, gt=0)
    instances: int = Field(default=1, ge=1, le=64)
    engine_options: dict[str, Any] = Field(default_factory=dict)
    version_policy: VersionPolicy = Field(default_factory=VersionPolicy)
    limits: Limits = Field(default_factory=Limits)
    warmup: bool = True
    hang_timeout_s: float | None = Field(
        default=None, gt=0, description="an instance busy longer than this is replaced (default: 2 × timeout_s)"
    )

    @model_validator(mode="after")
    def _preferred_sizes(self) -> ModelConfig:
        if any(size < 1 for size in self.preferred_batch_sizes):
            raise ValueError("preferred_batch_sizes must be positive")
        if self.max_batch_size is not None and any(size > self.max_batch_size for size in self.preferred_batch_sizes):
            raise ValueError("preferred_batch_sizes must not exceed max_batch_size")
        return self

    @property
    def hang_after_s(self) -> float:
        return self.hang_timeout_s or 2 * self.timeout_s

    def resolved_batch_size(self, engine_max: int) -> int:
        """The batch limit the batcher uses: the configured one, checked against the engine's."""
        if not self.dynamic_batching:
            return 1 if self.max_batch_size is None else min(self.max_batch_size, engine_max)
        wanted = self.max_batch_size or engine_max
        if wanted > engine_max:
            raise KilnError(
                f"max_batch_size {wanted} exceeds the engine's batch profile max {engine_max}",
                hint=f"lower max_batch_size to <= {engine_max} or rebuild the engine with --batch 1:{wanted}:{wanted}",
            )
        return wanted

    @classmethod
    def read(cls, model_dir: Path) -> ModelConfig:
        """The model's config file parsed and checked; defaults when the folder has none."""
        for name in CONFIG_NAMES:
            path = model_dir / name
            if path.is_file():
                break
        else:
            return cls()
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise KilnError(f"cannot read {path}: {exc}") from exc
        data: Any
        if path.suffix == ".json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise KilnError(f"{path} is not valid JSON: {exc}") from exc
        else:
            try:
                import yaml
            except ImportError as exc:
                raise MissingDependencyError("pyyaml", f"YAML model configs ({path})") from exc
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise KilnError(f"{path} is not valid YAML: {exc}") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise KilnError(f"{path} must hold an object of settings, got {type(data).__name__}")
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()
            )
            raise KilnError(f"{path}: {problems}") from None
        if config.name is not None and config.name != model_dir.name:
            raise KilnError(f"{path} names the model {config.name!r}, but its folder is {model_dir.name!r}")
        return config
