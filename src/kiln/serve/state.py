"""What one running server holds: repository, metrics, app plugins, and its lifecycle flags."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kiln.errors import KilnError, UnavailableError
from kiln.serve.context import AppContext, AppPlugin
from kiln.serve.inference import BatchingInference
from kiln.serve.metrics import ServerMetrics
from kiln.serve.repository import ModelRepository

if TYPE_CHECKING:
    from kiln.config import Settings

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    """Shared by the HTTP app, the gRPC service and the app plugins of one server."""

    repository: ModelRepository
    settings: Settings
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    plugins: list[AppPlugin] = field(default_factory=list)
    strict_readiness: bool = False
    started: bool = False
    shutting_down: bool = False
    startup_error: str | None = None
    context: AppContext = field(init=False)
    before_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.context = AppContext(settings=self.settings, inference=BatchingInference(self.repository))

    @property
    def ready(self) -> bool:
        """Ready once every model is loaded and warm and the apps have started (and not draining).

        A model that failed to load keeps the server unready only with ``strict_readiness``;
        otherwise it is reported by name in the repository index and the others are served.
        """
        if not self.started or self.shutting_down or self.startup_error is not None:
            return False
        if self.strict_readiness:
            return self.repository.all_ready
        models = list(self.repository)
        return not models or self.repository.any_ready

    def check_accepting(self) -> None:
        if self.shutting_down:
            raise UnavailableError("the server is shutting down", hint="retry on another replica", retry_after_s=5)

    async def start(self) -> None:
        """Loads and warms every model, then starts the app plugins (readiness turns 200 after)."""
        try:
            self.repository.scan()
            await self.repository.load()
            for plugin in self.plugins:
                missing = [m for m in plugin.required_models() if not self.context.inference.is_ready(m)]
                if missing:
                    raise KilnError(
                        f"app {plugin.name!r} needs models {missing} that are not ready",
                        hint=f"add them to the repository {self.repository.root}; see POST /v2/repository/index",
                    )
                await plugin.startup(self.context)
        except KilnError as exc:
            self.startup_error = str(exc)
            log.error("server start-up failed: %s", exc)
            return
        self.started = True
        log.info("server ready: %s", ", ".join(f"{r['name']}/{r['version']}:{r['state']}" for r in self.repository.index()))

    async def stop(self) -> None:
        """Graceful shutdown: refuse new work, let transports finish, shut apps down, drain queues."""
        self.shutting_down = True
        for hook in self.before_shutdown:
            await hook()
        for plugin in reversed(self.plugins):
            try:
                await plugin.shutdown(self.context)
            except Exception:  # one app failing to stop must not keep the queues from draining
                log.exception("app %s failed to shut down cleanly", plugin.name)
        await self.repository.close()

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """For tests and embedders: waits until start-up has finished (ready or failed)."""
        async with asyncio.timeout(timeout_s):
            while not (self.started or self.startup_error):
                await asyncio.sleep(0.01)
