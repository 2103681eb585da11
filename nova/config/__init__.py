"""Nova's settings: one typed, frozen ``Settings``, read once from ``NOVA_*`` variables.

Every setting is declared once below, in the ``Settings`` class: its type, the variable it is
read from, its default and a one-line doc (README.md's "Configuration" table is checked
against it by ``tests/unit/test_settings.py``). The defaults make ``make run`` work with no
configuration at all on a development machine. Flask's own config mapping is derived from it
(``Settings.flask_config``); code reads the typed attributes (``nova.extensions.settings()``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nova.config.readers import (
    DEFAULT_INDEX_DIRS,
    ConfigError,
    choice,
    default_engine_processes,
    flag,
    integer,
    rate,
    read_archive_bytes,
    read_data_dir,
    read_database_url,
    read_engine_processes,
    read_environment,
    read_index_dirs,
    read_megabytes,
    read_public_url,
    read_retry_intervals,
    read_secret_key,
    text,
)
from nova.config.readers import declare as _setting

__all__ = ["ConfigError", "Settings", "default_engine_processes", "setting_keys"]


@dataclass(frozen=True)
class Settings:
    """Every setting of Nova, read in this order (of two malformed ones, the first is named)."""

    environment: str = _setting(
        "NOVA_ENV",
        "`production` requires NOVA_SECRET_KEY",
        read_environment,
        default="development",
        key="NOVA_ENV",
    )
    data_dir: Path = _setting(
        "NOVA_DATA_DIR",
        "uploads, job products, the SQLite database",
        read_data_dir,
        default="./data",
    )
    database_url: str = _setting(
        "NOVA_DATABASE_URL", "any SQLAlchemy URL", read_database_url, key="SQLALCHEMY_DATABASE_URI"
    )
    redis_url: str = _setting(
        "NOVA_REDIS_URL",
        "the queue",
        text("redis://127.0.0.1:6379/0"),
        default="redis://127.0.0.1:6379/0",
    )
    index_dirs: tuple[Path, ...] = _setting(
        "NOVA_INDEX_DIRS",
        "index directories, separated by : or ,",
        read_index_dirs,
        default=DEFAULT_INDEX_DIRS,
    )
    max_upload_bytes: int = _setting(
        "NOVA_MAX_UPLOAD_MB",
        "largest accepted upload (given in MB)",
        read_megabytes(200),
        default=200,
        key="MAX_CONTENT_LENGTH",
    )
    # How a worker runs the engine.
    solve_time_limit: int = _setting(
        "NOVA_SOLVE_TIME_LIMIT", "wall-clock seconds per job", integer(300), default=300
    )
    # Off by default: measured no faster than astrometry-engine here (README, Performance).
    warm_engine: bool = _setting(
        "NOVA_WARM_ENGINE",
        "solve with the index files kept open in the worker (PyPI astrometry)",
        flag(False),
        default=False,
    )
    fast_extraction: bool = _setting(
        "NOVA_FAST_EXTRACTION",
        "source extraction in the worker, without solve-field's helpers",
        flag(True),
        default=True,
    )
    # By default the CPUs shared out among NOVA_WORKERS workers on this host (``nova up`` sets
    # it), so concurrent jobs never oversubscribe the cores; 1 when the count is not known.
    engine_processes: int = _setting(
        "NOVA_ENGINE_PROCESSES",
        "engine processes one job may run at once (racing scale bands)",
        read_engine_processes,
    )
    use_header_hints: bool = _setting(
        "NOVA_USE_HEADER_HINTS",
        "missing hints from the file's header as a first attempt",
        flag(True),
        default=True,
    )
    # What reading and drawing an upload may cost.
    max_image_pixels: int = _setting(
        "NOVA_MAX_IMAGE_PIXELS",
        "largest image, in pixels",
        integer(200_000_000),
        default=200_000_000,
    )
    # Larger images are downscaled to this many pixels first (memory and time stay bounded).
    max_render_pixels: int = _setting(
        "NOVA_MAX_RENDER_PIXELS", "largest picture drawn", integer(50_000_000), default=50_000_000
    )
    download_timeout: int = _setting(
        "NOVA_DOWNLOAD_TIMEOUT", "seconds to download a URL upload", integer(60), default=60
    )
    # Every upload is decoded in a child process with these limits (nova.engine.sandbox).
    decode_memory_mb: int = _setting(
        "NOVA_DECODE_MEMORY_MB",
        "memory a decoding child may allocate",
        integer(2048, 64),
        default=2048,
    )
    decode_cpu_seconds: int = _setting(
        "NOVA_DECODE_CPU_SECONDS",
        "processor seconds of a decoding child (and of a picture)",
        integer(60),
        default=60,
    )
    # The signing key, cookies, and how long sessions and id-only access last.
    secret_key: str = _setting("NOVA_SECRET_KEY", "signs session cookies", read_secret_key)
    secure_cookies: bool = _setting(
        "NOVA_SECURE_COOKIES", "cookies only over HTTPS", flag(False), default=False
    )
    api_session_days: int = _setting(
        "NOVA_API_SESSION_DAYS", "lifetime of an API login", integer(14), default=14
    )
    api_default_visibility: str = _setting(
        "NOVA_API_DEFAULT_VISIBILITY",
        "visibility of API uploads that do not say",
        choice("y", "y", "n"),
        default="y",
    )
    # Clients that poll without a session (N.I.N.A.) need it above 0.
    id_access_hours: int = _setting(
        "NOVA_ID_ACCESS_HOURS",
        "hours after a private job ends that its id alone opens it",
        integer(24, 0),
        default=24,
    )
    # What one upload may hold and where it may come from.
    max_stars: int = _setting(
        "NOVA_MAX_STARS", "longest star list accepted", integer(100_000), default=100_000
    )
    max_archive_members: int = _setting(
        "NOVA_MAX_ARCHIVE_MEMBERS", "most members in one archive", integer(200), default=200
    )
    max_archive_bytes: int = _setting(
        "NOVA_MAX_ARCHIVE_BYTES",
        "most bytes unpacked from one archive (4 x the upload limit)",
        read_archive_bytes,
    )
    max_compression_ratio: int = _setting(
        "NOVA_MAX_COMPRESSION_RATIO",
        "largest expansion of compressed data",
        integer(200),
        default=200,
    )
    # Loopback/private addresses: tests and intranet deployments only.
    url_allow_private: bool = _setting(
        "NOVA_URL_ALLOW_PRIVATE",
        "URL uploads and webhooks may reach private addresses",
        flag(False),
        default=False,
    )
    allow_anonymous_uploads: bool = _setting(
        "NOVA_ALLOW_ANONYMOUS_UPLOADS",
        "the upload page without an account",
        flag(True),
        default=True,
    )
    # Retries, queued work per account, result reuse, liveness and the workers' priority.
    max_attempts: int = _setting(
        "NOVA_MAX_ATTEMPTS", "tries of a job whose worker died", integer(3), default=3
    )
    # Jobs queued or solving plus uploads not yet read, per account or anonymous address.
    max_queued_jobs: int = _setting(
        "NOVA_MAX_QUEUED_JOBS", "work waiting per account", integer(100), default=100
    )
    reuse_results: bool = _setting(
        "NOVA_REUSE_RESULTS",
        "answer an identical upload from the earlier solve",
        flag(True),
        default=True,
    )
    heartbeat_seconds: int = _setting(
        "NOVA_HEARTBEAT_SECONDS", "how often a solving worker reports", integer(10), default=10
    )
    reconcile_seconds: int = _setting(
        "NOVA_RECONCILE_SECONDS", "how often workers look for lost work", integer(30), default=30
    )
    # Under contention the web server's answers come before a long solve's next CPU slice.
    worker_nice: int = _setting(
        "NOVA_WORKER_NICE", "niceness of solver workers (0 to 19)", integer(10, 0), default=10
    )
    log_format: str = _setting(
        "NOVA_LOG_FORMAT",
        "text or json log lines",
        choice("text", "text", "json"),
        default="text",
    )
    # Abuse limits, counted in redis (so shared by every web process and host).
    rate_limits: bool = _setting(
        "NOVA_RATE_LIMITS", "the rate limits on or off", flag(True), default=True
    )
    upload_rate_limit: str = _setting(
        "NOVA_UPLOAD_RATE_LIMIT",
        "uploads per account or address",
        rate("60/minute;1000/hour"),
        default="60/minute;1000/hour",
    )
    login_rate_limit: str = _setting(
        "NOVA_LOGIN_RATE_LIMIT",
        "sign-ins per address",
        rate("30/minute;300/hour"),
        default="30/minute;300/hour",
    )
    login_failure_limit: str = _setting(
        "NOVA_LOGIN_FAILURE_LIMIT",
        "failed sign-ins per account and address",
        rate("5/15 minutes"),
        default="5/15 minutes",
    )
    content_rate_limit: str = _setting(
        "NOVA_CONTENT_RATE_LIMIT",
        "comments, tags and albums per account",
        rate("20/minute;300/day"),
        default="20/minute;300/day",
    )
    # Caddy in the https profile: 1.
    proxy_hops: int = _setting(
        "NOVA_PROXY_HOPS",
        "reverse proxies whose X-Forwarded-* to trust",
        integer(0, 0),
        default=0,
    )
    # Time series (/api/upload_batch).
    batch_max_frames: int = _setting(
        "NOVA_BATCH_MAX_FRAMES", "most frames in one batch", integer(1000), default=1000
    )
    batch_max_bytes: int = _setting(
        "NOVA_BATCH_MAX_MB",
        "largest batch request (given in MB; default the upload limit)",
        read_megabytes(),
    )
    # Webhook deliveries (callback_url) and live event streams.
    webhook_retry_intervals: tuple[int, ...] = _setting(
        "NOVA_WEBHOOK_RETRY_INTERVALS",
        "seconds before each retry of a failed webhook",
        read_retry_intervals,
        default="60,120,240,480",
    )
    # A worker has no request to learn the site's address from.
    public_url: str = _setting(
        "NOVA_PUBLIC_URL",
        "the site's address as users reach it (webhooks link under it)",
        read_public_url,
    )
    webhook_timeout: int = _setting(
        "NOVA_WEBHOOK_TIMEOUT", "seconds a webhook try may take", integer(10), default=10
    )
    # Each stream holds a gunicorn thread; more are refused at once with 503 (poll instead).
    events_max_watchers: int = _setting(
        "NOVA_EVENTS_MAX_WATCHERS",
        "live event streams one web process holds open",
        integer(16, 0),
        default=16,
    )
    events_max_seconds: int = _setting(
        "NOVA_EVENTS_MAX_SECONDS", "a stream ends after this long", integer(300), default=300
    )
    events_keepalive_seconds: int = _setting(
        "NOVA_EVENTS_KEEPALIVE_SECONDS",
        "a comment this often on a silent stream",
        integer(15),
        default=15,
    )
    retention_days: int = _setting(
        "NOVA_RETENTION_DAYS",
        "days after which anonymous and failed uploads go (0: never)",
        integer(0, 0),
        default=0,
    )
    # /metrics is off by default (404); with a token, only a scraper that sends it is answered.
    metrics: bool = _setting(
        "NOVA_METRICS", "serve /metrics (Prometheus text format)", flag(False), default=False
    )
    metrics_token: str = _setting(
        "NOVA_METRICS_TOKEN", "the bearer token /metrics requires", text(""), default=""
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from ``env`` (default: ``os.environ``), in declaration order."""
        env = os.environ if env is None else env
        read: dict[str, Any] = {}
        for spec in dataclasses.fields(cls):
            read[spec.name] = spec.metadata["read"](env, spec.metadata["env"], read)
        return cls(**read)

    @classmethod
    def flask_key(cls, name: str) -> str:
        """The key under which Flask's config holds the setting ``name``."""
        spec = next(spec for spec in dataclasses.fields(cls) if spec.name == name)
        return spec.metadata["key"] or name.upper()

    def replace(self, changes: Mapping[str, Any]) -> Settings:
        """These settings with ``changes``, named by field or by Flask key (``MAX_STARS``)."""
        by_key = {Settings.flask_key(spec.name): spec.name for spec in dataclasses.fields(self)}
        fields = {by_key.get(name, name): value for name, value in changes.items()}
        if "index_dirs" in fields:
            fields["index_dirs"] = tuple(Path(d) for d in fields["index_dirs"])
        if "data_dir" in fields:
            fields["data_dir"] = Path(fields["data_dir"])
        return dataclasses.replace(self, **fields)

    def flask_config(self) -> dict[str, Any]:
        """Flask's config mapping: every setting under its key, and what Flask and its
        extensions read (cookies, the database engine, the form memory limit)."""
        config = {
            Settings.flask_key(spec.name): getattr(self, spec.name)
            for spec in dataclasses.fields(self)
        }
        config.update(
            SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
            SESSION_COOKIE_NAME="NovaSession",
            SESSION_COOKIE_HTTPONLY=True,
            SESSION_COOKIE_SAMESITE="Lax",
            SESSION_COOKIE_SECURE=self.secure_cookies,
            REMEMBER_COOKIE_SECURE=self.secure_cookies,
            REMEMBER_COOKIE_HTTPONLY=True,
            REMEMBER_COOKIE_SAMESITE="Lax",
            WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as the session
            # A form field (request-json above all) held in memory: room for max_stars x/y
            # pairs written out in full (Werkzeug's default of 500 kB holds about 12,000).
            MAX_FORM_MEMORY_SIZE=64 * self.max_stars + (1 << 20),
        )
        return config


def setting_keys() -> set[str]:
    """The Flask config keys that are Nova's settings (the others are Flask's own)."""
    return {Settings.flask_key(spec.name) for spec in dataclasses.fields(Settings)}
