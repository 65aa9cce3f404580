"""Load a model source (timm, kiln registry, ONNX) into what the backends build from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.engine.artifact import sha256_file, sha256_json
from kiln.engine.hardware import package_version
from kiln.engine.inputs import InputSpec, image_input, is_image_model
from kiln.engine.spec import ModelSource, Preprocessing
from kiln.errors import KilnError

if TYPE_CHECKING:
    import torch

INPUT_NAME = "input"
# timm models are randomly initialised from this seed unless a checkpoint is given,
# so that the same source always means the same weights (and the same cache key).
INIT_SEED = 0


@dataclass
class LoadedSource:
    source: ModelSource
    sha256: str
    preprocessing: Preprocessing
    output_names: list[str]
    module: torch.nn.Module | None = None
    onnx_path: Path | None = None
    dynamic_hw: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    # None: one image input named INPUT_NAME, shaped by the preprocessing
    custom_inputs: list[InputSpec] | None = None
    example_sizes: dict[str, int] = field(default_factory=dict)

    def inputs(self, preprocessing: Preprocessing) -> list[InputSpec]:
        if self.custom_inputs is not None:
            return self.custom_inputs
        _, height, width = preprocessing.input_size
        return [image_input(INPUT_NAME, height, width, self.dynamic_hw, input_format=preprocessing.input_format)]

    def sizes(self, preprocessing: Preprocessing) -> dict[str, int]:
        _, height, width = preprocessing.input_size
        return {"height": height, "width": width, **self.example_sizes}

    @property
    def is_image(self) -> bool:
        return self.custom_inputs is None or is_image_model(self.custom_inputs)


def _read_checkpoint(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns (state_dict, extra metadata) from a .pt/.pth/.safetensors checkpoint."""
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return dict(load_file(path)), {}
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise KilnError(f"cannot read checkpoint {path}: {exc}", hint="pass a torch state_dict file") from exc
    extra: dict[str, Any] = {}
    if isinstance(data, dict):
        extra = dict(data.get("kiln_extra", {})) if isinstance(data.get("kiln_extra"), dict) else {}
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(data.get(key), dict):
                data = data[key]
                break
    if not isinstance(data, dict):
        raise KilnError(f"checkpoint {path} holds no state_dict")
    return data, extra


def _load_weights(module: torch.nn.Module, checkpoint: str) -> dict[str, Any]:
    state, extra = _read_checkpoint(checkpoint)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise KilnError(
            f"checkpoint {checkpoint} does not fit the model: "
            f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:3]})",
            hint="check the model name and options (e.g. num_classes) match the checkpoint",
        )
    return extra


def source_sha256(source: ModelSource) -> str:
    """Identity of the weights: checkpoint hash, or the seeded random init; cheap (no model is built)."""
    if source.kind == "onnx":
        return onnx_sha256(Path(source.name))
    return _source_hash(source)


def external_data_files(path: Path, model: Any = None) -> list[Path]:
    """The files an ONNX model keeps its large tensors in (``location`` of external initializers), sorted;
    ``model``: the graph already loaded from ``path`` (without its external data), so it is not read twice."""
    import onnx

    if model is None:
        model = onnx.load(str(path), load_external_data=False)
    locations = {
        entry.value
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
        if entry.key == "location"
    }
    return sorted(path.parent / location for location in locations)


def onnx_sha256(path: Path, model: Any = None) -> str:
    """The graph file's hash, plus its external data files' when the weights live beside it."""
    try:
        extra = external_data_files(path, model)
    except Exception:  # unreadable: the loader reports it; the hash is then of the bytes alone
        extra = []
    if not extra:
        return sha256_file(path)
    missing = [p.name for p in extra if not p.is_file()]
    if missing:
        raise KilnError(f"{path}: external data file(s) missing next to the model: {', '.join(missing)}",
                        hint="keep the .onnx file and its weight files in the same folder")
    return sha256_json({"model": sha256_file(path), "external_data": {p.name: sha256_file(p) for p in extra}})


def _source_hash(source: ModelSource) -> str:
    parts: dict[str, Any] = {"kind": source.kind, "name": source.name, "options": source.options}
    if source.checkpoint:
        parts["checkpoint"] = sha256_file(Path(source.checkpoint))
    else:
        parts["init_seed"] = INIT_SEED
        parts["timm"] = package_version("timm")
    return sha256_json(parts)


def load_source(source: ModelSource) -> LoadedSource:
    if source.kind == "onnx":
        return _load_onnx(source)
    if source.kind == "timm":
        return _load_timm(source)
    if source.kind == "kiln":
        return _load_kiln(source)
    raise KilnError(f"unknown model source kind {source.kind!r}")


def _load_onnx(source: ModelSource) -> LoadedSource:
    import onnx

    path = Path(source.name)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others for a bad file
        raise KilnError(f"{path} is not a readable ONNX model: {exc}") from exc
    from onnx import helper

    digest = onnx_sha256(path, model)  # also checks the external data files are there
    initializers = {t.name for t in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    if not graph_inputs:
        raise KilnError(f"{path} has no inputs")
    specs: list[InputSpec] = []
    for value in graph_inputs:
        tensor_type = value.type.tensor_type
        try:
            dtype = str(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
        except (KeyError, TypeError):
            dtype = "object"  # strings (BYTES)
        if tensor_type.elem_type == onnx.TensorProto.STRING:
            dtype = "object"
        dims: list[int | str] = []
        for index, dim in enumerate(tensor_type.shape.dim):
            if dim.dim_value > 0:
                dims.append(dim.dim_value)
            else:
                dims.append("batch" if index == 0 else (dim.dim_param or f"{value.name}_dim{index}"))
        specs.append(InputSpec(name=value.name, dtype=dtype, dims=dims))
    pre = Preprocessing()
    image = is_image_model(specs)
    if image and isinstance(specs[0].dims[2], int) and isinstance(specs[0].dims[3], int):
        pre = pre.with_size(specs[0].dims[2], specs[0].dims[3])
    return LoadedSource(
        source=source,
        sha256=digest,
        preprocessing=pre,
        output_names=[o.name for o in model.graph.output],
        onnx_path=path,
        dynamic_hw=image and not (isinstance(specs[0].dims[2], int) and isinstance(specs[0].dims[3], int)),
        custom_inputs=specs,
    )


def _load_timm(source: ModelSource) -> LoadedSource:
    import timm
    import torch
    from timm.data.config import resolve_data_config

    options = dict(source.options)
    pretrained = bool(options.pop("pretrained", False))
    try:
        with torch.random.fork_rng():
            torch.manual_seed(INIT_SEED)
            module = timm.create_model(source.name, pretrained=pretrained, **options)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise KilnError(f"timm has no model {source.name!r}", hint="see timm.list_models()") from exc
        raise KilnError(f"timm could not create {source.describe()}: {exc}") from exc
    except TypeError as exc:
        raise KilnError(f"bad options for {source.describe()}: {exc}") from exc
    extra: dict[str, Any] = {}
    if source.checkpoint:
        extra = _load_weights(module, source.checkpoint)
    module.eval()
    config = resolve_data_config({}, model=module)
    name_lower = source.name.lower()
    fixed_size = any(tag in name_lower for tag in ("vit", "deit", "swin", "beit", "eva", "mixer", "levit"))
    return LoadedSource(
        source=source,
        sha256=_source_hash(source),
        preprocessing=Preprocessing.from_timm_config(config),
        output_names=["logits"],
        module=module,
        dynamic_hw=not fixed_size,
        extra=extra,
    )


def _load_kiln(source: ModelSource) -> LoadedSource:
    import torch

    from kiln.engine.models import get_model

    entry = get_model(source.name)
    try:
        with torch.random.fork_rng():
            torch.manual_seed(INIT_SEED)
            module = entry.factory(**source.options)
    except TypeError as exc:
        raise KilnError(f"bad options for {source.describe()}: {exc}") from exc
    extra: dict[str, Any] = {}
    if source.checkpoint:
        extra = _load_weights(module, source.checkpoint)
    module.eval()
    return LoadedSource(
        source=source,
        sha256=_source_hash(source),
        preprocessing=entry.preprocessing,
        output_names=list(entry.output_names),
        module=module,
        dynamic_hw=entry.dynamic_hw,
        extra=extra,
        custom_inputs=list(entry.inputs) if entry.inputs is not None else None,
        example_sizes=dict(entry.example_sizes),
    )
