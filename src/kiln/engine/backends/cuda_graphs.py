"""CUDA graphs per batch size, captured around a compiled module with static input/output buffers.

Replaying a captured graph costs one launch instead of one per kernel, and skips the Python-side
guard checks of torch.compile's own graph trees: this is what brings batch-1 latency down. All
graphs of one executor share one memory pool; each executor (engine instance) owns its stream.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any


@dataclass
class _Captured:
    size: int
    graph: Any
    inputs: dict[str, Any]
    outputs: list[Any]


class CudaGraphExecutor:
    """Runs ``fn`` through one captured CUDA graph per batch size; smaller batches are padded up."""

    def __init__(self, fn: Any, stream: Any) -> None:
        self.fn = fn
        self.stream = stream
        self._graphs: dict[int, _Captured] = {}
        self._sizes: list[int] = []

    @property
    def sizes(self) -> list[int]:
        return list(self._sizes)

    def capture(self, examples: dict[int, dict[str, Any]], input_order: list[str], warmup_runs: int = 2) -> None:
        """``examples``: batch size -> device tensors of that batch (become the static input buffers)."""
        import torch

        pool = None
        for size in sorted(examples, reverse=True):  # largest first: later graphs reuse its pool
            static_inputs = {name: t.clone() for name, t in examples[size].items()}
            args = [static_inputs[name] for name in input_order]
            with torch.cuda.stream(self.stream):
                for _ in range(warmup_runs):  # compile and let lazy initialisation happen outside capture
                    self.fn(*args)
            self.stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool, stream=self.stream):
                result = self.fn(*args)
            pool = graph.pool()
            outputs = list(result) if isinstance(result, (tuple, list)) else [result]
            self._graphs[size] = _Captured(size, graph, static_inputs, outputs)
        self._sizes = sorted(self._graphs)

    def size_for(self, n: int) -> int | None:
        index = bisect.bisect_left(self._sizes, n)
        return self._sizes[index] if index < len(self._sizes) else None

    def run(self, inputs: dict[str, Any], n: int) -> list[Any]:
        """Copies ``inputs`` (device or pinned host tensors, ``n`` rows) into the static buffers of the
        smallest graph that fits, replays it on the current stream, and returns views of its outputs
        (``n`` rows; valid until the next run of this executor)."""
        size = self.size_for(n)
        if size is None:
            raise ValueError(f"batch {n} is larger than the largest captured graph ({self._sizes[-1]})")
        captured = self._graphs[size]
        for name, tensor in inputs.items():
            captured.inputs[name][:n].copy_(tensor, non_blocking=True)
        captured.graph.replay()
        return [output[:n] for output in captured.outputs]
