"""Which counterfeit defect families a trained authentication model catches, per difficulty level.

Makes fresh synthetic cases (seed 4242, never used for training), scores every photo with the FP32
checkpoint, sets the photo threshold at a 5 % false-alarm rate on the clean photos, and prints the share
of flawed photos above it per family and level, plus the false-alarm rate of clean photos per view.

    python benchmarks/authenticity_families.py CHECKPOINT [--cases 50] [--size 176] [--image-size 160]
"""

from __future__ import annotations

import argparse
import io
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--cases", type=int, default=50, help="counterfeit and authentic cases per level")
    parser.add_argument("--size", type=int, default=176, help="synthetic photo size")
    parser.add_argument("--image-size", type=int, default=160, help="the model's input size")
    args = parser.parse_args()

    from PIL import Image

    from kiln.apps.authenticity.assessment import head_outputs
    from kiln.apps.authenticity.imaging import decode_photo
    from kiln.apps.authenticity.predict import CheckpointPredictor
    from kiln.apps.authenticity.synth import SynthSpec
    from kiln.apps.authenticity.synth.generate import make_case
    from kiln.apps.authenticity.train import PREPROCESSING

    pre = PREPROCESSING.with_size(args.image_size, args.image_size)
    predictor = CheckpointPredictor(args.checkpoint)

    def pixels(photo: np.ndarray) -> np.ndarray:
        buffer = io.BytesIO()
        Image.fromarray(photo).save(buffer, format="JPEG", quality=90)
        return decode_photo(buffer.getvalue(), pre).pixels

    rows: list[tuple[str, str, str, float]] = []  # family ("" when clean), level, view, logit
    for level in ("easy", "medium", "hard"):
        spec = SynthSpec(seed=4242, size=args.size, levels=(level,), twins=False)
        for i in range(args.cases):
            for label, index in (("counterfeit", i), ("authentic", 100_000 + i)):
                case = make_case(spec, index, label=label, difficulty=level)
                views = list(case.photos)
                outputs = predictor(np.stack([pixels(case.photos[v]) for v in views]))
                head = predictor.calibration.head_for(case.design.brand.slug, case.design.slug)
                logits, _ = head_outputs(outputs, len(views), head)
                for view, logit in zip(views, logits, strict=True):
                    defect = case.defects.get(view)
                    rows.append((defect.family if defect else "", level, view, float(logit)))
    clean = np.array([r[3] for r in rows if not r[0]])
    threshold = float(np.quantile(clean, 0.95))
    print(f"{len(clean)} clean photos; photo threshold at 5 % false alarms: logit {threshold:.3f}")
    caught: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for family, level, _, logit in rows:
        if family:
            caught[(level, family)].append(logit > threshold)
    families = sorted({family for _, family in caught})
    print("| level | " + " | ".join(families) + " |")
    print("|---|" + "---:|" * len(families))
    for level in ("easy", "medium", "hard"):
        cells = [f"{np.mean(caught[(level, f)]):.2f} ({len(caught[(level, f)])})" if caught[(level, f)] else "" for f in families]
        print(f"| {level} | " + " | ".join(cells) + " |")
    by_view: dict[str, list[float]] = defaultdict(list)
    for family, _, view, logit in rows:
        if not family:
            by_view[view].append(logit)
    print("false alarms of clean photos per view:",
          {view: round(float(np.mean(np.array(v) > threshold)), 3) for view, v in sorted(by_view.items())})


if __name__ == "__main__":
    main()
