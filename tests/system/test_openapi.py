"""/api/openapi.json: a valid OpenAPI 3.1 document naming every /api/ route the app has (and
every method each answers), whose schemas match the real answers; /api/docs renders it in a
real browser (Debian's Chromium) from this site alone."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from playwright.sync_api import expect, sync_playwright

from tests.support.api import api_call, api_login
from tests.support.processes import run_worker
from tests.support.stack import live_stack
from tests.system.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

MakeUser = Callable[[str], tuple[int, str]]
IGNORED_METHODS = {"HEAD", "OPTIONS"}


def openapi_path(rule: str) -> str:
    """Werkzeug's /api/jobs/<int:job_id> as OpenAPI's /api/jobs/{job_id}."""
    return re.sub(r"<(?:[a-z_]+:)?([a-z_]+)>", r"{\1}", rule)


def fetch_document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    return dict(response.get_json())


def test_the_document_is_valid_openapi_and_lists_every_api_route(
    app: Flask, client: FlaskClient
) -> None:
    document = fetch_document(client)
    assert document["openapi"].startswith("3.1")
    validate(document)  # OpenAPI 3.1, schemas against JSON Schema 2020-12
    every_route: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        methods = set(rule.methods or ()) - IGNORED_METHODS
        every_route.setdefault(openapi_path(rule.rule), set()).update(methods)
    api_routes = {path for path in every_route if path.startswith("/api/")}
    documented = {
        path: {method.upper() for method in item} for path, item in document["paths"].items()
    }
    missing = sorted(api_routes - set(documented))
    assert not missing, f"routes missing from nova/web/openapi/endpoints.py: {missing}"
    stale = sorted(set(documented) - set(every_route))
    assert not stale, f"documented paths that are no route: {stale}"
    for path, methods in documented.items():
        # Every method the route answers is documented (the files outside /api/ too).
        assert every_route[path] == methods, (path, every_route[path], methods)
    assert "/wcs_file/{job_id}" in documented  # nova's files, which its clients fetch
    # Every operation says what it answers, and every request-json has a schema.
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["summary"] and "200" in operation["responses"], (path, method)
            body = operation.get("requestBody")
            if body:
                field = body["content"]["application/x-www-form-urlencoded"]["schema"]
                assert "$ref" in field["properties"]["request-json"]["contentSchema"]


def closed(schema: Any) -> Any:
    """The schema with every object closed to keys it does not name (unless it says it is
    open): an answer key missing from the document fails, not only a wrong one."""
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    result = {name: closed(value) for name, value in schema.items()}
    if isinstance(schema.get("properties"), dict):
        result.setdefault("additionalProperties", False)
    return result


class Answers:
    """Checks real answers against the document's schemas, closed (see ``closed``)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = {**document, "components": closed(document["components"])}

    def check(self, path: str, answer: object, code: str = "200", method: str = "post") -> None:
        response = self.document["paths"][path][method]["responses"][code]
        schema = response["content"]["text/plain"]["schema"]
        # Resolved within the document itself: "#/components/..." points into it.
        validator = Draft202012Validator({**schema, "components": self.document["components"]})
        errors = [error.message for error in validator.iter_errors(answer)]
        assert not errors, (path, answer, errors)

    def refuses(self, path: str, answer: object) -> None:
        validator = Draft202012Validator(
            {"$ref": "#/components/schemas/Error", "components": self.document["components"]}
        )
        assert validator.is_valid(answer), answer
        self.check(path, answer)  # the envelope is among the documented 200 answers


@pytest.mark.engine
def test_the_schemas_describe_the_real_answers(
    client: FlaskClient, make_user: MakeUser, apod: Path
) -> None:
    answers = Answers(fetch_document(client))
    _, key = make_user("ann@example.org")
    login = api_call(client, "login", {"apikey": key})
    answers.check("/api/login", login)
    session = api_login(client, key)
    answers.refuses("/api/login", api_call(client, "login", {"apikey": "nope"}))
    upload = api_call(client, "upload", {"session": session, "x": [1.0, 2.0], "y": [3.0, 4.0]})
    answers.check("/api/upload", upload)
    answers.refuses("/api/upload", api_call(client, "upload", {"session": session, "parity": 5}))
    url = api_call(client, "url_upload", {"session": session, "url": "https://example.org/a.jpg"})
    answers.check("/api/url_upload", url)
    subid = upload["subid"]
    answers.check("/api/submissions/{submission_id}", api_call(client, f"submissions/{subid}"))
    images = api_call(client, "submission_images", {"session": session, "subid": subid})
    answers.check("/api/submission_images", images)
    answers.check("/api/myjobs", api_call(client, "myjobs", {"session": session}))
    answers.check("/api/jobs_by_tag", api_call(client, "jobs_by_tag?query=x", None, "GET"))
    missing = api_call(client, "jobs/1999999999", None, "GET")
    answers.check("/api/jobs/{job_id}", missing, code="404", method="get")
    batch = client.post(
        "/api/upload_batch",
        data={
            "request-json": json.dumps({"session": session, "image_width": 100}),
            "file": [(io.BytesIO(b"1 2\n3 4\n"), "frame1.txt")],
        },
    )
    batch_answer = json.loads(batch.data)
    answers.check("/api/upload_batch", batch_answer)
    state = api_call(client, f"batches/{batch_answer['batch']}", None, "GET")
    answers.check("/api/batches/{batch_id}", state, method="get")

    # A photo solved for real, and a star list that cannot be: every job answer of both.
    with (apod / "apod4.jpg").open("rb") as photo:
        response = client.post(
            "/api/upload",
            data={
                "request-json": json.dumps(
                    {"session": session, "scale_lower": 25, "scale_upper": 40}
                ),
                "file": (photo, "apod4.jpg"),
            },
        )
    photo_subid = json.loads(response.data)["subid"]
    run_worker()
    for submission_id in (photo_subid, subid):
        status = api_call(client, f"submissions/{submission_id}")
        answers.check("/api/submissions/{submission_id}", status)
        (job_id,) = status["jobs"]
        for path in (
            "/api/jobs/{job_id}",
            "/api/jobs/{job_id}/calibration",
            "/api/jobs/{job_id}/info",
            "/api/jobs/{job_id}/tags",
            "/api/jobs/{job_id}/machine_tags",
            "/api/jobs/{job_id}/objects_in_field",
            "/api/jobs/{job_id}/annotations",
        ):
            endpoint = path.removeprefix("/api/").replace("{job_id}", str(job_id))
            answers.check(path, api_call(client, endpoint, {"session": session}))
    solved = api_call(client, f"jobs/{api_call(client, f'submissions/{photo_subid}')['jobs'][0]}")
    assert solved == {"status": "success"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with live_stack(tmp_path_factory.mktemp("apidocs"), NOVA_WORKERS="0") as stack:
        yield stack.base


def test_the_docs_page_renders_the_document_with_nothing_from_elsewhere(
    site: str, tmp_path: Path
) -> None:
    assert Path(CHROMIUM).exists(), "chromium is missing: scripts/install-system.sh --test"
    import requests

    document = requests.get(f"{site}/api/openapi.json", timeout=10).json()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            requested: list[str] = []
            problems: list[str] = []
            failed: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            page.on(
                "response",
                lambda response: failed.append(response.url) if response.status >= 400 else None,
            )
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(f"{site}/api/docs")
            docs = page.locator("#api-docs")
            expect(docs.locator("section.api-endpoint").first).to_be_visible(timeout=15000)
            for path, item in document["paths"].items():
                section = docs.locator(
                    "section.api-endpoint", has=page.get_by_text(path, exact=True)
                )
                expect(section).to_have_count(1)
                operation = item.get("post") or item["get"]
                expect(section).to_contain_text(operation["summary"])
            # The request-json fields of an upload, with their defaults, and a schema.
            upload = docs.locator(
                "section.api-endpoint", has=page.get_by_text("/api/upload", exact=True)
            )
            expect(upload).to_contain_text("scale_units")
            expect(upload).to_contain_text("default 2")
            expect(docs.locator("#schema-Calibration")).to_contain_text("pixscale")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "api-docs.png"), full_page=False)
        finally:
            browser.close()
    origin = urlparse(site).netloc
    foreign = [url for url in requested if urlparse(url).netloc != origin]
    assert not foreign, foreign
    assert {urlparse(url).path for url in requested} >= {
        "/api/docs",
        "/api/openapi.json",
        "/static/api-docs.js",
    }
    # The browser asks for /favicon.ico on its own; the site has none.
    assert [url for url in failed if urlparse(url).path != "/favicon.ico"] == []
    problems = [text for text in problems if not text.startswith("Failed to load resource")]
    assert not problems, problems  # a CSP refusal or a script error would show here
