"""``kiln profile --trace``: a Chrome/Perfetto trace of one batch through an engine."""

from __future__ import annotations

import shutil
from pathlib import Path

from kiln.engine.backends.base import Runner
from kiln.engine.profile import example_maker
from kiln.errors import KilnError


def write_trace(runner: Runner, path: Path, batch: int = 1) -> Path:
    """Torch engines: a PyTorch profiler trace (CPU and CUDA kernels); onnxruntime engines: its own
    per-operator profile, in the same Chrome trace format. Open either in ui.perfetto.dev."""
    inputs = example_maker(runner.manifest)(min(batch, runner.max_batch_size), 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if runner.manifest.backend == "torch":
        import torch
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if runner.manifest.device == "cuda":
            activities.append(ProfilerActivity.CUDA)
        runner.infer(inputs)  # warm
        with profile(activities=activities, record_shapes=True) as prof:
            runner.infer(inputs)
            if runner.manifest.device == "cuda":
                torch.cuda.synchronize()
        prof.export_chrome_trace(str(path))
        return path
    if runner.manifest.backend == "onnxruntime":
        import onnxruntime as ort

        from kiln.engine.backends.onnxruntime import OPTIMIZED, providers_for, session_options

        options = session_options(getattr(runner, "threads", None), level="all")
        options.enable_profiling = True
        options.profile_file_prefix = str(path.with_suffix(""))
        session = ort.InferenceSession(
            str(runner.directory / runner.manifest.build_options.get("runtime_model", OPTIMIZED)),
            sess_options=options,
            providers=providers_for(runner.manifest.device),
        )
        session.run(None, inputs)
        written = Path(session.end_profiling())
        shutil.move(str(written), str(path))
        return path
    raise KilnError(f"--trace is not available for the {runner.manifest.backend} backend")
