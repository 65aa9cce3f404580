"""Open Inference Protocol pieces both transports share: metadata, model config, request parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln.errors import KilnError
from kiln.serve.context import Priority
from kiln.serve.model import ServedModel
from kiln.serve.tensors import oip_datatype

SERVER_NAME = "kiln"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository"]


def server_metadata() -> dict[str, Any]:
    from kiln import __version__

    return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}


def model_metadata(model: ServedModel, versions: list[str]) -> dict[str, Any]:
    """``GET /v2/models/{name}``: shapes include the batch dimension as -1."""
    manifest = model.manifest
    if manifest is None:
        return {"name": model.name, "versions": versions, "platform": model.platform, "inputs": [], "outputs": []}
    return {
        "name": model.name,
        "versions": versions,
        "platform": model.platform,
        "inputs": [
            {"name": s.name, "datatype": oip_datatype(s.dtype), "shape": model.public_shape(s)} for s in manifest.inputs
        ],
        "outputs": [
            {"name": s.name, "datatype": oip_datatype(s.dtype), "shape": model.public_shape(s)} for s in manifest.outputs
        ],
    }


def model_config(model: ServedModel) -> dict[str, Any]:
    """Triton's model configuration (JSON form of model_config.proto) for this version."""
    config = model.config
    manifest = model.manifest
    result: dict[str, Any] = {
        "name": model.name,
        "platform": model.platform,
        "backend": manifest.backend if manifest else "",
        "max_batch_size": model.max_batch_size,
        "version_policy": _version_policy(model),
        "input": [],
        "output": [],
        "instance_group": [
            {"name": f"{model.name}_0", "kind": "KIND_GPU" if manifest and manifest.device == "cuda" else "KIND_CPU", "count": config.instances}
        ],
    }
    if manifest is not None:
        result["input"] = [
            {"name": s.name, "data_type": f"TYPE_{_config_type(s.dtype)}", "dims": list(s.shape[1:])} for s in manifest.inputs
        ]
        result["output"] = [
            {"name": s.name, "data_type": f"TYPE_{_config_type(s.dtype)}", "dims": list(s.shape[1:])} for s in manifest.outputs
        ]
    if config.dynamic_batching:
        result["dynamic_batching"] = {
            "preferred_batch_size": list(config.preferred_batch_sizes),
            "max_queue_delay_microseconds": config.max_queue_delay_us,
            "priority_levels": len(Priority),
            "default_priority_level": 1,
            "default_queue_policy": {
                "default_timeout_microseconds": int(config.timeout_s * 1e6),
                "allow_timeout_override": True,
                "max_queue_size": config.max_queue_size,
            },
        }
    return result


def _config_type(dtype: str) -> str:
    name = oip_datatype(dtype)
    return "STRING" if name == "BYTES" else name


def _version_policy(model: ServedModel) -> dict[str, Any]:
    policy = model.config.version_policy
    if policy.policy == "all":
        return {"all": {}}
    if policy.policy == "specific":
        return {"specific": {"versions": policy.versions}}
    return {"latest": {"num_versions": policy.num_versions}}


@dataclass(frozen=True)
class RequestOptions:
    """What request-level parameters ask of the scheduler."""

    priority: Priority = Priority.INTERACTIVE
    timeout_s: float | None = None


def request_options(parameters: dict[str, Any]) -> RequestOptions:
    """Triton's ``priority`` (0 = default, 1 = highest; kiln runs 0-1 as interactive, 2+ as bulk)
    and ``timeout`` (microseconds) request parameters."""
    priority = Priority.INTERACTIVE
    raw = parameters.get("priority")
    if raw is not None:
        if not isinstance(raw, int) or isinstance(raw, bool) or raw < 0:
            raise KilnError(f"parameter 'priority' must be a non-negative integer, got {raw!r}")
        priority = Priority.BULK if raw >= 2 else Priority.INTERACTIVE
    timeout_s: float | None = None
    raw = parameters.get("timeout")
    if raw is not None:
        if not isinstance(raw, int) or isinstance(raw, bool) or raw <= 0:
            raise KilnError(f"parameter 'timeout' must be a positive integer (microseconds), got {raw!r}")
        timeout_s = raw / 1e6
    return RequestOptions(priority, timeout_s)
