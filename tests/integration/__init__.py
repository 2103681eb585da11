"""Integration tier: the app with redis, both databases, real workers and the engine."""
