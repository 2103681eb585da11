"""WSGI entry point for gunicorn: ``gunicorn nova.wsgi:app``."""

from __future__ import annotations

import sys

from nova import create_app
from nova.config import ConfigError
from nova.db.schema import SchemaNotCurrent, check_schema

try:
    app = create_app()
except ConfigError as exc:
    # A malformed setting: say which, and stop gunicorn (exit status 4) instead of retrying.
    print(f"nova: {exc}", file=sys.stderr, flush=True)
    sys.exit(4)
with app.app_context():
    try:
        check_schema()
    except SchemaNotCurrent as exc:
        # Serving on an old schema would fail later on some request with an SQL error; say
        # what to do instead. Exit status 4 makes gunicorn stop instead of retrying forever.
        print(f"nova: {exc}", file=sys.stderr, flush=True)
        sys.exit(4)
