"""kiln's own model registry (``kiln:NAME`` sources), filled by plugins through entry points.

Apps register models with ``@register_model``; the engine layer never imports apps directly but
loads the ``kiln.models`` entry-point group, so third-party packages can add models the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from kiln.engine.inputs import InputSpec
from kiln.engine.spec import Preprocessing
from kiln.errors import KilnError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class ModelEntry:
    name: str
    factory: Callable[..., torch.nn.Module]
    output_names: tuple[str, ...]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    dynamic_hw: bool = False
    description: str = ""
    # None: one image input named "input"; otherwise e.g. token ids and attention mask
    inputs: tuple[InputSpec, ...] | None = None
    example_sizes: dict[str, int] = field(default_factory=dict)


_MODELS: dict[str, ModelEntry] = {}
_PLUGINS_LOADED = False
_PLUGIN_ERRORS: dict[str, str] = {}


def register_model(
    name: str,
    *,
    output_names: tuple[str, ...],
    preprocessing: Preprocessing | None = None,
    dynamic_hw: bool = False,
    description: str = "",
    inputs: tuple[InputSpec, ...] | None = None,
    example_sizes: dict[str, int] | None = None,
) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    def decorator(factory: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        _MODELS[name] = ModelEntry(
            name, factory, tuple(output_names), preprocessing or Preprocessing(), dynamic_hw, description,
            inputs, dict(example_sizes or {}),
        )
        return factory

    return decorator


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for entry_point in metadata.entry_points(group="kiln.models"):
        try:
            entry_point.load()
        except ImportError as exc:
            # one broken plugin must not hide the models of the others; get_model reports it
            _PLUGIN_ERRORS[entry_point.value] = str(exc)


def get_model(name: str) -> ModelEntry:
    _load_plugins()
    if name not in _MODELS:
        broken = "; ".join(f"plugin {module} failed to import: {error}" for module, error in _PLUGIN_ERRORS.items())
        raise KilnError(
            f"unknown kiln model {name!r}" + (f" ({broken})" if broken else ""),
            hint="known: " + (", ".join(sorted(_MODELS)) or "none"),
        )
    return _MODELS[name]


def model_names() -> list[str]:
    _load_plugins()
    return sorted(_MODELS)


def describe_options(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
