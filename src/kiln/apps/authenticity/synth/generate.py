"""``kiln auth synth``: labelled-synthetic cases written in the documented dataset layout.

Layout: ``OUT/BRAND/MODEL/VIEW/{authentic,counterfeit}/CASE_VIEW.jpg``, plus ``cases.csv`` (the
case grouping file), ``SYNTHETIC.txt`` and ``metadata.json``. Each JPEG carries a comment saying it
is synthetic. A case is fully determined by (seed, index), so runs are reproducible and parallel.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

from kiln.apps.authenticity.synth.camera import photograph
from kiln.apps.authenticity.synth.defects import DIFFICULTIES, FAMILY_DESCRIPTIONS, Defect, sample_defects
from kiln.apps.authenticity.synth.designs import MODELS, ModelDesign
from kiln.apps.authenticity.synth.render import RENDERERS
from kiln.apps.authenticity.views import VIEWS
from kiln.errors import KilnError
from kiln.progress import NullReporter, Reporter

SYNTHETIC_NOTE = "kiln synthetic data: rendered, not a photograph of a real product"
CASES_FILE = "cases.csv"
CASE_COLUMNS = ("case_id", "brand", "model", "view", "label", "photo_label", "path",
                "difficulty", "defect", "magnitude", "twin_of", "synthetic")


@dataclass
class SyntheticCase:
    case_id: str
    design: ModelDesign
    label: str  # authentic | counterfeit
    difficulty: str
    defects: dict[str, Defect]
    photos: dict[str, np.ndarray] = field(default_factory=dict)  # view -> uint8 RGB
    twins: dict[str, np.ndarray] = field(default_factory=dict)  # flawed view -> the same photo without the flaw


@dataclass(frozen=True)
class SynthSpec:
    seed: int
    size: int = 320
    levels: tuple[str, ...] = ("easy", "medium", "hard")
    counterfeit_fraction: float = 0.5
    views: tuple[str, ...] = VIEWS
    models: tuple[tuple[str, str], ...] = ()  # restrict to these (brand, model); empty = all
    twins: bool = False  # also render each flawed photo without its flaw (training aid)


def _designs(spec: SynthSpec) -> list[ModelDesign]:
    if not spec.models:
        return list(MODELS)
    chosen = [d for d in MODELS if d.key in set(spec.models)]
    if not chosen:
        known = ", ".join(f"{d.brand.slug}/{d.slug}" for d in MODELS)
        raise KilnError("no synthetic design matches the requested models", hint=f"known: {known}")
    return chosen


def make_case(spec: SynthSpec, index: int, *, label: str | None = None, difficulty: str | None = None) -> SyntheticCase:
    """Renders case number ``index`` of the data set defined by ``spec`` (deterministic)."""
    rng = np.random.default_rng([spec.seed, index, 0])
    designs = _designs(spec)
    design = designs[int(rng.integers(0, len(designs)))]
    chosen_label = label or ("counterfeit" if rng.random() < spec.counterfeit_fraction else "authentic")
    level = difficulty or str(spec.levels[int(rng.integers(0, len(spec.levels)))])
    defects = sample_defects(rng, spec.views, level) if chosen_label == "counterfeit" else {}
    case = SyntheticCase(f"s{spec.seed}-{index:05d}", design, chosen_label, level, defects)
    for view in spec.views:
        view_rng = np.random.default_rng([spec.seed, index, 1 + VIEWS.index(view)])
        scene = RENDERERS[view](design, defects.get(view), view_rng, spec.size)
        case.photos[view] = photograph(view_rng, scene)
        if spec.twins and view in defects:
            # Same scene randomness, no flaw: a pair that differs only where the defect is.
            twin_rng = np.random.default_rng([spec.seed, index, 1 + VIEWS.index(view)])
            case.twins[view] = photograph(twin_rng, RENDERERS[view](design, None, twin_rng, spec.size))
    return case


def _photo_path(case: SyntheticCase, view: str, twin: bool = False) -> Path:
    label = "authentic" if twin else case.label
    name = f"{case.case_id}-twin_{view}.jpg" if twin else f"{case.case_id}_{view}.jpg"
    return Path(case.design.brand.slug) / case.design.slug / view / label / name


def _write_case(out: Path, spec: SynthSpec, index: int) -> list[dict[str, str]]:
    case = make_case(spec, index)
    rows = []
    quality_rng = np.random.default_rng([spec.seed, index, 99])
    qualities = {view: int(quality_rng.integers(78, 96)) for view in case.photos}
    for view, pixels in case.photos.items():
        rel = _photo_path(case, view)
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        quality = qualities[view]
        Image.fromarray(pixels).save(target, format="JPEG", quality=quality, comment=SYNTHETIC_NOTE.encode())
        defect = case.defects.get(view)
        rows.append({
            "case_id": case.case_id,
            "brand": case.design.brand.slug,
            "model": case.design.slug,
            "view": view,
            "label": case.label,
            "photo_label": "counterfeit" if defect else "authentic",
            "path": rel.as_posix(),
            "difficulty": case.difficulty if case.label == "counterfeit" else "",
            "defect": defect.family if defect else "",
            "magnitude": f"{defect.magnitude:.3f}" if defect else "",
            "twin_of": "",
            "synthetic": "1",
        })
    for view, pixels in case.twins.items():
        rel = _photo_path(case, view, twin=True)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        quality = qualities[view]  # the same compression as its counterfeit: they differ only in the flaw
        Image.fromarray(pixels).save(out / rel, format="JPEG", quality=quality, comment=SYNTHETIC_NOTE.encode())
        rows.append({
            "case_id": f"{case.case_id}-twin", "brand": case.design.brand.slug, "model": case.design.slug, "view": view,
            "label": "authentic", "photo_label": "authentic", "path": rel.as_posix(), "difficulty": "", "defect": "",
            "magnitude": "", "twin_of": case.case_id, "synthetic": "1",
        })
    return rows


def _worker(args: tuple[Path, SynthSpec, list[int]]) -> list[list[dict[str, str]]]:
    out, spec, indices = args
    return [_write_case(out, spec, index) for index in indices]


def _chunks(indices: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]


@dataclass
class SynthSummary:
    out: Path
    cases: int
    photos: int
    labels: dict[str, int]
    difficulties: dict[str, int]
    seconds: float


def generate_dataset(out: Path, cases: int, spec: SynthSpec, *, workers: int | None = None,
                     reporter: Reporter | None = None) -> SynthSummary:
    """Writes ``cases`` synthetic cases under ``out`` (which must be empty or absent)."""
    import time

    if cases < 1:
        raise KilnError(f"--cases {cases}: need at least one case")
    if spec.size < 64 or spec.size > 4096:
        raise KilnError(f"--size {spec.size} is out of range 64..4096")
    unknown = [level for level in spec.levels if level not in DIFFICULTIES]
    if unknown:
        raise KilnError(f"unknown difficulty levels {unknown}", hint="use " + ", ".join(DIFFICULTIES))
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise KilnError(f"{out} is not empty", hint="choose a new folder; synthetic data is never mixed into existing data")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    reporter = reporter or NullReporter()
    workers = max(1, min(workers or os.cpu_count() or 1, cases))
    chunk = max(1, min(16, cases // (workers * 4) or 1))
    jobs = [(out, spec, part) for part in _chunks(list(range(cases)), chunk)]
    rows: list[dict[str, str]] = []
    with reporter.task(f"render {cases} synthetic cases", total=cases) as task:
        if workers == 1:
            for job in jobs:
                for case_rows in _worker(job):
                    rows.extend(case_rows)
                    task.advance()
        else:
            context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
            with context.Pool(workers) as pool:
                for result in pool.imap_unordered(_worker, jobs):
                    for case_rows in result:
                        rows.extend(case_rows)
                        task.advance()
    rows.sort(key=lambda r: (r["case_id"], VIEWS.index(r["view"])))
    with (out / CASES_FILE).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CASE_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    by_case = {r["case_id"]: r for r in rows if not r["twin_of"]}
    labels = Counter(r["label"] for r in by_case.values())
    levels = Counter(r["difficulty"] for r in by_case.values() if r["label"] == "counterfeit")
    (out / "SYNTHETIC.txt").write_text(
        f"{SYNTHETIC_NOTE}.\n\nEvery image in this folder was rendered by `kiln auth synth` "
        f"(seed {spec.seed}). The brands and models are invented. Use this data to try kiln and to "
        "test it; train production models on photographs of real, verified items.\n",
        encoding="utf-8",
    )
    metadata = {
        "synthetic": True,
        "note": SYNTHETIC_NOTE,
        "generator": "kiln auth synth",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": spec.seed,
        "cases": cases,
        "size": spec.size,
        "difficulty_levels": list(spec.levels),
        "counterfeit_fraction": spec.counterfeit_fraction,
        "views": list(spec.views),
        "twins": spec.twins,
        "models": [f"{d.brand.slug}/{d.slug}" for d in _designs(spec)],
        "defect_families": FAMILY_DESCRIPTIONS,
        "labels": dict(labels),
        "counterfeit_difficulty": dict(levels),
    }
    (out / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    return SynthSummary(out, cases, len(rows), dict(labels), dict(levels), time.perf_counter() - started)
