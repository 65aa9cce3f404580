"""The model repository: ``REPO/<model>/config.json`` + numbered version folders holding engines.

::

    REPO/
      resnet/
        config.json          # optional; see kiln.serve.model_config
        1/                   # a version: an engine directory (manifest.json + files) ...
        2/engine/            # ... or a folder holding exactly one engine directory

Each model is loaded in its own thread; one that fails (bad config, corrupted engine, other
hardware) is marked UNAVAILABLE with the reason, and the others are served.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterator
from pathlib import Path

from kiln.errors import KilnError, NotFoundError, UnavailableError
from kiln.serve.metrics import ServerMetrics
from kiln.serve.model import ModelState, ServedModel
from kiln.serve.model_config import ModelConfig

log = logging.getLogger(__name__)

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


class ModelRepository:
    """Finds, loads and looks up served models; owns their batchers."""

    def __init__(self, root: Path, metrics: ServerMetrics | None = None, *, models: list[str] | None = None,
                 engine_host: str | None = None) -> None:
        self.root = Path(root)
        self.engine_host = engine_host  # ``--shared-engines``: versions run in the engine host at this address
        self.metrics = metrics
        self.only = set(models) if models else None
        self._models: dict[str, dict[str, ServedModel]] = {}
        self._problems: dict[str, str] = {}  # model name -> why it has no versions at all
        self.loaded = asyncio.Event()

    # --- discovery -------------------------------------------------------------------------------
    def scan(self) -> None:
        """Reads every model folder and its config; problems are recorded by model name, not raised."""
        if not self.root.is_dir():
            raise KilnError(f"model repository {self.root} is not a directory", hint="pass --repo DIR")
        self._models.clear()
        self._problems.clear()
        for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            name = model_dir.name
            if self.only is not None and name not in self.only:
                continue
            if not _MODEL_NAME.fullmatch(name):
                log.warning("skipping %s: not a valid model name", model_dir)
                continue
            try:
                config = ModelConfig.read(model_dir)
            except KilnError as exc:
                self._problems[name] = str(exc)
                continue
            available = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
            chosen = config.version_policy.select(available)
            if not chosen:
                self._problems[name] = f"{model_dir} has no numbered version folders (e.g. {model_dir}/1/)"
                continue
            versions: dict[str, ServedModel] = {}
            for number in chosen:
                served = ServedModel(name, str(number), model_dir / str(number), config, engine_host=self.engine_host)
                if number not in available:
                    served.fail(f"version folder {model_dir / str(number)} does not exist (version_policy asks for it)")
                versions[str(number)] = served
            self._models[name] = versions
        if self.only is not None:
            for name in sorted(self.only - set(self._models) - set(self._problems)):
                self._problems[name] = f"no folder {self.root / name} in the repository"

    async def load(self) -> None:
        """Loads every version concurrently (each in a thread), then starts its batcher."""
        jobs = [self._load_one(model) for versions in self._models.values() for model in versions.values()]
        await asyncio.gather(*jobs)
        for name, reason in self._problems.items():
            log.error("model %s is unavailable: %s", name, reason)
        self.loaded.set()

    async def _load_one(self, model: ServedModel) -> None:
        if model.state is ModelState.UNAVAILABLE:
            return
        metrics = self.metrics.for_model(model.name, model.version) if self.metrics else None
        try:
            runners = await asyncio.to_thread(model.load)
        except KilnError as exc:
            model.fail(str(exc))
            log.error("model %s version %s failed to load: %s", model.name, model.version, exc)
            return
        except Exception as exc:  # a runtime failing on a damaged engine must not take the server down
            model.fail(f"{type(exc).__name__}: {exc}")
            log.exception("model %s version %s failed to load", model.name, model.version)
            return
        model.start(runners, metrics)
        log.info(
            "model %s version %s ready: %d instance(s), max batch %d",
            model.name, model.version, model.config.instances, model.max_batch_size,
        )

    # --- lookup ----------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(set(self._models) | set(self._problems))

    def versions(self, name: str) -> dict[str, ServedModel]:
        if name not in self._models:
            if name in self._problems:
                raise UnavailableError(f"model {name!r} is unavailable: {self._problems[name]}", retry_after_s=30)
            raise NotFoundError(f"unknown model {name!r}", hint="served models: " + (", ".join(self.names()) or "none"))
        return self._models[name]

    def get(self, name: str, version: str | None = None) -> ServedModel:
        """The named version, or the newest READY one (else the newest) when ``version`` is empty."""
        versions = self.versions(name)
        if version:
            if version not in versions:
                raise NotFoundError(
                    f"model {name!r} has no version {version!r}", hint="served versions: " + ", ".join(sorted(versions, key=int))
                )
            return versions[version]
        ordered = sorted(versions.values(), key=lambda m: int(m.version), reverse=True)
        return next((m for m in ordered if m.ready), ordered[0])

    def ready_model(self, name: str, version: str | None = None) -> ServedModel:
        model = self.get(name, version)
        if not model.ready:
            detail = f": {model.reason}" if model.reason else ""
            raise UnavailableError(
                f"model {name!r} version {model.version} is not ready ({model.state.value}{detail})", retry_after_s=5
            )
        return model

    def __iter__(self) -> Iterator[ServedModel]:
        for versions in self._models.values():
            yield from versions.values()

    def index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Triton's repository index: name, version, state and reason of every model version."""
        rows: list[dict[str, str]] = []
        for name in self.names():
            if name in self._problems:
                if not ready_only:
                    rows.append({"name": name, "version": "", "state": ModelState.UNAVAILABLE.value, "reason": self._problems[name]})
                continue
            for model in sorted(self._models[name].values(), key=lambda m: int(m.version)):
                if ready_only and not model.ready:
                    continue
                row = {"name": name, "version": model.version, "state": model.state.value}
                if model.reason:
                    row["reason"] = model.reason
                rows.append(row)
        return rows

    @property
    def all_ready(self) -> bool:
        return not self._problems and all(model.ready for model in self)

    @property
    def any_ready(self) -> bool:
        return any(model.ready for model in self)

    async def close(self) -> None:
        """Stops intake everywhere, then drains every queue and finishes in-flight batches."""
        for model in self:
            if model.batcher is not None:
                model.batcher.queue.close()
        await asyncio.gather(*(model.close() for model in self))
