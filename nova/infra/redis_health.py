"""Whether redis answers at a URL: ``nova up`` asks before starting one, a worker while it waits."""

from __future__ import annotations

import redis


def redis_alive(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.exceptions.RedisError:
        return False
