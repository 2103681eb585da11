"""Adapters to the outside: redis and the RQ queue (jobqueue, the only RQ user besides the
worker), cancellation, storage on disk, safe downloads and the Prometheus figures."""
