"""Build everything the demo serves, once: synthetic data, the trained authentication model, its
INT8 engine (behind the accuracy gate), the packaging engines, demo references and sample cases.

Each step records what it made in ``$KILN_HOME/demo/state.json`` with a fingerprint of its
settings; a later run skips every step whose fingerprint and outputs are still there, so a warm
start costs only the checks. Sizes come from ``DemoSizes``: ``demo`` (fits a 2-core machine in a
few minutes) or ``tiny`` (about a minute of CPU; tests), chosen with ``--size`` or ``KILN_DEMO_SIZE``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.demo.layout import SAMPLES_INDEX, demo_root, model_repo, samples_dir
from kiln.errors import KilnError
from kiln.progress import NullReporter, Reporter

if TYPE_CHECKING:
    from kiln.config import Settings

AUTH_MODEL = "authenticity"
VERSION = "1"
DEMO_DESIGNS: tuple[tuple[str, str], ...] = (("aurelle", "celeste"), ("vanterre", "lyra"), ("kessland", "arden"))
STATE_FILE = "state.json"


@dataclass(frozen=True)
class DemoSizes:
    """How much the demo makes and trains."""

    cases: int = 150
    photo_size: int = 224
    levels: tuple[str, ...] = ("easy",)  # counterfeit flaws the demo model learns (and its samples show)
    backbone: str = "resnet10t"
    width: float = 0.5
    epochs: int = 14
    image_size: int = 96
    batch_size: int = 32
    embed_dim: int = 64
    min_side: int = 224
    precision: str = "int8"
    validate: bool = True
    max_drop: float = 2.0
    sample_size: int = 320
    samples_per_label: int = 2
    references_per_design: int = 1
    seed: int = 11


SIZES: dict[str, DemoSizes] = {
    "demo": DemoSizes(),
    "tiny": DemoSizes(cases=18, photo_size=96, backbone="test_resnet", width=1.0, epochs=1, image_size=64, batch_size=16,
                      embed_dim=32, min_side=64, precision="fp32", validate=False, sample_size=256, samples_per_label=1),
}


def sizes_named(name: str) -> DemoSizes:
    if name not in SIZES:
        raise KilnError(f"unknown demo size {name!r}", hint="use " + " or ".join(SIZES))
    return SIZES[name]


@dataclass
class StepResult:
    name: str
    reused: bool
    seconds: float
    detail: str = ""


@dataclass
class Prepared:
    home: Path
    repo: Path
    samples: Path
    steps: list[StepResult] = field(default_factory=list)

    @property
    def reused_everything(self) -> bool:
        return all(s.reused for s in self.steps)


OnStep = Callable[[int, int, str], None]


class _State:
    """Fingerprints of the finished steps (``state.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
            self.data: dict[str, str] = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError):
            self.data = {}

    def done(self, step: str, fingerprint: str) -> bool:
        return self.data.get(step) == fingerprint

    def mark(self, step: str, fingerprint: str) -> None:
        self.data[step] = fingerprint
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2) + "\n", encoding="utf-8")
        tmp.replace(self.path)

    def forget(self, step: str) -> None:
        self.data.pop(step, None)


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _synth(data: Path, sizes: DemoSizes, reporter: Reporter) -> str:
    from kiln.apps.authenticity.synth import SynthSpec, generate_dataset

    if data.exists():
        shutil.rmtree(data)
    spec = SynthSpec(seed=sizes.seed, size=sizes.photo_size, levels=sizes.levels, models=DEMO_DESIGNS, twins=True)
    summary = generate_dataset(data, sizes.cases, spec, reporter=reporter)
    return f"{summary.cases} cases, {summary.photos} photos"


def _train(data: Path, checkpoint: Path, sizes: DemoSizes, reporter: Reporter) -> str:
    from kiln.apps.authenticity.train import TrainConfig, train

    config = TrainConfig(backbone=sizes.backbone, width=sizes.width, epochs=sizes.epochs, image_size=sizes.image_size,
                         batch_size=sizes.batch_size, embed_dim=sizes.embed_dim, min_side=sizes.min_side, seed=sizes.seed,
                         val_fraction=0.25)
    result = train(data, checkpoint, config, reporter=reporter)
    v = result.calibration.validation
    return f"validation coverage {v['coverage']:.0%}, accuracy on decided cases {v['accuracy_covered']:.0%}"


def _settings(home: Path) -> Settings:
    """The process settings with ``home`` as KILN_HOME (a KILN_DB database URL still wins)."""
    from kiln.config import get_settings

    return get_settings().model_copy(update={"home": home})


def _build_auth(checkpoint: Path, data: Path, repo: Path, sizes: DemoSizes, reporter: Reporter, home: Path) -> str:
    from kiln.apps.authenticity.engine import build_auth_engine
    from kiln.engine.spec import BatchProfile, Precision

    out = repo / AUTH_MODEL / VERSION
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    outcome = build_auth_engine(checkpoint, data, out, precision=Precision(sizes.precision), batch=BatchProfile(min=1, opt=6, max=16),
                                max_drop=sizes.max_drop, validate=sizes.validate, calibration_limit=128, reporter=reporter,
                                cache_dir=_settings(home).engine_cache_dir)
    # one onnxruntime thread per engine call (docs/benchmarks/authenticity.md: 18 vs 7.6 cases/s at c=8 on
    # 2 cores against the default thread pool), and two instances so that two batches run at once
    config = {"max_batch_size": 16, "max_queue_delay_us": 2000, "instances": 2, "engine_options": {"threads": 1}}
    (repo / AUTH_MODEL / "config.json").write_text(json.dumps(config) + "\n")
    m = outcome.manifest
    detail = f"{m.backend} {m.precision.value}"
    if m.validation is not None:
        detail += f", photo accuracy {m.validation.engine_top1:.1f}% vs FP32 {m.validation.reference_top1:.1f}%"
    notes = "; ".join(outcome.notes)
    return detail + (f" ({notes})" if notes else "")


def _build_packaging(repo: Path, reporter: Reporter, home: Path) -> str:
    from kiln.apps.packaging.engines import build_engines
    from kiln.engine.artifact import EngineCache

    report = build_engines(repo, reporter=reporter, cache=EngineCache(_settings(home).engine_cache_dir))
    return ", ".join(f"{e.model} {e.precision}" for e in report.engines)


def _write_samples(folder: Path, sizes: DemoSizes) -> str:
    """Held-out synthetic cases (a seed the model never saw), authentic and counterfeit."""
    from PIL import Image

    from kiln.apps.authenticity.synth import SYNTHETIC_NOTE, SynthSpec, make_case

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    spec = SynthSpec(seed=sizes.seed + 1000, size=sizes.sample_size, models=DEMO_DESIGNS)
    entries: list[dict[str, Any]] = []
    index = 0
    for label in ("authentic", "counterfeit"):
        for n in range(sizes.samples_per_label):
            case = make_case(spec, index, label=label, difficulty="easy")
            index += 1
            case_id = f"{label}-{n + 1}"
            (folder / case_id).mkdir()
            photos = []
            for view, pixels in case.photos.items():
                name = f"{view}.jpg"
                Image.fromarray(pixels).save(folder / case_id / name, quality=90, comment=SYNTHETIC_NOTE.encode())
                photos.append({"view": view, "file": name, "flawed": view in case.defects})
            entries.append({
                "id": case_id, "label": label, "brand": case.design.brand.slug, "model": case.design.slug,
                "title": f"{case.design.brand.name} {case.design.name} ({label}, synthetic)",
                "difficulty": case.difficulty if label == "counterfeit" else "", "photos": photos, "synthetic": True,
            })
    index_file = {"note": SYNTHETIC_NOTE, "cases": entries}
    (folder / SAMPLES_INDEX).write_text(json.dumps(index_file, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return f"{len(entries)} sample cases"


def _reference_uploads(sizes: DemoSizes) -> list[tuple[str, str, list[tuple[str, bytes]]]]:
    import io

    from PIL import Image

    from kiln.apps.authenticity.synth import SynthSpec, make_case

    spec = SynthSpec(seed=sizes.seed + 2000, size=sizes.sample_size, models=DEMO_DESIGNS)
    cases = []
    index = 0
    for brand, model in DEMO_DESIGNS:
        single = SynthSpec(seed=spec.seed, size=spec.size, models=((brand, model),))
        for _ in range(sizes.references_per_design):
            case = make_case(single, index, label="authentic")
            index += 1
            photos = []
            for view, pixels in case.photos.items():
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
                photos.append((view, buffer.getvalue()))
            cases.append((brand, model, photos))
    return cases


def _register_references(repo: Path, sizes: DemoSizes, home: Path) -> str:
    """Verified-authentic (synthetic) references per demo design, in the store the server uses."""
    from kiln.apps.authenticity.pipeline import AuthenticityService, Upload
    from kiln.serve.context import DirectInference
    from kiln.serve.store import open_store

    store = open_store(_settings(home).database_url())
    inference = DirectInference.from_dirs({AUTH_MODEL: repo / AUTH_MODEL / VERSION})
    service = AuthenticityService(inference, store)

    async def run() -> tuple[int, int]:
        await service.start()
        existing = store.list_references(embedding_space=service.manifest.source_sha256)
        if existing:
            return len(existing), 0
        added = skipped = 0
        for brand, model, photos in _reference_uploads(sizes):
            for view, data in photos:
                try:
                    infos = await service.register_references([Upload(f"{view}.jpg", data, "image/jpeg")], [view], brand, model,
                                                              note="kiln demo: synthetic reference")
                    added += len(infos)
                except KilnError:
                    skipped += 1  # the photo failed the quality gate of this small demo model
        return added, skipped

    # In a thread of its own: the caller may already run an event loop (Playwright's sync API, notebooks).
    with ThreadPoolExecutor(max_workers=1) as pool:
        added, skipped = pool.submit(asyncio.run, run()).result()
    return f"{added} reference photos" + (f" ({skipped} refused by the quality gate)" if skipped else "")


def _references_present(repo: Path, home: Path) -> bool:
    from kiln.engine.manifest import EngineManifest
    from kiln.serve.store import open_store

    try:
        manifest = EngineManifest.model_validate_json((repo / AUTH_MODEL / VERSION / "manifest.json").read_text(encoding="utf-8"))
        store = open_store(_settings(home).database_url())
        return bool(store.list_references(embedding_space=manifest.source_sha256))
    except (OSError, ValueError, KilnError):
        return False


def prepare(home: Path, sizes: DemoSizes, *, reporter: Reporter | None = None, on_step: OnStep | None = None,
            on_done: Callable[[StepResult], None] | None = None) -> Prepared:
    """Builds (or reuses) everything under ``home/demo``; returns the model repository and what each step did."""
    reporter = reporter or NullReporter()
    root = demo_root(home)
    root.mkdir(parents=True, exist_ok=True)
    repo = model_repo(home)
    repo.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    checkpoint = root / "auth.pt"
    samples = samples_dir(home)
    state = _State(root / STATE_FILE)
    settings = asdict(sizes)
    auth_settings = {k: v for k, v in settings.items() if k not in ("sample_size", "samples_per_label", "references_per_design")}
    auth_engine = repo / AUTH_MODEL / VERSION / "manifest.json"
    pack_engines = [repo / m / VERSION / "manifest.json" for m in ("brief_encoder", "style_scorer")]

    steps: list[tuple[str, str, Callable[[], bool], Callable[[], str]]] = [
        ("synthetic training data", _fingerprint("synth", auth_settings, DEMO_DESIGNS),
         lambda: (data / "cases.csv").is_file(), lambda: _synth(data, sizes, reporter)),
        ("train the authentication model", _fingerprint("train", auth_settings, DEMO_DESIGNS),
         checkpoint.is_file, lambda: _train(data, checkpoint, sizes, reporter)),
        ("build its engine (accuracy gate)" if sizes.validate else "build its engine", _fingerprint("build", auth_settings),
         auth_engine.is_file, lambda: _build_auth(checkpoint, data, repo, sizes, reporter, home)),
        ("build the packaging engines", _fingerprint("packaging"),
         lambda: all(p.is_file() for p in pack_engines), lambda: _build_packaging(repo, reporter, home)),
        ("sample cases", _fingerprint("samples", settings, DEMO_DESIGNS),
         lambda: (samples / SAMPLES_INDEX).is_file(), lambda: _write_samples(samples, sizes)),
        ("register demo references", _fingerprint("references", auth_settings, str(home)),
         lambda: _references_present(repo, home), lambda: _register_references(repo, sizes, home)),
    ]
    result = Prepared(home, repo, samples)
    invalidated = False
    for number, (title, fingerprint, present, run) in enumerate(steps, start=1):
        if on_step is not None:
            on_step(number, len(steps), title)
        started = time.perf_counter()
        # A step reruns when its settings changed, its output is gone, or an earlier step was rebuilt
        # (the packaging engines do not depend on the authentication steps).
        depends = number <= 3 or number == 6
        if not (invalidated and depends) and state.done(title, fingerprint) and present():
            step = StepResult(title, True, time.perf_counter() - started, "reused")
        else:
            if depends and number <= 3:
                invalidated = True
            state.forget(title)
            detail = run()
            state.mark(title, fingerprint)
            step = StepResult(title, False, time.perf_counter() - started, detail)
        result.steps.append(step)
        if on_done is not None:
            on_done(step)
    return result
