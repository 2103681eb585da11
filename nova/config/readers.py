"""How each setting is read from its ``NOVA_*`` variable: the parsers, with the messages a
malformed value gets, and the readers that ``nova.config.Settings`` declares its fields with."""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_INDEX_DIRS = "/usr/share/astrometry"
MB = 1024 * 1024


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message says which and how to fix it."""


def parse_int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def parse_flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def parse_choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def parse_seconds_list(env: Mapping[str, str], name: str, default: str) -> tuple[int, ...]:
    """Comma-separated whole seconds, e.g. "60,120,240"."""
    raw = env.get(name, "").strip() or default
    try:
        values = tuple(int(part) for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigError(
            f"{name} must be whole seconds separated by commas, got {raw!r}"
        ) from None
    if not values or any(value < 0 for value in values):
        raise ConfigError(f"{name} must name at least one interval of 0 s or more, got {raw!r}")
    return values


def parse_rate_limit(env: Mapping[str, str], name: str, default: str) -> str:
    """A rate limit in the limits library's notation, e.g. "60/minute;1000/hour"."""
    from limits import parse_many

    value = env.get(name, "").strip() or default
    try:
        parse_many(value)
    except ValueError:
        raise ConfigError(
            f"{name} must be rates such as '60/minute;1000/hour', got {value!r}"
        ) from None
    return value


def default_engine_processes(env: Mapping[str, str]) -> int:
    """CPUs per worker when NOVA_WORKERS says how many workers share this host, else 1."""
    workers = parse_int(env, "NOVA_WORKERS", 0, minimum=0)
    if workers <= 0:
        return 1
    return max(1, len(os.sched_getaffinity(0)) // workers)


# How one setting is read: (the environment, its variable, what has been read so far) -> value.
Reader = Callable[[Mapping[str, str], str, dict[str, Any]], Any]


def declare(
    env: str, doc: str, read: Reader, *, default: object = None, key: str | None = None
) -> Any:
    """Declare a setting: its variable, a one-line doc, how it is read, its (static) default
    and, when it is not the field's name in upper case, its key in Flask's config."""
    return dataclasses.field(
        metadata={"env": env, "doc": doc, "read": read, "default": default, "key": key}
    )


def integer(default: int, minimum: int = 1) -> Reader:
    return lambda env, name, _read: parse_int(env, name, default, minimum)


def flag(default: bool) -> Reader:
    return lambda env, name, _read: parse_flag(env, name, default)


def choice(default: str, *choices: str) -> Reader:
    return lambda env, name, _read: parse_choice(env, name, choices, default)


def rate(default: str) -> Reader:
    return lambda env, name, _read: parse_rate_limit(env, name, default)


def text(default: str) -> Reader:
    return lambda env, name, _read: env.get(name, "").strip() or default


def read_environment(env: Mapping[str, str], name: str, _read: dict[str, Any]) -> str:
    value = env.get(name, "development").strip() or "development"
    if value not in ("development", "production"):
        raise ConfigError(f"NOVA_ENV must be 'development' or 'production', got {value!r}")
    return value


def read_data_dir(env: Mapping[str, str], name: str, _read: dict[str, Any]) -> Path:
    return Path(env.get(name, "data")).expanduser().resolve()


def read_database_url(env: Mapping[str, str], name: str, read: dict[str, Any]) -> str:
    return env.get(name) or f"sqlite:///{read['data_dir'] / 'nova.sqlite'}"


def read_index_dirs(env: Mapping[str, str], name: str, _read: dict[str, Any]) -> tuple[Path, ...]:
    raw = env.get(name, DEFAULT_INDEX_DIRS)
    dirs = tuple(
        Path(part).expanduser() for part in raw.replace(",", ":").split(":") if part.strip()
    )
    if not dirs:
        raise ConfigError("NOVA_INDEX_DIRS names no directory")
    return dirs


def read_megabytes(default: int | None = None) -> Reader:
    """A size given in MB, kept in bytes; no default: the upload limit."""

    def read(env: Mapping[str, str], name: str, read_so_far: dict[str, Any]) -> int:
        fallback = default if default is not None else read_so_far["max_upload_bytes"] // MB
        return parse_int(env, name, fallback) * MB

    return read


def read_archive_bytes(env: Mapping[str, str], name: str, read: dict[str, Any]) -> int:
    return parse_int(env, name, 4 * read["max_upload_bytes"])


def read_engine_processes(env: Mapping[str, str], name: str, _read: dict[str, Any]) -> int:
    return parse_int(env, name, default_engine_processes(env))


def read_secret_key(env: Mapping[str, str], name: str, read: dict[str, Any]) -> str:
    key = env.get(name, "").strip()
    if key:
        return key
    if read["environment"] != "development":
        raise ConfigError(
            "NOVA_SECRET_KEY must be set when NOVA_ENV is not 'development' "
            "(generate one with: python3 -c 'import secrets; print(secrets.token_hex(32))')"
        )
    # Development only: keep one random key per data directory so that sessions
    # survive restarts of `make run` without anyone having to configure a secret.
    key_file = read["data_dir"] / "dev-secret-key"
    if key_file.exists():
        return key_file.read_text().strip()
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


def read_retry_intervals(
    env: Mapping[str, str], name: str, _read: dict[str, Any]
) -> tuple[int, ...]:
    return parse_seconds_list(env, name, "60,120,240,480")


def read_public_url(env: Mapping[str, str], name: str, _read: dict[str, Any]) -> str:
    port = env.get("NOVA_PORT", "8000").strip() or "8000"
    return env.get(name, "").strip().rstrip("/") or f"http://localhost:{port}"
