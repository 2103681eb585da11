"""Hostile inputs against a live stack: every one gets a clear error, nothing crashes.

A generated corpus (broken and hostile files, compression and archive bombs, unsafe archive
members, absurd star lists, malformed ``request-json``, wrong types for every API argument,
URLs aimed at the server's own network, and redirects to them) goes through the real API
and the real upload form of ``nova up`` (gunicorn and a real worker). Each input must end
in a clear error: nova's API error envelope, a refused form with its message, or a
submission whose job ends ``failure`` with a reason. No answer may be a 5xx, the worker
must survive all of it, and the service must still solve a photo afterwards.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests
from rq import Queue
from rq.registry import FailedJobRegistry

from tests.support.corpus import file_corpus
from tests.support.figures import record_figure
from tests.support.processes import wait_for
from tests.support.stack import LiveStack, live_stack

pytestmark = pytest.mark.engine

# This test is about what each input does, not how many are allowed.
NO_RATE_LIMITS = {
    "NOVA_UPLOAD_RATE_LIMIT": "1000000/minute",
    "NOVA_LOGIN_RATE_LIMIT": "1000000/minute",
    "NOVA_LOGIN_FAILURE_LIMIT": "1000000/minute",
    "NOVA_MAX_QUEUED_JOBS": "1000000",
}
HINT = {"scale_units": "degwidth", "scale_lower": 25, "scale_upper": 40}  # apod4 is 33 deg wide


# -- the corpus: API arguments and URLs ------------------------------------------------------

MALFORMED_JSON = {
    "missing": None,
    "empty": "",
    "null": "null",
    "array": "[]",
    "number": "1",
    "string": '"x"',
    "unclosed": '{"apikey": ',
    "single-quotes": "{'apikey': 'x'}",
    "nan-literal": '{"apikey": NaN}',
    "deep-nesting": "[" * 100_000 + "]" * 100_000,
    "nul-escape": '{"apikey": "\\u0000", "session": "\\u0000"}',
    "lone-surrogate": '{"apikey": "\\ud800", "session": "\\udfff"}',
    "huge-string": json.dumps({"apikey": "k" * 2_000_000}),
    "huge-number": '{"session": 1' + "0" * 5000 + "}",
}
JSON_ENDPOINTS = ("login", "upload", "url_upload", "submission_images", "myjobs")

ARGUMENTS = (
    "session",
    "publicly_visible",
    "allow_commercial_use",
    "allow_modifications",
    "album",
    "scale_units",
    "scale_type",
    "scale_lower",
    "scale_upper",
    "scale_est",
    "scale_err",
    "center_ra",
    "center_dec",
    "radius",
    "parity",
    "tweak_order",
    "downsample_factor",
    "positional_error",
    "crpix_center",
    "invert",
    "use_sextractor",
    "image_width",
    "image_height",
    "x",
    "y",
    "url",
)
WRONG_VALUES: tuple[object, ...] = (
    [1, 2],
    {"a": 1},
    "not a number",
    -1e308,
    10**400,
    "\u0000",
    "\ud800",
)

# Direct URLs at the server itself, its network and the cloud metadata service.
SSRF_URLS = (
    "http://127.0.0.1/x.jpg",
    "http://127.0.0.1:6379/",  # redis
    "http://127.1/x.jpg",
    "http://2130706433/x.jpg",
    "http://0x7f000001/x.jpg",
    "http://localhost/x.jpg",
    "http://localhost./x.jpg",
    "http://10.0.0.1/x.jpg",
    "http://10.255.255.254:8080/x.jpg",
    "http://172.16.0.1/x.jpg",
    "http://192.168.0.1/x.jpg",
    "http://100.64.0.1/x.jpg",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/x.jpg",
    "http://[::ffff:127.0.0.1]/x.jpg",
    "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "http://[fe80::1]/x.jpg",
    "http://[fd00::1]/x.jpg",
    "http://0.0.0.0/x.jpg",
    "http://[::]/x.jpg",
    "http://224.0.0.1/x.jpg",
    "https://127.0.0.1/x.jpg",
    "http://user:pass@127.0.0.1/x.jpg",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://10.0.0.1/x.jpg",
    "dict://127.0.0.1:6379/info",
    "javascript:alert(1)",
    "http://",
    "http://no-such-host.invalid/x.jpg",
    "http://exa\u0000mple.org/x.jpg",
    "http://" + "a" * 3000 + ".org/x.jpg",
)
# Where the redirect server sends its visitors.
REDIRECT_TARGETS = {
    "metadata": "http://169.254.169.254/latest/meta-data/",
    "metadata-v6": "http://[::ffff:169.254.169.254]/latest/meta-data/",
    "link-local-v6": "http://[fe80::1]/x.jpg",
    "unspecified": "http://0.0.0.0/x.jpg",
    "multicast": "http://224.0.0.1/x.jpg",
    "reserved": "http://240.0.0.1/x.jpg",
    "file": "file:///etc/passwd",
    "gopher": "gopher://127.0.0.1:6379/_INFO",
    "loop": "/redirect/loop",
    "empty": "",
}


class Redirector(http.server.BaseHTTPRequestHandler):
    """/redirect/<name> answers 302 to REDIRECT_TARGETS[name]; /redirect/loop to itself."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        name = self.path.rsplit("/", 1)[-1]
        self.send_response(302)
        self.send_header("Location", REDIRECT_TARGETS.get(name, "/redirect/loop"))
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def redirector() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# -- sending and judging -----------------------------------------------------------------------


@dataclass
class Tally:
    """What the corpus did: each input's outcome, and the problems found."""

    tried: int = 0
    envelopes: int = 0
    refused_forms: int = 0
    submissions: dict[int, str] = field(default_factory=dict)  # id -> input name
    server_errors: list[str] = field(default_factory=list)
    unclear: list[str] = field(default_factory=list)
    succeeded: list[str] = field(default_factory=list)  # a hostile input that "solved"

    def judge_api(self, name: str, response: requests.Response) -> None:
        self.tried += 1
        if response.status_code >= 500:
            self.server_errors.append(f"{name}: HTTP {response.status_code}")
            return
        try:
            answer = json.loads(response.text)
        except ValueError:
            self.unclear.append(f"{name}: not JSON: {response.text[:100]!r}")
            return
        if answer.get("status") == "error" and answer.get("errormessage"):
            self.envelopes += 1
        elif answer.get("status") == "success" and "subid" in answer:
            self.submissions[int(answer["subid"])] = name
        elif answer.get("status") == "success" and "session" in answer:
            self.succeeded.append(f"{name}: logged in")
        else:
            self.unclear.append(f"{name}: {answer}")

    def judge_form(self, name: str, response: requests.Response) -> None:
        self.tried += 1
        if response.status_code >= 500:
            self.server_errors.append(f"{name}: HTTP {response.status_code}")
        elif response.status_code == 303:
            match = re.search(r"/status/(\d+)$", response.headers["Location"])
            assert match, response.headers["Location"]
            self.submissions[int(match.group(1))] = name
        elif response.status_code in (400, 403, 413) and 'class="error' in response.text:
            self.refused_forms += 1
        else:
            self.unclear.append(f"{name}: form answered {response.status_code}")


class Client:
    """An API user and a browser session (with its CSRF token) on one live stack."""

    def __init__(self, stack: LiveStack) -> None:
        self.base = stack.base
        key = re.search(r"API key: (\w+)", stack.nova("create-user", "hostile@example.org"))
        assert key, "create-user prints the key"
        self.api = requests.Session()
        login = self.api.post(
            f"{self.base}/api/login",
            data={"request-json": json.dumps({"apikey": key.group(1)})},
            timeout=30,
        ).json()
        self.session = login["session"]
        self.browser = requests.Session()
        page = self.browser.get(f"{self.base}/upload", timeout=30).text
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token
        self.csrf = token.group(1)

    def api_post(self, endpoint: str, raw_json: str | None, **files: bytes) -> requests.Response:
        data = {} if raw_json is None else {"request-json": raw_json}
        parts = {name: (f"{name}.bin", content) for name, content in files.items()}
        return self.api.post(f"{self.base}/api/{endpoint}", data=data, files=parts, timeout=120)

    def args(self, **arguments: object) -> str:
        return json.dumps({"session": self.session, **arguments})

    def form_post(
        self, data: dict[str, str], files: dict[str, bytes] | None = None
    ) -> requests.Response:
        parts = {name: (f"{name}.bin", content) for name, content in (files or {}).items()}
        return self.browser.post(
            f"{self.base}/upload",
            data={"csrf_token": self.csrf, **data},
            files=parts or None,
            allow_redirects=False,
            timeout=120,
        )

    def state(self, submission_id: int) -> dict:  # type: ignore[type-arg]
        response = self.api.get(f"{self.base}/status/{submission_id}/state", timeout=30)
        assert response.status_code == 200, (submission_id, response.status_code)
        return response.json()


def wait_until_ended(client: Client, tally: Tally, stack: LiveStack, timeout: float) -> None:
    """Every submission must end: failed with a reason (a hostile input must never solve)."""
    pending = dict(tally.submissions)
    states: dict[int, dict] = {}  # type: ignore[type-arg]

    def all_ended() -> bool:
        for submission_id in list(pending):
            state = client.state(submission_id)
            if state["finished"]:
                states[submission_id] = state
                del pending[submission_id]
        return not pending

    assert wait_for(all_ended, timeout, 1.0), (
        {pending[s]: client.state(s) for s in list(pending)[:5]},
        stack.log_path.read_text()[-3000:],
    )
    for submission_id, state in states.items():
        name = tally.submissions[submission_id]
        jobs = [image["job"] for image in state["images"] if image["job"]]
        if any(job["status"] == "success" for job in jobs):
            tally.succeeded.append(name)
            continue
        reasons = [job["failure_reason"] for job in jobs] + [state["error_message"]]
        reasons = [reason for reason in reasons if reason]
        if not jobs or not reasons or any("Internal error" in reason for reason in reasons):
            tally.unclear.append(f"{name}: {state}")


def worker_pids(stack: LiveStack) -> set[int]:
    import subprocess

    found = subprocess.run(
        ["pgrep", "-P", str(stack.process.pid), "-f", "nova worker"], capture_output=True, text=True
    )
    return {int(pid) for pid in found.stdout.split()}


def failed_rq_jobs(stack: LiveStack) -> int:
    connection = redis.Redis.from_url(stack.env["NOVA_REDIS_URL"])
    return sum(
        len(FailedJobRegistry(queue=Queue(name, connection=connection)))
        for name in ("default", "solve")
    )


def solve_apod4(client: Client, apod: Path) -> dict:  # type: ignore[type-arg]
    response = client.api_post(
        "upload", client.args(**HINT), file=(apod / "apod4.jpg").read_bytes()
    )
    submission_id = response.json()["subid"]
    assert wait_for(lambda: client.state(submission_id)["finished"], 120, 0.5)
    return client.state(submission_id)["images"][0]["job"]


# -- the tests -----------------------------------------------------------------------------------


def test_hostile_corpus_gets_clear_errors_and_the_service_survives(
    tmp_path: Path, apod: Path
) -> None:
    corpus = file_corpus(apod)
    # A short time limit: a hostile star list must not hold the worker for minutes.
    with live_stack(tmp_path, NOVA_SOLVE_TIME_LIMIT="30", **NO_RATE_LIMITS) as stack:
        client = Client(stack)
        workers_before = worker_pids(stack)
        assert workers_before, "nova up started a worker"
        tally = Tally()
        for name, data in corpus.items():
            # Through the API with a scale hint (so that any job that does run ends quickly)...
            tally.judge_api(
                f"api file {name}", client.api_post("upload", client.args(**HINT), file=data)
            )
            # ...and through the upload form, anonymously.
            tally.judge_form(f"form file {name}", client.form_post({}, {"file": data}))
        for name, raw in MALFORMED_JSON.items():
            for endpoint in JSON_ENDPOINTS:
                tally.judge_api(f"json {name} to {endpoint}", client.api_post(endpoint, raw))
            # Read endpoints look for a session in request-json too (id 1: no submission has
            # it, ids are random; the body is read all the same).
            tally.tried += 1
            status = client.api_post("submissions/1", raw).status_code
            if status >= 500:
                tally.server_errors.append(f"json {name} to submissions/1: HTTP {status}")
        for argument in ARGUMENTS:
            for value in WRONG_VALUES:
                # A refused URL: whatever the argument, nothing is ever downloaded.
                arguments = {"session": client.session, "url": "http://127.0.0.1:9/x.jpg"}
                raw = json.dumps({**arguments, argument: value})
                tally.judge_api(f"{argument}={value!r:.20}", client.api_post("url_upload", raw))
        for value in WRONG_VALUES + (None, "", 0):
            tally.judge_api(
                f"apikey={value!r:.20}", client.api_post("login", json.dumps({"apikey": value}))
            )
            tally.judge_api(
                f"subid={value!r:.20}",
                client.api_post("submission_images", client.args(subid=value)),
            )
        for name, (x, y) in {
            "nan": ("NaN", "NaN"),
            "infinity": ("[Infinity, 1]", "[1, -Infinity]"),
            "mismatched": ("[1, 2, 3]", "[1, 2]"),
            "strings": ('["1", "2"]', '["3", "4"]'),
            "nested": ("[[1], [2]]", "[[3], [4]]"),
            "booleans": ("[true, false]", "[false, true]"),
            "empty": ("[]", "[]"),
            "over-limit": (json.dumps([1.5] * 100_001), json.dumps([2.5] * 100_001)),
            "only-x": ("[1, 2, 3]", "null"),
        }.items():
            raw = f'{{"session": "{client.session}", "x": {x}, "y": {y}}}'
            tally.judge_api(f"xy {name}", client.api_post("upload", raw))
        for url in SSRF_URLS:
            tally.judge_api(
                f"url_upload {url[:60]}", client.api_post("url_upload", client.args(url=url))
            )
            tally.judge_form(f"form url {url[:60]}", client.form_post({"url": url}))
        for number in ("9" * 30, str(2**63), "-1"):
            for path in (f"api/submissions/{number}", f"api/jobs/{number}", f"status/{number}"):
                tally.tried += 1
                status = client.api.get(f"{client.base}/{path}", timeout=30).status_code
                if status >= 500:
                    tally.server_errors.append(f"GET /{path}: {status}")
        wait_until_ended(client, tally, stack, timeout=300)

        crashes = len(workers_before - worker_pids(stack)) + failed_rq_jobs(stack)
        tracebacks = stack.log_path.read_text().count("Traceback")
        after = solve_apod4(client, apod)
        record_figure(
            f"hostile inputs: {tally.tried} tried -> {tally.envelopes} API error envelopes, "
            f"{tally.refused_forms} refused forms, {len(tally.submissions)} submissions ended "
            f"failure with a reason; worker crashes = {crashes}, tracebacks = {tracebacks}, "
            f"HTTP 500s = {len(tally.server_errors)}, unclear = {len(tally.unclear)}, "
            f"apod4 afterwards: {after['status']}"
        )
        assert tally.tried >= 200
        assert tally.server_errors == []
        assert tally.unclear == []
        assert tally.succeeded == []
        assert crashes == 0
        assert tracebacks == 0, stack.log_path.read_text()[-5000:]
        assert after["status"] == "success", after


def test_redirects_to_forbidden_addresses_are_refused_at_every_hop(
    tmp_path: Path, apod: Path, redirector: str
) -> None:
    """With NOVA_URL_ALLOW_PRIVATE the loopback redirect server may be reached; the hops it
    redirects to (metadata, link-local, other schemes, endless loops) never are."""
    with live_stack(tmp_path, NOVA_URL_ALLOW_PRIVATE="true", **NO_RATE_LIMITS) as stack:
        client = Client(stack)
        tally = Tally()
        for name in REDIRECT_TARGETS:
            url = f"{redirector}/redirect/{name}"
            tally.judge_api(f"redirect {name}", client.api_post("url_upload", client.args(url=url)))
            tally.judge_form(f"form redirect {name}", client.form_post({"url": url}))
        wait_until_ended(client, tally, stack, timeout=120)
        reasons = [
            client.state(submission)["error_message"] or "" for submission in tally.submissions
        ]
        record_figure(
            f"redirects: {tally.tried} URLs redirecting to forbidden targets -> "
            f"{len(tally.submissions)} failed with a reason, HTTP 500s = {len(tally.server_errors)}"
        )
        assert tally.server_errors == [] and tally.unclear == [] and tally.succeeded == []
        assert len(tally.submissions) == tally.tried
        assert all("Failed to download" in reason for reason in reasons), reasons
        # The metadata address is named in the refusal: the hop was checked, not fetched.
        assert any("169.254.169.254" in reason for reason in reasons), reasons
