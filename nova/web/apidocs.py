"""``/api/openapi.json`` (the API's OpenAPI 3.1 document, nova.web.openapi) and ``/api/docs``, a
page of this site that renders it (static/api-docs.js; nothing loaded from elsewhere)."""

from __future__ import annotations

import json
from functools import cache

from flask import Blueprint, Response, render_template

from nova.web import openapi

bp = Blueprint("apidocs", __name__, url_prefix="/api")


@cache
def _document_text() -> str:
    return json.dumps(openapi.document(), indent=1)


@bp.get("/openapi.json")
def openapi_json() -> Response:
    return Response(_document_text(), content_type="application/json")


@bp.get("/docs")
def docs() -> str:
    return render_template("api_docs.html")
