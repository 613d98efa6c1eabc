"""Settings from ``RAMPGATE_*`` environment variables or ``rampgate.toml``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from rampgate.errors import ConfigurationError

DEFAULT_DATABASE_URL = "sqlite:///rampgate.db"


class Settings(BaseSettings):
    """Every setting of a rampgate process.

    Environment variables win over ``rampgate.toml``, whose keys are the
    variable names in lower case without the ``RAMPGATE_`` prefix. The file is
    read from the working directory, or from the path in ``RAMPGATE_CONFIG``.
    """

    model_config = SettingsConfigDict(env_prefix="RAMPGATE_", extra="ignore")

    database_url: str = DEFAULT_DATABASE_URL
    counter_store: Literal["memory", "redis", "postgres"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "rampgate:"
    store_timeout_ms: int = Field(50, ge=1, le=60_000)
    service_token: str | None = None
    admin_token: str | None = None
    admin_readonly_token: str | None = None
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    webhook_url: str | None = None
    audit_buffer_rows: int = Field(100_000, ge=100)
    audit_spill_path: str | None = None
    log_level: str = "INFO"
    log_format: Literal["json", "console", "auto"] = "auto"

    @field_validator("redis_prefix")
    @classmethod
    def _prefix_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty; the default is 'rampgate:'")
        return value

    @model_validator(mode="after")
    def _one_jwt_key(self) -> Settings:
        if self.jwt_secret and self.jwt_public_key:
            raise ValueError(
                "set RAMPGATE_JWT_SECRET (HS256) or RAMPGATE_JWT_PUBLIC_KEY (RS256), not both"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = Path(os.environ.get("RAMPGATE_CONFIG", "rampgate.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


# Settings whose values must never reach a message or a log line.
SECRET_SETTINGS = frozenset({"service_token", "admin_token", "admin_readonly_token", "jwt_secret", "jwt_public_key"})
# Settings that are URLs and may carry a password.
URL_SETTINGS = frozenset({"database_url", "redis_url", "webhook_url"})


class HiddenValue:
    """Stands for a setting's value in an error message, so that no secret is printed."""

    def __repr__(self) -> str:
        return "(value not shown)"


def load_settings(**overrides: Any) -> Settings:
    """Read the settings, turning validation errors into :class:`ConfigurationError`.

    The message names the variable and never shows a token, a key or a
    password: a check across several settings shows no value at all, because
    its input is every setting.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**overrides)
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        location = first["loc"]
        if not location:
            raise ConfigurationError("settings", HiddenValue(), message) from None

        field = ".".join(str(part) for part in location)
        value = first.get("input")
        if field in SECRET_SETTINGS:
            value = HiddenValue()
        elif field in URL_SETTINGS and isinstance(value, str):
            value = redact_url_password(value)
        raise ConfigurationError(f"RAMPGATE_{field.upper()}", value, message) from None


def redact_url_password(url: str) -> str:
    """Return ``url`` with the password, if any, replaced by ``***``, for messages."""
    scheme, separator, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    credentials, at, hosts = netloc.rpartition("@")
    if not at or ":" not in credentials:
        return url
    username = credentials.split(":", 1)[0]
    return f"{scheme}{separator}{username}:***@{hosts}{slash}{path}"
