"""Typed settings read from the environment (prefix ``KILN_``) with strict casting."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, get_args

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

StagePhotos = Literal["off", "checked", "decoded"]  # when a case's photos are written with photo files
STAGE_PHOTOS: tuple[str, ...] = get_args(StagePhotos)

_TRUE = {"1", "on", "t", "true", "y", "yes"}  # pydantic's spellings of a bool
_FALSE = {"0", "off", "f", "false", "n", "no"}


def stage_photos_moment(value: object) -> object:
    """``KILN_STAGE_PHOTOS`` was a switch before it named a moment: its true spellings still mean
    ``checked`` and its false ones ``off``; any case and surrounding blanks."""
    if isinstance(value, bool):
        return "checked" if value else "off"
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    return "checked" if text in _TRUE else "off" if text in _FALSE else text


class Settings(BaseSettings):
    """Process-wide settings; every field can be set as ``KILN_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="KILN_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".kiln", description="state, caches, demo data")
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    db: str | None = Field(default=None, description="SQLAlchemy URL; default SQLite under home")
    broker: str | None = Field(default=None, description="amqp:// URL; default in-process queue")
    webhook_secret: str | None = Field(default=None, description="HMAC-SHA256 key that signs job webhooks")
    webhook_takeover_s: float | None = Field(
        default=None, ge=1, le=86400,
        description="seconds a finished job's webhook may go without a delivery attempt before another process "
                    "takes it over (default: the sender's lease, 80 s)")
    log_level: str = "info"
    secret_key: str | None = Field(default=None, description="signs report links; the same on every replica")
    photo_files: bool = Field(default=False, description="SQLite stores: keep case photos as files beside the database "
                              "(DATABASE.photos/, named by SHA-256) instead of inside it")
    stage_photos: StagePhotos = Field(
        default="decoded", description="with photo files, when a case's photos are written: decoded (the default: from "
                                       "the end of decoding on, while the engine runs), checked (from the request's "
                                       "checks on, while the photos are decoded and the engine runs; 1/true mean this), "
                                       "off (in the case's save, after the engine); docs/benchmarks/gpu.md")
    decode_device: str = Field(default="auto", description="where the apps decode photos: auto (with nvJPEG on the GPU "
                               "when the app's engine runs on one), cpu, cuda")

    @field_validator("stage_photos", mode="before")
    @classmethod
    def _read_stage_photos(cls, value: object) -> object:
        return stage_photos_moment(value)

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def engine_cache_dir(self) -> Path:
        return self.cache_dir / "engines"

    def database_url(self) -> str:
        return self.db or f"sqlite:///{self.home / 'kiln.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; a ``KILN_*`` variable that does not parse is a ``KilnError`` naming it."""
    from pydantic import ValidationError

    from kiln.errors import KilnError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(f"KILN_{'_'.join(str(part) for part in error['loc']).upper()}={error['input']!r}: "
                             f"{error['msg']}" for error in exc.errors())
        raise KilnError(f"bad setting in the environment: {problems}", hint="fix or unset that variable") from None
