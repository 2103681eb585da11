"""The whole OpenAPI 3.1 document, built from the endpoints and the schemas."""

from __future__ import annotations

from typing import Any

from nova.web.openapi.endpoints import ENDPOINTS, FILE_ENDPOINTS, Endpoint
from nova.web.openapi.schemas import ID, SCHEMAS, object_schema, ref

TEXT_JSON = "text/plain"  # nova's answers: JSON text labelled text/plain
DESCRIPTION = """\
Nova speaks nova.astrometry.net's JSON API, so its clients (astroquery, client.py, N.I.N.A.,
KStars/StellarSolver, AstroImageJ, astrometry-net-client) work unchanged, and adds endpoints
of its own (time series).

**Conventions (nova's):**

- Arguments are one form field, `request-json`, holding a JSON object
  (`application/x-www-form-urlencoded`, or `multipart/form-data` with a file part).
  Its schema is given as the field's `contentSchema`.
- Answers are JSON sent as `text/plain` (the schemas below describe the parsed JSON).
- Refusals are **HTTP 200** with `{"status": "error", "errormessage": "..."}`, as nova's
  clients expect; the message says what was wrong.
- A submission, job or batch id that does not exist, or that is private to someone else,
  answers a JSON **404** with the same envelope.
- Read endpoints answer GET and POST; every path is matched with or without a trailing
  slash and never redirects.
- Signing in: `login` with your API key gives a `session`, sent in `request-json` (or kept
  as the cookie `login` sets). Read endpoints take it, or the cookie, to show your private
  images; a private job's solve result also answers whoever holds its id for
  `NOVA_ID_ACCESS_HOURS`.
- While the database is down every endpoint answers 503 with `Retry-After`.
"""


def _request_body(endpoint: Endpoint) -> dict[str, Any]:
    assert endpoint.request is not None
    request_json = {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": ref(endpoint.request),
        "description": "A JSON object (contentSchema).",
    }
    form = object_schema(
        {"request-json": request_json}, ["request-json"] if endpoint.request_required else None
    )
    content: dict[str, Any] = {"application/x-www-form-urlencoded": {"schema": form}}
    multipart = object_schema(dict(form["properties"]), form.get("required"))
    if endpoint.files is not None:
        part: dict[str, Any] = {
            "type": "string",
            "contentMediaType": "application/octet-stream",
            "description": endpoint.files,
        }
        multipart["properties"]["file"] = (
            {"type": "array", "items": part, "description": endpoint.files}
            if endpoint.files_many
            else part
        )
    content["multipart/form-data"] = {"schema": multipart}
    return {"required": endpoint.request_required, "content": content}


def _answer(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {TEXT_JSON: {"schema": schema}}}


def _operation(endpoint: Endpoint, method: str) -> dict[str, Any]:
    operation_id = (
        endpoint.path.removeprefix("/api/")
        .replace("/", "_")
        .replace("{", "")
        .replace("}", "")
        .replace(".", "_")
    )
    operation: dict[str, Any] = {
        "operationId": f"{method.lower()}_{operation_id}",
        "summary": endpoint.summary,
        "tags": [endpoint.tag],
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": ID}
        for name in _path_names(endpoint.path)
        if name != "rest"
    ]
    parameters += endpoint.extra.get("parameters", [])
    parameters += [
        {
            "name": q.name,
            "in": "query",
            "required": q.required,
            "schema": q.schema,
            "description": q.description,
        }
        for q in endpoint.query
    ]
    if parameters:
        operation["parameters"] = parameters
    if endpoint.request is not None and method == "POST":
        operation["requestBody"] = _request_body(endpoint)
    if isinstance(endpoint.answer, dict):
        ok = endpoint.answer
    else:
        choices = [ref(endpoint.answer), *(ref(name) for name in endpoint.also)]
        if endpoint.refusals:
            choices.append(ref("Error"))
        schema = choices[0] if len(choices) == 1 else {"oneOf": choices}
        ok = _answer(
            schema,
            "The answer"
            + (", or nova's error envelope for a refusal." if endpoint.refusals else "."),
        )
    responses: dict[str, Any] = {"200": ok}
    if endpoint.not_found:
        responses["404"] = _answer(
            ref("Error"), f"The id does not exist or is private: `{endpoint.not_found}`."
        )
    if endpoint.too_large:
        responses["413"] = _answer(ref("Error"), "The request is larger than the upload limit.")
    responses.update(endpoint.extra.get("responses", {}))
    responses.setdefault("503", {"$ref": "#/components/responses/Unavailable"})
    operation["responses"] = responses
    return operation


def _path_names(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


def document() -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    paths: dict[str, Any] = {}
    for endpoint in ENDPOINTS + FILE_ENDPOINTS:
        item = paths.setdefault(endpoint.path, {})
        for method in endpoint.methods:
            item[method.lower()] = _operation(endpoint, method)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Nova (nova.astrometry.net-compatible plate solving)",
            "version": "1",
            "description": DESCRIPTION,
            "license": {"name": "BSD-3-Clause", "identifier": "BSD-3-Clause"},
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "nova", "description": "nova.astrometry.net's API, as its clients use it."},
            {"name": "time series", "description": "Nova's own: many frames in one request."},
            {"name": "events", "description": "Nova's own: live events instead of polling."},
            {"name": "control", "description": "Nova's own: the owner cancels and deletes."},
            {
                "name": "files",
                "description": "A job's files, outside /api/ (nova's paths): GET or POST.",
            },
            {"name": "documentation", "description": "This document."},
        ],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "responses": {
                "Unavailable": {
                    "description": "The database is unavailable; try again after Retry-After.",
                    "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                    "content": {TEXT_JSON: {"schema": ref("Error")}},
                }
            },
        },
    }
