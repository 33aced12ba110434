"""Settings: read once, from `TOKENMANAGER_*` environment variables and an optional TOML file.

Nothing here runs at import time; `load_settings()` is called by the composition roots (the CLI
and `create_app`) and the result is passed down. Every field is documented in docs/configuration.md.
"""

from __future__ import annotations

import os
import secrets
import stat
import tomllib
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from tokenmanager.errors import ConfigurationError
from tokenmanager.security.models import parse_auto_suspend

SECRET_KEY_FILE = "secret_key"  # noqa: S105 - a file name
MIN_SECRET_KEY_CHARS = 32

# Values people paste from examples; a deployment that runs with one of them has no secret at all.
PLACEHOLDER_SECRET_KEYS = frozenset(
    {
        "changeme",
        "change-me",
        "change_me",
        "changethis",
        "secret",
        "secret-key",
        "secret_key",
        "your-secret-key",
        "your_secret_key",
        "please-change-me",
        "insecure",
        "development",
        "dev",
        "test",
        "password",
        "xxx",
    }
)


class Mode(StrEnum):
    PRODUCTION = "production"
    DEV = "dev"


class Settings(BaseSettings):
    """All of the product's configuration. Field names map to `TOKENMANAGER_<NAME>`."""

    model_config = SettingsConfigDict(
        env_prefix="TOKENMANAGER_", extra="forbid", frozen=True, validate_default=True
    )

    data_dir: Path = Field(default=Path("data"), description="Where local state lives.")
    database_url: str | None = Field(
        default=None,
        description="sqlite:///path/tm.db or postgresql://user@host:5432/db; "
        "default: a SQLite file in the data dir.",
    )
    postgres_work_mem: str = Field(
        default="32MB",
        pattern=r"^([1-9][0-9]*(kB|MB|GB))?$",
        description="work_mem of the control plane's PostgreSQL sessions (empty: the server's).",
    )
    mode: Mode = Field(default=Mode.PRODUCTION, description="production or dev.")
    secret_key: SecretStr | None = Field(
        default=None,
        description="Encrypts upstream credentials and signs sessions; generated on first run "
        "and kept in the data dir when unset.",
    )
    redis_url: str | None = Field(
        default=None, description="Optional Redis, e.g. redis://127.0.0.1:6379/0."
    )
    session_ttl_s: int = Field(default=12 * 3600, gt=0, description="Admin session lifetime.")
    rotation_grace_s: int = Field(
        default=24 * 3600, ge=0, description="How long a rotated token's old secret keeps working."
    )
    argon2_time_cost: int = Field(default=3, ge=1, description="argon2id iterations.")
    argon2_memory_kib: int = Field(default=65536, ge=64, description="argon2id memory in KiB.")
    log_level: str = Field(default="INFO", description="Python logging level name.")
    timezone: str = Field(
        default="UTC",
        description="IANA time zone (e.g. Europe/Paris) in which calendar days, months and "
        "budget periods are cut; storage stays UTC.",
    )
    # Gateway
    upstream_allow: str = Field(
        default="",
        description="Comma-separated CIDRs and host names the SSRF guard lets routes reach even "
        "though they are private, loopback or link-local (e.g. 127.0.0.0/8,internal.example).",
    )
    trusted_proxies: str = Field(
        default="",
        description="Comma-separated CIDRs whose X-Forwarded-For header the gateway believes.",
    )
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, gt=0, description="Largest request body the gateway forwards."
    )
    max_header_bytes: int = Field(
        default=32 * 1024, gt=0, description="Largest total size of request headers (else 431)."
    )
    rate_limit_per_s: int | None = Field(
        default=None, gt=0, description="Default requests per second per token (unset: none)."
    )
    rate_limit_per_min: int | None = Field(
        default=None, gt=0, description="Default requests per minute per token (unset: none)."
    )
    change_poll_interval_s: float = Field(
        default=0.5, gt=0, le=10, description="How often gateways poll the store for changes."
    )
    gateway_max_connections: int = Field(
        default=8_000,
        ge=1,
        le=1_000_000,
        description="Client connections a gateway process is sized for (open-file limit).",
    )
    # Usage ingestion and retention
    ingest_open: bool = Field(
        default=False,
        description="Accept POST /api/usage-log without an ingest key (only on a trusted network).",
    )
    ingest_max_batch_items: int = Field(
        default=10_000, gt=0, le=100_000, description="Most records in one batch post."
    )
    ingest_max_batch_bytes: int = Field(
        default=10 * 1024 * 1024, gt=0, description="Largest batch post body (else 413)."
    )
    retention_raw_days: int = Field(
        default=30, ge=1, description="Days raw usage rows are kept (rollups keep the figures)."
    )
    retention_rollup_days: int = Field(
        default=400, ge=1, description="Days hourly and daily rollup rows are kept."
    )
    # Usage recorder
    usage_flush_interval_s: float = Field(
        default=0.2, gt=0, le=10, description="Longest time an event waits before it is written."
    )
    usage_batch_size: int = Field(
        default=1000, gt=0, le=50_000, description="Most events written in one transaction."
    )
    usage_writers: int = Field(
        default=2,
        ge=1,
        le=16,
        description="Usage batches a recorder writing in its own process writes at the same "
        "time on PostgreSQL (SQLite, and a gateway worker's usage-writer child, write one at a "
        "time).",
    )
    usage_queue_size: int = Field(
        default=100_000, gt=0, description="Events held in memory before they go to the spool."
    )
    spool_max_bytes: int = Field(
        default=1024 * 1024 * 1024,
        gt=0,
        description="Largest size of the on-disk spool; beyond it new events are dropped and "
        "counted.",
    )
    # Security audit (docs/security.md)
    security_detect_enabled: bool = Field(
        default=True, description="Run the anomaly detectors in this control-plane process."
    )
    security_detect_interval_s: float = Field(
        default=60.0, gt=0, le=3600, description="How often the detectors read new usage rows."
    )
    security_detect_max_rows: int = Field(
        default=50_000, gt=0, le=1_000_000, description="Most raw usage rows a detector run reads."
    )
    security_auto_suspend: str = Field(
        default="",
        description="Detectors whose critical findings suspend the token: a comma list, or all.",
    )
    security_webhook_interval_s: float = Field(
        default=5.0, gt=0, le=600, description="How often due webhook deliveries are attempted."
    )

    @field_validator("security_auto_suspend")
    @classmethod
    def _known_detectors(cls, value: str) -> str:
        parse_auto_suspend(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone name such as UTC or Europe/Paris") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return upper

    @field_validator("secret_key")
    @classmethod
    def _refuse_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_secret_key(value.get_secret_value())
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments beat the environment, which beats the config file.
        return (init_settings, env_settings, _TomlFileSource(settings_cls))

    @property
    def zone(self) -> ZoneInfo:
        """The zone of TOKENMANAGER_TIMEZONE (validated at load)."""
        return ZoneInfo(self.timezone)

    @property
    def is_dev(self) -> bool:
        return self.mode is Mode.DEV

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'tokenmanager.db').resolve()}"


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads `TOKENMANAGER_CONFIG` (a TOML file with the same keys, lower case, no prefix)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ below does the whole job

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("TOKENMANAGER_CONFIG")
        if not path:
            return {}
        try:
            with Path(path).open("rb") as config_file:
                values = tomllib.load(config_file)
        except FileNotFoundError as exc:
            raise ConfigurationError(f"config file {path} (TOKENMANAGER_CONFIG) not found") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigurationError(f"config file {path} is not valid TOML: {exc}") from exc
        unknown = sorted(set(values) - set(Settings.model_fields))
        if unknown:
            raise ConfigurationError(f"config file {path}: unknown settings {', '.join(unknown)}")
        return values


def check_secret_key(value: str) -> None:
    """Raise ValueError for a secret key that protects nothing."""
    if value.strip().lower() in PLACEHOLDER_SECRET_KEYS:
        raise ValueError("is a known placeholder value; set a random secret")
    if len(value.strip()) < MIN_SECRET_KEY_CHARS:  # blanks protect nothing either
        raise ValueError(f"must be at least {MIN_SECRET_KEY_CHARS} characters")


def load_settings(**overrides: Any) -> Settings:
    """Build settings from overrides, environment and config file; ConfigurationError if invalid."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"TOKENMANAGER_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None


def load_secret_key(settings: Settings) -> str:
    """The configured secret key, or the one kept in the data dir (created 0600 on first run)."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    key_path = settings.data_dir / SECRET_KEY_FILE
    if key_path.exists():
        return _read_key_file(key_path)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        staged = key_path.with_name(f".{SECRET_KEY_FILE}.{os.getpid()}")
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as key_file:
            key_file.write(secrets.token_urlsafe(48))
        try:
            # link() is atomic and refuses to overwrite: of two processes starting together,
            # exactly one key wins and both read it back.
            os.link(staged, key_path)
        except FileExistsError:
            pass
        finally:
            staged.unlink()
    except PermissionError as exc:
        raise ConfigurationError(f"data dir {settings.data_dir} is not writable: {exc}") from None
    return _read_key_file(key_path)


def _read_key_file(key_path: Path) -> str:
    mode = stat.S_IMODE(key_path.stat().st_mode)
    if mode & 0o077:
        raise ConfigurationError(
            f"{key_path} is readable by other users (mode {mode:o}); run: chmod 600 {key_path}"
        )
    value = key_path.read_text().strip()
    try:
        check_secret_key(value)
    except ValueError as exc:
        raise ConfigurationError(f"{key_path}: secret key {exc}") from None
    return value
