"""Services: the only code that changes rows (and commits) and answers read queries, for the
web and the worker alike. Each module is one domain; ``storage()`` is the app's file store,
shared by all of them."""

from __future__ import annotations

from flask import current_app

from nova.infra.storage import Storage


def storage() -> Storage:
    return current_app.extensions["nova.infra.storage"]
