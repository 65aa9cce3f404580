"""Where the demo keeps what it builds, under ``$KILN_HOME/demo`` (paths only; imported by the pages' routes)."""

from __future__ import annotations

from pathlib import Path


def demo_root(home: Path) -> Path:
    return home / "demo"


def model_repo(home: Path) -> Path:
    """The model repository the demo serves (``kiln serve --repo`` accepts it as it is)."""
    return demo_root(home) / "models"


def samples_dir(home: Path) -> Path:
    """Sample cases for the pages' "try a sample case" button: ``samples.json`` + JPEG photos."""
    return demo_root(home) / "samples"


SAMPLES_INDEX = "samples.json"
