"""What apps get from the server: inference through kiln engines, without knowing how it is served.

The server implements ``InferenceClient`` on top of its dynamic batchers (in-process) or the job
transport (scale-out); ``DirectInference`` runs engines in-process and is what unit tests use.
Apps plug into the server as ``AppPlugin``s: they name the models they need and give a router.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from kiln.errors import NotFoundError

if TYPE_CHECKING:
    from fastapi import APIRouter

    from kiln.config import Settings
    from kiln.engine.backends.base import Runner
    from kiln.engine.manifest import EngineManifest


class Priority(IntEnum):
    """Lower runs first: interactive requests before bulk ones."""

    INTERACTIVE = 0
    BULK = 1


class InferenceClient(Protocol):
    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        version: str | None = None,
        priority: Priority = Priority.INTERACTIVE,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Runs a batch (first dimension) through the named model; outputs keep the batch order."""
        ...

    def manifest(self, model: str, version: str | None = None) -> EngineManifest: ...

    def is_ready(self, model: str) -> bool: ...


class DirectInference:
    """Runs engines in this process with no batching: for tests, tools and single-user scripts."""

    def __init__(self, runners: dict[str, Runner]) -> None:
        self._runners = runners

    @classmethod
    def from_dirs(cls, engines: dict[str, Path], *, serving: bool = False) -> DirectInference:
        """``serving``: load each engine with the runner options ``kiln serve`` uses by default
        (the backend's ``serving_options``: CPU onnxruntime threads that sleep instead of spinning)."""
        from kiln.engine.backends.base import get_backend
        from kiln.engine.loader import load_engine
        from kiln.engine.manifest import EngineManifest

        def options(path: Path) -> dict[str, Any]:
            if not serving:
                return {}
            manifest = EngineManifest.read(Path(path))
            return get_backend(manifest.backend).serving_options(manifest.device)

        return cls({name: load_engine(path, **options(path)) for name, path in engines.items()})

    def _runner(self, model: str) -> Runner:
        if model not in self._runners:
            raise NotFoundError(f"model {model!r} is not loaded", hint="loaded: " + ", ".join(sorted(self._runners)))
        return self._runners[model]

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        version: str | None = None,
        priority: Priority = Priority.INTERACTIVE,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        from kiln.serve.timing import stage

        runner = self._runner(model)
        with stage("infer"):
            return await asyncio.to_thread(runner.infer, inputs)

    def manifest(self, model: str, version: str | None = None) -> EngineManifest:
        return self._runner(model).manifest

    def is_ready(self, model: str) -> bool:
        return model in self._runners


@dataclass
class AppContext:
    """Handed to each app plugin when the server starts."""

    settings: Settings
    inference: InferenceClient
    state: dict[str, Any] = field(default_factory=dict)


class AppPlugin(Protocol):
    """An app served by ``kiln serve``: the models it needs, its routes, its start-up and shut-down."""

    name: str

    def required_models(self) -> list[str]: ...

    def router(self, ctx: AppContext) -> APIRouter: ...

    async def startup(self, ctx: AppContext) -> None: ...

    async def shutdown(self, ctx: AppContext) -> None: ...
