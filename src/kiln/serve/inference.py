"""``InferenceClient`` on top of the server's batchers: what app plugins call in-process."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import numpy as np

from kiln.errors import KilnError
from kiln.serve.context import Priority
from kiln.serve.repository import ModelRepository

if TYPE_CHECKING:
    from kiln.engine.manifest import EngineManifest


class BatchingInference:
    """Sends app requests through the same dynamic batchers as OIP requests.

    A request larger than the model's ``max_batch_size`` (e.g. a 6-photo case on a model that
    batches 4) is split into chunks that run concurrently, and the outputs are joined in order.
    """

    def __init__(self, repository: ModelRepository) -> None:
        self.repository = repository

    async def infer(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        version: str | None = None,
        priority: Priority = Priority.INTERACTIVE,
        timeout_s: float | None = None,
    ) -> dict[str, np.ndarray]:
        served = self.repository.ready_model(model, version)
        rows = {array.shape[0] if array.ndim else 0 for array in inputs.values()}
        limit = served.max_batch_size
        if len(rows) != 1 or (total := rows.pop()) <= limit:
            return await served.infer(inputs, priority=int(priority), timeout_s=timeout_s)
        chunks = [
            {name: array[start : start + limit] for name, array in inputs.items()} for start in range(0, total, limit)
        ]
        parts = await asyncio.gather(
            *(served.infer(chunk, priority=int(priority), timeout_s=timeout_s) for chunk in chunks)
        )
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def manifest(self, model: str, version: str | None = None) -> EngineManifest:
        served = self.repository.ready_model(model, version)
        assert served.manifest is not None
        return served.manifest

    def is_ready(self, model: str) -> bool:
        try:
            return self.repository.get(model).ready
        except KilnError:  # unknown or unavailable model: simply not ready
            return False
