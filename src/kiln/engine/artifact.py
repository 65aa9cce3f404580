"""Engine artifacts on disk: integrity, hardware/runtime binding, and the content-addressed cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.engine.manifest import MANIFEST_NAME, EngineManifest
from kiln.errors import EngineMismatchError, KilnError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def hash_files(directory: Path, names: list[str]) -> dict[str, str]:
    return {name: sha256_file(directory / name) for name in sorted(names)}


def verify_files(directory: Path, manifest: EngineManifest) -> None:
    """Refuse an engine whose files are missing or were changed after the build."""
    for name, expected in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise KilnError(f"engine {directory}: file {name} is missing", hint="rebuild the engine")
        actual = sha256_file(path)
        if actual != expected:
            raise KilnError(
                f"engine {directory}: file {name} is corrupted (sha256 {actual[:12]}…, manifest says {expected[:12]}…)",
                hint="rebuild the engine or restore the file from a backup",
            )


def compatibility_problems(required: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Names each key whose value on this machine differs from what the engine was built for."""
    problems = []
    for key, want in required.items():
        have = current.get(key)
        if have != want:
            problems.append(f"{key}: engine built for {want!r}, this machine has {have!r}")
    return problems


def check_compatible(directory: Path, manifest: EngineManifest, current: dict[str, Any]) -> None:
    problems = compatibility_problems(manifest.compatibility, current)
    if problems:
        raise EngineMismatchError(
            f"engine {directory} cannot run here: " + "; ".join(problems),
            hint="rebuild it on this machine (`kiln build ... ` or load with rebuild=True / `--rebuild`)",
        )


@dataclass(frozen=True)
class CachedEngine:
    path: Path
    manifest: EngineManifest


class EngineCache:
    """Engines stored by cache key (a hash of everything that determines the build)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        return self.root / key[:2] / key

    def lookup(self, key: str) -> Path | None:
        path = self.path_for(key)
        if (path / MANIFEST_NAME).is_file():
            try:
                manifest = EngineManifest.read(path)
                verify_files(path, manifest)
            except KilnError:
                return None
            return path
        return None

    def store(self, key: str, built: Path) -> Path:
        """Move a freshly built engine directory into the cache atomically."""
        target = self.path_for(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        os.replace(built, target)
        return target

    def staging_dir(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".build-", dir=self.root))

    def entries(self) -> Iterator[CachedEngine]:
        if not self.root.is_dir():
            return
        for manifest_path in sorted(self.root.glob(f"*/*/{MANIFEST_NAME}")):
            try:
                yield CachedEngine(manifest_path.parent, EngineManifest.read(manifest_path.parent))
            except KilnError:
                continue


def copy_engine(source: Path, target: Path) -> Path:
    """Place an engine at ``target`` (the user's -o directory), replacing an older engine there."""
    target = Path(target)
    if target.exists():
        if not (target / MANIFEST_NAME).is_file() and any(target.iterdir()):
            raise KilnError(
                f"output directory {target} exists and is not an engine; refusing to overwrite it",
                hint="choose an empty or new directory for -o",
            )
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".kiln-", dir=target.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
