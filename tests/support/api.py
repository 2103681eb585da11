"""nova's JSON API as its clients speak it: form field ``request-json``, JSON answers.

Two transports share the encoding: ``api_call``/``api_login`` drive a Flask test client (the
tests), ``HttpApiClient`` drives a running server over HTTP (live-stack tests and bench/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests
from flask.testing import FlaskClient


def request_form(args: dict[str, Any]) -> dict[str, str]:
    """The form nova's clients post: the arguments as JSON in one field, ``request-json``."""
    return {"request-json": json.dumps(args)}


def api_call(
    client: FlaskClient, endpoint: str, args: dict[str, object] | None = None, method: str = "POST"
) -> dict[str, object]:
    """Call /api/<endpoint> as nova's clients do (form field request-json); return the JSON."""
    data = request_form(args) if args is not None else None
    response = client.open(f"/api/{endpoint}", method=method, data=data)
    assert response.status_code in (200, 404), response.status_code
    assert response.headers["Content-Type"] == "text/plain"
    return json.loads(response.get_data(as_text=True))


def api_login(client: FlaskClient, key: str) -> str:
    result = api_call(client, "login", {"apikey": key})
    assert result["status"] == "success", result
    return str(result["session"])


class HttpApiClient:
    """A logged-in API session against a server at ``base`` (e.g. http://127.0.0.1:8000)."""

    def __init__(self, base: str, api_key: str) -> None:
        self.base = base
        self.http = requests.Session()
        answer = self.call("/api/login", {"apikey": api_key})
        if answer.get("status") != "success":
            raise RuntimeError(f"login failed: {answer}")
        self.session = answer["session"]

    def call(
        self, path: str, args: dict[str, Any] | None = None, files: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """GET ``path`` without arguments, POST them as ``request-json`` with them."""
        if args is None:
            response = self.http.get(self.base + path, timeout=60)
        else:
            response = self.http.post(
                self.base + path, data=request_form(args), files=files, timeout=120
            )
        response.raise_for_status()
        return response.json()

    def upload(self, path: Path, options: dict[str, Any]) -> tuple[int, str]:
        with path.open("rb") as handle:
            answer = self.call(
                "/api/upload",
                {"session": self.session, **options},
                files={"file": (path.name, handle, "application/octet-stream")},
            )
        if answer.get("status") != "success":
            raise RuntimeError(f"upload of {path.name} refused: {answer}")
        return int(answer["subid"]), str(answer.get("hash"))

    def upload_star_list(self, xs: list[float], ys: list[float], options: dict[str, Any]) -> int:
        answer = self.call("/api/upload", {"session": self.session, "x": xs, "y": ys, **options})
        if answer.get("status") != "success":
            raise RuntimeError(f"star-list upload refused: {answer}")
        return int(answer["subid"])

    def job_of(self, subid: int) -> tuple[int | None, bool]:
        """(job id or None, whether the submission failed without a job)."""
        answer = self.call(f"/api/submissions/{subid}")
        jobs = [j for j in answer.get("jobs", []) if j is not None]
        if jobs:
            return int(jobs[0]), False
        return None, bool(answer.get("error_message"))

    def status(self, job_id: int) -> str:
        return str(self.call(f"/api/jobs/{job_id}").get("status"))

    def calibration(self, job_id: int) -> dict[str, Any]:
        return self.call(f"/api/jobs/{job_id}/calibration")
