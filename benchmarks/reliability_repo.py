"""Builds the model repository that ``kiln bench soak`` runs against for docs/reliability.md.

Tiny engines (the figures are about the server, not the models): a timm ``test_resnet`` image
classifier (32 px), the authentication engine of a tiny model trained for two epochs on synthetic
cases, and the two packaging engines. Every model's queue is bounded (``max_queue_size``) so that
overload is refused at once with 503 instead of queueing, and every onnxruntime session runs on one
intra-op thread that sleeps between calls (``threads: 1``, ``spin: false``): four models on two
cores, each with a thread pool that spins after every call, took the CPU the event loop and the
other models needed (server CPU per request of the mix: see docs/reliability.md).

    python benchmarks/reliability_repo.py /tmp/kiln-soak-repo
    kiln bench soak --repo /tmp/kiln-soak-repo --apps authenticity,packaging --duration 180 \
        --json docs/benchmarks/soak.json
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path


def build(repo: Path) -> Path:
    from kiln.apps.authenticity.engine import build_auth_engine
    from kiln.apps.authenticity.synth import SynthSpec, generate_dataset
    from kiln.apps.authenticity.train import TrainConfig, train
    from kiln.apps.packaging.engines import build_engines
    from kiln.engine.artifact import EngineCache
    from kiln.engine.build import BuildSettings, build_engine
    from kiln.engine.spec import BatchProfile, ModelSource, Precision

    repo.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kiln-soak-"))
    cache = EngineCache(work / "cache")
    queue = {"max_queue_size": 128, "timeout_s": 10, "engine_options": {"threads": 1, "spin": False}}
    if not (repo / "image").exists():
        settings = BuildSettings(source=ModelSource.parse("timm:test_resnet?num_classes=3"), batch=BatchProfile(min=1, opt=4, max=8),
                                 name="image", input_size=(32, 32))
        built = build_engine(settings, cache=cache, output=work / "image").path
        shutil.copytree(built, repo / "image" / "1")
        (repo / "image" / "config.json").write_text(json.dumps({"max_batch_size": 8, "max_queue_delay_us": 2000}))
    if not (repo / "authenticity").exists():
        data = work / "synth"
        generate_dataset(data, 24, SynthSpec(seed=7, size=96, twins=True), workers=1)
        config = TrainConfig(backbone="test_resnet", width=1.0, epochs=2, image_size=64, batch_size=16, lr=3e-3, val_fraction=0.25,
                             threads=2, min_side=64, embed_dim=32)
        result = train(data, work / "auth.pt", config)
        build_auth_engine(result.checkpoint, data, work / "auth-engine", precision=Precision.FP32, batch=BatchProfile(min=1, opt=6, max=8),
                          validate=False, cache_dir=work / "cache")
        shutil.copytree(work / "auth-engine", repo / "authenticity" / "1")
    build_engines(repo, cache=cache)
    for name in ("image", "authenticity", "brief_encoder", "style_scorer"):  # an existing repository gets the settings too
        config = repo / name / "config.json"
        existing = json.loads(config.read_text()) if config.exists() else {}
        config.write_text(json.dumps({**existing, **queue}))
    shutil.rmtree(work, ignore_errors=True)
    return repo


if __name__ == "__main__":
    print(build(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kiln-soak-repo")))
