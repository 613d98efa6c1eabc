"""Settings errors name the variable and never print a token, a key or a password."""

from __future__ import annotations

from pathlib import Path

import pytest

from rampgate.errors import ConfigurationError
from rampgate.settings import load_settings, redact_url_password

SECRET = "topsecret-hmac-key-0123456789"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RAMPGATE_JWT_SECRET", "RAMPGATE_JWT_PUBLIC_KEY", "RAMPGATE_ADMIN_TOKEN", "RAMPGATE_STORE_TIMEOUT_MS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAMPGATE_CONFIG", str(tmp_path / "absent.toml"))


def test_cross_setting_error_hides_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAMPGATE_JWT_SECRET", SECRET)
    monkeypatch.setenv("RAMPGATE_JWT_PUBLIC_KEY", "/nonexistent")
    monkeypatch.setenv("RAMPGATE_ADMIN_TOKEN", "admin-token-XYZ")

    with pytest.raises(ConfigurationError) as raised:
        load_settings()

    message = str(raised.value)
    assert SECRET not in message
    assert "admin-token-XYZ" not in message
    assert "RAMPGATE_JWT_SECRET" in message
    assert "Value error" not in message


def test_invalid_number_names_variable_and_hides_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAMPGATE_ADMIN_TOKEN", "admin-token-XYZ")
    monkeypatch.setenv("RAMPGATE_STORE_TIMEOUT_MS", "abc")

    with pytest.raises(ConfigurationError) as raised:
        load_settings()

    assert "RAMPGATE_STORE_TIMEOUT_MS" in str(raised.value)
    assert "'abc'" in str(raised.value)
    assert "admin-token-XYZ" not in str(raised.value)


def test_invalid_secret_value_not_shown() -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(admin_token=12345)

    assert "RAMPGATE_ADMIN_TOKEN" in str(raised.value)
    assert "12345" not in str(raised.value)


def test_url_password_redacted() -> None:
    assert redact_url_password("redis://user:pa55@127.0.0.1:6379/0") == "redis://user:***@127.0.0.1:6379/0"
    assert redact_url_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_unsupported_database_url_hides_password() -> None:
    from rampgate.catalog.database import normalise_url

    with pytest.raises(ConfigurationError) as raised:
        normalise_url("mysql://operator:hunter2@127.0.0.1/catalog")

    assert "hunter2" not in str(raised.value)
    assert "RAMPGATE_DATABASE_URL" in str(raised.value)
