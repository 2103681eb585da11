"""Settings read from ``NOVA_*`` environment variables.

Every setting has a documented default (see README.md, "Configuration") so that
``make run`` works with no configuration at all on a development machine.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_INDEX_DIRS = "/usr/share/astrometry"


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message says which and how to fix it."""


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
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


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...], default: str) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _seconds_list(env: Mapping[str, str], name: str, default: str) -> list[int]:
    """Comma-separated whole seconds, e.g. "60,120,240"."""
    raw = env.get(name, "").strip() or default
    try:
        values = [int(part) for part in raw.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"{name} must be whole seconds separated by commas, got {raw!r}"
        ) from None
    if not values or any(value < 0 for value in values):
        raise ConfigError(f"{name} must name at least one interval of 0 s or more, got {raw!r}")
    return values


def _rate_limit(env: Mapping[str, str], name: str, default: str) -> str:
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


def _secret_key(env: Mapping[str, str], environment: str, data_dir: Path) -> str:
    key = env.get("NOVA_SECRET_KEY", "").strip()
    if key:
        return key
    if environment != "development":
        raise ConfigError(
            "NOVA_SECRET_KEY must be set when NOVA_ENV is not 'development' "
            "(generate one with: python3 -c 'import secrets; print(secrets.token_hex(32))')"
        )
    # Development only: keep one random key per data directory so that sessions
    # survive restarts of `make run` without anyone having to configure a secret.
    key_file = data_dir / "dev-secret-key"
    if key_file.exists():
        return key_file.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


def default_engine_processes(env: Mapping[str, str]) -> int:
    """CPUs per worker when NOVA_WORKERS says how many workers share this host, else 1."""
    workers = _int(env, "NOVA_WORKERS", 0, minimum=0)
    if workers <= 0:
        return 1
    return max(1, len(os.sched_getaffinity(0)) // workers)


def load_config(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Build the Flask config mapping from ``env`` (default: ``os.environ``).

    The groups are read in this order, so of two malformed settings the same one is reported.
    """
    env = os.environ if env is None else env
    environment = env.get("NOVA_ENV", "development").strip() or "development"
    if environment not in ("development", "production"):
        raise ConfigError(f"NOVA_ENV must be 'development' or 'production', got {environment!r}")
    data_dir = Path(env.get("NOVA_DATA_DIR", "data")).expanduser().resolve()
    index_dirs = [
        Path(part).expanduser()
        for part in env.get("NOVA_INDEX_DIRS", DEFAULT_INDEX_DIRS).replace(",", ":").split(":")
        if part.strip()
    ]
    if not index_dirs:
        raise ConfigError("NOVA_INDEX_DIRS names no directory")
    max_upload_mb = _int(env, "NOVA_MAX_UPLOAD_MB", 200)
    return {
        "NOVA_ENV": environment,
        "DATA_DIR": data_dir,
        "SQLALCHEMY_DATABASE_URI": env.get("NOVA_DATABASE_URL")
        or f"sqlite:///{data_dir / 'nova.sqlite'}",
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        "REDIS_URL": env.get("NOVA_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "INDEX_DIRS": index_dirs,
        **_engine_settings(env),
        **_decode_limits(env, max_upload_mb),
        **_session_settings(env, environment, data_dir),
        **_input_limits(env, max_upload_mb),
        **_worker_settings(env),
        "LOG_FORMAT": _choice(env, "NOVA_LOG_FORMAT", ("text", "json"), "text"),
        **_abuse_limits(env),
        # Time series (/api/upload_batch): most frames, and most bytes in one batch request.
        "BATCH_MAX_FRAMES": _int(env, "NOVA_BATCH_MAX_FRAMES", 1000),
        "BATCH_MAX_BYTES": _int(env, "NOVA_BATCH_MAX_MB", max_upload_mb) * 1024 * 1024,
        **_webhook_and_event_settings(env),
        # Days after which anonymous and failed uploads are deleted (0: keep everything).
        "RETENTION_DAYS": _int(env, "NOVA_RETENTION_DAYS", 0, minimum=0),
        # /metrics (Prometheus text format): off by default (404); with a token, only a
        # scraper sending "Authorization: Bearer <token>" is answered.
        "METRICS": _flag(env, "NOVA_METRICS", False),
        "METRICS_TOKEN": env.get("NOVA_METRICS_TOKEN", "").strip(),
    }


def _engine_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """How a worker runs the engine."""
    return {
        "SOLVE_TIME_LIMIT": _int(env, "NOVA_SOLVE_TIME_LIMIT", 300),
        # Solve with the index files kept open in the worker (PyPI astrometry), not a new
        # astrometry-engine process per job; the engine stays the fallback.
        # Off by default: measured no faster than astrometry-engine here (README, Performance).
        "WARM_ENGINE": _flag(env, "NOVA_WARM_ENGINE", False),
        "FAST_EXTRACTION": _flag(env, "NOVA_FAST_EXTRACTION", True),  # stage 1 in-process
        # Engine processes one job may run at once (blind and wide-hinted solves race scale
        # bands in them): by default the CPUs shared out among NOVA_WORKERS workers on this
        # host (``nova up`` sets it), so concurrent jobs never oversubscribe the cores; 1
        # when the worker count is not known.
        "ENGINE_PROCESSES": _int(env, "NOVA_ENGINE_PROCESSES", default_engine_processes(env)),
        # Missing hints from the file's header (FITS, XISF, EXIF) as a first attempt.
        "USE_HEADER_HINTS": _flag(env, "NOVA_USE_HEADER_HINTS", True),
    }


def _decode_limits(env: Mapping[str, str], max_upload_mb: int) -> dict[str, Any]:
    """How large an upload may be, and what reading and drawing it may cost."""
    return {
        "MAX_CONTENT_LENGTH": max_upload_mb * 1024 * 1024,
        "MAX_IMAGE_PIXELS": _int(env, "NOVA_MAX_IMAGE_PIXELS", 200_000_000),
        # Pictures drawn of a solve (annotated, grid, ...) and of an upload: larger images are
        # downscaled to this many pixels first (memory and time per picture stay bounded).
        "MAX_RENDER_PIXELS": _int(env, "NOVA_MAX_RENDER_PIXELS", 50_000_000),
        "DOWNLOAD_TIMEOUT": _int(env, "NOVA_DOWNLOAD_TIMEOUT", 60),
        # Every upload is decoded in a child process with these limits (nova.engine.sandbox): memory
        # it may allocate, and processor seconds (also the wall-clock limit of a picture).
        "DECODE_MEMORY_MB": _int(env, "NOVA_DECODE_MEMORY_MB", 2048, minimum=64),
        "DECODE_CPU_SECONDS": _int(env, "NOVA_DECODE_CPU_SECONDS", 60),
    }


def _session_settings(env: Mapping[str, str], environment: str, data_dir: Path) -> dict[str, Any]:
    """The signing key, the cookies, and how long sessions and id-only access last."""
    return {
        "SECRET_KEY": _secret_key(env, environment, data_dir),
        "SESSION_COOKIE_NAME": "NovaSession",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Behind HTTPS, cookies must never travel over plain HTTP.
        "SESSION_COOKIE_SECURE": _flag(env, "NOVA_SECURE_COOKIES", False),
        "REMEMBER_COOKIE_SECURE": _flag(env, "NOVA_SECURE_COOKIES", False),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "WTF_CSRF_TIME_LIMIT": None,  # a token lives as long as the session
        "API_SESSION_DAYS": _int(env, "NOVA_API_SESSION_DAYS", 14),
        "API_DEFAULT_VISIBILITY": _choice(env, "NOVA_API_DEFAULT_VISIBILITY", ("y", "n"), "y"),
        # Hours after a private job ends during which its id alone opens its status,
        # calibration and WCS (clients that poll without a session); 0: owner only.
        "ID_ACCESS_HOURS": _int(env, "NOVA_ID_ACCESS_HOURS", 24, minimum=0),
    }


def _input_limits(env: Mapping[str, str], max_upload_mb: int) -> dict[str, Any]:
    """What one upload may hold (stars, archive members) and where it may come from."""
    return {
        "MAX_STARS": _int(env, "NOVA_MAX_STARS", 100_000),
        # A form field (request-json above all) held in memory: room for NOVA_MAX_STARS x/y
        # pairs written out in full (Werkzeug's default of 500 kB holds about 12,000).
        "MAX_FORM_MEMORY_SIZE": 64 * _int(env, "NOVA_MAX_STARS", 100_000) + (1 << 20),
        # Archives (tar, zip, optionally gzip/bzip2-compressed) unpacked into one image each.
        "MAX_ARCHIVE_MEMBERS": _int(env, "NOVA_MAX_ARCHIVE_MEMBERS", 200),
        "MAX_ARCHIVE_BYTES": _int(env, "NOVA_MAX_ARCHIVE_BYTES", 4 * max_upload_mb * 1024 * 1024),
        "MAX_COMPRESSION_RATIO": _int(env, "NOVA_MAX_COMPRESSION_RATIO", 200),
        # URL uploads from loopback/private addresses: tests and intranet deployments only.
        "URL_ALLOW_PRIVATE": _flag(env, "NOVA_URL_ALLOW_PRIVATE", False),
        "ALLOW_ANONYMOUS_UPLOADS": _flag(env, "NOVA_ALLOW_ANONYMOUS_UPLOADS", True),
    }


def _worker_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Retries, queued work per account, result reuse, liveness and the workers' priority."""
    return {
        "MAX_ATTEMPTS": _int(env, "NOVA_MAX_ATTEMPTS", 3),
        # Work waiting per account, or per address for anonymous uploads: jobs queued or
        # solving plus uploads not yet read (each image of an archive is a job).
        "MAX_QUEUED_JOBS": _int(env, "NOVA_MAX_QUEUED_JOBS", 100),
        "REUSE_RESULTS": _flag(env, "NOVA_REUSE_RESULTS", True),
        "HEARTBEAT_SECONDS": _int(env, "NOVA_HEARTBEAT_SECONDS", 10),
        "RECONCILE_SECONDS": _int(env, "NOVA_RECONCILE_SECONDS", 30),
        # Solver workers run at this niceness (0 to 19): under contention the web server's
        # answers come before a long blind solve's next CPU slice.
        "WORKER_NICE": _int(env, "NOVA_WORKER_NICE", 10, minimum=0),
    }


def _abuse_limits(env: Mapping[str, str]) -> dict[str, Any]:
    """Abuse limits, counted in redis (so shared by every web process and host)."""
    return {
        "RATE_LIMITS": _flag(env, "NOVA_RATE_LIMITS", True),
        "UPLOAD_RATE_LIMIT": _rate_limit(env, "NOVA_UPLOAD_RATE_LIMIT", "60/minute;1000/hour"),
        "LOGIN_RATE_LIMIT": _rate_limit(env, "NOVA_LOGIN_RATE_LIMIT", "30/minute;300/hour"),
        "LOGIN_FAILURE_LIMIT": _rate_limit(env, "NOVA_LOGIN_FAILURE_LIMIT", "5/15 minutes"),
        # Comments, tags and albums posted per account.
        "CONTENT_RATE_LIMIT": _rate_limit(env, "NOVA_CONTENT_RATE_LIMIT", "20/minute;300/day"),
        # Reverse proxies in front (Caddy in the https profile: 1) whose X-Forwarded-* to trust.
        "PROXY_HOPS": _int(env, "NOVA_PROXY_HOPS", 0, minimum=0),
    }


def _webhook_and_event_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Webhook deliveries (callback_url) and live event streams."""
    return {
        # Seconds between a failed delivery and its next try, one per retry (the default:
        # 5 tries over 15 minutes), and each try's time limit.
        "WEBHOOK_RETRY_INTERVALS": _seconds_list(
            env, "NOVA_WEBHOOK_RETRY_INTERVALS", "60,120,240,480"
        ),
        # The site's address as its users reach it: the "url" of a webhook names the result
        # page under it (a worker has no request to learn it from).
        "PUBLIC_URL": env.get("NOVA_PUBLIC_URL", "").strip().rstrip("/")
        or f"http://localhost:{env.get('NOVA_PORT', '8000').strip() or '8000'}",
        "WEBHOOK_TIMEOUT": _int(env, "NOVA_WEBHOOK_TIMEOUT", 10),
        # Live event streams (/api/jobs/J/events) held open at once by one web process: each
        # holds one of its gunicorn threads; more are refused at once with 503 (poll instead).
        "EVENTS_MAX_WATCHERS": _int(env, "NOVA_EVENTS_MAX_WATCHERS", 16, minimum=0),
        # A stream ends after this long (the browser reconnects with Last-Event-ID), and says
        # it is alive in between (proxies close silent connections).
        "EVENTS_MAX_SECONDS": _int(env, "NOVA_EVENTS_MAX_SECONDS", 300),
        "EVENTS_KEEPALIVE_SECONDS": _int(env, "NOVA_EVENTS_KEEPALIVE_SECONDS", 15),
    }
