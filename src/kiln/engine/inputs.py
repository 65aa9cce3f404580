"""Model inputs beyond a single image: names, dtypes, symbolic dimensions, and example data.

Image models have one float input ``[batch, 3, height, width]``; text encoders have token ids and
masks ``[batch, sequence]``. Symbolic dimensions (strings) stay dynamic in exported graphs; example
sizes for them drive export, warm-up and profiling.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel

from kiln.engine.manifest import TensorSpec


class InputSpec(BaseModel):
    name: str
    dtype: str = "float32"
    dims: list[int | str]
    # integer inputs (token ids, masks) draw examples from [low, high)
    low: int = 0
    high: int = 100

    def shape(self, sizes: dict[str, int], batch: int) -> list[int]:
        shape = []
        for dim in self.dims:
            if dim == "batch":
                shape.append(batch)
            elif isinstance(dim, str):
                shape.append(sizes.get(dim, 16))
            else:
                shape.append(dim)
        return shape

    def tensor_spec(self) -> TensorSpec:
        return TensorSpec(name=self.name, dtype=self.dtype, shape=[d if isinstance(d, int) else -1 for d in self.dims])

    @property
    def is_float(self) -> bool:
        return self.dtype.startswith(("float", "bfloat"))


def image_input(
    name: str, height: int, width: int, dynamic_hw: bool, channels: int = 3, input_format: str = "float32"
) -> InputSpec:
    h: int | str = "height" if dynamic_hw else height
    w: int | str = "width" if dynamic_hw else width
    if input_format == "uint8":
        return InputSpec(name=name, dtype="uint8", dims=["batch", h, w, channels], low=0, high=256)
    return InputSpec(name=name, dtype="float32", dims=["batch", channels, h, w])


def is_image_model(inputs: list[InputSpec]) -> bool:
    return len(inputs) == 1 and (inputs[0].is_float or inputs[0].dtype == "uint8") and len(inputs[0].dims) == 4


def example_arrays(inputs: list[InputSpec], sizes: dict[str, int], batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random (never all-zero) example inputs of the right dtypes and shapes."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for spec in inputs:
        shape = spec.shape(sizes, batch)
        if spec.is_float:
            arrays[spec.name] = rng.standard_normal(shape).astype(np.float32 if spec.dtype == "bfloat16" else spec.dtype)
        elif spec.dtype == "bool":
            arrays[spec.name] = np.ones(shape, dtype=bool)
        else:
            arrays[spec.name] = rng.integers(spec.low, spec.high, size=shape).astype(spec.dtype)
    return arrays
