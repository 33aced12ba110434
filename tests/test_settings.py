"""Settings from arguments, environment and TOML file; the secret key; database URLs.

`parse_database_url` (storage/engine.py) is tested here because it is where a configured
TOKENMANAGER_DATABASE_URL is first judged.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tokenmanager.errors import ConfigurationError
from tokenmanager.settings import MIN_SECRET_KEY_CHARS, Mode, load_secret_key, load_settings
from tokenmanager.storage.engine import parse_database_url

GOOD_KEY = "k" * MIN_SECRET_KEY_CHARS


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only what a test sets itself: no TOKENMANAGER_* from the machine running the suite."""
    for name in list(os.environ):
        if name.startswith("TOKENMANAGER_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The TOML file TOKENMANAGER_CONFIG points at; a test writes it."""
    path = tmp_path / "tokenmanager.toml"
    monkeypatch.setenv("TOKENMANAGER_CONFIG", str(path))
    return path


def test_load_settings_reads_tokenmanager_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENMANAGER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("TOKENMANAGER_MODE", "dev")
    monkeypatch.setenv("TOKENMANAGER_SESSION_TTL_S", "60")
    monkeypatch.setenv("TOKENMANAGER_LOG_LEVEL", "debug")
    settings = load_settings()
    assert (settings.data_dir, settings.mode, settings.is_dev) == (tmp_path, Mode.DEV, True)
    assert (settings.session_ttl_s, settings.log_level) == (60, "DEBUG")


def test_load_settings_defaults_to_production() -> None:
    settings = load_settings()
    assert settings.mode is Mode.PRODUCTION
    assert not settings.is_dev


def test_config_file_supplies_settings(config_file: Path) -> None:
    config_file.write_text('mode = "dev"\nsession_ttl_s = 90\nrotation_grace_s = 0\n')
    settings = load_settings()
    assert (settings.mode, settings.session_ttl_s, settings.rotation_grace_s) == (Mode.DEV, 90, 0)


def test_arguments_beat_environment_which_beats_the_config_file(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file.write_text("session_ttl_s = 1\nrotation_grace_s = 1\nargon2_time_cost = 1\n")
    monkeypatch.setenv("TOKENMANAGER_ROTATION_GRACE_S", "2")
    monkeypatch.setenv("TOKENMANAGER_ARGON2_TIME_COST", "2")
    settings = load_settings(argon2_time_cost=3)
    assert (settings.session_ttl_s, settings.rotation_grace_s, settings.argon2_time_cost) == (
        1,
        2,
        3,
    )


def test_config_file_with_an_unknown_key_is_refused_naming_it(config_file: Path) -> None:
    config_file.write_text('mode = "dev"\nsesion_ttl_s = 60\n')
    with pytest.raises(ConfigurationError, match="unknown settings sesion_ttl_s"):
        load_settings()


@pytest.mark.parametrize(
    ("content", "reason"), [(None, "not found"), ("mode = dev = x", "not valid TOML")]
)
def test_missing_or_malformed_config_file_is_refused(
    config_file: Path, content: str | None, reason: str
) -> None:
    if content is not None:
        config_file.write_text(content)
    with pytest.raises(ConfigurationError, match=reason):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TOKENMANAGER_SESSION_TTL_S", "0"),
        ("TOKENMANAGER_SESSION_TTL_S", "soon"),
        ("TOKENMANAGER_MODE", "staging"),
        ("TOKENMANAGER_LOG_LEVEL", "loud"),
        ("TOKENMANAGER_ARGON2_MEMORY_KIB", "8"),
        ("TOKENMANAGER_POSTGRES_WORK_MEM", "32"),
        ("TOKENMANAGER_POSTGRES_WORK_MEM", "32MB; DROP TABLE tokens"),
        ("TOKENMANAGER_USAGE_WRITERS", "0"),
        ("TOKENMANAGER_USAGE_WRITERS", "17"),
        ("TOKENMANAGER_TIMEZONE", "Mars/Olympus_Mons"),
        ("TOKENMANAGER_TIMEZONE", "../etc/passwd"),
    ],
)
def test_invalid_values_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        load_settings()


@pytest.mark.parametrize(
    "key", ["changeme", "CHANGEME", " change-me ", "secret", "your-secret-key"]
)
def test_placeholder_secret_keys_are_refused(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("TOKENMANAGER_SECRET_KEY", key)
    with pytest.raises(ConfigurationError, match=r"TOKENMANAGER_SECRET_KEY.*placeholder"):
        load_settings()


@pytest.mark.parametrize("key", [GOOD_KEY[:-1], " " * 40, f"  {GOOD_KEY[:-1]}\n"])
def test_secret_keys_shorter_than_the_minimum_are_refused_without_echoing_them(key: str) -> None:
    with pytest.raises(
        ConfigurationError, match=f"at least {MIN_SECRET_KEY_CHARS} characters"
    ) as caught:
        load_settings(secret_key=key)
    assert GOOD_KEY[:-1] not in caught.value.message


def test_secret_key_of_the_minimum_length_is_accepted() -> None:
    settings = load_settings(secret_key=GOOD_KEY)
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == GOOD_KEY


def test_secret_key_never_shows_in_repr_or_str() -> None:
    settings = load_settings(secret_key=GOOD_KEY)
    assert GOOD_KEY not in repr(settings)
    assert GOOD_KEY not in str(settings)


def test_configured_secret_key_is_used_and_no_key_file_is_written(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data", secret_key=GOOD_KEY)
    assert load_secret_key(settings) == GOOD_KEY
    assert not (tmp_path / "data").exists()


def test_generated_secret_key_file_is_private_and_stable(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    key = load_secret_key(load_settings(data_dir=data_dir))
    assert len(key) >= MIN_SECRET_KEY_CHARS
    assert stat.S_IMODE((data_dir / "secret_key").stat().st_mode) == 0o600
    assert load_secret_key(load_settings(data_dir=data_dir)) == key
    assert [path.name for path in data_dir.iterdir()] == ["secret_key"]


def test_generated_secret_keys_differ_between_data_dirs(tmp_path: Path) -> None:
    first = load_secret_key(load_settings(data_dir=tmp_path / "one"))
    second = load_secret_key(load_settings(data_dir=tmp_path / "two"))
    assert first != second


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text(GOOD_KEY)
    key_file.chmod(mode)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_secret_key(load_settings(data_dir=tmp_path))


def test_key_file_holding_a_placeholder_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "secret_key"
    key_file.write_text("changeme\n")
    key_file.chmod(0o600)
    with pytest.raises(ConfigurationError, match="placeholder"):
        load_secret_key(load_settings(data_dir=tmp_path))


def test_resolved_database_url_defaults_to_an_absolute_sqlite_file_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(data_dir="state")
    assert settings.resolved_database_url == f"sqlite:///{tmp_path.resolve()}/state/tokenmanager.db"


def test_resolved_database_url_is_the_configured_one_when_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TOKENMANAGER_DATABASE_URL", "postgresql://tm@db:5432/tm")
    assert load_settings().resolved_database_url == "postgresql://tm@db:5432/tm"


@pytest.mark.parametrize(
    ("raw", "driver", "database"),
    [
        ("sqlite:///tm.db", "sqlite+aiosqlite", "tm.db"),
        ("sqlite:////var/lib/tm/tm.db", "sqlite+aiosqlite", "/var/lib/tm/tm.db"),
        ("postgresql://tm@db:5432/tm", "postgresql+asyncpg", "tm"),
        ("postgres://tm@db/tm", "postgresql+asyncpg", "tm"),
        ("postgresql+psycopg2://tm@db/tm", "postgresql+asyncpg", "tm"),
        ("postgresql+asyncpg://tm@db/tm", "postgresql+asyncpg", "tm"),
    ],
)
def test_parse_database_url_maps_to_the_async_driver(raw: str, driver: str, database: str) -> None:
    url = parse_database_url(raw)
    assert (url.drivername, url.database) == (driver, database)


def test_parse_database_url_renames_libpq_sslmode_to_asyncpg_ssl() -> None:
    url = parse_database_url("postgresql://tm@db/tm?sslmode=require&application_name=tm")
    assert dict(url.query) == {"ssl": "require", "application_name": "tm"}


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("mysql://tm:hunter2@db/tm", "unsupported database 'mysql'"),
        ("oracle://tm@db/tm", "unsupported database 'oracle'"),
        ("garbage", "not a database URL"),
        ("", "not a database URL"),
        ("sqlite://", "needs a file path"),
    ],
)
def test_parse_database_url_refuses_other_databases_and_garbage(raw: str, reason: str) -> None:
    with pytest.raises(ConfigurationError, match=reason) as caught:
        parse_database_url(raw)
    assert "hunter2" not in caught.value.message


def test_timezone_defaults_to_utc_and_takes_iana_names(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().zone.key == "UTC"
    monkeypatch.setenv("TOKENMANAGER_TIMEZONE", "Asia/Kolkata")
    assert load_settings().zone.key == "Asia/Kolkata"
