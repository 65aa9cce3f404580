"""Export a torch module to ONNX with the dynamo exporter: dynamic batch (and every other symbolic
dimension, such as sequence length), plus dynamic H/W for image models where the model allows it."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

from kiln.engine.inputs import InputSpec, example_arrays, image_input
from kiln.engine.source import INPUT_NAME, LoadedSource
from kiln.engine.spec import Preprocessing
from kiln.errors import KilnError
from kiln.progress import Reporter

log = logging.getLogger(__name__)

OPSET = 18
_PLACEHOLDER = "__kiln_output_"


def example_tensors(inputs: list[InputSpec], sizes: dict[str, int], batch: int = 2) -> tuple[Any, ...]:
    import torch

    # batch 2, not 1: the exporter specialises dimensions of size 1
    return tuple(torch.from_numpy(a) for a in example_arrays(inputs, sizes, batch).values())


def dynamic_shapes(inputs: list[InputSpec], max_batch: int = 4096) -> tuple[dict[int, Any], ...]:
    import torch

    dims: dict[str, Any] = {}
    shapes = []
    for spec in inputs:
        mapping: dict[int, Any] = {}
        for index, dim in enumerate(spec.dims):
            if isinstance(dim, str):
                if dim not in dims:
                    dims[dim] = torch.export.Dim(dim, min=1 if dim == "batch" else 2, max=max_batch if dim == "batch" else 8192)
                mapping[index] = dims[dim]
        shapes.append(mapping)
    return tuple(shapes)


def _export(source: LoadedSource, path: Path, inputs: list[InputSpec], sizes: dict[str, int]) -> None:
    import torch

    assert source.module is not None
    # The exporter prints its own progress to stdout; keep the user's terminal for kiln's.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            source.module,
            example_tensors(inputs, sizes),
            dynamo=True,
            input_names=[spec.name for spec in inputs],
            # placeholder names: the exporter may already use a wanted name inside the graph
            output_names=[f"{_PLACEHOLDER}{i}" for i in range(len(source.output_names))],
            dynamic_shapes=dynamic_shapes(inputs),
            opset_version=OPSET,
            optimize=True,
            verify=False,
        )
    if program is None:
        raise KilnError("torch.onnx.export returned no program")
    program.save(str(path), external_data=False)
    _rename_outputs(path, source.output_names)


def _rename_outputs(path: Path, wanted: list[str]) -> None:
    """Give the graph outputs their wanted names, moving any inner value of that name aside."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    renames: dict[str, str] = {}
    taken = {v for node in graph.node for v in (*node.input, *node.output)} | {i.name for i in graph.initializer}
    for name in wanted:
        if name in taken:
            renames[name] = f"{name}__inner"
    for index, name in enumerate(wanted):
        renames[f"{_PLACEHOLDER}{index}"] = name

    def rename(value: str) -> str:
        return renames.get(value, value)

    for node in graph.node:
        node.input[:] = [rename(v) for v in node.input]
        node.output[:] = [rename(v) for v in node.output]
    for collection in (graph.input, graph.output, graph.value_info):
        for value_info in collection:
            value_info.name = rename(value_info.name)
    for initializer in graph.initializer:
        initializer.name = rename(initializer.name)
    onnx.save(model, str(path))


def export_onnx(source: LoadedSource, path: Path, preprocessing: Preprocessing, reporter: Reporter) -> list[InputSpec]:
    """Writes ``path``; returns the inputs as exported (H/W stay dynamic only if the model allowed it)."""
    if source.onnx_path is not None:
        raise KilnError("source is already ONNX; nothing to export")
    sizes = source.sizes(preprocessing)
    candidates = [source.inputs(preprocessing)]
    if source.custom_inputs is None and source.dynamic_hw:
        _, height, width = preprocessing.input_size
        candidates.append([image_input(INPUT_NAME, height, width, dynamic_hw=False, input_format=preprocessing.input_format)])
    last_error: Exception | None = None
    with reporter.task(f"export {source.source.describe()} to ONNX", total=1) as task:
        for inputs in candidates:
            try:
                _export(source, path, inputs, sizes)
            except Exception as exc:  # the exporter raises many types; retry with static H/W
                last_error = exc
                log.info("export with inputs %s failed: %s", inputs, exc)
                continue
            task.advance()
            return inputs
    raise KilnError(f"ONNX export of {source.source.describe()} failed: {last_error}")
