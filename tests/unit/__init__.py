"""Unit tier: pure functions, no services (no redis, database, engine or worker)."""
