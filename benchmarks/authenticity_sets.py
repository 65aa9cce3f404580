"""The held-out synthetic test sets of the authentication benchmarks: a mixed-difficulty set and a
hardest-level-only set, each from a seed the training data never used (training uses seed 1).

The default seeds (1001, 1002) name the folders ``test-mixed`` and ``test-hard``; other seeds (for a
fresh check of a choice made while looking at those two) get folders named after the seed.
"""

from __future__ import annotations

from typing import NamedTuple

DEFAULT_SEED = 1001
ALL_LEVELS = ("easy", "medium", "hard")


class TestSet(NamedTuple):
    key: str  # "test-mixed" or "test-hard": how results name it
    folder: str
    seed: int
    levels: tuple[str, ...]


def test_sets(seed: int = DEFAULT_SEED) -> list[TestSet]:
    """The mixed set from ``seed`` and the hard set from ``seed + 1``."""
    suffix = "" if seed == DEFAULT_SEED else f"-s{seed}"
    return [TestSet("test-mixed", f"test-mixed{suffix}", seed, ALL_LEVELS),
            TestSet("test-hard", f"test-hard{suffix}", seed + 1, ("hard",))]
