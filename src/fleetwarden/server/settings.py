"""Typed server settings: one TOML file plus ``FLEETWARDEN_*`` environment overrides.

Parsed once at start-up and passed explicitly; nothing reads the environment later.
Precedence (highest first): constructor arguments, environment, TOML file, defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from fleetwarden.errors import ConfigError

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLEETWARDEN_", extra="forbid", frozen=True)

    data_dir: Path = Path("fleetwarden-data")
    #: SQLAlchemy URL; default SQLite (WAL) at ``<data_dir>/fleetwarden.db``.
    #: PostgreSQL: ``postgresql+psycopg://user@host:5432/db``.
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: Serve HTTPS directly (otherwise terminate TLS at a proxy or balancer; see ADR 0001).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    #: Extra uvicorn worker processes; each is a stateless replica of the same app.
    workers: int = Field(1, ge=1, le=64)

    poll_interval_seconds: int = Field(300, ge=1, le=86_400)
    #: A device not seen for this long shows as offline; default three poll intervals.
    offline_after_seconds: int | None = Field(None, ge=1)
    #: How often this replica writes the "last seen" times it collected from polls.
    presence_flush_seconds: float = Field(15.0, gt=0, le=3600)
    #: How often the rollout controller ticks when nothing wakes it earlier.
    rollout_tick_seconds: float = Field(5.0, gt=0, le=3600)

    device_cert_days: int = Field(30, ge=1, le=3650)
    #: A CRL's nextUpdate is this far after its thisUpdate; it is re-signed at half that age.
    crl_validity_hours: int = Field(24, ge=1, le=24 * 30)
    session_token_minutes: int = Field(60, ge=1, le=24 * 60)

    #: TUF: hashed bins of the image repository (4: 16 bins, 8: 256) and of the director
    #: (2**bits succinct bins; 8 suits ~25,000 devices, 10 suits 100,000+).
    tuf_image_bin_bits: Literal[4, 8] = 4
    tuf_director_bin_bits: int = Field(8, ge=1, le=16)
    #: A server started without TUF keys creates a 1-of-1 root key under its data directory
    #: (development). Set false in production: the server then refuses to start until
    #: `fleetwarden keys init` created offline root keys.
    tuf_dev_keys: bool = True
    #: How often a replica re-signs what is due (the timestamp) and publishes lazily removed
    #: director entries.
    tuf_refresh_seconds: float = Field(10.0, gt=0, le=3600)
    challenge_max_age_seconds: int = Field(120, ge=5, le=3600)
    max_upload_bytes: int = Field(16 * 1024**3, ge=1)

    #: Bootstrap admin token: when set and no admin exists, this value becomes one.
    #: Otherwise a random one is created on first start and printed once.
    bootstrap_admin_token: SecretStr | None = None

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file must be set together")
        return self

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'fleetwarden.db'}"

    @property
    def offline_after(self) -> int:
        return self.offline_after_seconds or 3 * self.poll_interval_seconds

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = init_settings.init_kwargs.pop("_toml_file", None)  # type: ignore[attr-defined]
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_file))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Settings:
        """Build settings from a TOML file, the environment and explicit overrides.

        Raises:
            ConfigError: the file is missing or a value is invalid; the message names it.
        """
        if config_file is not None and not config_file.is_file():
            raise ConfigError(f"configuration file not found: {config_file}")
        try:
            return cls(_toml_file=config_file, **overrides)  # type: ignore[call-arg]
        except ValidationError as e:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
                for err in e.errors()
            )
            raise ConfigError(f"invalid configuration: {problems}") from e
